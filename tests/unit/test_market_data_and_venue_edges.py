"""Market data and venue edges a review found wrong: books sorted by number before the depth cut,
a book without the exchange's time dated when it was asked for, a buy never sent above its limit
on a significant-digits grid, fees in two assets valued in the quote asset, a book whose delivery
failed published again, the paper venue's maxNotional, and a scan of recent orders never taken
for "no such order". Each test failed on the code before its fix.

Real ccxt exchange classes are used with their network calls replaced by canned exchange
answers (no internet), or the real ``sor paper-venue`` server on loopback.
"""

from __future__ import annotations

import asyncio
import json
import time
from decimal import Decimal as D

from worker.domain.models import LegStatus, Side, VenueConfig, VenueQuote
from worker.pipeline.market_feed import QuotePublisher
from worker.venues.base import LegOrder
from worker.venues.ccxt_venue import CcxtVenue, exact_exchange_class
from worker.venues.paper_server import PaperVenueServer

from tests.unit.test_ccxt_venue import CREDS, PAPER, ccxt_venue, paper_venue, started


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _offline_ccxt_venue(exchange_id: str, market: dict, **patches) -> CcxtVenue:
    """A CcxtVenue over the real (exact) ccxt class of ``exchange_id`` whose markets are
    ``market`` and whose named API methods are replaced by ``patches`` (no network)."""
    venue = VenueConfig(name=exchange_id, adapter="ccxt", exchange=exchange_id, symbols={"BTC/USD": market["symbol"]})
    adapter = CcxtVenue(venue, None)
    exchange = exact_exchange_class(exchange_id)({"enableRateLimit": False})

    async def fetch_markets(params={}):
        return [market]

    async def fetch_currencies(params={}):
        return {}

    exchange.fetch_markets = fetch_markets
    exchange.fetch_currencies = fetch_currencies
    for name, fn in patches.items():
        setattr(exchange, name, fn)
    adapter.exchange = exchange  # start() loads the markets through ccxt's own load_markets
    return adapter


def _market(mid: str, precision: dict) -> dict:
    return {"id": mid, "symbol": "BTC/USD", "base": "BTC", "quote": "USD", "baseId": "BTC", "quoteId": "USD",
            "type": "spot", "spot": True, "margin": False, "swap": False, "future": False, "option": False,
            "contract": False, "active": True, "precision": precision,
            "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None},
                       "cost": {"min": None, "max": None}}}


def test_fetch_quote_keeps_the_best_levels_when_the_exchange_sends_more_than_depth():
    """worker/venues/ccxt_venue.py:fetch_quote (with exact_exchange_class's
    parse_order_book_bid_ask override).

    Mechanism: the override makes every level a pair of *strings*; ccxt's parse_order_book
    then sorts them with ``sort_by`` (``sorted(key=itemgetter(0))``), i.e. lexicographically:
    "99995" > "100010". fetch_quote cuts ``[:depth]`` from that order before VenueQuote
    re-sorts numerically. Exchanges whose fetch_order_book ignores or rounds up the limit
    (bitstamp sends its whole book; kucoin asks 20 for 10) therefore lose their best levels
    whenever the book spans a power of ten (BTC around 100 000, any coin around 1/10/100).

    Consequence: the published book shows a best bid of 99995 when the venue bids 100010 (and
    asks 100000+ instead of 99999.5): the router ranks the venue on a book it does not have,
    skips its best liquidity and the best-execution evidence is computed on a fiction.
    """
    raw = {"timestamp": "1700000000", "microtimestamp": "1700000000000000",
           "bids": [["100010", "1"], ["100005", "1"], ["100000", "1"], ["99995", "1"], ["99990", "1"], ["99985", "1"]],
           "asks": [["100020", "1"], ["100025", "1"], ["100030", "1"], ["100035", "1"]]}

    async def public_get_order_book_pair(params={}):
        return raw  # bitstamp's answer: the whole book, whatever limit was asked

    async def scenario():
        adapter = _offline_ccxt_venue("bitstamp", _market("btcusd", {"amount": "0.00000001", "price": "1"}),
                                      publicGetOrderBookPair=public_get_order_book_pair)
        try:
            return await adapter.fetch_quote("BTC/USD", 3)
        finally:
            await adapter.close()

    quote = asyncio.run(scenario())
    assert quote.bids == [(D("100010"), D("1")), (D("100005"), D("1")), (D("100000"), D("1"))]


