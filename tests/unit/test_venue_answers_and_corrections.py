"""The execution path against venue answers a review found mishandled: a Binance order query
without fills (trades come from myTrades), an order still working (PARTIALLY_FILLED, NEW) is
never settled or re-routed, a sweep that finds it still working keeps sweeping, a correction
never counts a trade twice, a cancelled half-open probe releases its venue, -2010 is a
duplicate only when it says so, and a 4xx without a body is a leg outcome. Each test failed
on the code before its fix; each docstring names the mechanism and the consequence."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

from aiohttp import web

from tests.support.fakes import MemoryJournal
from tests.support.scenarios import make_intent, make_quote
from tests.unit.test_ccxt_venue import BOOK, CREDS, PAPER, BinanceShapedQueries, paper_venue
from worker.domain.models import ExecutionStatus, LegStatus, VenueConfig
from worker.execution.breaker import CircuitBreakers
from worker.execution.executor import Executor, build_result
from worker.execution.risk import RiskLimits
from worker.routing.planner import route
from worker.service.intents import IntentService, Outcome
from worker.service.quotes import QuoteCache
from worker.venues.base import OrderReport, VenueError, VenueTrade
from worker.venues.ccxt_venue import _status as ccxt_status
from worker.venues.http import HttpVenue
from worker.venues.paper import PaperVenue
from worker.venues.paper_server import PaperVenueServer

D = Decimal
NOW = 1_000_000


# --- helpers -------------------------------------------------------------------------------------

class ScriptedVenue:
    """A venue whose ``place`` answer is lost (the order reached the venue) and whose
    ``query`` answers according to ``state``: ``down`` (unreachable), or a callable of the
    client order id returning the venue's report."""

    def __init__(self, name: str):
        self.name = name
        self.placed: list[str] = []
        self.state = "down"

    async def place(self, order):
        self.placed.append(order.client_order_id)
        raise VenueError(f"{self.name}: HTTP 503", unknown=True)

    async def query(self, client_order_id):
        if self.state == "down":
            raise VenueError(f"{self.name}: connection refused", unknown=True)
        return self.state(client_order_id)

    async def cancel(self, client_order_id):
        return None

    async def start(self):
        return None

    async def close(self):
        return None


def one_venue_service(adapter, *, reconcile_timeout_ms=50, leg_timeout_ms=200):
    quotes = QuoteCache()
    venues = [VenueConfig(name="a")]
    quotes.update(make_quote("a", asks=[(100, 1), (101, 5)], ts=NOW))
    journal = MemoryJournal()
    clock = lambda: NOW  # noqa: E731
    executor = Executor({"a": adapter}, leg_timeout_ms, clock=clock, breakers=CircuitBreakers(5, 5_000, clock),
                        reconcile_timeout_ms=reconcile_timeout_ms)
    service = IntentService(venues, quotes, executor, RiskLimits(), 2_000, clock=clock, journal=journal)
    return service, journal


class ScriptedHttpVenue(HttpVenue):
    """The real Binance-style adapter (its ``place``/``query`` parsing), with the HTTP exchange
    replaced by scripted (status, body) answers per method."""

    def __init__(self, name: str, answers: dict):
        super().__init__(VenueConfig(name=name, adapter="http", url=f"http://venue.invalid/{name}"))
        self.answers = answers
        self.calls: list[tuple[str, dict]] = []

    async def _call(self, method, path, params):
        self.calls.append((method, params))
        answer = self.answers[method]
        return answer(params) if callable(answer) else answer


# --- 1. a reconciled leg's fills vanish from the result ------------------------------------------

