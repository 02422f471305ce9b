"""The quote cache: the latest book per ``venue:symbol``, fed from the quotes topic.

It also remembers what this worker's own plans took from each book, so concurrent intents
do not all plan to take the same liquidity; a snapshot newer than a leg's acknowledgement
releases what that leg took.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Mapping

from worker.domain.models import RoutePlan, Side, VenueQuote
from worker.domain.money import ZERO


@dataclass(eq=False)
class Reservation:
    """What one leg of this worker's plans takes from a venue's book.

    Held against every snapshot until one arrives that is newer than the leg's
    acknowledgement (``release_after_ts``): a snapshot published before our fill still
    shows the liquidity we took, so it must not release the reservation.
    """

    venue: str
    symbol: str
    side: Side
    levels: dict[Decimal, Decimal]  # price -> quantity taken
    release_after_ts: int | None = None  # None: the leg is not acknowledged yet


class QuoteCache:
    """Latest snapshot per venue and symbol; an older snapshot never replaces a newer one."""

    def __init__(self) -> None:
        self._by_symbol: dict[str, dict[str, VenueQuote]] = {}
        self._held: dict[tuple[str, str], list[Reservation]] = {}
        self._views: dict[tuple[str, str], VenueQuote] = {}  # snapshot less reservations, until either changes

    def update(self, quote: VenueQuote) -> bool:
        books = self._by_symbol.setdefault(quote.symbol, {})
        current = books.get(quote.venue)
        if not quote.replaces(current):
            return False
        books[quote.venue] = quote
        key = (quote.venue, quote.symbol)
        self._views.pop(key, None)
        held = self._held.get(key)
        if held:
            kept = [r for r in held if r.release_after_ts is None or quote.ts <= r.release_after_ts]
            if kept:
                self._held[key] = kept
            else:
                del self._held[key]
        return True

    def get(self, venue: str, symbol: str) -> VenueQuote | None:
        """The raw snapshot, as the venue itself has it (what the paper venue matches on)."""
        return self._by_symbol.get(symbol, {}).get(venue)

    def books(self, symbol: str) -> Mapping[str, VenueQuote]:
        """Every venue's book for ``symbol`` less this worker's own reservations."""
        out = {}
        for venue, quote in self._by_symbol.get(symbol, {}).items():
            out[venue] = quote if (venue, symbol) not in self._held else self._view(venue, symbol, quote)
        return out

    def _view(self, venue: str, symbol: str, raw: VenueQuote) -> VenueQuote:
        view = self._views.get((venue, symbol))
        if view is None:
            taken: dict[tuple[Side, Decimal], Decimal] = {}
            for r in self._held[(venue, symbol)]:
                for price, qty in r.levels.items():
                    taken[(r.side, price)] = taken.get((r.side, price), ZERO) + qty

            def left(side: Side, levels):
                rest = ((p, q - taken.get((side, p), ZERO)) for p, q in levels)
                return [(p, q) for p, q in rest if q > 0]

            # model_construct: the raw quote was validated; only sizes shrink.
            view = VenueQuote.model_construct(venue=raw.venue, symbol=raw.symbol, ts=raw.ts,
                                              bids=left(Side.SELL, raw.bids), asks=left(Side.BUY, raw.asks))
            self._views[(venue, symbol)] = view
        return view

    def reserve(self, plan: RoutePlan) -> list[Reservation]:
        """Mark the levels each leg of ``plan`` will take as no longer available to plans;
        returns one reservation per leg, to :meth:`settle` once the venues answered."""
        out = []
        books = self.books(plan.symbol)
        for leg in plan.legs:
            view = books.get(leg.provider)
            if view is None:
                continue
            taken: dict[Decimal, Decimal] = {}
            left = leg.qty
            for price, size in view.side_levels(plan.side):
                if left <= 0:
                    break
                take = min(size, left)
                taken[price] = take
                left -= take
            reservation = Reservation(leg.provider, plan.symbol, plan.side, taken)
            self._held.setdefault((leg.provider, plan.symbol), []).append(reservation)
            self._views.pop((leg.provider, plan.symbol), None)
            out.append(reservation)
        return out

    def settle(self, reservations: list[Reservation], acknowledged_ms: int) -> None:
        """The legs were answered at ``acknowledged_ms``: hold their takes until a snapshot
        newer than that arrives."""
        for r in reservations:
            r.release_after_ts = acknowledged_ms

    def release(self, reservations: list[Reservation]) -> None:
        """Drop reservations at once (the legs were never placed)."""
        for r in reservations:
            held = self._held.get((r.venue, r.symbol))
            if held and r in held:
                held.remove(r)
                self._views.pop((r.venue, r.symbol), None)
                if not held:
                    del self._held[(r.venue, r.symbol)]

    def all(self) -> list[VenueQuote]:
        return [q for books in self._by_symbol.values() for q in books.values()]

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_symbol.values())
