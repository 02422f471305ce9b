"""The seed's venue ranking: top of book, fee-adjusted net price, best first."""

from __future__ import annotations

import decimal
from decimal import Decimal

from worker.domain.models import Side, VenueConfig, VenueQuote, VenueRoute, trusted
from worker.domain.money import BPS
from worker.routing.book import (
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
    if prep.quote is quote:
        entry = prepared_route(prep, venue)
    else:  # a side shared with another quote (prepare_side): the top of book is this quote's
        entry = _view_route(prep, venue, quote)
    rkey = None if entry is None else rank_key(side, entry)
    return bounded_put(entries, key, (quote, venue, prep, entry, rkey, SideBook.of(venue, prep, len(prep.prices))))


def prepared_route(prep: PreparedSide, venue: VenueConfig) -> VenueRoute | None:
    """:func:`venue_route` of an already prepared side (the quote and side are the prep's)."""
    key = ("route", venue.name, venue.maker_fee_bps)
    try:
        return prep.derived[key]
    except KeyError:
        pass
    with decimal.localcontext(routing_context(prep.digits)):
        return bounded_put(prep.derived, key, _venue_route(prep.side, venue, prep.quote))


#: Ranking entries of the quote cache's views (books less this worker's reservations), by the
#: venue and the very price objects at the top of each side: an entry depends on nothing else,
#: and a view keeps its book's price objects, so a view whose top levels were only partly taken
#: reuses its book's entry. Each value holds those objects, so their ids stay theirs.
_VIEW_ROUTES: dict[tuple, tuple] = forgotten_with_books({})


def _view_route(prep: PreparedSide, venue: VenueConfig, quote: VenueQuote) -> VenueRoute | None:
    bid = quote.bids[0][0] if quote.bids else None
    ask = quote.asks[0][0] if quote.asks else None
    key = (venue.name, quote.symbol, prep.side, venue.maker_fee_bps, venue.taker_fee_bps, id(bid), id(ask))
    hit = _VIEW_ROUTES.get(key)
    if hit is not None and hit[0] is bid and hit[1] is ask:
        return hit[2]
    with decimal.localcontext(routing_context(prep.digits)):
        entry = _venue_route(prep.side, venue, quote)
    if len(_VIEW_ROUTES) >= 4096:
        _VIEW_ROUTES.clear()
    _VIEW_ROUTES[key] = (bid, ask, entry)
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
