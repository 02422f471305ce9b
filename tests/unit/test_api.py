"""`sor api`'s app with an in-process gateway (the worker's own IntentService and paper
venues, no Kafka): shapes, auth, idempotency, Binance errors, limits."""

from __future__ import annotations

from contextlib import contextmanager

import asyncio
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from tests.support.fakes import MemoryJournal
from worker.api.app import ApiDeps, create_app
from worker.api.security import sign
from worker.bootstrap import build
from worker.config import Settings
from worker.domain.clock import now_ms
from worker.domain.models import VenueConfig, VenueQuote
from worker.service.results import ResultBook, Settled

D = Decimal
KEY, SECRET = "test-key", "test-secret"
VENUES = [VenueConfig(name="binance", taker_fee_bps=D(10), maker_fee_bps=D(10), step_size=D("0.00001")),
          VenueConfig(name="kraken", taker_fee_bps=D(26), step_size=D("0.00000001"))]


def books(ts: int) -> list[VenueQuote]:
    return [VenueQuote(venue="binance", symbol="BTC/USD", ts=ts, bids=[(D(42150), D(5))], asks=[(D(42155), D(6)), (D(42156), D(20))]),
            VenueQuote(venue="kraken", symbol="BTC/USD", ts=ts, bids=[(D(42145), D(5))], asks=[(D(42160), D(4)), (D(42170), D(20))])]


class InProcessGateway:
    """The worker's service behind the gateway interface; ``hold`` keeps results back."""

    def __init__(self, service):
        self.book = ResultBook(1000)
        self.service = service
        self.published = []
        self.hold = False
        self.held = []

    async def publish(self, intent) -> None:
        self.published.append(intent)
        if self.hold:
            self.held.append(intent)
            return
        await self.deliver(intent)

    async def deliver(self, intent) -> None:
        outcome = await self.service.handle(intent, now_ms())
        self.book.add(Settled(outcome.result, now_ms(), len(self.published)))

    def healthy(self) -> bool:
        return True


@contextmanager
def api_client(raise_server_exceptions: bool = True):
    """`sor api` on the worker's service in process, its quotes loaded; ``client.gateway``
    shows what was published."""
    settings = Settings(api_keys={KEY: {"secret": SECRET, "account_id": "acct-1"}, "other": {"secret": "s2", "account_id": "acct-2"}},
                        api_result_timeout_ms=200, api_rate_limit_per_s=1000, api_rate_limit_burst=1000, max_quote_age_ms=600_000)
    worker = build(settings, VENUES, journal=MemoryJournal())
    for q in books(now_ms()):
        worker.quotes.update(q)
    gateway = InProcessGateway(worker.service)
    app = create_app(ApiDeps(settings=settings, venues=VENUES, quotes=worker.quotes, gateway=gateway))
    with TestClient(app, raise_server_exceptions=raise_server_exceptions) as client:
        client.gateway = gateway
        yield client


@pytest.fixture
def api():
    with api_client() as client:
        yield client


def signed(params: dict | None = None, body: str = "", secret: str = SECRET, ts: int | None = None) -> str:
    query = urlencode({**(params or {}), "timestamp": ts if ts is not None else now_ms()})
    return f"{query}&signature={sign(secret, query + body)}"


def post_json(client, path, doc, key=KEY, secret=SECRET, headers=None):
    import json

    body = doc if isinstance(doc, str) else json.dumps(doc)
    return client.post(f"{path}?{signed(body=body, secret=secret)}", content=body,
                       headers={"X-MBX-APIKEY": key, "Content-Type": "application/json", **(headers or {})})


def test_route_ranks_best_first_with_the_seed_fields_as_strings(api):
    for path in ("/v1/route/BTC/USD", "/v1/route/BTC", "/v1/route/BTCUSDT"):
        r = api.get(path)
        assert r.status_code == 200, r.text
        ranking = r.json()
        assert [x["provider"] for x in ranking] == ["binance", "kraken"]
        assert set(ranking[0]) == {"provider", "symbol", "bid_price", "ask_price", "spread", "spread_bps", "maker_fee_bps",
                                   "taker_fee_bps", "net_price", "score"}
        assert ranking[0]["ask_price"] == "42155" and D(ranking[0]["net_price"]) == D("42155") * D("1.001")
    sells = api.get("/v1/route/BTC/USD", params={"side": "SELL"}).json()
    assert [x["provider"] for x in sells] == ["binance", "kraken"] and sells[0]["bid_price"] == "42150"


