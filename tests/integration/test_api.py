"""`sor api` end to end: a subprocess in front of a running `sor worker`, over the real
embedded broker. Shapes are checked against the committed JSON Schemas; a real Binance
client library and the seed's own JavaScript snippet place SOR orders with only the base
URL changed."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import httpx
import jsonschema
import pytest

from tests.integration.conftest import VENUES_TOML, now_ms
from tests.integration.test_worker import make_topics, publish_quotes, quote
from tests.support.kafka_io import ROOT, SOR, TopicSet, WorkerProcess, read_json
from worker.api.security import sign

pytestmark = pytest.mark.integration
D = Decimal
KEY, SECRET, ACCOUNT = "it-key", "it-secret", "acct-api"
SCHEMAS = ROOT / "schemas"

# Deep enough for the seed's 10 BTC market order, several times over.
BOOKS = [
    quote("binance", asks=[(42155, "6"), (42156, "40")], bids=[(42150, "6"), (42149, "40")]),
    quote("kraken", asks=[(42160, "4"), (42170, "40")], bids=[(42145, "4"), (42140, "40")]),
    quote("coinbase", asks=[(42150, "2"), (42180, "40")], bids=[(42148, "2"), (42100, "40")]),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiProcess(WorkerProcess):
    """`sor api` as a subprocess; output captured like the worker's."""

    def __init__(self, bootstrap: str, venues_file: Path, topics: TopicSet, extra_env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, **topics.env, "SOR_MAX_QUOTE_AGE_MS": "600000", "SOR_TOPIC_PARTITIONS": "3",
               "SOR_API_KEYS": json.dumps({KEY: {"secret": SECRET, "account_id": ACCOUNT}}), **(extra_env or {})}
        self.proc = subprocess.Popen([SOR, "api", "--bootstrap-servers", bootstrap, "--venues", str(venues_file), "--port", str(self.port)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def started(self) -> "ApiProcess":
        self.wait_for('"api_started"')
        return self


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


def check(doc, name: str) -> None:
    jsonschema.validate(doc, schema(name))


def signed_query(params: dict | None = None, body: str = "", secret: str = SECRET) -> str:
    query = urlencode({**(params or {}), "timestamp": now_ms()})
    return f"{query}&signature={sign(secret, query + body)}"


def post_order(url: str, path: str, doc: dict, key: str = KEY, secret: str = SECRET) -> httpx.Response:
    body = json.dumps(doc)
    return httpx.post(f"{url}{path}?{signed_query(body=body, secret=secret)}", content=body,
                      headers={"X-MBX-APIKEY": key, "Content-Type": "application/json"}, timeout=30)


def intents_for(bootstrap: str, topics: TopicSet, intent_id: str) -> list[dict]:
    return [i for i in read_json(bootstrap, topics.intents, 1, timeout_s=10) if i.get("intent_id") == intent_id]


@pytest.fixture(scope="module")
def stack(bootstrap, tmp_path_factory):
    """One broker topic set, one `sor worker`, one `sor api` for the module's tests."""
    topics = TopicSet()
    venues_file = tmp_path_factory.mktemp("api") / "venues.toml"
    venues_file.write_text(VENUES_TOML)
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS)
    # The paper venues remember what earlier orders took from a snapshot; the worker does too.
    worker = WorkerProcess(bootstrap, venues_file, topics, {"SOR_RESERVE_OWN_LIQUIDITY": "true"}).started()
    api = ApiProcess(bootstrap, venues_file, topics).started()
    yield {"topics": topics, "worker": worker, "api": api, "url": api.url, "bootstrap": bootstrap}
    assert api.stop() == 0
    assert worker.stop() == 0


def test_the_seed_route_endpoints_answer_with_the_seed_shapes(stack):
    url = stack["url"]
    for path in ("/v1/route/BTC", "/v1/route/BTC/USD"):
        r = httpx.get(f"{url}{path}")
        assert r.status_code == 200, r.text
        check(r.json(), "route_result")
        assert [x["provider"] for x in r.json()] == ["binance", "kraken", "coinbase"]  # net of taker fees (10, 26, 40 bps)
    for path in ("/v1/route/BTC/split", "/v1/route/BTC/USD/split"):
        r = httpx.get(f"{url}{path}", params={"qty": "10", "side": "buy"})
        assert r.status_code == 200, r.text
        plan = r.json()
        check(plan, "split_plan")
        assert plan["algorithm"] == "split" and sum(D(leg["qty"]) for leg in plan["legs"]) == D(10)
    sor = httpx.get(f"{url}/v1/route/BTC/USD/split", params={"qty": "10", "algorithm": "sor", "side": "sell"}).json()
    assert sor["algorithm"] == "sor" and sor["side"] == "sell"
    bad = httpx.get(f"{url}/v1/route/BTC/USD/split", params={"qty": "ten"})
    assert bad.status_code == 400 and bad.json()["detail"].startswith("qty")
    assert httpx.get(f"{url}/readyz").json() == {"ready": True}
    assert "sor_api_requests_total" in httpx.get(f"{url}/metrics").text


def test_smart_orders_execute_through_the_worker_once_per_key(stack):
    url, bootstrap, topics = stack["url"], stack["bootstrap"], stack["topics"]
    doc = {"symbol": "BTC/USD", "side": "buy", "qty": "0.75", "idempotency_key": "it-best-1"}
    first = post_order(url, "/v1/smart-order", doc)
    assert first.status_code == 200, first.text
    report = first.json()
    check(report, "execution_report")
    assert report["status"] == "filled" and D(report["filled_qty"]) == D("0.75") and report["algorithm"] == "best"
    assert [leg["provider"] for leg in report["legs"]] == ["binance"]
    again = post_order(url, "/v1/smart-order", doc)
    assert again.status_code == 200 and again.json() == report
    assert post_order(url, "/v1/smart-order", {**doc, "qty": "1"}).status_code == 409

    split = post_order(url, "/v1/smart-order/split", {"symbol": "BTC/USD", "side": "buy", "qty": "10", "idempotency_key": "it-split-1"})
    assert split.status_code == 200, split.text
    check(split.json(), "execution_report")
    assert split.json()["algorithm"] == "split" and len(split.json()["legs"]) == 3
    assert D(split.json()["filled_qty"]) == D(10)

    dry = post_order(url, "/v1/smart-order/split", {"symbol": "BTC/USD", "side": "sell", "qty": "3", "algorithm": "sor", "dry_run": True})
    assert dry.status_code == 200
    check(dry.json(), "split_plan")

    # On the bus: each keyed intent once, each result once.
    results = [r for r in read_json(bootstrap, topics.executions, 2) if r["intent_id"] in (report["intent_id"], split.json()["intent_id"])]
    assert sorted(r["intent_id"] for r in results) == sorted([report["intent_id"], split.json()["intent_id"]])
    assert len(intents_for(bootstrap, topics, report["intent_id"])) == 1


def test_unauthenticated_orders_get_401_and_place_nothing(stack):
    url = stack["url"]
    doc = {"symbol": "BTC/USD", "side": "buy", "qty": "0.1", "idempotency_key": "never-placed"}
    assert httpx.post(f"{url}/v1/smart-order", json=doc).status_code == 401
    assert post_order(url, "/v1/smart-order", doc, key="unknown").status_code == 401
    assert post_order(url, "/v1/smart-order", doc, secret="wrong").status_code == 401
    bn = httpx.post(f"{url}/api/v3/sor/order?symbol=BTCUSDT&side=BUY&type=MARKET&quantity=1&timestamp={now_ms()}&signature=00",
                    headers={"X-MBX-APIKEY": KEY})
    assert bn.status_code == 401 and bn.json()["code"] == -1022
    from worker.api.orders import intent_id_for

    assert intents_for(stack["bootstrap"], stack["topics"], intent_id_for("api", ACCOUNT, "never-placed")) == []


def test_a_real_binance_client_places_an_sor_order(stack):
    """binance-connector, unmodified: only ``base_url`` differs from production."""
    from binance.error import ClientError
    from binance.spot import Spot

    client = Spot(api_key=KEY, api_secret=SECRET, base_url=stack["url"])
    info = client.exchange_info(symbol="BTCUSDT")
    assert {"baseAsset": "BTC", "symbols": ["BTCUSDT"]} in info["sors"]
    # The library has no SOR method: its own signed-request helper sends it, as Binance documents.
    order = client.sign_request("POST", "/api/v3/sor/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                              "quantity": "2.5", "newClientOrderId": "it-connector-1"})
    assert order["workingFloor"] == "SOR" and order["usedSor"] is True and order["status"] == "FILLED"
    assert order["clientOrderId"] == "it-connector-1" and D(order["executedQty"]) == D("2.5")
    assert order["fills"] and all(f["matchType"] == "ONE_PARTY_TRADE_REPORT" and "allocId" in f and "tradeId" in f for f in order["fills"])
    assert sum(D(f["qty"]) for f in order["fills"]) == D("2.5")
    allocations = client.query_allocations(symbol="BTCUSDT", orderId=order["orderId"])
    assert sorted(a["allocId"] for a in allocations) == sorted(f["allocId"] for f in order["fills"])
    assert client.sign_request("POST", "/api/v3/sor/order/test", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                                  "quantity": "1", "computeCommissionRates": "true"})["standardCommissionForOrder"]
    with pytest.raises(ClientError) as bad:
        client.sign_request("POST", "/api/v3/sor/order", {"symbol": "XRPUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"})
    assert bad.value.error_code == -1121
    with pytest.raises(ClientError) as dup:
        client.sign_request("POST", "/api/v3/sor/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                          "quantity": "3", "newClientOrderId": "it-connector-1"})
    assert dup.value.error_code == -2010


def _npm_reachable() -> bool:
    try:
        return subprocess.run(["npm", "ping"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def test_the_seeds_javascript_snippet_places_an_sor_order(stack, tmp_path):
    """tests/js/sor-order.js is the seed's snippet verbatim but for its ``baseURL`` line."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node/npm not installed")
    if not _npm_reachable():
        pytest.skip("the npm registry is unreachable: cannot install axios")
    work = tmp_path / "js"
    shutil.copytree(ROOT / "tests/js", work, ignore=shutil.ignore_patterns("node_modules"))
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=work, check=True, timeout=300)
    env = {**os.environ, "SOR_API_URL": stack["url"], "BINANCE_API_KEY": KEY, "BINANCE_API_SECRET": SECRET}
    out = subprocess.run(["node", "sor-order.js"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "SOR Order Fills:" in out.stdout and "SOR Order Failed" not in out.stdout + out.stderr, out.stdout + out.stderr
    assert "ONE_PARTY_TRADE_REPORT" in out.stdout and "allocId" in out.stdout


def test_no_result_within_the_timeout_answers_202_then_the_poll_gets_it(bootstrap, tmp_path):
    """The worker is not running when the order arrives: 202, then it starts and the poll
    returns the result."""
    topics = TopicSet()
    venues_file = tmp_path / "venues.toml"
    venues_file.write_text(VENUES_TOML)
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS)
    api = ApiProcess(bootstrap, venues_file, topics, {"SOR_API_RESULT_TIMEOUT_MS": "200"}).started()
    worker = None
    try:
        r = post_order(api.url, "/v1/smart-order/split", {"symbol": "BTC/USD", "side": "buy", "qty": "1.5", "idempotency_key": "later"})
        assert r.status_code == 202, r.text
        check(r.json(), "pending_order")
        poll = r.json()["poll"]
        get = lambda url=api.url: httpx.get(f"{url}{poll}?{signed_query()}", headers={"X-MBX-APIKEY": KEY})  # noqa: E731
        assert get().status_code == 202
        # A second replica (behind the same load balancer) knows the order is pending: never a 404
        # that would tell the caller the order does not exist.
        other = ApiProcess(bootstrap, venues_file, topics).started()
        assert get(other.url).status_code == 202, get(other.url).text
        worker = WorkerProcess(bootstrap, venues_file, topics).started()
        deadline = time.monotonic() + 60
        while (answer := get()).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer.status_code == 200, answer.text
        while (elsewhere := get(other.url)).status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert elsewhere.json() == answer.json()
        assert other.stop() == 0
        check(answer.json(), "execution_report")
        assert answer.json()["status"] == "filled" and D(answer.json()["filled_qty"]) == D("1.5")
        # A retry with the same key returns the result, it does not place again.
        again = post_order(api.url, "/v1/smart-order/split", {"symbol": "BTC/USD", "side": "buy", "qty": "1.5", "idempotency_key": "later"})
        assert again.status_code == 200 and again.json() == answer.json()
        # After a restart the API re-reads recent results: the retry still does not place again.
        assert api.stop() == 0
        api = ApiProcess(bootstrap, venues_file, topics).started()
        after = post_order(api.url, "/v1/smart-order/split", {"symbol": "BTC/USD", "side": "buy", "qty": "1.5", "idempotency_key": "later"})
        assert after.status_code == 200 and after.json() == answer.json()
        assert len(intents_for(bootstrap, topics, r.json()["intent_id"])) == 1
    finally:
        api.kill()
        if worker is not None:
            worker.kill()
