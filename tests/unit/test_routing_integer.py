"""The integer hot path gives exactly the plans of the all-``Decimal`` router it replaced,
in any ambient decimal context, and never raises on extreme but valid numbers."""

from __future__ import annotations

import decimal
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.adversarial import instances as adversarial_instances
from tests.support.oracles import legacy_route
from tests.support.scenarios import (
    make_intent,
    make_quote,
    random_market,
    small_scenarios,
    unchecked_intent,
    unchecked_quote,
    unchecked_venue,
)
from worker.domain.models import Algorithm, Side, VenueConfig
from worker.routing.book import ROUTING_CONTEXT, forget_prepared_books
from worker.routing.planner import route
from worker.routing.ranking import venue_route

D = Decimal


def same_plan(intent, venues, quotes, **kw) -> None:
    new = route(intent, quotes, venues, **kw).model_dump_json()
    old = legacy_route(intent, quotes, venues, **kw).model_dump_json()
    assert new == old


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_scenarios(max_venues=4, max_levels=4))
def test_every_algorithm_equals_the_decimal_router_on_small_books(scenario):
    intent, venues, quotes = scenario
    for algorithm in Algorithm:
        same_plan(intent, venues, quotes, algorithm=algorithm)


@pytest.mark.parametrize("seed", range(30))
def test_every_algorithm_equals_the_decimal_router_on_realistic_books(seed):
    rng = random.Random(seed)
    side = "buy" if seed % 2 == 0 else "sell"
    venues, quotes = random_market(rng, n_venues=10, n_levels=50, side=side, aligned=seed % 3 != 0)
    qty = D(str(round(rng.uniform(0.05, 20), 5)))
    limit = None if seed % 4 else (42_015 if side == "buy" else 41_985)
    for algorithm in Algorithm:
        same_plan(make_intent(qty, side=side, limit=limit), venues, quotes, algorithm=algorithm)


def test_sor_equals_the_decimal_router_on_adversarial_books():
    # Coprime lot steps: deep searches. Both searches are the same, node for node.
    for intent, venues, quotes in adversarial_instances(25, seed=3):
        same_plan(intent, venues, quotes)


# --- the node budget ----------------------------------------------------------------------


def test_node_limit_is_a_parameter_of_route():
    intent, venues, quotes = adversarial_instances(1, seed=43)[0]
    full = route(intent, quotes, venues)
    assert full.optimal
    cut = route(intent, quotes, venues, node_limit=1)
    assert not cut.optimal  # the search was stopped: the plan says so
    assert cut.legs and sum((leg.qty for leg in cut.legs), D(0)) + cut.unfilled_qty == intent.qty
    assert cut.planned_qty <= full.planned_qty


def test_adversarial_coprime_steps_finish_within_the_default_budget():
    # Branching on the coarsest step first: the old rule left 10 of these 400 unproven.
    assert all(route(i, q, v).optimal for i, v, q in adversarial_instances(60, seed=11))


# --- one decimal context -------------------------------------------------------------------

# Sums of these products need ~40 digits: a 28-digit context rounds them.
LONG_VENUES = [VenueConfig(name="a", taker_fee_bps=D("0.5"), step_size=D("1e-18")),
               VenueConfig(name="b", taker_fee_bps=D("2.25"), step_size=D("1e-18"))]


def long_quotes():
    return {
        "a": make_quote("a", asks=[("42155.123456789012345", "0.123456789012345678"), ("42156.987654321098765", "1.987654321098765432")]),
        "b": make_quote("b", asks=[("42155.5", "0.333333333333333333"), ("42157.111111111111111", "2.5")]),
    }


def test_books_prewarmed_in_the_default_context_plan_like_sor_plan():
    intent = make_intent("2.5")
    quotes = long_quotes()
    with decimal.localcontext(decimal.Context()):  # the worker's prewarm: Python's 28 digits
        assert decimal.getcontext().prec == 28
        for venue in LONG_VENUES:
            for side in Side:
                venue_route(side, venue, quotes[venue.name])
    with decimal.localcontext(decimal.Context(prec=60)):  # the planner's
        worker_plan = route(intent, quotes, LONG_VENUES)
    cli_plan = route(intent, long_quotes(), LONG_VENUES)  # `sor plan`: fresh objects, prepared on demand
    assert worker_plan.model_dump_json() == cli_plan.model_dump_json()
    assert worker_plan.estimated_fees == cli_plan.estimated_fees
    assert len(worker_plan.legs) == 2