def test_a_leg_reconciled_by_a_binance_query_answer_keeps_its_fills_in_the_result():
    """worker/venues/http.py:_report_from + worker/execution/executor.py:build_result.

    Mechanism: after a lost place answer (HTTP 503, the order was executed), the executor
    reconciles with GET /api/v3/order. Binance's query answer carries ``executedQty`` and
    ``cummulativeQuoteQty`` but no ``fills`` (the repo's own ``BinanceShapedQueries`` says so).
    ``_report_from`` builds a FILLED report with ``filled_qty`` and zero trades, and
    ``build_result`` counts only trades: the result says ``failed``, ``executedQty`` 0, no
    fill events, while its leg says FILLED and the account bought the whole quantity.
    (``_spent_notional`` knows this case - "a fill reported without its trades (a query
    answer)" - and the ccxt adapter synthesizes a trade; the HTTP path does neither.)

    Consequence: the fills topic and the result lose a real execution (settlement, positions
    and the OMS see nothing bought) exactly in the failure mode reconciliation exists for."""
    lossy = PAPER.model_copy(update={"lost_response_rate": 1.0})
    intent = make_intent("0.1")
    plan = route(intent, {"binance": BOOK}, [PAPER])
    assert [leg.provider for leg in plan.legs] == ["binance"]

    async def scenario():
        async with paper_venue(lossy, server_class=BinanceShapedQueries) as (server, url):
            adapter = HttpVenue(VenueConfig(name="binance", adapter="http", url=url), credentials=CREDS)
            try:
                outcomes = await Executor({"binance": adapter}, 2_000).run_legs(intent, plan)
            finally:
                await adapter.close()
            return outcomes, server.attempts

    outcomes, attempts = asyncio.run(scenario())
    assert list(attempts.values()) == [1]  # placed once, never re-sent
    [outcome] = outcomes
    assert outcome.report.status is LegStatus.FILLED and outcome.report.filled_qty == D("0.1")  # the venue's truth
    result, fills = build_result(intent, [plan], outcomes, 10)
    assert result.filled_qty == D("0.1"), (
        f"the venue filled 0.1 but the result says filled_qty={result.filled_qty}, status={result.status.value}, "
        f"{len(fills)} fill events")
    assert result.status is ExecutionStatus.FILLED


# --- 2. the late-fill sweeper stops watching a leg the venue still reports as working ---------------

def test_a_sweep_that_finds_the_leg_still_working_keeps_sweeping_it():
    """worker/service/intents.py:IntentService.sweep + worker/execution/journal.py:JournalEntry.unknown_legs.

    Mechanism: ``sweep`` appends every answered leg to an amendment, even when the venue's
    answer is itself of unknown state (Binance ``NEW``, a ccxt ``open`` order: both map to
    ``LegStatus.UNKNOWN``). ``unknown_legs`` drops every client order id that appears in any
    amendment, so the leg is no longer unknown for the sweeper, which stops watching it
    (``LateFillSweeper._sweep_entry`` drops the entry). A pointless version 2 is published.

    Consequence: when the order fills a moment later, nobody asks again: the fill is never
    journaled or published (the result stays at filled 0 for a leg that bought 0.5)."""
    venue = ScriptedVenue("a")
    service, journal = one_venue_service(venue)
    intent = make_intent("0.5", intent_id="late")

    async def scenario():
        out = await service.handle(intent, NOW)
        assert [leg.status for leg in out.result.legs] == [LegStatus.UNKNOWN]
        entry = journal.latest()["late"]
        coid = entry.rounds[0].legs[0].client_order_id
        venue.state = lambda c: OrderReport(c, "o-1", LegStatus.UNKNOWN, D(0))  # still working at the venue
        entry, _ = await service.sweep(entry)
        still_watched = bool(entry.unknown_legs())
        venue.state = lambda c: OrderReport(c, "o-1", LegStatus.FILLED, D("0.5"),
                                            (VenueTrade(D(100), D("0.5"), D("0.05"), "USD", "t-1"),))
        entry, _ = await service.sweep(entry)
        return coid, still_watched, Outcome.from_journal(entry)

    coid, still_watched, final = asyncio.run(scenario())
    assert venue.placed == [coid]
    assert still_watched, "a leg the venue still reports as working is no longer swept"
    assert final.result.filled_qty == D("0.5"), f"the late fill was lost: filled_qty={final.result.filled_qty}"