def test_split_plan_matches_the_routing_core_and_names_bad_fields(api):
    r = api.get("/v1/route/BTC/USD/split", params={"qty": "10"})
    assert r.status_code == 200, r.text
    plan = r.json()
    assert plan["algorithm"] == "split" and plan["total_qty"] == "10" and plan["side"] == "buy"
    assert sum(D(leg["qty"]) for leg in plan["legs"]) == D(10)
    assert set(plan["legs"][0]) == {"provider", "qty", "estimated_price", "estimated_fee", "bid_price", "ask_price"}
    assert api.get("/v1/route/BTC/split", params={"qty": "10", "algorithm": "sor"}).json()["algorithm"] == "sor"
    for params, field in (({"qty": "abc"}, "qty"), ({"qty": "-1"}, "qty"), ({}, "qty"), ({"qty": "1", "side": "hold"}, "side"),
                          ({"qty": "1", "algorithm": "magic"}, "algorithm")):
        bad = api.get("/v1/route/BTC/USD/split", params=params)
        assert bad.status_code == 400 and bad.json()["detail"].startswith(field), (params, bad.text)
    assert api.get("/v1/route/DOGE/USD").status_code == 404


def test_smart_order_executes_once_per_idempotency_key(api):
    doc = {"symbol": "BTC/USD", "side": "buy", "qty": 0.5, "idempotency_key": "k-1"}
    first = post_json(api, "/v1/smart-order", doc)
    assert first.status_code == 200, first.text
    report = first.json()
    assert report["status"] == "filled" and D(report["filled_qty"]) == D("0.5") and report["algorithm"] == "best"
    assert report["latency"].endswith("ms") and report["legs"][0]["latency"].endswith("ms")
    again = post_json(api, "/v1/smart-order", doc)
    assert again.json() == report and len(api.gateway.published) == 1
    conflict = post_json(api, "/v1/smart-order", {**doc, "qty": "0.6"})
    assert conflict.status_code == 409 and "idempotency_key" in conflict.json()["detail"]
    split = post_json(api, "/v1/smart-order/split", {"symbol": "BTCUSDT", "side": "buy", "qty": "30", "algorithm": "sor"},
                      headers={"Idempotency-Key": "k-2"})
    assert split.status_code == 200 and split.json()["algorithm"] == "sor" and {leg["provider"] for leg in split.json()["legs"]} == {"binance", "kraken"}


def test_json_numbers_are_read_exactly(api):
    r = post_json(api, "/v1/smart-order", '{"symbol": "BTC/USD", "side": "buy", "qty": 0.123456789012345678, "dry_run": true}')
    assert r.status_code == 200, r.text
    assert r.json()["total_qty"] == "0.123456789012345678"  # a float would give 0.12345678901234568
    # Past the domain's 18 places: refused naming the field, never rounded.
    r = post_json(api, "/v1/smart-order", '{"symbol": "BTC/USD", "side": "buy", "qty": 0.12345678901234567891, "dry_run": true}')
    assert r.status_code == 400 and "qty" in r.json()["detail"], r.text
    assert api.gateway.published == []  # a dry run places nothing


def test_pending_then_poll(api):
    api.gateway.hold = True
    r = post_json(api, "/v1/smart-order", {"symbol": "BTC/USD", "side": "buy", "qty": "0.1", "idempotency_key": "slow"})
    assert r.status_code == 202 and r.json()["status"] == "pending"
    poll = r.json()["poll"]
    assert r.headers["location"] == poll
    get = lambda key=KEY, secret=SECRET: api.get(f"{poll}?{signed(secret=secret)}", headers={"X-MBX-APIKEY": key})  # noqa: E731
    assert get().status_code == 202
    api.portal.call(api.gateway.deliver, api.gateway.held[0])  # the worker finishes later
    done = get()
    assert done.status_code == 200 and done.json()["status"] == "filled"
    assert get("other", "s2").status_code == 404  # another account never sees it


