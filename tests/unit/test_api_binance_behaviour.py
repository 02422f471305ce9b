"""`sor api` where a review found it diverging from Binance's documented behaviour (which
unmodified Binance clients rely on) or from its own README, in ways that cost money, hide an
outcome, or lock a client out: MARKET with timeInForce is -1106, a parameter in both query and
body takes the query's value, myAllocations rows carry allocationId/allocationType and endTime
gives the newest, an unfillable FOK is EXPIRED, a key's rate limit is charged only for requests
signed with it, a retry of an order never placed gets 503, and times come from the result's
record. Each test failed on the code before its fix."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from urllib.parse import urlencode

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.unit.test_api import KEY, SECRET, VENUES, InProcessGateway, api_client, signed
from worker.api.app import ApiDeps, create_app
from worker.api.security import sign
from worker.config import Settings
from worker.domain.clock import now_ms
from worker.service.quotes import QuoteCache
from worker.domain.models import ExecutionStatus
from worker.service.results import ResultBook

D = Decimal
HEADERS = {"X-MBX-APIKEY": KEY}


@pytest.fixture
def api():
    with api_client(raise_server_exceptions=False) as client:
        yield client


def _sor(api, params: dict, path: str = "/api/v3/sor/order"):
    return api.post(f"{path}?{signed(params)}", headers=HEADERS)


def _allocations(api, params: dict):
    return api.get(f"/api/v3/myAllocations?{signed(params)}", headers=HEADERS)


# --- 1. MARKET + timeInForce: the client's FOK is dropped and the order runs IOC --------------

def test_sor_market_order_with_time_in_force_is_refused_not_run_as_ioc(api):
    """binance.py:parse_sor_order only reads ``timeInForce`` for LIMIT; for MARKET it silently
    forces IOC. A client that sends ``type=MARKET&timeInForce=FOK`` (all or nothing) for 60 BTC
    against books holding 50 gets 50 BTC bought (status EXPIRED, "timeInForce": "GTC" in the
    answer): a partial position it explicitly asked not to have. The worker honours FOK for
    market intents (/v1 rejects the same order as fok_not_coverable), so only this edge loses it.

    Binance refuses it: ``-1106 Parameter 'timeInForce' sent when not required.`` for a MARKET
    order (spot errors doc, -1106; the client-library fixes for exactly this error, e.g.
    ccxt/binance-rs#112, knowm/XChange#2353, JKorf/Binance.Net#705)."""
    r = _sor(api, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "timeInForce": "FOK", "quantity": "60"})
    assert r.status_code == 400 and r.json()["code"] == -1106, (r.status_code, r.text)
    assert api.gateway.published == []


# --- 2. a parameter in both the query string and the body -----------------------------------

