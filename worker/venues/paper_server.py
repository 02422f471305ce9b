"""``sor paper-venue``: paper venues as their own process, behind a Binance-style HTTP API.

One process serves every venue of the venues file under its name as a path prefix
(``/binance/api/v3/order``), so a Binance client pointed at ``http://127.0.0.1:PORT/binance``
works: our own ``adapter = "http"`` and ccxt's ``binance`` class alike (``exchangeInfo``
with ``LOT_SIZE``/``PRICE_FILTER``/``NOTIONAL`` filters, ``time``, ``depth``, ``order``
POST/GET/DELETE, ``allOrders``, ``myTrades``, ``openOrders``, and empty answers for the
margin and futures endpoints ccxt's ``load_markets`` may ask).

Books come from ``book_source`` exactly as the worker reads them. The ledger of accepted
orders lives here, so a crashing worker cannot reset it and a second placement of one
client order id is visible (and refused with Binance's -2010 "Duplicate order sent.").

Symbols: our books use ``BTC/USD``; the Binance-style market id is ``BTCUSD``. Requests may
name either. A venue's ``symbols`` map (ours -> the exchange's) says which markets
``exchangeInfo`` lists; without one it lists ``BTC/USD``.

When a venue has credentials (``settings.venue_credentials``), every private endpoint checks
the API key header and the HMAC-SHA256 signature of the request, as Binance does (-2015,
-1022, -1021).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import random
import re
import time
from collections import Counter
from decimal import Decimal, InvalidOperation
from typing import Callable, Mapping
from urllib.parse import parse_qsl

import structlog
from aiohttp import web

from worker.domain.ids import by_name
from worker.domain.models import LegStatus, Side, VenueConfig, VenueQuote
from worker.domain.numbers import ascii_digits
from worker.venues.base import DUPLICATE_ORDER, LegOrder, OrderReport
from worker.venues.http import binance_signature
from worker.venues.paper import PaperBook

#: ``(venue, symbol) -> latest snapshot``: where the paper venues get their books.
BookSource = Callable[[str, str], VenueQuote | None]

log = structlog.get_logger("sor.paper_venue")

BINANCE_STATUS = {
    LegStatus.FILLED: "FILLED",
    LegStatus.PARTIAL: "EXPIRED",  # an IOC order that filled in part ends EXPIRED, as on Binance
    LegStatus.EXPIRED: "EXPIRED",
    LegStatus.REJECTED: "REJECTED",
}

DEFAULT_SYMBOLS = {"BTC/USD": "BTC/USD"}
#: Served when the venues file gives no tick size: fine enough for any book price.
DEFAULT_TICK = Decimal("0.00000001")
MAX_QTY = Decimal("9000000")
MAX_PRICE = Decimal("10000000")
#: The NOTIONAL filter's maximum, published in exchangeInfo; Binance applies it to LIMIT orders.
MAX_NOTIONAL = Decimal("9000000")
#: Binance's cap on ``recvWindow`` (-1131 beyond it).
MAX_RECV_WINDOW_MS = 60_000
#: Binance's pattern for quantities and prices (its error -1100 quotes it).
_BINANCE_DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")


def market_id(symbol: str) -> str:
    """Binance's market id of a unified symbol: ``BTC/USD`` -> ``BTCUSD``."""
    return symbol.replace("/", "").upper()


def _dec(value: Decimal) -> str:
    return format(value, "f")


def order_json(symbol: str, side: Side, qty: Decimal, price: Decimal, report: OrderReport, ts: int) -> dict:
    """A Binance ``FULL`` order response (and ``allOrders`` entry) for one ledger entry."""
    quote_qty = sum((t.price * t.qty for t in report.trades), Decimal(0))
    return {
        "symbol": symbol, "orderId": report.order_id, "orderListId": -1, "clientOrderId": report.client_order_id,
        "transactTime": ts, "time": ts, "updateTime": ts,
        "price": _dec(price), "origQty": _dec(qty), "executedQty": _dec(report.filled_qty),
        "cummulativeQuoteQty": _dec(quote_qty), "status": BINANCE_STATUS.get(report.status, "EXPIRED"),
        "timeInForce": "IOC", "type": "LIMIT", "side": side.value.upper(), "isWorking": True,
        "fills": [{"price": _dec(t.price), "qty": _dec(t.qty), "commission": _dec(t.commission),
                   "commissionAsset": t.commission_asset, "tradeId": t.trade_id} for t in report.trades],
    }


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _strip(params: str) -> str:
    return "&".join(p for p in params.split("&") if p and not p.startswith("signature="))


