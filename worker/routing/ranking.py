"""The seed's venue ranking: top of book, fee-adjusted net price, best first."""

from __future__ import annotations

import decimal
from decimal import Decimal

from worker.domain.models import Side, VenueConfig, VenueQuote, VenueRoute, trusted
from worker.domain.money import BPS
from worker.routing.book import (
    SHARED_SIZE,
    PreparedSide,
    SideBook,
    bounded_put,
    forgotten_with_books,
    prepare_side,
    routing_context,
    snapshot_memo,
)

BPS_QUANTUM = Decimal("0.0001")


def net_price(side: Side, price: Decimal, taker_fee_bps: Decimal) -> Decimal:
    """What one unit really costs (buy) or yields (sell) after the taker fee."""
    fee = taker_fee_bps / BPS
    return price * (1 + fee) if side is Side.BUY else price * (1 - fee)


def venue_route(side: Side, venue: VenueConfig, quote: VenueQuote) -> VenueRoute | None:
    """The ranking entry of one venue, or ``None`` when its book has nothing on our side.

    It depends only on the quote and the venue's fees, so it is memoised with the snapshot:
    the worker routes many intents per snapshot. Calling it as a snapshot arrives prepares
    everything a plan needs of that venue's book (see :func:`venue_entry`).
    """
    return venue_entry(quote, venue, side)[3]


def venue_entry(quote: VenueQuote, venue: VenueConfig, side: Side) -> tuple:
    """(quote, venue, prepared side, ranking entry, ranking key, book without a limit) of
    ``venue`` on one side of ``quote``: what every plan asks of a venue's quote, in one lookup,
    memoised with the snapshot (:func:`~worker.routing.book.snapshot_memo`)."""
    entries = snapshot_memo(quote).entries
    key = (id(venue), side is Side.BUY)
    memo = entries.get(key)
    if memo is not None and memo[1] is venue:  # the entry holds the venue: its id stays its own
        return memo
    prep = prepare_side(quote, side, venue.taker_fee_bps)
    entry = _route_entry(prep, venue, quote)
    rkey = None if entry is None else rank_key(side, entry)
    return bounded_put(entries, key, (quote, venue, prep, entry, rkey, SideBook.of(venue, prep, len(prep.prices))))


#: The latest ranking entry per venue, symbol, side and fees, with the very price objects at
#: the top of each side of the quote it was made for: an entry depends on nothing else (not on
#: sizes). The quote cache's views of a book (less this worker's reservations) keep the book's
#: price objects, so every view whose top levels were only partly taken, on either side, shares
#: its book's entry. One entry per venue, symbol and side: memory follows the books, not the
#: snapshots; each holds its price objects, so their ids stay theirs while it is here.
_ROUTE_ENTRIES: dict[tuple, tuple] = forgotten_with_books({})


def _route_entry(prep: PreparedSide, venue: VenueConfig, quote: VenueQuote) -> VenueRoute | None:
    """:func:`venue_route` of ``quote`` on ``prep``'s side (prepared from ``quote`` or shared with it)."""
    bid = quote.bids[0][0] if quote.bids else None
    ask = quote.asks[0][0] if quote.asks else None
    context = routing_context(prep.digits)  # wider only for numbers beyond the input bounds
    # The fees as written, not by value: an entry prints them, and 10 == 10.0.
    key = (venue.name, quote.symbol, prep.side, str(venue.maker_fee_bps), str(venue.taker_fee_bps), context.prec)
    hit = _ROUTE_ENTRIES.get(key)
    if hit is not None and hit[0] is bid and hit[1] is ask:
        return hit[2]
    with decimal.localcontext(context):
        entry = _venue_route(prep.side, venue, quote)
    bounded_put(_ROUTE_ENTRIES, key, (bid, ask, entry), SHARED_SIZE)
    return entry


def _venue_route(side: Side, venue: VenueConfig, quote: VenueQuote) -> VenueRoute | None:
    levels = quote.side_levels(side)
    if not levels:
        return None
    bid = quote.bids[0][0] if quote.bids else None
    ask = quote.asks[0][0] if quote.asks else None
    spread = spread_bps = None
    if bid is not None and ask is not None:
        spread = ask - bid
        spread_bps = (spread / ((ask + bid) / 2) * BPS).quantize(BPS_QUANTUM)
    net = net_price(side, levels[0][0], venue.taker_fee_bps)
    return trusted(VenueRoute,
        provider=venue.name,
        symbol=quote.symbol,
        bid_price=bid,
        ask_price=ask,
        spread=spread,
        spread_bps=spread_bps,
        maker_fee_bps=venue.maker_fee_bps,
        taker_fee_bps=venue.taker_fee_bps,
        net_price=net,
        score=net,
    )


def rank_key(side: Side, route: VenueRoute) -> tuple[Decimal, str]:
    """Sort key of the ranking, best first: lowest score for buys, highest for sells; ties by
    venue name."""
    return (route.score if side is Side.BUY else route.score.copy_negate(), route.provider)


def rank(side: Side, routes: list[VenueRoute]) -> list[VenueRoute]:
    """``routes`` best first (see :func:`rank_key`)."""
    return sorted(routes, key=lambda r: rank_key(side, r))
