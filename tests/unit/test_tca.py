"""Transaction cost analysis: hand-computed scenarios, and TCA on results built by the service."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.support.scenarios import make_intent, make_quote
from worker.domain.models import ExecutionResult, Fill, VenueConfig
from worker.execution.executor import Executor
from worker.execution.tca import fees_in_quote, transaction_costs
from worker.routing.planner import route
from worker.service.intents import IntentService, Source
from worker.service.quotes import QuoteCache
from worker.execution.risk import RiskLimits
from worker.venues.paper import PaperVenue

D = Decimal
NOW = 1_000_000
VENUES = [VenueConfig(name="a", taker_fee_bps=D(10)), VenueConfig(name="b", taker_fee_bps=D(20))]
BOOKS = {
    "a": make_quote("a", bids=[(99, 5)], asks=[(100, 1), (101, 5)], ts=NOW - 5),
    "b": make_quote("b", bids=[(99.5, 5)], asks=[(100.5, 2), (103, 5)], ts=NOW),
}


def fill(price: str, qty: str, commission: str, provider: str, asset: str = "USD", alloc: int = 0) -> Fill:
    return Fill(price=D(price), qty=D(qty), commission=D(commission), commissionAsset=asset, allocId=alloc, provider=provider)


def test_buy_tca_equals_the_hand_computed_values():
    """Buy 2 BTC/USD; venue a charges 10 bps, b 20 bps.

    Books: a bids 99 x 5, asks 100 x 1, 101 x 5;  b bids 99.5 x 5, asks 100.5 x 2, 103 x 5.

    Arrival: best bid 99.5 (b), best ask 100 (a), mid (99.5 + 100) / 2 = 99.75.

    Plan (sor, fee-adjusted unit costs): a@100 -> 100.1, b@100.5 -> 100.701, a@101 -> 101.101.
    Takes 1 from a at 100 and 1 from b at 100.5: notional 200.5, fees 0.1 + 0.201 = 0.301,
    estimated_net = 200.801 / 2 = 100.4005.
    Single venue, 2 whole: a 1@100 + 1@101 = 201 x 1.001 = 201.201 -> 100.6005 (best);
                           b 2@100.5 = 201 x 1.002 = 201.402 -> 100.701 (worst).
    Estimated savings: worst (100.701 - 100.4005) / 100.701 = 29.8408 bps;
                       best (100.6005 - 100.4005) / 100.6005 = 19.8806 bps.

    Fills (b only half filled; round 2 took the rest from a's second level):
      a 1 @ 100 (fee 0.1), b 0.5 @ 100.5 (fee 0.1005), a 0.5 @ 101 (fee 0.0505).
    quote amount 100 + 50.25 + 50.5 = 200.75 -> vwap 100.375; fees 0.251;
    net_vwap (200.75 + 0.251) / 2 = 100.5005; fill rate 2 / 2 = 1.
    shortfall  (100.5005 - 99.75) / 99.75 x 10^4    = 75.2381 bps (cost)
    slippage   (100.5005 - 100.4005) / 100.4005     =  9.9601 bps (worse than the plan)
    vs worst   (100.701 - 100.5005) / 100.701       = 19.9104 bps (saved)
    vs best    (100.6005 - 100.5005) / 100.6005     =  9.9403 bps (saved)
    """
    intent = make_intent("2")
    plan = route(intent, BOOKS, VENUES)
    assert [(leg.provider, leg.qty) for leg in plan.legs] == [("a", D(1)), ("b", D(1))]
    fills = [fill("100", "1", "0.1", "a", alloc=0), fill("100.5", "0.5", "0.1005", "b", alloc=1),
             fill("101", "0.5", "0.0505", "a", alloc=2)]
    tca = transaction_costs(intent, [plan], fills, 37)
    assert (tca.arrival_bid, tca.arrival_ask, tca.arrival_mid, tca.arrival_ts) == (D("99.5"), D(100), D("99.75"), NOW)
    assert (tca.vwap, tca.fees, tca.net_vwap, tca.fill_rate) == (D("100.375"), D("0.251"), D("100.5005"), D(1))
    assert tca.estimated_net == D("100.4005")
    assert (plan.best_single_venue_net, plan.worst_single_venue_net) == (D("100.6005"), D("100.701"))
    assert tca.shortfall_bps == D("75.2381")
    assert tca.slippage_bps == D("9.9601")
    assert tca.estimated_savings_vs_worst_venue_bps == D("29.8408")
    assert tca.estimated_savings_vs_best_venue_bps == D("19.8806")
    assert tca.realized_savings_vs_worst_venue_bps == D("19.9104")
    assert tca.realized_savings_vs_best_venue_bps == D("9.9403")
    assert tca.time_to_fill_ms == 37
    wire = tca.model_dump(mode="json")
    assert wire["shortfall_bps"] == "75.2381" and wire["net_vwap"] == "100.5005"


def test_sell_tca_uses_the_same_signs_and_values_a_base_asset_commission():
    """Sell 2 on the same books: bids a 99 x 0.999 = 98.901, b 99.5 x 0.998 = 99.301.

    Plan: all 2 on b, estimated_net 99.301; single venue: best b 99.301, worst a 98.901;
    estimated saving vs worst (99.301 - 98.901) / 98.901 = 40.4445 bps, vs best 0.

    Fill: b 2 @ 99.4 (the book moved), commission 0.004 BTC, valued at 99.4 = 0.3976 USD.
    quote amount 198.8; net_vwap (198.8 - 0.3976) / 2 = 99.2012; mid 99.75.
    shortfall  (99.75 - 99.2012) / 99.75    = 55.0175 bps (cost: received less than mid)
    slippage   (99.301 - 99.2012) / 99.301  = 10.0503 bps (cost: received less than planned)
    vs worst   (99.2012 - 98.901) / 98.901  = 30.3536 bps (saved)
    vs best    (99.2012 - 99.301) / 99.301  = -10.0503 bps (lost against the best venue)
    """
    intent = make_intent("2", side="sell")
    plan = route(intent, BOOKS, VENUES)
    assert [(leg.provider, leg.qty) for leg in plan.legs] == [("b", D(2))]
    tca = transaction_costs(intent, [plan], [fill("99.4", "2", "0.004", "b", asset="BTC")], 12)
    assert (tca.fees, tca.net_vwap, tca.arrival_mid) == (D("0.3976"), D("99.2012"), D("99.75"))
    assert tca.estimated_savings_vs_worst_venue_bps == D("40.4445")
    assert tca.estimated_savings_vs_best_venue_bps == D(0)
    assert tca.shortfall_bps == D("55.0175")
    assert tca.slippage_bps == D("10.0503")
    assert tca.realized_savings_vs_worst_venue_bps == D("30.3536")
    assert tca.realized_savings_vs_best_venue_bps == D("-10.0503")


def test_nothing_filled_keeps_the_arrival_and_leaves_achieved_figures_null():
    intent = make_intent("2")
    plan = route(intent, BOOKS, VENUES)
    tca = transaction_costs(intent, [plan], [], 40)
    assert tca.arrival_mid == D("99.75") and tca.fill_rate == 0
    assert tca.vwap is None and tca.net_vwap is None and tca.shortfall_bps is None and tca.slippage_bps is None
    assert tca.realized_savings_vs_worst_venue_bps is None and tca.time_to_fill_ms is None


def test_a_commission_in_a_third_asset_cannot_be_valued():
    assert fees_in_quote([fill("100", "1", "0.01", "a", asset="BNB")], "BTC/USD") is None
    assert fees_in_quote([fill("100", "1", "0", "a", asset="BNB")], "BTC/USD") == 0
    intent = make_intent("1")
    tca = transaction_costs(intent, [route(intent, BOOKS, VENUES)], [fill("100", "1", "0.01", "a", asset="BNB")], 5)
    assert tca.vwap == D(100) and tca.fees is None and tca.net_vwap is None and tca.shortfall_bps is None


def _service() -> IntentService:
    quotes = QuoteCache()
    for q in BOOKS.values():
        quotes.update(q)
    adapters = {v.name: PaperVenue(v, lambda s, n=v.name: quotes.get(n, s)) for v in VENUES}
    clock = lambda: NOW  # noqa: E731
    return IntentService(VENUES, quotes, Executor(adapters, 1000, clock=clock), RiskLimits(), 2_000, clock=clock)


def test_an_execution_as_planned_realizes_exactly_the_estimate():
    out = asyncio.run(_service().handle(make_intent("2"), NOW, Source(0, 1)))
    result, plan = out.result, out.plans[0]
    assert result.status.value == "filled"
    tca = result.tca
    assert tca.net_vwap == plan.estimated_net and tca.slippage_bps == 0
    assert tca.realized_savings_vs_worst_venue_bps == plan.savings_vs_single_venue
    assert tca.realized_savings_vs_best_venue_bps == plan.savings_vs_best_single_venue_bps
    # The TCA survives the wire as strings and decodes back to the same Decimals.
    assert ExecutionResult.model_validate_json(result.model_dump_json()).tca == tca


def test_a_rejected_intent_has_no_tca():
    out = asyncio.run(_service().handle(make_intent("2", limit="50"), NOW, Source(0, 2)))
    assert out.result.status.value == "rejected" and out.result.tca is None


def test_observe_tca_exports_shortfall_per_venue_and_algorithm():
    from worker.observability import Metrics

    metrics = Metrics()
    service = _service()
    filled = asyncio.run(service.handle(make_intent("2"), NOW, Source(0, 3))).result
    rejected = asyncio.run(service.handle(make_intent("2", limit="50", intent_id="t-2"), NOW, Source(0, 4))).result
    metrics.observe_tca(filled)
    metrics.observe_tca(rejected)
    text = metrics.render().decode()
    # a: 1 @ 100 + 0.1 fee -> 100.1 vs mid 99.75 = 35.0877 bps; b: 1 @ 100.5 + 0.201 -> 100.701 = 95.3383 bps.
    # (Buckets reach below zero, a price improvement, so prometheus_client exports no _sum: check the buckets.)
    assert 'sor_shortfall_bps_bucket{algorithm="sor",le="25.0",venue="a"} 0.0' in text
    assert 'sor_shortfall_bps_bucket{algorithm="sor",le="50.0",venue="a"} 1.0' in text
    assert 'sor_shortfall_bps_bucket{algorithm="sor",le="50.0",venue="b"} 0.0' in text
    assert 'sor_shortfall_bps_bucket{algorithm="sor",le="100.0",venue="b"} 1.0' in text
    assert 'sor_shortfall_bps_count{algorithm="sor",venue="b"} 1.0' in text
    assert 'sor_intent_shortfall_bps_count{algorithm="sor"} 1.0' in text  # the rejected intent added nothing
    assert 'sor_realized_savings_bps_bucket{algorithm="sor",le="25.0"} 0.0' in text  # 29.8408
    assert 'sor_realized_savings_bps_bucket{algorithm="sor",le="50.0"} 1.0' in text
    assert 'sor_slippage_bps_bucket{algorithm="sor",le="-1.0"} 0.0' in text  # 0: executed as planned
    assert 'sor_slippage_bps_bucket{algorithm="sor",le="0.0"} 1.0' in text
    assert 'sor_fill_ratio_count{algorithm="sor"} 1.0' in text