def test_unauthenticated_order_requests_get_401_and_place_nothing(api):
    doc = {"symbol": "BTC/USD", "side": "buy", "qty": "0.1"}
    assert api.post("/v1/smart-order", json=doc).status_code == 401
    assert post_json(api, "/v1/smart-order", doc, key="nope").status_code == 401
    assert post_json(api, "/v1/smart-order", doc, secret="wrong").status_code == 401
    stale = api.post(f"/v1/smart-order?{signed(body='{}', ts=now_ms() - 120_000)}", content="{}", headers={"X-MBX-APIKEY": KEY})
    assert stale.status_code == 400 and "recvWindow" in stale.json()["detail"]
    bin_ = api.post(f"/api/v3/sor/order?{signed({'symbol': 'BTCUSDT', 'side': 'BUY', 'type': 'MARKET', 'quantity': '1'}, secret='x')}",
                    headers={"X-MBX-APIKEY": KEY})
    assert bin_.status_code == 401 and bin_.json()["code"] == -1022
    assert api.post("/api/v3/sor/order?symbol=BTCUSDT").json()["code"] == -2014
    assert api.gateway.published == []


def test_bad_order_fields_are_named(api):
    for doc, field in (({"symbol": "BTC/USD", "side": "buy", "qty": "x"}, "qty"), ({"symbol": "BTC/USD", "side": "buy"}, "qty"),
                       ({"symbol": "BTC/USD", "side": "up", "qty": 1}, "side"), ({"symbol": "BTC/USD", "side": "buy", "qty": 1, "colour": 1}, "colour"),
                       ({"symbol": "BTC/USD", "side": "buy", "qty": 1, "type": "limit"}, "limit_price")):
        r = post_json(api, "/v1/smart-order", doc)
        assert r.status_code == 400 and field in r.json()["detail"], (doc, r.text)
    raw = "{not json"
    r = api.post(f"/v1/smart-order?{signed(body=raw)}", content=raw, headers={"X-MBX-APIKEY": KEY})
    assert r.status_code == 400 and "JSON" in r.json()["detail"]
    assert api.gateway.published == []


def binance_order(api, params, body=False, key=KEY):
    payload = signed(params)
    if body:
        return api.post("/api/v3/sor/order", content=payload, headers={"X-MBX-APIKEY": key, "Content-Type": "application/x-www-form-urlencoded"})
    return api.post(f"/api/v3/sor/order?{payload}", headers={"X-MBX-APIKEY": key})


def test_binance_sor_order_full_result_ack_and_duplicates(api):
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "8", "newClientOrderId": "my-1"}
    full = binance_order(api, base).json()
    assert full["workingFloor"] == "SOR" and full["usedSor"] is True and full["status"] == "FILLED"
    assert D(full["executedQty"]) == 8 and full["clientOrderId"] == "my-1" and isinstance(full["orderId"], int)
    assert {f["matchType"] for f in full["fills"]} == {"ONE_PARTY_TRADE_REPORT"}
    assert [f["allocId"] for f in full["fills"]] == list(range(len(full["fills"])))
    assert sum(D(f["qty"]) for f in full["fills"]) == D(8)
    assert binance_order(api, base, body=True).json() == full  # a retry, form body this time: same order
    assert len(api.gateway.published) == 1
    dup = binance_order(api, {**base, "quantity": "9"})
    assert dup.status_code == 400 and dup.json() == {"code": -2010, "msg": "Duplicate order sent."}
    result = binance_order(api, {**base, "newClientOrderId": "my-2", "newOrderRespType": "RESULT"}).json()
    assert "fills" not in result and result["status"] == "FILLED"
    ack = binance_order(api, {**base, "newClientOrderId": "my-3", "newOrderRespType": "ACK"}).json()
    assert set(ack) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}