# --- 3. a correction counts the trades already published a second time -----------------------------

def test_a_correction_does_not_publish_again_the_trades_the_first_result_already_has():
    """worker/execution/executor.py:amend_result (with IntentService.sweep).

    Mechanism: a leg reconciled while still working comes back UNKNOWN *with* the trades it
    has so far (ccxt_venue._status maps an ``open`` order with ``filled > 0`` to UNKNOWN and
    ``_report`` fetches its trades). ``build_result`` publishes those trades as fills. The
    sweeper later finds the order finished with *all* its trades, and ``amend_result``
    appends every one of them to the prior fills without removing the leg's earlier ones or
    de-duplicating by trade id.

    Consequence: the corrected result and the fills topic double-count the first trade:
    0.7 bought on an intent (and an order) of 0.5, ``status`` not ``filled``, a wrong VWAP,
    and settlement books a trade twice."""
    assert ccxt_status({"status": "open"}, D("0.2"), D("0.5")) is LegStatus.UNKNOWN  # the precondition is real
    first = VenueTrade(D(100), D("0.2"), D("0.02"), "USD", "t-1")
    second = VenueTrade(D(100), D("0.3"), D("0.03"), "USD", "t-2")
    venue = ScriptedVenue("a")
    venue.state = lambda c: OrderReport(c, "o-1", LegStatus.UNKNOWN, D("0.2"), (first,))
    service, journal = one_venue_service(venue)
    intent = make_intent("0.5", intent_id="dup")

    async def scenario():
        out = await service.handle(intent, NOW)
        entry = journal.latest()["dup"]
        venue.state = lambda c: OrderReport(c, "o-1", LegStatus.FILLED, D("0.5"), (first, second))
        entry, correction = await service.sweep(entry)
        return out, correction, Outcome.from_journal(entry)

    out, correction, final = asyncio.run(scenario())
    assert out.result.filled_qty == D("0.2")  # the first result has the first trade
    assert correction is not None
    assert final.result.filled_qty == D("0.5"), (
        f"the correction says {final.result.filled_qty} bought for an order of 0.5 "
        f"({len(final.fills)} fills for 2 trades)")
    assert final.result.status is ExecutionStatus.FILLED


# --- 4. a cancelled half-open probe benches the venue for good ---------------------------------------

class Hanging:
    async def place(self, order):
        await asyncio.sleep(3600)

    async def query(self, client_order_id):
        return None


def test_a_half_open_probe_that_is_cancelled_does_not_bench_the_venue_forever():
    """worker/execution/breaker.py:CircuitBreakers + worker/execution/executor.py:Executor._run_leg.

    Mechanism: in half-open state ``on_send`` sets ``probing = True`` and only ``record``
    clears it. ``_run_leg`` calls ``record`` only after ``wait_for`` returns or raises
    TimeoutError/VenueError; a cancellation of the intent (a revoked partition, a stop: the
    normal path tested in test_executor_timeouts) or any other exception skips it.
    ``blocked()`` returns the venue while ``probing`` is set, whatever the time.

    Consequence: the venue is excluded from every plan until the process restarts (the
    breaker reports it blocked forever although no probe is in flight): worse prices or
    no liquidity, and no log line says why."""
    t = [0]
    clock = lambda: t[0]  # noqa: E731
    breakers = CircuitBreakers(1, 100, clock)
    breakers.record("a", LegStatus.FAILED)
    assert breakers.blocked() == {"a"}
    t[0] = 150  # cooled down: half-open, one probe may go
    assert breakers.blocked() == set()
    intent = make_intent("0.5")
    plan = route(intent, {"a": make_quote("a", asks=[(100, 1)])}, [VenueConfig(name="a")])

    async def probe_then_revoke():
        task = asyncio.create_task(Executor({"a": Hanging()}, 60_000, clock=clock, breakers=breakers).run_legs(intent, plan))
        await asyncio.sleep(0.05)
        assert breakers.blocked() == {"a"}  # the probe is in flight
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

    asyncio.run(probe_then_revoke())
    t[0] = 10_000_000  # hours later, no request in flight
    assert breakers.blocked() == set(), f"venue still blocked, state={breakers.state('a')}: benched until a restart"