def test_a_buy_limit_is_never_sent_above_its_limit_on_a_significant_digits_exchange():
    """worker/venues/ccxt_venue.py:CcxtVenue._price_on_grid (and _step).

    Mechanism: for ``precisionMode == SIGNIFICANT_DIGITS`` (bitfinex: 5 significant digits)
    ``_step`` returns None, so _price_on_grid leaves the limit unrounded and ccxt's
    ``price_to_precision`` rounds it with ROUND (to nearest): a buy limited at 42000.6 is sent
    at 42001, a sell limited at 42000.4 at 42000.

    Consequence: the order goes to the exchange with a limit worse than the one the router
    computed and the risk checks approved: a buy can fill above its limit (a sell below it).
    """
    sent = []

    async def submit(request):
        sent.append(request)
        import ccxt

        raise ccxt.InvalidOrder("bitfinex: captured")  # stop here: only the request matters

    async def scenario():
        adapter = _offline_ccxt_venue("bitfinex", _market("tBTCUSD", {"amount": 8, "price": 5}),
                                      privatePostAuthWOrderSubmit=submit)
        try:
            return await adapter.place(LegOrder("sig-1", "BTC/USD", Side.BUY, D("0.5"), D("42000.6")))
        finally:
            await adapter.close()

    report = asyncio.run(scenario())
    assert report.status is LegStatus.REJECTED and sent, report  # the request was built and captured
    assert D(sent[0]["price"]) <= D("42000.6"), f"buy limit 42000.6 sent as {sent[0]['price']}"


def test_fees_charged_in_two_assets_are_not_added_up_as_one():
    """worker/venues/ccxt_venue.py:CcxtVenue._trade.

    Mechanism: ccxt's unified trade carries ``fees``, one entry per currency (e.g. part of the
    fee in BTC and part in USDT, or a fee plus a rebate in a platform token). _trade adds every
    cost into one number and labels it with the *first* currency it finds.

    Consequence: 0.0001 BTC + 4.2 USDT becomes one commission of 4.2001 BTC, which TCA values
    at the fill price: ~176 400 USDT of fees instead of 8.4; with the order reversed the BTC
    fee is silently counted as 0.0001 USDT. Fills, fees and net prices in results are wrong.
    """
    order = {"id": "7", "clientOrderId": "c-7", "status": "closed", "filled": "1", "amount": "1",
             "trades": [{"id": "t1", "order": "7", "price": "42000", "amount": "1",
                         "fees": [{"cost": "0.0001", "currency": "BTC"}, {"cost": "4.2", "currency": "USDT"}]}]}
    adapter = CcxtVenue(ccxt_venue("http://127.0.0.1:9"), CREDS)

    async def report():
        try:
            return await adapter._report(order, "BTC/USDT")
        finally:
            await adapter.close()

    parsed = asyncio.run(report())
    # However the fix reports them (one entry per asset, or valued in the quote asset), the
    # fees valued as TCA values them (worker/execution/tca.py:fees_in_quote) must be 8.4 USDT.
    valued = D(0)
    for t in parsed.trades:
        assert t.commission_asset in ("BTC", "USDT"), t
        valued += t.commission if t.commission_asset == "USDT" else t.commission * t.price
    assert valued == D("0.0001") * D("42000") + D("4.2"), [(t.commission, t.commission_asset) for t in parsed.trades]


class _FailingDelivery:
    """An aiokafka producer whose send is accepted but whose delivery then fails
    (a broker timeout after the record was buffered)."""

    def __init__(self):
        self.sent = []

    async def send(self, topic, value, key=None):
        self.sent.append(value)
        delivery = asyncio.get_running_loop().create_future()
        delivery.set_exception(TimeoutError("delivery timed out"))
        return delivery