def test_binance_errors(api):
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"}
    cases = [({**base, "symbol": "NOPE"}, -1121), ({**base, "quantity": "1,5"}, -1100), ({k: v for k, v in base.items() if k != "quantity"}, -1102),
             ({**base, "side": "HOLD"}, -1117), ({**base, "type": "STOP"}, -1116), ({**base, "type": "LIMIT", "price": "1", "timeInForce": "GTC"}, -1115)]
    for params, code in cases:
        r = binance_order(api, params)
        assert r.status_code == 400 and r.json()["code"] == code, (params, r.text)
    assert api.gateway.published == []


def test_binance_test_order_exchange_info_and_allocations(api):
    test = api.post(f"/api/v3/sor/order/test?{signed({'symbol': 'BTCUSDT', 'side': 'BUY', 'type': 'MARKET', 'quantity': '1', 'computeCommissionRates': 'true'})}",
                    headers={"X-MBX-APIKEY": KEY}).json()
    assert test["standardCommissionForOrder"]["taker"] == "0.00100000"
    assert api.gateway.published == []
    info = api.get("/api/v3/exchangeInfo").json()
    assert {"baseAsset": "BTC", "symbols": ["BTCUSDT"]} in info["sors"]
    binance_order(api, {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "7", "newClientOrderId": "alloc-1"})
    allocs = api.get(f"/api/v3/myAllocations?{signed({'symbol': 'BTCUSDT'})}", headers={"X-MBX-APIKEY": KEY}).json()
    assert sum(D(a["qty"]) for a in allocs) == D(7) and all(a["isBuyer"] for a in allocs)
    assert api.get(f"/api/v3/myAllocations?{signed({'symbol': 'BTCUSDT'}, secret='s2')}", headers={"X-MBX-APIKEY": "other"}).json() == []


def test_body_size_and_rate_limits():
    settings = Settings(api_keys={KEY: {"secret": SECRET, "account_id": "a"}}, api_max_body_bytes=256, api_rate_limit_per_s=0.001,
                        api_rate_limit_burst=3)
    from worker.service.quotes import QuoteCache

    app = create_app(ApiDeps(settings=settings, venues=VENUES, quotes=QuoteCache(), gateway=InProcessGateway(None)))
    with TestClient(app) as client:
        big = client.post("/v1/smart-order", content="x" * 1000, headers={"X-MBX-APIKEY": KEY})
        assert big.status_code == 413
        codes = [client.get("/v1/route/BTC/USD", headers={"X-MBX-APIKEY": KEY}).status_code for _ in range(4)]
        assert codes[-1] == 429 and 429 not in codes[:2]
        limited = client.post("/api/v3/sor/order", headers={"X-MBX-APIKEY": KEY})
        assert limited.status_code == 429 and limited.json()["code"] == -1003
        assert client.get("/healthz").status_code == 200  # probes are never limited


def test_openapi_is_generated_from_the_models(api):
    doc = api.get("/openapi.json").json()
    paths = doc["paths"]
    for path in ("/v1/route/{symbol}", "/v1/route/{symbol}/{quote}", "/v1/route/{symbol}/split", "/v1/route/{symbol}/{quote}/split",
                 "/v1/smart-order", "/v1/smart-order/split", "/v1/smart-order/{intent_id}", "/api/v3/sor/order", "/api/v3/sor/order/test",
                 "/api/v3/exchangeInfo", "/api/v3/myAllocations"):
        assert path in paths, path
    assert {"SplitPlan", "ExecutionReport", "SmartOrderRequest", "VenueRoute"} <= set(doc["components"]["schemas"])
    assert api.get("/metrics").text.count("sor_api_requests_total") > 0