class PaperVenueServer:
    """The paper venues' HTTP API; books come from ``book_source`` (wired by the composition root).

    ``credentials`` (venue name -> object with ``api_key`` and a SecretStr ``api_secret``):
    venues listed there require Binance-signed private requests.
    """

    def __init__(self, venues: list[VenueConfig], book_source: BookSource, credentials: Mapping | None = None,
                 clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000):
        self.venues = {v.name: v for v in venues}
        self.books = {v.name: PaperBook(v, lambda symbol, name=v.name: book_source(name, symbol)) for v in venues}
        self.book_source = book_source
        # By name as the worker finds them (exact, else ignoring case: nested env keys arrive lowercased).
        found = {name: by_name(credentials or {}, name) for name in self.venues}
        self.credentials = {name: c for name, c in found.items() if c is not None}
        self.clock = clock
        # venue -> market id -> (the exchange's unified symbol, our symbol)
        self.markets = {v.name: {market_id(theirs): (theirs, ours) for ours, theirs in (v.symbols or DEFAULT_SYMBOLS).items()}
                        for v in venues}
        self.orders: dict[str, dict[str, dict]] = {v.name: {} for v in venues}  # venue -> coid -> order json
        self.by_order_id: dict[str, dict[str, str]] = {v.name: {} for v in venues}  # venue -> orderId -> coid
        self.attempts: Counter = Counter()  # (venue, coid) -> placements attempted
        self.faults: Counter = Counter()
        self._generated_ids = itertools.count(1)

    def app(self) -> web.Application:
        app = web.Application()
        async def stub_list(_request: web.Request) -> web.Response:
            return web.json_response([])

        async def no_markets(_request: web.Request) -> web.Response:
            return web.json_response({"timezone": "UTC", "serverTime": self.clock(), "symbols": []})

        async def healthz(_request: web.Request) -> web.Response:
            return web.json_response({"ok": True})
        app.add_routes([
            web.get("/{venue}/api/v3/ping", self.ping),
            web.get("/{venue}/api/v3/time", self.server_time),
            web.get("/{venue}/api/v3/exchangeInfo", self.exchange_info),
            web.get("/{venue}/api/v3/depth", self.depth),
            web.post("/{venue}/api/v3/order", self.place),
            web.get("/{venue}/api/v3/order", self.query),
            web.delete("/{venue}/api/v3/order", self.cancel),
            web.get("/{venue}/api/v3/allOrders", self.all_orders),
            web.get("/{venue}/api/v3/openOrders", self.open_orders),
            web.get("/{venue}/api/v3/myTrades", self.my_trades),
            # What ccxt's binance.load_markets may also ask: nothing of it exists on a paper venue.
            web.get("/{venue}/sapi/v1/margin/allPairs", self._private(stub_list)),
            web.get("/{venue}/sapi/v1/margin/isolated/allPairs", self._private(stub_list)),
            web.get("/{venue}/sapi/v1/capital/config/getall", self._private(stub_list)),
            web.get("/{venue}/fapi/v1/exchangeInfo", no_markets),
            web.get("/{venue}/dapi/v1/exchangeInfo", no_markets),
            web.get("/_paper/stats", self.stats),
            web.get("/_paper/orders/{venue}", self.ledger),
            web.get("/healthz", healthz),
        ])
        return app

    # -- plumbing ---------------------------------------------------------------------------

    def _venue(self, request: web.Request) -> str:
        name = request.match_info["venue"]
        if name not in self.books:
            raise web.HTTPNotFound(text=f"unknown venue {name}")
        return name

    def _our_symbol(self, name: str, symbol: str) -> str | None:
        """Our book's symbol for a request's ``symbol`` (a market id or a unified symbol)."""
        markets = self.markets[name]
        if symbol.upper() in markets:
            return markets[symbol.upper()][1]
        if "/" in symbol:
            return markets.get(market_id(symbol), (symbol, symbol))[1]
        return None

    async def _checked(self, name: str, request: web.Request) -> tuple[dict[str, str], web.Response | None]:
        """All parameters (query, then form body), or the error to answer: a parameter sent
        twice (Binance: -1101; which one would count?), then the key, signature and time."""
        raw_query = request.rel_url.raw_query_string
        body = await request.text() if request.can_read_body else ""
        pairs = parse_qsl(raw_query, keep_blank_values=True) + parse_qsl(body, keep_blank_values=True)
        params = dict(pairs)
        if len(params) != len(pairs):
            return params, _error(400, -1101, "Duplicate values for a parameter detected.")
        return params, self._authenticate(name, request, params, _strip(raw_query) + _strip(body))

    def _authenticate(self, name: str, request: web.Request, params: dict[str, str], signed: str) -> web.Response | None:
        creds = self.credentials.get(name)
        if creds is None:
            return None
        if request.headers.get("X-MBX-APIKEY") != creds.api_key:
            return _error(401, -2015, "Invalid API-key, IP, or permissions for action.")
        expected = binance_signature(creds.api_secret.get_secret_value(), signed)
        given = params.get("signature", "")
        if not given.isascii() or not hmac.compare_digest(expected, given):  # compare_digest raises on non-ASCII text
            return _error(400, -1022, "Signature for this request is not valid.")
        stamp, window = params.get("timestamp", ""), params.get("recvWindow", "5000")
        if not ascii_digits(stamp) or not ascii_digits(window):
            return _error(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        stamp, window = int(stamp), int(window)
        if window > MAX_RECV_WINDOW_MS:
            return _error(400, -1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}.")
        now = self.clock()
        if stamp > now + 1000 or now - stamp > window:
            return _error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        return None

    def _private(self, handler):
        async def checked(request: web.Request) -> web.Response:
            name = self._venue(request)
            _, refused = await self._checked(name, request)
            return refused if refused is not None else await handler(request)
        return checked

    # -- public endpoints -------------------------------------------------------------------

    async def ping(self, request: web.Request) -> web.Response:
        self._venue(request)
        return web.json_response({})

    async def server_time(self, request: web.Request) -> web.Response:
        self._venue(request)
        return web.json_response({"serverTime": self.clock()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        venue = self.venues[name]
        tick = venue.tick_size or DEFAULT_TICK
        symbols = []
        for mid, (theirs, _ours) in self.markets[name].items():
            base, quote = theirs.split("/", 1)
            symbols.append({
                "symbol": mid, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
                "quotePrecision": 8, "quoteAssetPrecision": 8, "orderTypes": ["LIMIT"], "icebergAllowed": False,
                "ocoAllowed": False, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False, "permissions": ["SPOT"],
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": _dec(tick), "maxPrice": _dec(MAX_PRICE), "tickSize": _dec(tick)},
                    {"filterType": "LOT_SIZE", "minQty": _dec(max(venue.min_qty, venue.step_size)), "maxQty": _dec(MAX_QTY),
                     "stepSize": _dec(venue.step_size)},
                    {"filterType": "NOTIONAL", "minNotional": _dec(venue.min_notional), "applyMinToMarket": True,
                     "maxNotional": str(MAX_NOTIONAL), "applyMaxToMarket": False, "avgPriceMins": 5},
                ],
            })
        return web.json_response({"timezone": "UTC", "serverTime": self.clock(), "rateLimits": [], "exchangeFilters": [],
                                  "symbols": symbols})

    async def depth(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        symbol = self._our_symbol(name, request.query.get("symbol", ""))
        quote = self.books[name].visible(symbol) if symbol else None
        if quote is None:
            return _error(400, -1121, "Invalid symbol.")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return _error(400, -1100, "Illegal characters found in parameter 'limit'.")
        fmt = lambda levels: [[_dec(p), _dec(q)] for p, q in levels[:limit]]  # noqa: E731
        # "T": the snapshot's own time, so a client (the feed) can carry the exchange's timestamp.
        return web.json_response({"lastUpdateId": quote.ts, "T": quote.ts, "bids": fmt(quote.bids), "asks": fmt(quote.asks)})

    # -- private endpoints ------------------------------------------------------------------

    def _filters(self, venue: VenueConfig, qty: Decimal, price: Decimal) -> str | None:
        """Binance's order filters; the text of the failed one, else ``None``."""
        tick = venue.tick_size or DEFAULT_TICK
        # The bounds first: a remainder of a huge number by a small tick does not fit the context.
        if price <= 0 or price > MAX_PRICE or price % tick:
            return "Filter failure: PRICE_FILTER"
        if qty < max(venue.min_qty, venue.step_size) or qty > MAX_QTY or qty % venue.step_size:
            return "Filter failure: LOT_SIZE"
        if qty * price < venue.min_notional or qty * price > MAX_NOTIONAL:
            return "Filter failure: NOTIONAL"
        return None

    async def place(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        params, refused = await self._checked(name, request)
        if refused is not None:
            return refused
        try:
            symbol = params["symbol"]
            side = Side(params["side"].lower())
            for field in ("quantity", "price"):
                if not _BINANCE_DECIMAL.fullmatch(params[field]):  # Binance's pattern: no exponent, no sign
                    return _error(400, -1100, f"Illegal characters found in parameter '{field}'; legal range is "
                                              f"'{_BINANCE_DECIMAL.pattern}'.")
            qty, price = Decimal(params["quantity"]), Decimal(params["price"])
            if not (qty.is_finite() and price.is_finite()):
                raise ValueError("not a finite number")
        except (KeyError, ValueError, InvalidOperation) as exc:
            return _error(400, -1102, f"Mandatory parameter missing or malformed: {exc}")
        if params.get("type", "LIMIT").upper() != "LIMIT":
            return _error(400, -1116, "Invalid orderType.")
        if params.get("timeInForce", "IOC").upper() != "IOC":
            return _error(400, -1115, "Invalid timeInForce.")  # a paper venue never rests an order
        ours = self._our_symbol(name, symbol)
        if ours is None:
            return _error(400, -1121, "Invalid symbol.")
        venue = self.venues[name]
        failed = self._filters(venue, qty, price)
        if failed:
            return _error(400, -1013, failed)
        coid = params.get("newClientOrderId") or f"paper{next(self._generated_ids):018d}"
        order = LegOrder(coid, ours, side, qty, price)
        self.attempts[(name, coid)] += 1
        dice = random.Random(f"http:{name}:{coid}:{self.attempts[(name, coid)]}")
        if venue.latency_ms:
            await asyncio.sleep(venue.latency_ms * dice.uniform(0.5, 1.5) / 1000)
        if dice.random() < venue.error_rate:
            self.faults["error"] += 1
            return _error(503, -1001, "Internal error; unable to process your request. Please try again.")
        report = self.books[name].match(order)
        if report.duplicate:
            self.faults["duplicate"] += 1
            log.warning("duplicate_order", venue=name, client_order_id=coid)
            return _error(400, -2010, DUPLICATE_ORDER)
        body = order_json(symbol, order.side, order.qty, order.limit_price, report, self.clock())
        self.orders[name][coid] = body
        self.by_order_id[name][str(report.order_id)] = coid
        if dice.random() < venue.lost_response_rate:
            self.faults["lost_response"] += 1
            return _error(503, -1001, "Internal error; unable to process your request. Please try again.")
        if dice.random() < venue.timeout_rate:
            self.faults["timeout"] += 1
            await asyncio.sleep(venue.timeout_ms * 3 / 1000)
        return web.json_response(body)

    async def _find(self, request: web.Request) -> tuple[str, dict | None, web.Response | None]:
        name = self._venue(request)
        params, refused = await self._checked(name, request)
        if refused is not None:
            return name, None, refused
        coid = params.get("origClientOrderId") or self.by_order_id[name].get(params.get("orderId", ""), "")
        return name, self.orders[name].get(coid), None

    async def query(self, request: web.Request) -> web.Response:
        _name, body, refused = await self._find(request)
        if refused is not None:
            return refused
        return web.json_response(body) if body else _error(400, -2013, "Order does not exist.")

    async def cancel(self, request: web.Request) -> web.Response:
        _name, body, refused = await self._find(request)
        if refused is not None:
            return refused
        # IOC orders never rest: there is nothing left to cancel; the order's final state is the answer.
        return _error(400, -2011, "Unknown order sent.") if body is None else web.json_response(body)

    def _orders_of(self, name: str, symbol: str | None) -> list[dict]:
        if symbol is None:
            return list(self.orders[name].values())
        ours = self._our_symbol(name, symbol)
        return [o for o in self.orders[name].values() if self._our_symbol(name, o["symbol"]) == ours]

    async def all_orders(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        params, refused = await self._checked(name, request)
        return refused or web.json_response(self._orders_of(name, params.get("symbol")))

    async def open_orders(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        _, refused = await self._checked(name, request)
        return refused or web.json_response([])  # IOC: none ever rests

    async def my_trades(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        params, refused = await self._checked(name, request)
        if refused is not None:
            return refused
        order_id = params.get("orderId")
        trades = []
        for o in self._orders_of(name, params.get("symbol")):
            if order_id is not None and str(o["orderId"]) != order_id:
                continue
            for f in o["fills"]:
                quote_qty = Decimal(f["price"]) * Decimal(f["qty"])
                trades.append({"symbol": o["symbol"], "id": f["tradeId"], "orderId": o["orderId"], "orderListId": -1,
                               "price": f["price"], "qty": f["qty"], "quoteQty": _dec(quote_qty), "commission": f["commission"],
                               "commissionAsset": f["commissionAsset"], "time": o["transactTime"],
                               "isBuyer": o["side"] == "BUY", "isMaker": False, "isBestMatch": True})
        return web.json_response(trades)

    async def ledger(self, request: web.Request) -> web.Response:
        """Every order a venue accepted (the paper venue's own view, unsigned: for tests and demos)."""
        return web.json_response(list(self.orders[self._venue(request)].values()))

    async def stats(self, _request: web.Request) -> web.Response:
        dup = {f"{v}:{c}": n for (v, c), n in self.attempts.items() if n > 1}
        return web.json_response({"orders": {v: len(o) for v, o in self.orders.items()}, "faults": dict(self.faults),
                                  "duplicate_attempts": dup})


async def serve(server: PaperVenueServer, port: int, host: str = "127.0.0.1") -> web.AppRunner:
    """Start the HTTP API on ``host:port``; the caller cleans the returned runner up."""
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("paper_venue_started", host=host, port=port, venues=list(server.books))
    return runner