# --- 5. a still-working order is treated as finished and the remainder is bought again ---------------

def test_a_partially_filled_query_answer_is_not_taken_as_final_before_rerouting():
    """worker/venues/http.py:_STATUS / _report_from (used by Executor._reconcile and
    IntentService._more_rounds/_settled_or_unknown).

    Mechanism: Binance's ``PARTIALLY_FILLED`` is a non-terminal status (a finished IOC order is
    FILLED or EXPIRED); seen in a reconciliation query it means the order is still matching.
    The HTTP adapter maps it to ``LegStatus.PARTIAL`` (final), while it maps ``NEW`` to
    UNKNOWN and the ccxt adapter maps any ``open`` order to UNKNOWN ("an IOC order still
    working"). ``_settled_or_unknown`` then counts only the 0.2 executed so far, and the
    service re-routes the other 0.3 while the first order can still fill its remaining 0.3.

    Consequence: up to 0.8 bought on an intent of 0.5 (60% over), and the leg is never swept,
    so the extra fills are never even reported."""
    posted: dict[str, dict] = {}

    def post(params):  # the order reaches the venue; the answer is lost
        posted[params["newClientOrderId"]] = params
        return 503, {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}

    def get(params):  # the first order is still matching (0.2 done so far); any later one filled at once
        if "origClientOrderId" not in params:  # myTrades of the order: what it executed so far
            coid = list(posted)[params["orderId"] - 1]
            _, order = get({"origClientOrderId": coid})
            return 200, [{"symbol": "BTCUSD", "id": 7, "orderId": params["orderId"], "price": order["price"],
                          "qty": order["executedQty"], "commission": "0", "commissionAsset": "USD"}]
        sent = posted[params["origClientOrderId"]]
        first = params["origClientOrderId"] == next(iter(posted))
        executed = "0.2" if first else sent["quantity"]
        return 200, {"symbol": "BTCUSD", "orderId": len(posted), "clientOrderId": params["origClientOrderId"],
                     "price": sent["price"], "origQty": sent["quantity"], "executedQty": executed,
                     "cummulativeQuoteQty": str(D(executed) * D(sent["price"])),
                     "status": "PARTIALLY_FILLED" if first else "FILLED", "timeInForce": "IOC", "type": "LIMIT", "side": "BUY"}

    answers = {"POST": post, "GET": get}
    quotes = QuoteCache()
    venues = [VenueConfig(name="a"), VenueConfig(name="b")]
    quotes.update(make_quote("a", asks=[(100, "0.5")], ts=NOW))
    quotes.update(make_quote("b", asks=[(101, 5)], ts=NOW))
    adapters = {"a": ScriptedHttpVenue("a", answers), "b": PaperVenue(venues[1], lambda s: quotes.get("b", s))}
    clock = lambda: NOW  # noqa: E731
    executor = Executor(adapters, 200, clock=clock, breakers=CircuitBreakers(5, 5_000, clock), reconcile_timeout_ms=50)
    service = IntentService(venues, quotes, executor, RiskLimits(), 2_000, clock=clock, journal=MemoryJournal())
    intent = make_intent("0.5", intent_id="over")
    out = asyncio.run(service.handle(intent, NOW))
    [first] = out.plans[0].legs
    assert first.provider == "a" and first.qty == D("0.5")
    sent_later = sum((leg.qty for plan in out.plans[1:] for leg in plan.legs), D(0))
    assert first.qty + sent_later <= intent.qty, (
        f"order a (0.5, still working) plus {sent_later} re-routed: up to {first.qty + sent_later} for an intent of 0.5")