def test_compose_and_kustomize_run_the_api_next_to_the_worker():
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["api"]
    assert compose["command"][0] == "api" and "8090:8090" in compose["ports"] and "/readyz" in " ".join(compose["healthcheck"]["test"])
    docs = list(yaml.safe_load_all((root / "deploy/base/sor-api.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "api" and container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]} == {"sor-kafka-sasl", "sor-api-keys"}
    assert next(d for d in docs if d["kind"] == "Service")["spec"]["selector"] == {"app.kubernetes.io/component": "api"}
    assert "sor-api.yaml" in yaml.safe_load((root / "deploy/base/kustomization.yaml").read_text())["resources"]


def test_signature_covers_query_then_body_without_the_signature_parameter():
    from worker.api.security import AuthError, authenticate, strip_signature
    from worker.config import ApiKey

    assert strip_signature("a=1&signature=ff&b=2") == ("a=1&b=2", "ff")
    keys = {KEY: ApiKey(secret=SECRET, account_id="acct-1")}
    now = now_ms()
    query, body = f"symbol=BTCUSDT&timestamp={now}", "side=BUY&quantity=1"
    sig = sign(SECRET, query + body)
    params = {"timestamp": str(now)}
    assert authenticate(keys, KEY, query, f"{body}&signature={sig}", params, now).account_id == "acct-1"
    assert authenticate(keys, KEY, f"{query}&signature={sig.upper()}", body, params, now).api_key == KEY
    for tamper in (f"{query}&signature={sig}&quantity=2", f"{query}1&signature={sig}"):
        with pytest.raises(AuthError) as bad:
            authenticate(keys, KEY, tamper, body, params, now)
        assert bad.value.code == -1022 and bad.value.status == 401
    with pytest.raises(AuthError) as ahead:
        authenticate(keys, KEY, f"{query}&signature={sig}", body, {"timestamp": str(now + 5_000)}, now)
    assert ahead.value.code == -1021
    with pytest.raises(AuthError) as window:
        authenticate(keys, KEY, f"{query}&signature={sig}", body, {"timestamp": str(now), "recvWindow": "60001"}, now)
    assert window.value.code == -1131


def test_token_bucket_refills_at_its_rate():
    from worker.api.security import TokenBuckets

    t = [0.0]
    buckets = TokenBuckets(rate=2, burst=2, clock=lambda: t[0])
    assert [buckets.allow("k") for _ in range(3)] == [True, True, False]
    t[0] += 0.5
    assert buckets.allow("k") and not buckets.allow("k")
    assert buckets.allow("other")


def test_result_book_shares_one_reply_and_forgets_unpublished_intents():
    from worker.domain.models import ExecutionResult, ExecutionStatus, OrderIntent

    async def scenario():
        book = ResultBook(10)
        intent = OrderIntent(intent_id="i-1", account_id="a", symbol="BTC/USD", side="buy", type="market", qty="1")
        book.expect(intent)
        assert book.pending("i-1") is intent and await book.wait("i-1", 0.01) is None
        waiters = [asyncio.create_task(book.wait("i-1", 5)) for _ in range(2)]
        await asyncio.sleep(0)
        result = ExecutionResult(event_id="e", plan_id=None, intent_id="i-1", account_id="a", symbol="BTC/USD", side="buy",
                                 algorithm="sor", total_qty="1", filled_qty="0", vwap=None, status=ExecutionStatus.REJECTED,
                                 latency_ms=1, executedQty="0", cummulativeQuoteQty="0")
        book.add(Settled(result, 1, 0))
        replies = await asyncio.gather(*waiters)
        assert [r.result.intent_id for r in replies] == ["i-1", "i-1"]
        assert book.pending("i-1") is None and book.get("i-1").result is result
        book.expect(intent.model_copy(update={"intent_id": "i-2"}))
        book.forget("i-2")
        assert book.pending("i-2") is None and await book.wait("i-2", 0.01) is None

    asyncio.run(scenario())


def test_sor_api_exits_when_its_quote_feed_keeps_failing():
    """A background task that the supervisor gave up on ends `sor api` with its error (exit 1,
    the orchestrator restarts it) instead of leaving a process that is never ready again."""
    import asyncio

    from worker.bootstrap import ApiServer, Supervisor
    from worker.observability import Health

    async def main():
        supervisor = Supervisor(asyncio.Event(), Health(), give_up_s=0.05)

        async def feed():
            raise ConnectionError("broker gone")

        supervisor.spawn("quote-feed", feed)
        server = ApiServer(url="http://x", port=0, app=None, quotes=None, gateway=None, supervisor=supervisor)
        try:
            await server.until_stopped_or_failed(asyncio.Event())
        except ConnectionError as exc:
            return str(exc)
        finally:
            await supervisor.close()

    assert asyncio.run(main()) == "broker gone"