def test_parameter_in_both_query_and_body_uses_the_query_value(api):
    """binance.py:parse_params raises -1101 "Duplicate values" when a name appears once in the
    query string and once in the form body. Binance's General API Information: "You may mix
    parameters between both the query string and request body ... If a parameter sent in both
    the query string and request body, the query string parameter will be used." A client that
    puts ``symbol`` (or ``timestamp``) in the URL and repeats it in the body, which Binance
    accepts, is refused here and its order is never placed. (-1101 is for a name repeated
    within one of the two.)"""
    query = urlencode({"symbol": "BTCUSDT", "timestamp": now_ms()})
    body = urlencode({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1", "newClientOrderId": "mix-1"})
    r = api.post(f"/api/v3/sor/order?{query}&signature={sign(SECRET, query + body)}", content=body,
                 headers={**HEADERS, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["status"] == "FILLED" and D(r.json()["executedQty"]) == 1


# --- 3. myAllocations rows lack Binance's allocationId / allocationType -----------------------

def test_my_allocations_rows_carry_binance_allocation_id_and_type(api):
    """binance.py:allocations builds myTrades-shaped rows (``id``, ``tradeId``, ``isBestMatch``,
    ``allocId``) instead of Binance's allocation shape. Binance's "Query Allocations (USER_DATA)"
    response (rest-api/account-endpoints, GET /api/v3/myAllocations) is ``symbol, allocationId,
    allocationType "SOR", orderId, orderListId, price, qty, quoteQty, commission,
    commissionAsset, time, isBuyer, isMaker, isAllocator``. A Binance client pages with
    ``fromAllocationId = last["allocationId"] + 1``: here that key is missing (KeyError / None),
    so it cannot page through its allocations at all."""
    assert _sor(api, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "8", "newClientOrderId": "al-1"}).status_code == 200
    rows = _allocations(api, {"symbol": "BTCUSDT"}).json()
    assert len(rows) == 2  # 6 @ 42155 and 2 @ 42156
    for row in rows:
        assert isinstance(row.get("allocationId"), int) and row.get("allocationType") == "SOR", row
    page = _allocations(api, {"symbol": "BTCUSDT", "fromAllocationId": rows[1]["allocationId"]}).json()
    assert [p["allocationId"] for p in page] == [rows[1]["allocationId"]]


# --- 4. myAllocations with endTime: the newest until endTime, not the oldest ---------------------

def test_my_allocations_with_end_time_returns_the_newest_allocations(api):
    """binance.py:allocations sorts oldest first and cuts ``rows[:limit]`` whatever the
    parameters. Binance's "Query Allocations" table of supported combinations says
    ``symbol + endTime`` -> "newest allocations until endTime" (``symbol`` alone -> oldest to
    newest, ``symbol + startTime`` -> oldest since startTime). A client reading its latest
    allocations with ``endTime=now&limit=N`` (or paging backwards) gets its oldest N instead and
    never sees its latest fills once it has more than ``limit``."""
    ids = []
    for n in range(3):
        r = _sor(api, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1", "newClientOrderId": f"end-{n}"})
        assert r.status_code == 200, r.text
        ids.append(r.json()["orderId"])
    rows = _allocations(api, {"symbol": "BTCUSDT", "endTime": now_ms() + 1_000, "limit": 1}).json()
    assert [row["orderId"] for row in rows] == [ids[-1]], (rows, ids)


# --- 5. an unfillable FOK is EXPIRED on Binance, not -2010 -------------------------------------

def test_limit_fok_that_cannot_fill_is_expired_not_rejected(api):
    """binance.py:order_response turns every REJECTED result into ``-2010 Order was rejected``,
    including the worker's liquidity outcomes of a taking order (``fok_not_coverable``,
    ``no_liquidity_within_limit``). On Binance such an order is accepted and ends EXPIRED with
    nothing filled: the spot enums doc, order status EXPIRED: "The order was canceled according
    to the order type's rules (e.g. LIMIT FOK orders with no fill, ...)". -2010
    NEW_ORDER_REJECTED is for orders the engine refuses (balance, market closed); Binance client
    libraries raise it as an exception, so a strategy that sends FOK orders and reads ``status``
    takes the ordinary "no fill" outcome for a refused order (an exception path, often an alert
    or a halt) instead of EXPIRED with executedQty 0."""
    r = _sor(api, {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "FOK", "price": "50000",
                   "quantity": "60", "newClientOrderId": "fok-1"})  # the books hold 50
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json()["status"] == "EXPIRED" and D(r.json()["executedQty"]) == 0 and r.json()["fills"] == []


# --- 6. whoever knows an API key (not its secret) exhausts its owner's rate limit ---------------

def test_unauthenticated_requests_naming_a_key_do_not_drain_that_keys_rate_limit():
    """security.py:GuardMiddleware charges a request to the bucket of the key named in
    ``X-MBX-APIKEY`` *before* authentication. Anyone who has seen an API key (it travels in a
    header on every request and lands in proxy logs; only the secret is secret) can send a few
    requests with a garbage signature from their own address and the owner's signed orders get
    429 for as long as they keep doing it. The README promises "token bucket per API key (per
    client address when unsigned)": a request that fails authentication is unsigned, and should
    be charged to its own address, not to the victim's key."""
    settings = Settings(api_keys={KEY: {"secret": SECRET, "account_id": "acct-1"}}, api_rate_limit_per_s=0.001,
                        api_rate_limit_burst=3)
    app = create_app(ApiDeps(settings=settings, venues=VENUES, quotes=QuoteCache(), gateway=InProcessGateway(None)))
    with TestClient(app, client=("203.0.113.9", 40000)) as attacker, TestClient(app, client=("198.51.100.7", 40001)) as owner:
        bogus = f"{urlencode({'symbol': 'BTCUSDT', 'side': 'BUY', 'type': 'MARKET', 'quantity': '1', 'timestamp': now_ms()})}&signature={'0' * 64}"
        refused = [attacker.post(f"/api/v3/sor/order?{bogus}", headers=HEADERS).status_code for _ in range(3)]
        assert refused == [401, 401, 401]
        mine = owner.get(f"/api/v3/myAllocations?{signed({'symbol': 'BTCUSDT'})}", headers=HEADERS)
        assert mine.status_code == 200, (mine.status_code, mine.text)


# --- 7. a concurrent retry of an order that was never placed is told "pending" ------------------

def test_a_concurrent_retry_of_an_order_whose_publication_failed_is_not_told_pending():
    """orders.py:OrderDesk.place: a retry that arrives while the first request is still
    publishing finds the intent pending and waits on its future; the first publication then
    fails, ``ResultBook.forget`` cancels that future, and ``ResultBook.wait`` turns the
    cancellation into ``None``, i.e. "no result yet". The retry is answered 202 ``pending`` with
    a poll URL (README: "The order is on the bus"), while the first gets 503 "nothing placed".
    Nothing was ever placed: the poll URL answers 404, and a client that trusts the 202 waits for
    (or books) an order that does not exist. It must get the same 503 (retry with the same key)."""
    settings = Settings(api_keys={KEY: {"secret": SECRET, "account_id": "acct-1"}}, api_result_timeout_ms=5_000,
                        api_rate_limit_per_s=1000, api_rate_limit_burst=1000)
    release, waiting = asyncio.Event(), asyncio.Event()

    class SignallingBook(ResultBook):
        async def wait(self, intent_id, timeout_s):
            waiting.set()
            return await super().wait(intent_id, timeout_s)

    class BrokerGoingDown:
        def __init__(self):
            self.book = SignallingBook(100)
            self.published = []

        async def publish(self, intent):
            self.published.append(intent)
            await release.wait()
            raise ConnectionError("broker unreachable")

        def healthy(self):
            return True

    gateway = BrokerGoingDown()
    app = create_app(ApiDeps(settings=settings, venues=VENUES, quotes=QuoteCache(), gateway=gateway))
    body = json.dumps({"symbol": "BTC/USD", "side": "buy", "qty": "0.5", "idempotency_key": "k-lost"})

    async def post(client):
        query = f"timestamp={now_ms()}"
        return await client.post(f"/v1/smart-order?{query}&signature={sign(SECRET, query + body)}", content=body,
                                 headers={**HEADERS, "Content-Type": "application/json"})

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            first = asyncio.create_task(post(client))
            while not gateway.published:  # the first request is inside publish()
                await asyncio.sleep(0)
            second = asyncio.create_task(post(client))
            await waiting.wait()  # the retry is waiting on the pending intent
            release.set()  # the broker refuses the first publication
            return await first, await second

    first, second = asyncio.run(asyncio.wait_for(main(), 30))
    assert first.status_code == 503, first.text
    assert len(gateway.published) == 1 and gateway.book.pending(gateway.published[0].intent_id) is None  # nothing on the bus
    assert second.status_code == 503, (second.status_code, second.text)


# --- 8. transactTime / allocation time is when *this process* read the result -----------------

def test_transact_time_is_the_same_on_every_replica_and_after_a_restart():
    """binance.py:order_response and allocations report ``Settled.received_ms`` as
    ``transactTime``/``workingTime`` and as each allocation's ``time``; the gateway
    (pipeline/gateway.py:_poll) sets it to the reading process's clock at the moment it reads the
    record. Two replicas (or one replica before and after a restart, which re-reads 24 h of
    results) therefore report different times for the same order, and after a restart every
    allocation of the look-back window is dated at the restart: a ``myAllocations`` query with
    ``startTime``/``endTime`` around the real trade time finds nothing. Binance's transactTime
    and allocation time are the time of the trade, fixed once. (The Kafka record's own timestamp,
    set when the worker published the result, is the same for every reader.)"""
    from aiokafka import TopicPartition

    from worker.api.orders import intent_id_for
    from worker.domain.models import ExecutionResult, ExecutionStatus, Fill
    from worker.pipeline.codec import encode
    from worker.pipeline.gateway import KafkaIntentGateway
    from worker.service.results import BINANCE_NAMESPACE

    settings = Settings(api_keys={KEY: {"secret": SECRET, "account_id": "acct-1"}}, api_rate_limit_per_s=1000,
                        api_rate_limit_burst=1000)
    traded_at = now_ms() - 30_000
    intent_id = intent_id_for(BINANCE_NAMESPACE, "acct-1", "rep-1")
    result = ExecutionResult(
        event_id=f"result:{intent_id}", plan_id=f"plan:{intent_id}:0", intent_id=intent_id, account_id="acct-1",
        symbol="BTC/USD", side="buy", algorithm="sor", total_qty=D(1), filled_qty=D(1), vwap=D(42155),
        status=ExecutionStatus.FILLED, latency_ms=3, executedQty=D(1), cummulativeQuoteQty=D(42155),
        fills=[Fill(price=D(42155), qty=D(1), commission=D("42.155"), commissionAsset="USD", allocId=0, provider="binance")],
        fill_count=1)

    class Rec:
        offset, key, timestamp = 7, intent_id.encode(), traded_at
        value = encode(result)

    class Consumer:
        async def getmany(self, timeout_ms, max_records):
            return {TopicPartition(settings.topics.executions, 0): [Rec()]}

    def replica(read_at: int):
        gateway = KafkaIntentGateway(settings, clients=None, book=ResultBook(10), clock=lambda: read_at)
        gateway.consumer = Consumer()
        asyncio.run(gateway._poll(0))
        return create_app(ApiDeps(settings=settings, venues=VENUES, quotes=QuoteCache(), gateway=gateway))

    answers = []
    for read_at in (traded_at + 5, traded_at + 20_000):  # replica A, and replica B (or A after a restart)
        with TestClient(replica(read_at)) as client:
            order = client.post(f"/api/v3/sor/order?{signed({'symbol': 'BTCUSDT', 'side': 'BUY', 'type': 'MARKET', 'quantity': '1', 'newClientOrderId': 'rep-1', 'newOrderRespType': 'RESULT'})}",
                                headers=HEADERS)
            assert order.status_code == 200, order.text
            allocs = client.get(f"/api/v3/myAllocations?{signed({'symbol': 'BTCUSDT'})}", headers=HEADERS).json()
            answers.append((order.json()["transactTime"], [a["time"] for a in allocs]))
    assert answers[0] == answers[1], answers


# --- 9. an ACK client has no Binance way to learn its order's outcome ---------------------------

def _query_order(api, params: dict, key: str = KEY, secret: str | None = None):
    query = signed(params) if secret is None else signed(params, secret=secret)
    return api.get(f"/api/v3/order?{query}", headers={"X-MBX-APIKEY": key})


def test_an_ack_order_is_found_by_binances_order_query(api):
    """app.py: there was no ``GET /api/v3/order``. A Binance client that places with
    ``newOrderRespType=ACK`` (or whose request timed out with -1007) asks Binance's "Query
    order (USER_DATA)" by ``origClientOrderId`` or ``orderId``: here it got 404, so it could not
    learn whether, or at what price, its order filled."""
    ack = _sor(api, {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "price": "42156",
                     "quantity": "8", "newClientOrderId": "q-1", "newOrderRespType": "ACK"})
    assert ack.status_code == 200, ack.text
    by_coid = _query_order(api, {"symbol": "BTCUSDT", "origClientOrderId": "q-1"})
    assert by_coid.status_code == 200, by_coid.text
    order = by_coid.json()
    assert order["orderId"] == ack.json()["orderId"] and order["clientOrderId"] == "q-1"
    assert order["status"] == "FILLED" and D(order["executedQty"]) == 8 and D(order["origQty"]) == 8
    assert order["type"] == "LIMIT" and order["timeInForce"] == "IOC" and order["side"] == "BUY" and D(order["price"]) == 42156
    assert order["usedSor"] is True and order["workingFloor"] == "SOR" and order["isWorking"] is False
    assert D(order["cummulativeQuoteQty"]) > 0 and order["time"] == order["updateTime"] > 0
    by_id = _query_order(api, {"symbol": "BTCUSDT", "orderId": ack.json()["orderId"]})
    assert by_id.status_code == 200 and by_id.json() == order


def test_the_order_query_refuses_what_binance_refuses(api):
    assert _sor(api, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1", "newClientOrderId": "q-2",
                      "newOrderRespType": "ACK"}).status_code == 200
    missing = _query_order(api, {"symbol": "BTCUSDT", "origClientOrderId": "no-such"})
    assert missing.status_code == 400 and missing.json() == {"code": -2013, "msg": "Order does not exist."}
    other = _query_order(api, {"symbol": "BTCUSDT", "origClientOrderId": "q-2"}, key="other", secret="s2")
    assert other.status_code == 400 and other.json()["code"] == -2013  # another account's order does not exist for it
    neither = _query_order(api, {"symbol": "BTCUSDT"})
    assert neither.status_code == 400 and neither.json()["code"] == -1102
    wrong_symbol = _query_order(api, {"symbol": "ETHUSDT", "origClientOrderId": "q-2"})
    assert wrong_symbol.status_code == 400 and wrong_symbol.json()["code"] in (-1121, -2013)


def test_the_order_id_index_forgets_what_the_result_book_evicted():
    from tests.unit.test_gateway_records import _result_of
    from tests.support.scenarios import make_intent
    from worker.service.results import Settled

    book = ResultBook(2)
    book.index_by(lambda intent_id: len(intent_id))
    for n, intent_id in enumerate(["a", "bb", "ccc"]):
        book.add(Settled(_result_of(make_intent("1", intent_id=intent_id)), 1, n))
    assert book.find(1) is None and book.find(2) == "bb" and book.find(3) == "ccc"


# --- 10. an order with a leg of unknown state is told final --------------------------------------

def test_an_order_with_a_leg_of_unknown_state_is_still_working_not_expired():
    """binance.py `_status`: every result that is not filled answered EXPIRED, Binance's final
    state, also when a leg's state is unknown (a venue unreachable after a lost answer): the
    late-fill sweeper may still find it filled and publish a correction. A Binance client
    takes EXPIRED as the end of the order and never asks again. Until every leg is known the
    order is PARTIALLY_FILLED (or NEW with nothing filled yet) and ``isWorking``, as on Binance
    while an order can still fill."""
    from tests.unit.test_gateway_records import _result_of
    from worker.domain.models import LegResult, LegStatus
    from worker.service.results import Settled

    intent = make_intent_for_api()
    unknown = LegResult(provider="a", order_id=None, client_order_id="c-1", qty=D(1), filled_qty=D(0), price=None,
                        status=LegStatus.UNKNOWN, latency_ms=3)
    filled = LegResult(provider="b", order_id="o", client_order_id="c-2", qty=D(1), filled_qty=D(1), price=D(100),
                       status=LegStatus.FILLED, latency_ms=3)
    partial = _result_of(intent).model_copy(update={"legs": [filled, unknown], "filled_qty": D(1), "executedQty": D(1),
                                                      "status": ExecutionStatus.PARTIAL})
    nothing = partial.model_copy(update={"legs": [unknown], "filled_qty": D(0), "executedQty": D(0),
                                          "status": ExecutionStatus.FAILED})
    from worker.api import binance

    order = binance.SorOrder("BTCUSDT", "BTC/USD", intent.side, intent.type, intent.time_in_force, intent.qty, None, "c", "RESULT")
    assert binance.order_response(order, Settled(partial, 1, 0), "c")["status"] == "PARTIALLY_FILLED"
    assert binance.order_response(order, Settled(nothing, 1, 0), "c")["status"] == "NEW"
    queried = binance.query_order("BTCUSDT", intent, Settled(partial, 1, 0), "c")
    assert queried["status"] == "PARTIALLY_FILLED" and queried["isWorking"] is True


def make_intent_for_api():
    from tests.support.scenarios import make_intent

    return make_intent("2", intent_id="bn-unknown")