def test_routing_ignores_the_ambient_context():
    intent = make_intent("2.1", limit="42157")
    reference = route(intent, long_quotes(), LONG_VENUES).model_dump_json()
    for ctx in (decimal.Context(prec=3), decimal.Context(prec=28, rounding=decimal.ROUND_DOWN),
                decimal.Context(prec=200, traps=[decimal.Inexact, decimal.Rounded])):
        forget_prepared_books()
        with decimal.localcontext(ctx):
            assert route(intent, long_quotes(), LONG_VENUES).model_dump_json() == reference
    assert ROUTING_CONTEXT.prec == 60


# --- extreme but valid numbers ---------------------------------------------------------------


def valid(plan, intent) -> None:
    with decimal.localcontext(decimal.Context(prec=200, traps=[decimal.Inexact])):  # checked exactly
        assert sum((leg.qty for leg in plan.legs), D(0)) + plan.unfilled_qty == plan.total_qty == intent.qty
    assert plan.unfilled_qty >= 0


@pytest.mark.parametrize("algorithm", list(Algorithm))
@pytest.mark.parametrize("case", ["qty 1e70", "level 1e56", "step 1e-61", "min_qty 1e70", "ask 1e-70", "sell fee 10000"])
def test_extreme_numbers_never_raise(case, algorithm):
    side = "sell" if case == "sell fee 10000" else "buy"
    qty, venue, asks = D("2"), unchecked_venue("x", step_size=D("1e-8")), [(D(42155), D(3))]
    if case == "qty 1e70":
        qty = D("1e70")
    elif case == "level 1e56":
        asks = [(D(42155), D("1e56"))]
    elif case == "step 1e-61":
        venue = unchecked_venue("x", step_size=D("1e-61"))
    elif case == "min_qty 1e70":
        venue = unchecked_venue("x", min_qty=D("1e70"))
    elif case == "ask 1e-70":
        asks = [(D("1e-70"), D(1)), (D(42155), D(3))]
    else:
        venue = unchecked_venue("x", taker_fee_bps=D(10_000))
    other = VenueConfig(name="y", step_size=D("0.001"))
    quotes = {"x": unchecked_quote("x", asks=asks, bids=asks), "y": make_quote("y", asks=[(42160, 5)], bids=[(42150, 5)])}
    intent = unchecked_intent(qty, side=side, algorithm=algorithm.value)
    plan = route(intent, quotes, [venue, other])
    valid(plan, intent)
    if case == "qty 1e70" and algorithm is Algorithm.SOR:  # all visible depth planned, the rest unfilled
        assert plan.planned_qty == 8
        assert plan.unfilled_qty == D("9999999999999999999999999999999999999999999999999999999999999999999992")
    if case == "min_qty 1e70":
        assert "x" not in {leg.provider for leg in plan.legs}
    plan.model_dump_json()


def wide_decimals(lo: int, hi: int):
    return st.builds(lambda m, e: D(m).scaleb(e), st.integers(1, 10**6), st.integers(lo, hi))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_route_never_raises_on_wide_magnitudes(data):
    side = data.draw(st.sampled_from(["buy", "sell"]))
    venues, quotes = [], {}
    for i in range(data.draw(st.integers(1, 3))):
        name = f"v{i}"
        venues.append(unchecked_venue(
            name, step_size=data.draw(wide_decimals(-40, 5)), min_qty=data.draw(st.just(D(0)) | wide_decimals(-40, 40)),
            min_notional=data.draw(st.just(D(0)) | wide_decimals(-20, 40)),
            taker_fee_bps=data.draw(st.sampled_from([D(0), D("0.01"), D(25), D(9999)])),
        ))
        levels = [(data.draw(wide_decimals(-30, 30)), data.draw(wide_decimals(-30, 30))) for _ in range(data.draw(st.integers(1, 4)))]
        quotes[name] = unchecked_quote(name, asks=levels, bids=levels)
    intent = unchecked_intent(data.draw(wide_decimals(-30, 40)), side=side)
    for algorithm in Algorithm:
        plan = route(intent, quotes, venues, algorithm=algorithm, node_limit=200)
        valid(plan, intent)
        plan.model_dump_json()
