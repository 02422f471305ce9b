"""The ccxt adapter, and ccxt's own ``binance`` class, against ``sor paper-venue``'s HTTP API.

Every test runs the real paper-venue server in-process on a free loopback port and the real
ccxt exchange code pointed at it: no mocks, no internet.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from decimal import Decimal as D

import pytest

from worker.config import VenueCredentials
from worker.domain.errors import InputError
from worker.domain.models import LegStatus, Side, VenueConfig, VenueQuote
from worker.venues.base import LegOrder, VenueError
from worker.venues.ccxt_venue import CcxtVenue, exact_exchange_class
from worker.venues.http import HttpVenue
from worker.venues.lifecycle import close_adapters, start_adapters
from worker.venues.market_data import BookPoller
from worker.venues.paper_server import PaperVenueServer, serve
from worker.broker import free_port

CREDS = VenueCredentials(api_key="paper-key", api_secret="paper-secret")
NOW = time.time_ns() // 1_000_000
BOOK = VenueQuote(venue="binance", symbol="BTC/USD", ts=NOW,
                  asks=[(D("42000.12"), D("0.123456789")), (D("42001"), D("5"))],
                  bids=[(D("41999.5"), D("3")), (D("41990"), D("2"))])
PAPER = VenueConfig(name="binance", taker_fee_bps=D(10), step_size=D("0.000000001"), min_qty=D("0.00001"),
                    min_notional=D("5"), tick_size=D("0.01"))


def ccxt_venue(url: str, **fields) -> VenueConfig:
    return VenueConfig(name="binance", adapter="ccxt", exchange="binance", url=url, symbols={"BTC/USD": "BTC/USD"},
                       rate_limit_ms=1, **fields)


@asynccontextmanager
async def paper_venue(venue: VenueConfig = PAPER, book: VenueQuote = BOOK, credentials=None, server_class=PaperVenueServer):
    server = server_class([venue], lambda name, symbol: book if symbol == book.symbol else None,
                          credentials={venue.name: CREDS} if credentials is None else credentials)
    port = free_port()
    runner = await serve(server, port)
    try:
        yield server, f"http://127.0.0.1:{port}/{venue.name}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def started(config: VenueConfig, credentials=CREDS, timeout_s: float = 10.0):
    adapter = CcxtVenue(config, credentials, timeout_s=timeout_s)
    try:
        await adapter.start()
        yield adapter
    finally:
        await adapter.close()


def test_ccxts_own_binance_class_trades_against_the_paper_venue():
    async def scenario():
        async with paper_venue() as (_server, url):
            exchange = exact_exchange_class("binance")({"apiKey": CREDS.api_key, "secret": "paper-secret", "enableRateLimit": True})
            from worker.venues.ccxt_venue import _reroot

            exchange.urls["api"] = _reroot(exchange.urls["api"], url)
            try:
                markets = await exchange.load_markets()
                book = await exchange.fetch_order_book("BTC/USD", 5)
                created = await exchange.create_order("BTC/USD", "limit", "buy", "0.2", "42001",
                                                      {"timeInForce": "IOC", "clientOrderId": "ccxt-own-1"})
                fetched = await exchange.fetch_order(None, "BTC/USD", {"origClientOrderId": "ccxt-own-1"})
                cancelled = await exchange.cancel_order(None, "BTC/USD", {"origClientOrderId": "ccxt-own-1"})
                listed = await exchange.fetch_orders("BTC/USD")
                return markets["BTC/USD"], book, created, fetched, cancelled, listed
            finally:
                await exchange.close()

    market, book, created, fetched, cancelled, listed = asyncio.run(scenario())
    assert market["id"] == "BTCUSD" and market["spot"] and market["precision"]["amount"] == "0.000000001"
    assert book["asks"][0] == ["42000.12", "0.123456789"] and book["timestamp"] == NOW
    assert created["clientOrderId"] == "ccxt-own-1" and created["info"]["timeInForce"] == "IOC"
    assert created["status"] == "closed" and D(created["filled"]) == D("0.2") and len(created["trades"]) == 2
    assert fetched["id"] == created["id"] and D(fetched["filled"]) == D("0.2")
    assert cancelled["id"] == created["id"]
    assert [o["clientOrderId"] for o in listed] == ["ccxt-own-1"]


def test_lot_rules_come_from_load_markets_and_the_file_wins():
    async def scenario():
        async with paper_venue() as (_server, url):
            async with started(ccxt_venue(url)) as from_exchange, started(ccxt_venue(url, min_notional=D("7"))) as explicit:
                return from_exchange.config, explicit.config

    loaded, explicit = asyncio.run(scenario())
    # exchangeInfo serves the paper venue's LOT_SIZE / NOTIONAL / PRICE_FILTER filters
    assert (loaded.step_size, loaded.min_qty, loaded.min_notional, loaded.tick_size) == (D("0.000000001"), D("0.00001"), D("5"), D("0.01"))
    assert explicit.min_notional == D("7") and explicit.step_size == D("0.000000001")


def test_start_adapters_returns_the_effective_venues_for_the_router():
    async def scenario():
        async with paper_venue() as (_server, url):
            adapters = {"binance": CcxtVenue(ccxt_venue(url), CREDS)}
            try:
                return await start_adapters(adapters, [ccxt_venue(url)])
            finally:
                await close_adapters(adapters)

    [venue] = asyncio.run(scenario())
    assert venue.step_size == D("0.000000001") and venue.min_notional == D("5")


def test_fills_keep_every_decimal_no_float_rounding():
    # 17 significant digits in the quantity, a fee with ~30: a float would round both.
    qty = D("1234567.1234567891")
    price = D("5.43210987")  # a notional (~6.7M) within the venue's maxNotional (9M, as Binance's)
    book = VenueQuote(venue="binance", symbol="BTC/USD", ts=NOW, asks=[(price, D("2000000"))], bids=[])
    paper = VenueConfig(name="binance", taker_fee_bps=D(7), step_size=D("0.0000000001"), tick_size=D("0.00000001"))

    async def scenario():
        async with paper_venue(paper, book) as (_server, url):
            async with started(ccxt_venue(url)) as adapter:
                placed = await adapter.place(LegOrder("exact-1", "BTC/USD", Side.BUY, qty, price))
                fresh = CcxtVenue(ccxt_venue(url), CREDS)
                try:
                    queried = await fresh.query("exact-1")
                finally:
                    await fresh.close()
                quote = await adapter.fetch_quote("BTC/USD", 10)
                return placed, queried, quote

    placed, queried, quote = asyncio.run(scenario())
    assert D(repr(float(qty))) != qty  # a float cannot carry this quantity
    assert placed.status is LegStatus.FILLED and placed.filled_qty == qty
    [trade] = placed.trades
    assert trade.qty == qty and trade.price == price
    assert trade.commission == price * qty * D(7) / D(10_000)
    assert D(repr(float(trade.commission))) != trade.commission  # what a float would have made of it
    assert queried.trades == placed.trades
    assert quote.asks == [(price, D("2000000") - qty)]  # the book left, to the last digit


def test_duplicate_client_order_id_is_reported_as_duplicate_and_query_finds_it():
    async def scenario():
        async with paper_venue() as (_server, url):
            async with started(ccxt_venue(url)) as adapter:
                first = await adapter.place(LegOrder("dup-1", "BTC/USD", Side.BUY, D("0.2"), D("42001")))
                again = await adapter.place(LegOrder("dup-1", "BTC/USD", Side.BUY, D("0.2"), D("42001")))
                fresh = CcxtVenue(ccxt_venue(url), CREDS)  # a restarted worker knows nothing
                try:
                    found, missing = await fresh.query("dup-1"), await fresh.query("never-sent")
                finally:
                    await fresh.close()
                return first, again, found, missing

    first, again, found, missing = asyncio.run(scenario())
    assert first.status is LegStatus.FILLED
    assert again.duplicate and again.status is LegStatus.REJECTED
    assert found.order_id == first.order_id and found.trades == first.trades
    assert missing is None


def test_refusals_are_rejected_not_unknown():
    async def scenario():
        async with paper_venue() as (_server, url):
            async with started(ccxt_venue(url)) as adapter:
                small = await adapter.place(LegOrder("small-1", "BTC/USD", Side.BUY, D("0.0001"), D("42001")))  # NOTIONAL
                unlisted = await adapter.place(LegOrder("eth-1", "ETH/USD", Side.BUY, D("1"), D("3000")))
            wrong = VenueCredentials(api_key="paper-key", api_secret="wrong")
            with pytest.raises(VenueError, match="-1022") as at_start:  # load_markets asks signed margin/currency endpoints
                async with started(ccxt_venue(url), credentials=wrong):
                    pass
            public_markets = ccxt_venue(url, options={"fetchCurrencies": False, "fetchMargins": False})
            async with started(public_markets, credentials=wrong) as bad:
                unsigned = await bad.place(LegOrder("sig-1", "BTC/USD", Side.BUY, D("0.2"), D("42001")))
            return small, unlisted, unsigned, at_start.value

    small, unlisted, unsigned, at_start = asyncio.run(scenario())
    assert not at_start.unknown
    assert small.status is LegStatus.REJECTED and "NOTIONAL" in small.error and not small.duplicate
    assert unlisted.status is LegStatus.REJECTED and "not in binance's symbols" in unlisted.error
    assert unsigned.status is LegStatus.REJECTED and "-1022" in unsigned.error


def test_a_lost_response_is_unknown_and_reconciled_by_query():
    lossy = PAPER.model_copy(update={"lost_response_rate": 1.0})

    async def scenario():
        async with paper_venue(lossy) as (server, url):
            async with started(ccxt_venue(url)) as adapter:
                with pytest.raises(VenueError) as lost:
                    await adapter.place(LegOrder("lost-1", "BTC/USD", Side.SELL, D("1"), D("41990")))
                found = await adapter.query("lost-1")
                return lost.value, found, server.attempts[("binance", "lost-1")]

    lost, found, attempts = asyncio.run(scenario())
    assert lost.unknown
    assert found.status is LegStatus.FILLED and found.filled_qty == D("1") and attempts == 1  # never re-sent


def test_timeouts_and_a_dead_venue_are_unknown():
    slow = PAPER.model_copy(update={"timeout_rate": 1.0, "timeout_ms": 1000})

    async def scenario():
        async with paper_venue(slow) as (_server, url):
            async with started(ccxt_venue(url), timeout_s=0.5) as adapter:
                with pytest.raises(VenueError) as timed_out:
                    await adapter.place(LegOrder("slow-1", "BTC/USD", Side.BUY, D("0.2"), D("42001")))
                found = await adapter.query("slow-1")
        async with paper_venue() as (_server, url):
            adapter = CcxtVenue(ccxt_venue(url), CREDS)
            await adapter.start()
        try:  # the server is gone now: connection refused
            with pytest.raises(VenueError) as refused:
                await adapter.place(LegOrder("gone-1", "BTC/USD", Side.BUY, D("0.2"), D("42001")))
            with pytest.raises(VenueError) as query_refused:
                await adapter.query("gone-1")
        finally:
            await adapter.close()
        return timed_out.value, found, refused.value, query_refused.value

    timed_out, found, refused, query_refused = asyncio.run(scenario())
    assert timed_out.unknown and "RequestTimeout" in str(timed_out)
    assert found.status is LegStatus.FILLED  # it was placed; the answer came too late
    assert refused.unknown and query_refused.unknown


class BinanceShapedQueries(PaperVenueServer):
    """Real Binance answers GET /api/v3/order without fills: trades come from myTrades."""

    async def query(self, request):
        response = await super().query(request)
        if response.status == 200:
            import json

            from aiohttp import web

            body = json.loads(response.text)
            body.pop("fills")
            return web.json_response(body)
        return response


def test_reconciliation_reads_trades_from_my_trades_when_the_order_has_none():
    async def scenario():
        async with paper_venue(server_class=BinanceShapedQueries) as (_server, url):
            async with started(ccxt_venue(url)) as adapter:
                placed = await adapter.place(LegOrder("mt-1", "BTC/USD", Side.BUY, D("0.2"), D("42001")))
                fresh = CcxtVenue(ccxt_venue(url), CREDS)
                try:
                    return placed, await fresh.query("mt-1")
                finally:
                    await fresh.close()

    placed, queried = asyncio.run(scenario())
    assert len(placed.trades) == 2
    assert queried.trades == placed.trades and queried.filled_qty == placed.filled_qty


def test_prices_are_rounded_onto_the_tick_the_protective_way():
    async def scenario():
        async with paper_venue() as (server, url):
            async with started(ccxt_venue(url)) as adapter:
                await adapter.place(LegOrder("tick-b", "BTC/USD", Side.BUY, D("0.2"), D("42000.129")))
                await adapter.place(LegOrder("tick-s", "BTC/USD", Side.SELL, D("0.2"), D("41999.491")))
                return server.orders["binance"]

    orders = asyncio.run(scenario())
    assert D(orders["tick-b"]["price"]) == D("42000.12") and D(orders["tick-s"]["price"]) == D("41999.50")


def test_the_http_adapter_signs_for_the_paper_venue_too():
    http = VenueConfig(name="binance", adapter="http")

    async def scenario():
        async with paper_venue() as (_server, url):
            venue = http.model_copy(update={"url": url})
            good, bad = HttpVenue(venue, credentials=CREDS), HttpVenue(venue, credentials=VenueCredentials(api_key="paper-key", api_secret="x"))
            try:
                return (await good.place(LegOrder("h-1", "BTC/USD", Side.BUY, D("0.2"), D("42001"))),
                        await bad.place(LegOrder("h-2", "BTC/USD", Side.BUY, D("0.2"), D("42001"))))
            finally:
                await good.close()
                await bad.close()

    good, bad = asyncio.run(scenario())
    assert good.status is LegStatus.FILLED
    assert bad.status is LegStatus.REJECTED and "-1022" in bad.error


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="exchange: required"):
        VenueConfig(name="x", adapter="ccxt", symbols={"BTC/USD": "BTC/USDT"})
    with pytest.raises(ValueError, match="symbols: required"):
        VenueConfig(name="x", adapter="ccxt", exchange="binance")
    with pytest.raises(InputError, match="not a ccxt exchange id"):
        CcxtVenue(VenueConfig(name="x", adapter="ccxt", exchange="nosuchexchange", symbols={"A/B": "A/B"}))


class _Source:
    def __init__(self, name: str, behaviour: str):
        self.name, self.behaviour, self.calls = name, behaviour, 0
        self.blocked = asyncio.Event()

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def fetch_quote(self, symbol: str, depth: int) -> VenueQuote:
        self.calls += 1
        if self.behaviour == "hang":
            await self.blocked.wait()  # never set: a venue that stops answering
        if self.behaviour == "fail":
            raise VenueError(f"{self.name}: down", unknown=True)
        return VenueQuote(venue=self.name, symbol=symbol, ts=NOW + self.calls, asks=[(D(1), D(1))])


def test_one_hanging_and_one_failing_venue_never_delay_the_others():
    async def scenario():
        sources = {"fast": _Source("fast", "ok"), "stuck": _Source("stuck", "hang"), "down": _Source("down", "fail")}
        stop = asyncio.Event()
        got, errors = [], []

        async def on_quote(quote, _seconds):
            got.append(quote)
            if len(got) >= 5 and errors:
                stop.set()

        poller = BookPoller(sources, {n: ["BTC/USD"] for n in sources}, on_quote, lambda v, s, e, t: errors.append(v),
                            interval_s=0.01, depth=5, timeout_s=3600, max_backoff_s=0.02)
        await asyncio.wait_for(poller.run(stop), 30)
        return got, errors, sources

    got, errors, sources = asyncio.run(scenario())
    assert {q.venue for q in got} == {"fast"} and len(got) >= 5
    assert set(errors) == {"down"} and sources["stuck"].calls == 1


def test_exchanges_without_fetch_by_client_id_find_the_order_among_recent_ones(monkeypatch):
    import worker.venues.ccxt_venue as module

    monkeypatch.setattr(module, "FETCH_BY_CLIENT_ID", frozenset())

    async def scenario():
        async with paper_venue() as (_server, url):
            async with started(ccxt_venue(url)) as adapter:
                placed = await adapter.place(LegOrder("scan-1", "BTC/USD", Side.SELL, D("0.5"), D("41999.5")))
                await adapter.place(LegOrder("scan-2", "BTC/USD", Side.BUY, D("0.2"), D("42001")))
                fresh = CcxtVenue(ccxt_venue(url), CREDS)
                try:
                    found = await fresh.query("scan-1")
                    try:  # not on the newest page proves nothing: unknown, never "no such order"
                        await fresh.query("scan-404")
                    except VenueError as exc:
                        return placed, found, exc
                    return placed, found, None
                finally:
                    await fresh.close()

    placed, found, missing = asyncio.run(scenario())
    assert found.order_id == placed.order_id and found.trades == placed.trades
    assert missing is not None and missing.unknown


def test_the_paper_venues_depth_shows_what_orders_took_as_an_exchange_does():
    async def scenario():
        async with paper_venue() as (_server, url):
            async with started(ccxt_venue(url)) as adapter:
                before = await adapter.fetch_quote("BTC/USD", 10)
                await adapter.place(LegOrder("take-1", "BTC/USD", Side.BUY, D("1"), D("42001")))
                return before, await adapter.fetch_quote("BTC/USD", 10)

    before, after = asyncio.run(scenario())
    assert before.asks == [(D("42000.12"), D("0.123456789")), (D("42001"), D("5"))]
    assert after.asks == [(D("42001"), D("5") - (D("1") - D("0.123456789")))] and after.ts == before.ts
    assert after.bids == before.bids


def test_a_quantity_below_the_lot_step_is_rejected_before_it_is_sent():
    async def scenario():
        async with paper_venue() as (server, url):
            async with started(ccxt_venue(url)) as adapter:
                report = await adapter.place(LegOrder("tiny-1", "BTC/USD", Side.BUY, D("0.0000000001"), D("42001")))
                return report, server.attempts

    report, attempts = asyncio.run(scenario())
    assert report.status is LegStatus.REJECTED and "InvalidOrder" in report.error and not attempts


def test_the_apis_previews_use_the_lot_rules_the_exchange_publishes():
    """``sor api`` routes previews and serves exchangeInfo on the rules the worker will trade
    on: a ccxt venue's come from its public markets, with no API keys."""
    from worker.bootstrap import load_trading_rules
    from worker.config import Settings

    async def scenario():
        async with paper_venue(credentials={}) as (_server, url):
            return await load_trading_rules(Settings(), [ccxt_venue(url), PAPER.model_copy(update={"name": "paper"})])

    loaded, paper = asyncio.run(scenario())
    assert (loaded.step_size, loaded.min_qty, loaded.min_notional) == (D("0.000000001"), D("0.00001"), D("5"))
    assert paper.name == "paper" and paper.step_size == PAPER.step_size  # other adapters keep the file's rules


