"""The quote cache: the latest book per ``venue:symbol``, fed from the quotes topic.

It also remembers what this worker's own plans took from each snapshot, so concurrent
intents do not all plan to take the same liquidity; a new snapshot of a book clears that.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Mapping

from worker.domain.models import RoutePlan, Side, VenueQuote
from worker.domain.money import ZERO


class QuoteCache:
    """Latest snapshot per venue and symbol; an older snapshot never replaces a newer one."""

    def __init__(self) -> None:
        self._by_symbol: dict[str, dict[str, VenueQuote]] = {}
        # (venue, symbol) -> (the raw snapshot reserved against, {(side, price): qty}, view)
        self._reserved: dict[tuple[str, str], tuple[VenueQuote, dict[tuple[Side, Decimal], Decimal], VenueQuote | None]] = {}

    def update(self, quote: VenueQuote) -> bool:
        books = self._by_symbol.setdefault(quote.symbol, {})
        current = books.get(quote.venue)
        if current is not None and current.ts > quote.ts:
            return False
        books[quote.venue] = quote
        self._reserved.pop((quote.venue, quote.symbol), None)
        return True

    def get(self, venue: str, symbol: str) -> VenueQuote | None:
        """The raw snapshot, as the venue itself has it (what the paper venue matches on)."""
        return self._by_symbol.get(symbol, {}).get(venue)

    def books(self, symbol: str) -> Mapping[str, VenueQuote]:
        """Every venue's book for ``symbol`` less this worker's own reservations."""
        out = {}
        for venue, quote in self._by_symbol.get(symbol, {}).items():
            held = self._reserved.get((venue, symbol))
            out[venue] = quote if held is None else self._view(venue, symbol, held)
        return out

    def _view(self, venue: str, symbol: str, held) -> VenueQuote:
        raw, taken, view = held
        if view is None:
            def left(side: Side, levels):
                rest = ((p, q - taken.get((side, p), ZERO)) for p, q in levels)
                return [(p, q) for p, q in rest if q > 0]

            # model_construct: the raw quote was validated; only sizes shrink.
            view = VenueQuote.model_construct(venue=raw.venue, symbol=raw.symbol, ts=raw.ts,
                                              bids=left(Side.SELL, raw.bids), asks=left(Side.BUY, raw.asks))
            self._reserved[(venue, symbol)] = (raw, taken, view)
        return view

    def reserve(self, plan: RoutePlan) -> None:
        """Mark the levels each leg of ``plan`` will take as no longer available to plans."""
        for leg in plan.legs:
            raw = self.get(leg.provider, plan.symbol)
            if raw is None:
                continue
            key = (leg.provider, plan.symbol)
            held = self._reserved.get(key)
            if held is None or held[0] is not raw:
                held = (raw, {}, None)
            taken = held[1]
            left = leg.qty
            for price, size in raw.side_levels(plan.side):
                if left <= 0:
                    break
                free = size - taken.get((plan.side, price), ZERO)
                take = min(free, left)
                if take > 0:
                    taken[(plan.side, price)] = taken.get((plan.side, price), ZERO) + take
                    left -= take
            self._reserved[key] = (raw, taken, None)

    def all(self) -> list[VenueQuote]:
        return [q for books in self._by_symbol.values() for q in books.values()]

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_symbol.values())
