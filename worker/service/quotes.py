"""The quote cache: the latest book per ``venue:symbol``, fed from the quotes topic.

It also remembers what this worker's own plans took from each book, so concurrent intents
do not all plan to take the same liquidity; a snapshot newer than a leg's acknowledgement
releases what that leg took.

It is bounded: only configured venues are kept, each book side keeps at most
``max_levels`` levels, and a snapshot dated in the future (beyond the clock skew allowed)
is refused, since it would shadow every newer real snapshot of its book.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Collection, Mapping

from worker.domain.clock import now_ms
from worker.domain.errors import InputError
from worker.domain.models import RoutePlan, Side, VenueQuote
from worker.domain.money import MONEY_CONTEXT, ZERO

#: Why a snapshot was not cached (the label values of the drop counter: a fixed set).
UNKNOWN_VENUE = "unknown_venue"
FUTURE = "future"


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
        self._held: dict[tuple[str, str], list[Reservation]] = {}
        # (venue, symbol) -> side -> price -> quantity the held reservations take, summed in
        # reservation order (kept up to date, so a view costs one pass over the book).
        self._taken: dict[tuple[str, str], dict[Side, dict[Decimal, Decimal]]] = {}
        self._views: dict[tuple[str, str], VenueQuote] = {}  # snapshot less reservations, until either changes
        # (venue, symbol) -> levels dropped from the cached snapshot by the depth cap
        self._capped: dict[tuple[str, str], int] = {}

    def update(self, quote: VenueQuote, prepare: Callable[[VenueQuote], None] | None = None) -> bool:
        """Cache ``quote`` if it is the newest of its book; ``False`` if it is older or its
        venue is not configured. Raises :class:`InputError` (field ``ts``) for a snapshot
        dated in the future beyond ``max_skew_ms``.

        ``prepare`` (routing's prewarm) gets the snapshot as it will be cached (depth-capped)
        before it replaces the current one: if it raises, the current one stays."""
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
        if not quote.replaces(current):
            return False
        quote, dropped = self._capped_copy(quote)
        if prepare is not None:
            prepare(quote)
        books[quote.venue] = quote
        key = (quote.venue, quote.symbol)
        if dropped:
            self._capped[key] = dropped
        else:
            self._capped.pop(key, None)
        self._views.pop(key, None)
        held = self._held.get(key)
        if held:
            kept = [r for r in held if r.release_after_ts is None or quote.ts <= r.release_after_ts]
            if kept:
                self._held[key] = kept
            else:
                del self._held[key]
            self._retake(key)
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
            out[venue] = quote if (venue, symbol) not in self._held else self._view(venue, symbol, quote)
        return out

    def _view(self, venue: str, symbol: str, raw: VenueQuote) -> VenueQuote:
        view = self._views.get((venue, symbol))
        if view is None:
            taken = self._taken.get((venue, symbol), {})
            # model_construct: the raw quote was validated; only sizes shrink. A side nothing was
            # taken from keeps the raw list itself: routing then reuses what it prepared of it.
            view = VenueQuote.model_construct(venue=raw.venue, symbol=raw.symbol, ts=raw.ts,
                                              bids=_less(raw.bids, taken.get(Side.SELL)), asks=_less(raw.asks, taken.get(Side.BUY)))
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
            levels = view.side_levels(plan.side)
            taken: dict[Decimal, Decimal] = {}
            left = leg.qty
            k = 0  # levels the leg reaches
            key = (leg.provider, plan.symbol)
            totals = self._taken.setdefault(key, {}).setdefault(plan.side, {})
            with decimal.localcontext(MONEY_CONTEXT):  # exact: a view never shows a rounded size
                while left > 0 and k < len(levels):
                    price, size = levels[k]
                    take = min(size, left)
                    taken[price] = take
                    left -= take
                    k += 1
                for price, qty in taken.items():
                    totals[price] = totals.get(price, ZERO) + qty
                # The next view is this one less the leg: the book from the first level the leg
                # leaves something of (what _less(raw, totals) gives, without walking the book again).
                rest = levels[k:]
                if k and take < size:
                    rest = [(price, size - take), *rest]
            reservation = Reservation(leg.provider, plan.symbol, plan.side, taken)
            self._held.setdefault(key, []).append(reservation)
            bids, asks = (view.bids, rest) if plan.side is Side.BUY else (rest, view.asks)
            self._views[key] = VenueQuote.model_construct(venue=view.venue, symbol=view.symbol, ts=view.ts, bids=bids, asks=asks)
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
                self._retake((r.venue, r.symbol))

    def _retake(self, key: tuple[str, str]) -> None:
        """Sum what the held reservations of ``key`` take again, in reservation order."""
        taken: dict[Side, dict[Decimal, Decimal]] = {}
        with decimal.localcontext(MONEY_CONTEXT):
            for r in self._held.get(key, ()):
                totals = taken.setdefault(r.side, {})
                for price, qty in r.levels.items():
                    totals[price] = totals.get(price, ZERO) + qty
        if taken:
            self._taken[key] = taken
        else:
            self._taken.pop(key, None)

    def all(self) -> list[VenueQuote]:
        return [q for books in self._by_symbol.values() for q in books.values()]

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_symbol.values())


def _less(levels: list, taken: Mapping[Decimal, Decimal] | None) -> list:
    """``levels`` less the quantities ``taken`` at some of their prices (levels emptied are
    dropped); ``levels`` itself when nothing is taken from them."""
    if not taken:
        return levels
    out = []
    left = len(taken)  # prices still to meet: past the last of them, the levels are the raw ones
    with decimal.localcontext(MONEY_CONTEXT):  # exact, as reserve() computes the same view
        for i, level in enumerate(levels):
            price, qty = level
            take = taken.get(price)
            if take is None:
                out.append(level)  # the raw level itself: routing derives a view from the raw book's sums
                continue
            if qty > take:
                out.append((price, qty - take))
            left -= 1
            if not left:
                return out + levels[i + 1:]
    return out
