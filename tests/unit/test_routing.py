"""The routing core: the seed's numbers, the Binance SOR FAQ, invariants and optimality."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.oracles import brute_force, milp_optimum
from tests.support.scenarios import make_intent, make_quote, oracle_venues, random_market, small_scenarios
from worker.domain.models import Algorithm, ExclusionReason, Side, VenueConfig
from worker.routing.book import SideBook
from worker.routing.planner import route
from worker.routing.ranking import net_price, venue_route

D = Decimal

# The Binance SOR FAQ's books: three order books with interchangeable quote assets.
FAQ_VENUES = [VenueConfig(name=n) for n in ("BTCUSDT", "BTCUSDC", "BTCUSDP")]
FAQ_ASKS = {
    "BTCUSDT": make_quote("BTCUSDT", asks=[(30800, 3), (30500, 3)]),
    "BTCUSDC": make_quote("BTCUSDC", asks=[(30000, 1), (28000, 1)]),
    "BTCUSDP": make_quote("BTCUSDP", asks=[(35000, 1), (29000, 1)]),
}
FAQ_BIDS = {
    "BTCUSDT": make_quote("BTCUSDT", bids=[(29500, 5)]),
    "BTCUSDC": make_quote("BTCUSDC", bids=[(35000, 5), (30000, 5)]),
    "BTCUSDP": make_quote("BTCUSDP", bids=[(28000, 5)]),
}


def legs(plan):
    return {leg.provider: leg.qty for leg in plan.legs}


def fills(plan):
    """Per-level allocations, best price first, as the FAQ lists them."""
    out = []
    for leg in plan.legs:
        book = FAQ_ASKS if plan.side is Side.BUY else FAQ_BIDS
        left = leg.qty
        for price, size in book[leg.provider].side_levels(plan.side):
            take = min(left, size)
            if take > 0:
                out.append((price, take))
            left -= take
    return sorted(out, key=lambda f: f[0] * plan.side.sign)


# --- the seed -------------------------------------------------------------------------------


def test_seed_net_price_and_ranking_fields():
    venue = VenueConfig(name="binance", taker_fee_bps=D(10), maker_fee_bps=D(10))
    quote = make_quote("binance", asks=[("42155.00", 1)], bids=[("42150.00", 1)])
    r = venue_route(Side.BUY, venue, quote)
    assert r.net_price == D("42197.155") == r.score
    assert (r.bid_price, r.ask_price, r.spread) == (D("42150.00"), D("42155.00"), D("5.00"))
    assert r.spread_bps.quantize(D("0.01")) == D("1.19")
    assert net_price(Side.SELL, D("42150"), D(10)) == D("42107.85")


def test_ranking_is_best_first_for_both_sides():
    venues = [VenueConfig(name="a", taker_fee_bps=D(10)), VenueConfig(name="b", taker_fee_bps=D(0))]
    quotes = {"a": make_quote("a", asks=[(100, 1)], bids=[(99, 1)]), "b": make_quote("b", asks=[(100.05, 1)], bids=[(98.95, 1)])}
    buy = route(make_intent(1), quotes, venues)
    assert [r.provider for r in buy.routes] == ["b", "a"]  # 100.05 < 100.10 after fees
    sell = route(make_intent(1, side="sell"), quotes, venues)
    assert [r.provider for r in sell.routes] == ["b", "a"]  # receives 98.95 > 98.901 after fees


# --- the Binance SOR FAQ, exactly ----------------------------------------------------------


def test_faq_example_1_half_btc_goes_to_the_cheapest_book():
    plan = route(make_intent("0.5", limit=31000), FAQ_ASKS, FAQ_VENUES)
    assert legs(plan) == {"BTCUSDC": D("0.5")}
    assert fills(plan) == [(D(28000), D("0.5"))]
    assert plan.estimated_vwap * plan.planned_qty == D(14000)


def test_faq_example_2_five_btc_across_three_books():
    plan = route(make_intent(5, limit=31000), FAQ_ASKS, FAQ_VENUES)
    assert fills(plan) == [(D(28000), 1), (D(29000), 1), (D(30000), 1), (D(30500), 2)]
    assert sum(leg.estimated_notional for leg in plan.legs) == D(148000)
    assert plan.unfilled_qty == 0


def test_faq_example_3_market_buy_eleven_leaves_one_unfilled():
    plan = route(make_intent(11), FAQ_ASKS, FAQ_VENUES)
    assert fills(plan) == [(D(28000), 1), (D(29000), 1), (D(30000), 1), (D(30500), 3), (D(30800), 3), (D(35000), 1)]
    assert sum(leg.estimated_notional for leg in plan.legs) == D(305900)
    assert plan.planned_qty == 10 and plan.unfilled_qty == 1


def test_faq_example_4_sell_ten_takes_the_best_bids():
    plan = route(make_intent(10, side="sell", limit=29000), FAQ_BIDS, FAQ_VENUES)
    assert fills(plan) == [(D(35000), 5), (D(30000), 5)]
    assert sum(leg.estimated_notional for leg in plan.legs) == D(325000)


def test_limit_below_every_ask_excludes_with_reason():
    plan = route(make_intent(5, limit=27000), FAQ_ASKS, FAQ_VENUES)
    assert plan.legs == [] and plan.unfilled_qty == 5
    assert {e.reason for e in plan.excluded} == {ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT}


def test_exclusions_no_quote_stale_not_allowed_below_minimum():
    venues = [VenueConfig(name="fresh"), VenueConfig(name="old"), VenueConfig(name="none"),
              VenueConfig(name="tiny", min_notional=D(10**6)), VenueConfig(name="banned")]
    quotes = {n: make_quote(n, asks=[(100, 1)], ts=10_000) for n in ("fresh", "tiny", "banned")}
    quotes["old"] = make_quote("old", asks=[(1, 100)], ts=1_000)
    intent = make_intent(1, venues=["fresh", "old", "none", "tiny"])
    plan = route(intent, quotes, venues, now_ms=10_500, max_quote_age_ms=2_000)
    reasons = {e.venue: e.reason for e in plan.excluded}
    assert reasons == {"old": ExclusionReason.STALE, "none": ExclusionReason.NO_QUOTE,
                       "tiny": ExclusionReason.BELOW_MINIMUM, "banned": ExclusionReason.NOT_ALLOWED}
    assert legs(plan) == {"fresh": D(1)}


def test_plan_is_deterministic_and_serializes_decimals_as_strings():
    a = route(make_intent(5, limit=31000), FAQ_ASKS, FAQ_VENUES)
    b = route(make_intent(5, limit=31000), FAQ_ASKS, FAQ_VENUES)
    assert a.model_dump_json() == b.model_dump_json()
    data = a.model_dump(mode="json")
    assert data["plan_id"] == "plan:t-1:0"
    assert isinstance(data["legs"][0]["qty"], str) and isinstance(data["estimated_vwap"], str)


def test_json_numbers_are_accepted_exactly():
    q = make_intent(0.1)
    assert q.qty == D("0.1")


# --- lot rules where greedy + rounding is wrong --------------------------------------------


def test_min_notional_makes_the_greedy_choice_suboptimal():
    # Greedy wants a little of cheap "a" (below its 100 minimum) and the rest from "b". The
    # optimum either skips "a" or buys enough of it; here buying 1 of "a" at 99 is best.
    venues = [VenueConfig(name="a", step_size=D(1), min_notional=D(99)), VenueConfig(name="b", step_size=D("0.5"))]
    quotes = {"a": make_quote("a", asks=[(99, 1)]), "b": make_quote("b", asks=[(100, 10)])}
    plan = route(make_intent("1.5"), quotes, venues)
    assert legs(plan) == {"a": D(1), "b": D("0.5")}


def test_step_sizes_that_only_fit_together():
    # 1.0 is reachable only as 0.3 + 0.7: a cheaper-first greedy fills 0.9 on "a" and stops.
    venues = [VenueConfig(name="a", step_size=D("0.3")), VenueConfig(name="b", step_size=D("0.7"))]
    quotes = {"a": make_quote("a", asks=[(100, 3)]), "b": make_quote("b", asks=[(101, 3)])}
    plan = route(make_intent("1.0"), quotes, venues)
    assert legs(plan) == {"a": D("0.3"), "b": D("0.7")} and plan.unfilled_qty == 0


# --- properties -----------------------------------------------------------------------------


def assert_valid(plan, intent, venues, quotes):
    by_name = {v.name: v for v in venues}
    assert sum((leg.qty for leg in plan.legs), D(0)) + plan.unfilled_qty == plan.total_qty == intent.qty
    assert plan.unfilled_qty >= 0
    for leg in plan.legs:
        v = by_name[leg.provider]
        book = SideBook.build(v, quotes[leg.provider], intent.side, intent.limit_price)
        assert leg.qty > 0
        assert leg.qty % v.step_size == 0, "off the venue's step"
        assert leg.qty >= v.min_qty, "below min_qty"
        assert leg.estimated_notional >= v.min_notional, "below min_notional"
        assert leg.qty <= book.cum_qty[book.usable], "deeper than the book within limit"
        if intent.limit_price is not None:
            assert leg.worst_price * intent.side.sign <= intent.limit_price * intent.side.sign


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_scenarios())
def test_every_algorithm_emits_only_valid_legs(scenario):
    intent, venues, quotes = scenario
    for algorithm in Algorithm:
        plan = route(intent, quotes, venues, algorithm=algorithm)
        assert_valid(plan, intent, venues, quotes)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_scenarios())
def test_sor_equals_brute_force_optimum(scenario):
    intent, venues, quotes = scenario
    plan = route(intent, quotes, venues)
    assert plan.optimal
    ov = oracle_venues(intent, venues, quotes)
    if not ov:
        assert plan.legs == []
        return
    fill, cost = brute_force(ov, intent.qty, intent.side is Side.BUY)
    assert plan.planned_qty == fill
    plan_cost = sum((leg.estimated_notional + leg.estimated_fee * intent.side.sign) for leg in plan.legs) * intent.side.sign
    assert plan_cost == cost, "sor is not the exact optimum"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_scenarios())
def test_sor_never_worse_than_split_or_best(scenario):
    intent, venues, quotes = scenario
    def key(plan):
        cost = sum((leg.estimated_notional + leg.estimated_fee * intent.side.sign) for leg in plan.legs) * intent.side.sign
        return (-plan.planned_qty, cost)
    sor = key(route(intent, quotes, venues))
    for algorithm in (Algorithm.SPLIT, Algorithm.BEST):
        assert sor <= key(route(intent, quotes, venues, algorithm=algorithm))


@pytest.mark.parametrize("seed", range(12))
def test_sor_within_005_bps_of_milp_on_realistic_books(seed):
    rng = random.Random(seed)
    side = "buy" if seed % 2 == 0 else "sell"
    venues, quotes = random_market(rng, n_venues=5, n_levels=8, side=side, aligned=seed % 3 != 0)
    qty = D(str(round(rng.uniform(0.05, 4), 5)))
    limit = None if seed % 4 else (42_015 if side == "buy" else 41_985)
    intent = make_intent(qty, side=side, limit=limit)
    plan = route(intent, quotes, venues)
    assert plan.optimal
    assert_valid(plan, intent, venues, quotes)
    fill, cost = milp_optimum(oracle_venues(intent, venues, quotes), qty, side == "buy")
    assert abs(float(plan.planned_qty) - fill) < 1e-6  # HiGHS feasibility tolerance
    plan_cost = float(sum((leg.estimated_notional + leg.estimated_fee * intent.side.sign) for leg in plan.legs) * intent.side.sign)
    if fill > 0:
        assert abs(plan_cost - cost) / abs(cost) * 1e4 <= 0.05