# --- 6. every -2010 refusal is taken for a duplicate client order id ---------------------------------

def test_an_insufficient_balance_refusal_is_a_rejection_naming_it_not_a_duplicate():
    """worker/venues/http.py:HttpVenue.place.

    Mechanism: Binance's -2010 is NEW_ORDER_REJECTED, the code of many refusals ("Account has
    insufficient balance for requested action.", "Market is closed.", ... and "Duplicate order
    sent."). ``place`` sets ``duplicate`` for any -2010 and replaces the venue's text with
    DUPLICATE_ORDER (the ccxt adapter checks the message). The executor then reconciles a
    refused order: two queries and a sleep, and the leg ends FAILED with "duplicate client
    order id; the venue has no such order" (or UNKNOWN, and not re-routed, if the query
    fails meanwhile).

    Consequence: the result tells the OMS the wrong reason (a duplicate instead of missing
    funds), the real cause is lost from every record, and the leg is delayed by a
    reconciliation it never needed."""
    answers = {
        "POST": (400, {"code": -2010, "msg": "Account has insufficient balance for requested action."}),
        "GET": (400, {"code": -2013, "msg": "Order does not exist."}),
    }
    adapter = ScriptedHttpVenue("a", answers)
    intent = make_intent("0.5")
    plan = route(intent, {"a": make_quote("a", asks=[(100, 1)])}, [VenueConfig(name="a")])
    [outcome] = asyncio.run(Executor({"a": adapter}, 100).run_legs(intent, plan))
    assert outcome.report.status is LegStatus.REJECTED and "insufficient balance" in (outcome.report.error or ""), (
        f"leg {outcome.report.status.value}: {outcome.report.error!r}")
    assert [m for m, _ in adapter.calls] == ["POST"], f"a refused order was reconciled: {[m for m, _ in adapter.calls]}"


# --- 7. a 4xx with an empty body crashes the intent ---------------------------------------------------

class EmptyForbidden(PaperVenueServer):
    """A WAF/proxy in front of the venue refusing the order with an empty 403."""

    async def place(self, request):
        return web.Response(status=403)


def test_a_refusal_with_an_empty_body_is_a_leg_outcome_not_a_crash():
    """worker/venues/http.py:HttpVenue.place.

    Mechanism: ``_call`` reads the body with ``resp.json(content_type=None)``, which returns
    ``None`` for an empty body. For a 4xx, ``place`` guards ``body.get("msg")`` with
    ``isinstance(body, dict)`` but then formats ``body.get('code')`` unguarded: an
    AttributeError, which is neither TimeoutError nor VenueError, so it escapes
    ``Executor._run_leg`` (and ``breakers.record``), ``run_legs`` and ``IntentService.handle``.

    Consequence: an ordinary refusal (403 from a WAF, 405/413 from a proxy) crashes the whole
    intent after its planned record: the other legs' answers are dropped, the intent stays
    in flight (worker not ready) until recovery re-queries every leg, and a half-open probe
    stays ``probing`` for good."""
    intent = make_intent("0.1")
    plan = route(intent, {"binance": BOOK}, [PAPER])

    async def scenario():
        async with paper_venue(server_class=EmptyForbidden) as (_server, url):
            adapter = HttpVenue(VenueConfig(name="binance", adapter="http", url=url), credentials=CREDS)
            try:
                return await Executor({"binance": adapter}, 2_000).run_legs(intent, plan)
            except AttributeError as exc:
                return exc
            finally:
                await adapter.close()

    outcome = asyncio.run(scenario())
    assert not isinstance(outcome, AttributeError), f"the intent crashed: {outcome!r}"
    assert outcome[0].report.status is LegStatus.REJECTED
