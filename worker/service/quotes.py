"""The quote cache: the latest book per ``venue:symbol``, fed from the quotes topic.

It also remembers what this worker's own plans took from each snapshot, so concurrent
intents do not all plan to take the same liquidity; a new snapshot of a book clears that.

It is bounded: only configured venues are kept, each book side keeps at most
``max_levels`` levels, and a snapshot dated in the future (beyond the clock skew allowed)
is refused, since it would shadow every newer real snapshot of its book.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Callable, Collection, Mapping

from worker.domain.clock import now_ms
from worker.domain.errors import InputError
from worker.domain.models import RoutePlan, Side, VenueQuote
from worker.domain.money import ZERO

#: Why a snapshot was not cached (the label values of the drop counter: a fixed set).
UNKNOWN_VENUE = "unknown_venue"
FUTURE = "future"


class QuoteCache:
    """Latest snapshot per venue and symbol; an older snapshot never replaces a newer one.

    ``venues``: the names accepted (``None``: any, for tools that read every book).
    ``on_drop(reason)`` counts what was refused, without a series per venue or symbol.
    """

    def __init__(self, venues: Collection[str] | None = None, *, max_levels: int | None = None,
                 max_skew_ms: int | None = None, clock: Callable[[], int] = now_ms,
                 on_drop: Callable[[str], None] = lambda reason: None) -> None:
        self.venues = frozenset(venues) if venues is not None else None
        self.max_levels = max_levels
        self.max_skew_ms = max_skew_ms
        self.clock = clock
        self.on_drop = on_drop
        self._by_symbol: dict[str, dict[str, VenueQuote]] = {}
        # (venue, symbol) -> levels dropped from the cached snapshot by the depth cap
        self._capped: dict[tuple[str, str], int] = {}
        # (venue, symbol) -> (the raw snapshot reserved against, {(side, price): qty}, view)
        self._reserved: dict[tuple[str, str], tuple[VenueQuote, dict[tuple[Side, Decimal], Decimal], VenueQuote | None]] = {}

    def update(self, quote: VenueQuote) -> bool:
        """Cache ``quote`` if it is the newest of its book; ``False`` if it is older or its
        venue is not configured. Raises :class:`InputError` (field ``ts``) for a snapshot
        dated in the future beyond ``max_skew_ms``."""
        if self.venues is not None and quote.venue not in self.venues:
            self.on_drop(UNKNOWN_VENUE)
            return False
        if self.max_skew_ms is not None:
            ahead = quote.ts - self.clock()
            if ahead > self.max_skew_ms:
                self.on_drop(FUTURE)
                raise InputError(f"ts: {quote.ts} is {ahead} ms in the future (max clock skew {self.max_skew_ms} ms)")
        books = self._by_symbol.setdefault(quote.symbol, {})
        current = books.get(quote.venue)
        if current is not None and current.ts > quote.ts:
            return False
        quote, dropped = self._capped_copy(quote)
        books[quote.venue] = quote
        key = (quote.venue, quote.symbol)
        if dropped:
            self._capped[key] = dropped
        else:
            self._capped.pop(key, None)
        self._reserved.pop(key, None)
        return True

    def _capped_copy(self, quote: VenueQuote) -> tuple[VenueQuote, int]:
        cap = self.max_levels
        if cap is None or (len(quote.bids) <= cap and len(quote.asks) <= cap):
            return quote, 0
        dropped = max(0, len(quote.bids) - cap) + max(0, len(quote.asks) - cap)
        # Levels are best first (validated): the cap keeps the best ``cap`` of each side.
        return quote.model_copy(update={"bids": quote.bids[:cap], "asks": quote.asks[:cap]}), dropped

    def capped(self, symbol: str) -> dict[str, int]:
        """Venues whose cached ``symbol`` book lost levels to the depth cap, and how many."""
        return {venue: n for (venue, sym), n in self._capped.items() if sym == symbol}

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
