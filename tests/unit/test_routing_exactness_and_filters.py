"""The routing core where a review found a wrong plan: prefix sums beyond 60 digits are redone
exactly (the flag that says so was read from the wrong context), and, a documented known limit,
a sell leg's min_notional as the venue checks it (at the order's limit price)."""

from __future__ import annotations

import decimal
from decimal import Decimal

import pytest

from tests.support.scenarios import make_intent, make_quote
from worker.domain.models import Side, VenueConfig
from worker.routing.book import _prepare, forget_prepared_books
from worker.routing.planner import route
from worker.venues.paper_server import PaperVenueServer

D = Decimal


@pytest.mark.xfail(strict=True, reason="known limit (README): a sell leg's min_notional is checked on its walked "
                   "notional, the venue checks qty x its limit (worst) price; such a leg is refused and re-routed")
def test_a_multi_level_sell_leg_passes_the_venues_notional_filter():
    """worker/routing/book.py:_smallest_order (and the planner's legs): ``min_notional`` is
    checked against the leg's *gross walked notional* (sum of price x qty over the bids it
    takes), but the leg is sent as an IOC LIMIT order priced at ``worst_price``
    (executor.py: ``LegOrder(..., leg.qty, leg.worst_price)``), and the venue's NOTIONAL
    filter checks ``qty x order price`` (Binance, and this project's own ``sor paper-venue``:
    ``PaperVenueServer._filters``). For a buy the worst price is the highest, so that is
    harmless; for a sell it is the *lowest* bid, so a sell leg spanning two levels can meet
    the router's minimum and still be refused by the venue (-1013 Filter failure: NOTIONAL).

    Consequence: the router plans a sell leg the venue refuses; the liquidity it counted on
    is lost for the round (and the venue is marked failed for the re-route)."""
    forget_prepared_books()
    venue = VenueConfig(name="a", step_size=D(1), min_notional=D(120))
    quotes = {"a": make_quote("a", bids=[(100, 1), (50, 1)])}
    plan = route(make_intent(2, side="sell"), quotes, [venue])
    assert plan.legs, "the router plans a leg (notional 150 >= 120)"
    for leg in plan.legs:
        # What the venue (this project's Binance emulation) answers to the order the leg becomes.
        assert PaperVenueServer._filters(None, venue, leg.qty, leg.worst_price) is None, (
            f"leg {leg.qty} @ limit {leg.worst_price}: notional {leg.qty * leg.worst_price} < min_notional "
            f"{venue.min_notional} at the venue, though the plan says {leg.estimated_notional}")
    forget_prepared_books()


def test_prefix_sums_beyond_60_digits_are_recomputed_exactly():
    """worker/routing/book.py:_prepare / _prefix_sums: ``_prepare`` clears ``ctx.flags`` and
    sums the book inside ``decimal.localcontext(ctx)``, then checks ``ctx.flags[Rounded]`` to
    redo the sums in a context wide enough (``_digits_needed``). But ``localcontext(ctx)``
    installs a *copy* of ``ctx``: the Rounded flag is raised on the copy, never on ``ctx``, so
    the wide recomputation never runs and ``cum_notional`` keeps sums rounded to 60 digits.

    Within the validated input bounds (|x| < 1e18, 18 places) a price x size has up to 72
    digits. Consequence: a leg spanning two levels reports an ``estimated_notional`` (and so
    ``estimated_fee``, VWAPs, net and savings) that is not the exact sum, although the README
    promises exact plans with a wider context for such books."""
    forget_prepared_books()
    venue = VenueConfig(name="a", step_size=D("1E-18"), taker_fee_bps=D(10))
    p1, s1 = D("123456789012345678.123456789012345678"), D("987654321098765432.987654321098765432")
    p2 = D("123456789012345679")
    quotes = {"a": make_quote("a", asks=[(p1, s1), (p2, D(5))])}
    with decimal.localcontext(decimal.Context(prec=200)):
        qty = s1 + 1
        exact_notional = p1 * s1 + p2 * 1
        exact_fee = exact_notional * D(10) / D(10_000)
        exact_cum = p1 * s1
    prep = _prepare(quotes["a"], Side.BUY, D(10))
    plan = route(make_intent(qty), quotes, [venue])
    assert [leg.qty for leg in plan.legs] == [qty]
    leg = plan.legs[0]
    assert prep.cum_notional[1] == exact_cum, f"prefix sum rounded: {prep.cum_notional[1]} != {exact_cum}"
    assert leg.estimated_notional == exact_notional, f"{leg.estimated_notional} != {exact_notional}"
    assert leg.estimated_fee == exact_fee
    forget_prepared_books()