def test_a_book_whose_delivery_failed_is_published_again():
    """worker/pipeline/market_feed.py:QuotePublisher.publish (and _delivered).

    Mechanism: publish stores the quote in ``self.last`` as soon as ``producer.send`` returns,
    before the broker acknowledged it. When the delivery then fails, _delivered only counts an
    error; ``last`` still holds the book, so the next poll of the same book (same exchange
    timestamp: the venue's book did not change) is taken for "unchanged" and never sent —
    and it also refreshes ``_published_at``, so the feed stays *ready*.

    Consequence: the quotes topic keeps the venue's previous book while the feed reports
    healthy and believes it published the current one; workers route on the superseded book
    (or drop the venue as stale) until the book happens to change.
    """
    ts = _now_ms()
    book = VenueQuote(venue="okx", symbol="BTC/USD", ts=ts, bids=[(D("41999"), D("1"))], asks=[(D("42001"), D("1"))])

    async def scenario():
        producer = _FailingDelivery()
        publisher = QuotePublisher(producer, "sor.quotes.v1", fresh_ms=10_000)
        await publisher.publish(book, 0.01)
        await asyncio.sleep(0)  # the delivery's failure is reported
        await asyncio.sleep(0)
        await publisher.publish(book.model_copy(), 0.01)  # the next poll: the same book
        return producer.sent

    sent = asyncio.run(scenario())
    assert len(sent) == 2, "the book never reached the topic, yet it is not sent again"


class _BinanceSpotDepth(PaperVenueServer):
    """Real Binance spot: GET /api/v3/depth carries no time ("T" is futures/options only).
    The snapshot is taken when the request is served; then a leg is acknowledged, then the
    answer arrives."""

    acknowledged_ms: int | None = None

    async def depth(self, request):
        response = await super().depth(request)
        body = json.loads(response.text)
        body.pop("T", None)
        from aiohttp import web

        type(self).acknowledged_ms = _now_ms()  # a worker's leg is acknowledged after the snapshot was taken
        await asyncio.sleep(0.03)  # the answer is still on its way
        return web.json_response(body)


def test_a_book_without_exchange_time_is_not_dated_after_it_was_taken():
    """worker/venues/ccxt_venue.py:CcxtVenue.fetch_quote.

    Mechanism: when the exchange gives no book timestamp (Binance spot's depth never does:
    ccxt reads "T", present on futures only) the quote is stamped with our *receipt* time,
    taken after the response arrived. A snapshot the exchange took before one of our fills is
    thus dated after the fill's acknowledgement.

    Consequence: QuoteCache.update releases a leg's reservation on the first snapshot with
    ``ts > release_after_ts``; this snapshot still shows the liquidity our fill took, so the
    worker plans on liquidity that is gone (double-counted): legs expire or fill worse and are
    re-routed. The stamp must be no later than when the request was sent.
    """
    _BinanceSpotDepth.acknowledged_ms = None
    now = _now_ms()
    book = VenueQuote(venue="binance", symbol="BTC/USD", ts=now - 60_000,
                      asks=[(D("42000.12"), D("1"))], bids=[(D("41999.5"), D("3"))])

    async def scenario():
        async with paper_venue(book=book, server_class=_BinanceSpotDepth) as (_server, url):
            async with started(ccxt_venue(url)) as adapter:
                return await adapter.fetch_quote("BTC/USD", 5)

    quote = asyncio.run(scenario())
    assert _BinanceSpotDepth.acknowledged_ms is not None
    assert quote.ts <= _BinanceSpotDepth.acknowledged_ms, (
        f"snapshot taken before the ack at {_BinanceSpotDepth.acknowledged_ms} is dated {quote.ts}")


