"""What the HTTP surfaces (`sor api`, `sor paper-venue`) refuse, and how: a clear 4xx with
Binance's code or the field's name, never a 500, and never one order answered with another's
result (an idempotency key or client order id reused for a different order is a conflict)."""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal
from urllib.parse import quote, urlencode

import pytest
from aiohttp.test_utils import TestClient as AioClient
from aiohttp.test_utils import TestServer

from tests.support.scenarios import make_intent
from tests.unit.test_api import KEY, SECRET, api_client
from worker.api.security import sign
from worker.config import VenueCredentials
from worker.domain.clock import now_ms
from worker.domain.models import VenueConfig, VenueQuote
from worker.venues.http import binance_signature
from worker.venues.paper_server import PaperVenueServer

D = Decimal


# --- sor api ---------------------------------------------------------------------------------


@pytest.fixture
def api():
    with api_client(raise_server_exceptions=False) as client:  # a server error is the app's 500, not an exception here
        yield client


def _signed_query(raw_params: str) -> str:
    return f"{raw_params}&signature={sign(SECRET, raw_params)}"


def _sor(api, params: dict, path: str = "/api/v3/sor/order"):
    query = urlencode({**params, "timestamp": now_ms()})
    return api.post(f"{path}?{_signed_query(query)}", headers={"X-MBX-APIKEY": KEY})


def _smart(api, doc, headers=None, path="/v1/smart-order"):
    body = json.dumps(doc)
    query = f"timestamp={now_ms()}"
    return api.post(f"{path}?{query}&signature={sign(SECRET, query + body)}", content=body,
                    headers={"X-MBX-APIKEY": KEY, "Content-Type": "application/json", **(headers or {})})


MARKET = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "1"}


def test_unicode_digit_timestamp_or_recv_window_is_a_400_not_a_500(api):
    # str.isdigit() is True for '²' but int('²') raises: security.check_timestamp answers 500.
    for extra in (f"&timestamp={quote('²')}", f"&timestamp={now_ms()}&recvWindow={quote('²')}"):
        r = api.post(f"/api/v3/sor/order?{_signed_query(urlencode(MARKET) + extra)}", headers={"X-MBX-APIKEY": KEY})
        assert r.status_code == 400, (extra, r.status_code, r.text)
        assert r.json()["code"] in (-1100, -1102), r.text
    assert api.gateway.published == []


def test_my_allocations_unicode_digit_number_is_a_400_not_a_500(api):
    for name in ("limit", "startTime", "fromAllocationId", "orderId"):
        query = urlencode({"symbol": "BTCUSDT", name: "²", "timestamp": now_ms()})
        r = api.get(f"/api/v3/myAllocations?{_signed_query(query)}", headers={"X-MBX-APIKEY": KEY})
        assert r.status_code == 400 and r.json()["code"] == -1100 and name in r.json()["msg"], (name, r.status_code, r.text)


@pytest.mark.parametrize("field,params", [
    ("quantity", {**MARKET, "quantity": "0.0000000000000000001"}),  # 19 places: Binance's pattern takes 20, the domain 18
    ("quantity", {**MARKET, "quantity": "99999999999999999999"}),   # 20 digits: past the domain's 1e18
    ("price", {**MARKET, "type": "LIMIT", "timeInForce": "IOC", "price": "0.0000000000000000001"}),
])
def test_sor_order_amount_past_the_domain_bounds_is_a_400_naming_it(api, field, params):
    # parse_sor_order accepts it, then OrderIntent(...) in sor_intent raises ValidationError: 500.
    for path in ("/api/v3/sor/order", "/api/v3/sor/order/test"):
        r = _sor(api, {**params, "computeCommissionRates": "true"} if path.endswith("test") else params, path)
        assert r.status_code == 400, (path, r.status_code, r.text)
        assert field in r.json()["msg"], r.text
    assert api.gateway.published == []