TRADE = {"id": "t", "price": "42000", "amount": "0.5", "fee": {"cost": "0.01", "currency": "USD"}}


@pytest.mark.parametrize("order, field", [
    ({"id": "1", "filled": "0.5", "amount": "0.5", "trades": [dict(TRADE, price=None)]}, "price"),
    ({"id": "1", "filled": "0.5", "amount": "0.5", "trades": [dict(TRADE, amount="half")]}, "InvalidOperation"),
    ({"id": "1", "filled": "lots", "amount": "0.5"}, "InvalidOperation"),
    ({"id": "1", "filled": "0.5", "amount": "0.5", "trades": [{k: v for k, v in TRADE.items() if k != "price"}]}, "KeyError"),
])
def test_an_order_ccxt_cannot_read_is_an_unknown_state_naming_what_is_wrong(order, field):
    """What ccxt parsed from the exchange is checked where it enters (the fills are built from it
    without validation); the order may exist, so the leg is unknown, never a crash or a bad fill."""
    adapter = CcxtVenue(ccxt_venue("http://127.0.0.1:9"), CREDS)

    async def report():
        try:
            return await adapter._report({"clientOrderId": "c", "status": "closed", **order}, "BTC/USD")
        finally:
            await adapter.close()

    with pytest.raises(VenueError) as caught:
        asyncio.run(report())
    assert caught.value.unknown and field in str(caught.value)