def test_the_paper_venue_refuses_an_order_above_the_max_notional_it_publishes():
    """worker/venues/paper_server.py:PaperVenueServer._filters (vs exchange_info).

    Mechanism: exchangeInfo serves a NOTIONAL filter with ``maxNotional`` 9000000
    (``applyMaxToMarket`` only exempts MARKET orders: for a LIMIT order Binance always applies
    it), but _filters checks only minNotional.

    Consequence: the Binance emulation used by tests and demos fills a 12.6 M USD limit order
    that Binance refuses (-1013 Filter failure: NOTIONAL), so sizing against the published
    filters is never exercised and a demo 'fill' would be a live rejection.
    """
    big = VenueQuote(venue="binance", symbol="BTC/USD", ts=_now_ms(),
                     asks=[(D("42000"), D("1000"))], bids=[(D("41999"), D("1000"))])

    async def scenario():
        async with paper_venue(PAPER, big) as (server, url):
            async with started(ccxt_venue(url)) as adapter:
                markets = adapter.exchange.markets["BTC/USD"]["limits"]["cost"]
                report = await adapter.place(LegOrder("huge-1", "BTC/USD", Side.BUY, D("300"), D("42000")))
                return markets, report

    limits, report = asyncio.run(scenario())
    assert D(limits["max"]) == D("9000000")  # what the venue publishes
    assert report.status is LegStatus.REJECTED and "NOTIONAL" in (report.error or ""), report


class _BinanceAllOrdersLimit(PaperVenueServer):
    """GET /api/v3/allOrders as Binance answers it: without orderId, the newest ``limit``
    orders (default 500, max 1000); older ones need ``orderId``/``startTime``."""

    async def all_orders(self, request):
        response = await super().all_orders(request)
        if response.status != 200:
            return response
        from aiohttp import web

        limit = min(int(request.query.get("limit", "500")), 1000)
        return web.json_response(json.loads(response.text)[-limit:])


def test_a_query_by_scanning_recent_orders_never_says_no_such_order_for_an_older_one(monkeypatch):
    """worker/venues/ccxt_venue.py:CcxtVenue._find / query (exchanges outside FETCH_BY_CLIENT_ID).

    Mechanism: for an exchange that cannot fetch by client order id, _find scans
    ``fetch_orders(symbol)`` (or open + closed orders) with no ``since`` and no paging, which
    every exchange answers with its most recent page only (Binance allOrders: newest 500).
    An order older than that page is simply absent, and query returns None.

    Consequence: the executor (_reconcile) reads None as "the venue has no such order" and
    marks the leg FAILED/NOT_PLACED, so its quantity is re-routed although the order filled:
    bought twice. This happens after a restart (old legs) or on a busy account. A scan that
    cannot prove absence must answer unknown (VenueError), never None.
    """
    import worker.venues.ccxt_venue as module
    from worker.venues.base import VenueError

    monkeypatch.setattr(module, "FETCH_BY_CLIENT_ID", frozenset())  # as in test_ccxt_venue: an exchange without it

    async def scenario():
        async with paper_venue(server_class=_BinanceAllOrdersLimit) as (server, url):
            async with started(ccxt_venue(url)) as adapter:
                placed = await adapter.place(LegOrder("old-1", "BTC/USD", Side.BUY, D("0.2"), D("42001")))
            first = server.orders["binance"]["old-1"]
            for i in range(500):  # 500 later orders of the account (filled elsewhere in the day)
                coid = f"later-{i}"
                server.orders["binance"][coid] = dict(first, clientOrderId=coid, orderId=f"later-{i}", fills=[])
            fresh = CcxtVenue(ccxt_venue(url), CREDS)  # a restarted worker reconciling its in-flight leg
            try:
                try:
                    found = await fresh.query("old-1")
                except VenueError as exc:
                    found = exc  # "cannot tell": acceptable, reconciled later, never re-routed
            finally:
                await fresh.close()
            return placed, found

    placed, found = asyncio.run(scenario())
    assert placed.status is LegStatus.FILLED
    assert found is not None, "a filled order is reported as 'no such order'"