def test_non_ascii_signature_is_refused_not_a_500(api):
    # hmac.compare_digest raises TypeError on a non-ASCII str: any holder of an API key gets a 500.
    body = urlencode({**MARKET, "timestamp": now_ms()}) + "&signature=\u00e9"
    r = api.post("/api/v3/sor/order", content=body.encode(),
                 headers={"X-MBX-APIKEY": KEY, "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code in (400, 401) and r.json()["code"] in (-1022, -1100), (r.status_code, r.text)
    assert api.gateway.published == []


def test_exchange_info_deeply_nested_symbols_is_a_400_not_a_500(api):
    # Public, unauthenticated: json.loads raises RecursionError, which the handler does not catch.
    r = api.get("/api/v3/exchangeInfo", params={"symbols": "[" * 5000})
    assert r.status_code == 400 and r.json()["code"] == -1100, (r.status_code, r.text)


def test_empty_idempotency_key_header_does_not_merge_distinct_orders(api):
    # Two different orders from a client whose key variable happened to be empty: the second is
    # never placed and is answered with the first one's fill ('' hashed as a real key).
    doc = {"symbol": "BTC/USD", "side": "buy", "qty": "0.1"}
    first = _smart(api, doc, headers={"Idempotency-Key": ""})
    second = _smart(api, doc, headers={"Idempotency-Key": ""})
    if first.status_code == 400:
        assert "Idempotency-Key" in first.json()["detail"]
        return
    assert second.status_code == 200 and second.json()["intent_id"] != first.json()["intent_id"], second.text
    assert len(api.gateway.published) == 2


def test_same_idempotency_key_for_a_different_limit_price_is_a_conflict(api):
    doc = {"symbol": "BTC/USD", "side": "buy", "qty": "0.1", "type": "limit", "limit_price": "50000", "idempotency_key": "k-px"}
    assert _smart(api, doc).status_code == 200
    other = _smart(api, {**doc, "limit_price": "100"})  # a limit the book never reaches
    assert other.status_code == 409, other.text  # today: 200 with the first order's fill at 42155
    market = _smart(api, {k: v for k, v in doc.items() if k != "limit_price"} | {"type": "market"})
    assert market.status_code == 409, market.text


def test_same_idempotency_key_on_the_split_endpoint_is_a_conflict(api):
    doc = {"symbol": "BTC/USD", "side": "buy", "qty": "0.1", "idempotency_key": "k-alg"}
    assert _smart(api, doc).json()["algorithm"] == "best"
    split = _smart(api, {**doc, "algorithm": "sor"}, path="/v1/smart-order/split")
    # today: 200 with {"algorithm": "best"} in answer to an order for 'sor'
    assert split.status_code == 409, split.text


def test_binance_same_client_order_id_for_a_different_price_is_not_answered_with_the_first_fill(api):
    order = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "1", "price": "50000",
             "newClientOrderId": "px-1"}
    assert _sor(api, order).json()["status"] == "FILLED"
    again = _sor(api, {**order, "price": "100"})
    # today: 200 {"price": "100", "executedQty": "1", "cummulativeQuoteQty": "42155...", "status": "FILLED"}:
    # a buy limited at 100 reported filled at 42155.
    assert again.status_code == 400 and again.json() == {"code": -2010, "msg": "Duplicate order sent."}, again.text
    assert len(api.gateway.published) == 1


def test_expires_at_boolean_is_refused_naming_the_field(api):
    r = _smart(api, {"symbol": "BTC/USD", "side": "buy", "qty": "0.1", "expires_at": True, "dry_run": True})
    assert r.status_code == 400 and r.json()["detail"].startswith("expires_at"), r.text


# --- sor paper-venue -------------------------------------------------------------------------

CREDS = VenueCredentials(api_key="paper-key", api_secret="paper-secret")
PAPER = VenueConfig(name="binance", taker_fee_bps=D(10), step_size=D("0.000000001"), min_qty=D("0.00001"),
                    min_notional=D("5"), tick_size=D("0.01"))
ORDER = {"symbol": "BTCUSD", "side": "BUY", "type": "LIMIT", "timeInForce": "IOC", "quantity": "0.001", "price": "42001"}


def _paper(scenario):
    async def main():
        ts = time.time_ns() // 1_000_000
        book = VenueQuote(venue="binance", symbol="BTC/USD", ts=ts, asks=[(D("42000.12"), D("5"))], bids=[(D("41999.5"), D("3"))])
        server = PaperVenueServer([PAPER], lambda name, symbol: book if symbol == book.symbol else None,
                                  credentials={"binance": CREDS})
        async with AioClient(TestServer(server.app())) as client:
            return await scenario(client, server)
    return asyncio.run(main())


def _paper_signed(raw: str) -> str:
    return f"{raw}&signature={binance_signature('paper-secret', raw)}"


def _stamp() -> int:
    return time.time_ns() // 1_000_000


HEADERS = {"X-MBX-APIKEY": "paper-key"}


@pytest.mark.parametrize("field,value", [("price", "1e30"), ("quantity", "1e30")])
def test_paper_venue_huge_price_or_quantity_is_a_filter_failure_not_a_500(field, value):
    # _filters computes price % tick (qty % step) before the upper bound: decimal.InvalidOperation.
    async def scenario(client, server):
        raw = urlencode({**ORDER, field: value, "newClientOrderId": f"big-{field}", "timestamp": _stamp()})
        r = await client.post(f"/binance/api/v3/order?{_paper_signed(raw)}", headers=HEADERS)
        return r.status, await r.text(), server.orders["binance"]
    status, text, ledger = _paper(scenario)
    assert status == 400 and json.loads(text)["code"] in (-1013, -1100), (status, text)
    assert ledger == {}


def test_paper_venue_non_ascii_signature_is_refused_not_a_500():
    async def scenario(client, server):
        raw = urlencode({**ORDER, "timestamp": _stamp()})
        r = await client.post(f"/binance/api/v3/order?{raw}&signature=%C3%A9", headers=HEADERS)
        return r.status, await r.text()
    status, text = _paper(scenario)
    assert status in (400, 401) and json.loads(text)["code"] == -1022, (status, text)


def test_paper_venue_refuses_a_parameter_sent_twice():
    # Binance answers -1101; the paper venue silently takes the last quantity (0.002, not 0.001).
    async def scenario(client, server):
        raw = urlencode(ORDER) + f"&quantity=0.002&newClientOrderId=twice&timestamp={_stamp()}"
        r = await client.post(f"/binance/api/v3/order?{_paper_signed(raw)}", headers=HEADERS)
        return r.status, await r.text()
    status, text = _paper(scenario)
    assert status == 400 and json.loads(text)["code"] == -1101, (status, text)


def test_paper_venue_caps_recv_window_at_60000():
    # No cap: a signed order 11 days old is accepted with recvWindow=999999999999 (Binance: -1131).
    async def scenario(client, server):
        raw = urlencode({**ORDER, "newClientOrderId": "old", "timestamp": _stamp() - 10**9, "recvWindow": 999_999_999_999})
        r = await client.post(f"/binance/api/v3/order?{_paper_signed(raw)}", headers=HEADERS)
        return r.status, await r.text(), server.orders["binance"]
    status, text, ledger = _paper(scenario)
    assert status == 400 and json.loads(text)["code"] in (-1131, -1021), (status, text)
    assert ledger == {}


class _Gateway:
    def __init__(self):
        from worker.service.results import ResultBook

        self.book = ResultBook(100)
        self.published = []

    async def publish(self, intent):
        self.published.append(intent)

    def healthy(self):
        return True


def test_a_retry_naming_the_same_venues_in_another_order_is_the_same_order():
    """The venues are a filter: ["a", "b"] then ["b", "a"] is the same order, replayed, never
    a 409."""
    from worker.api.orders import IdempotencyConflict, OrderDesk

    async def main():
        gateway = _Gateway()
        desk = OrderDesk(gateway)
        first = make_intent("0.5", intent_id="api-k").model_copy(update={"venues": ["a", "b"]})
        await desk.place(first, 0.01)
        retry = first.model_copy(update={"venues": ["b", "a"]})
        try:
            placement = await desk.place(retry, 0.01)
        except IdempotencyConflict:
            raise AssertionError("a retry of the same order (venues listed in another order) is a conflict") from None
        assert placement.replayed
        assert len(gateway.published) == 1

    asyncio.run(main())
