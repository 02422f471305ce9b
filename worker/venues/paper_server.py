"""``sor paper-venue``: paper venues as their own process, behind a Binance-style HTTP API.

One process serves every venue of the venues file under its name as a path prefix
(``/binance/api/v3/order``), so a Binance-style client pointed at
``http://127.0.0.1:PORT/binance`` works. Books come from ``sor.quotes.v1`` exactly as the
worker reads them. The ledger of accepted orders lives here, so a crashing worker cannot
reset it and a second placement of one client order id is visible (and refused with
Binance's -2010 "Duplicate order sent.").
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from decimal import Decimal, InvalidOperation

import structlog
from aiohttp import web

from worker.domain.models import LegStatus, Side, VenueConfig
from typing import Callable

from worker.domain.models import VenueQuote
from worker.venues.base import DUPLICATE_ORDER, LegOrder, OrderReport
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


def order_json(symbol: str, side: Side, qty: Decimal, price: Decimal, report: OrderReport, ts: int) -> dict:
    """A Binance ``FULL`` order response (and ``allOrders`` entry) for one ledger entry."""
    quote_qty = sum((t.price * t.qty for t in report.trades), Decimal(0))
    return {
        "symbol": symbol, "orderId": report.order_id, "clientOrderId": report.client_order_id, "transactTime": ts,
        "price": format(price, "f"), "origQty": format(qty, "f"), "executedQty": format(report.filled_qty, "f"),
        "cummulativeQuoteQty": format(quote_qty, "f"), "status": BINANCE_STATUS.get(report.status, "EXPIRED"),
        "timeInForce": "IOC", "type": "LIMIT", "side": side.value.upper(),
        "fills": [{"price": format(t.price, "f"), "qty": format(t.qty, "f"), "commission": format(t.commission, "f"),
                   "commissionAsset": t.commission_asset, "tradeId": t.trade_id} for t in report.trades],
    }


def _error(status: int, code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


class PaperVenueServer:
    """The paper venues' HTTP API; books come from ``book_source`` (wired by the composition root)."""

    def __init__(self, venues: list[VenueConfig], book_source: BookSource):
        self.venues = {v.name: v for v in venues}
        self.books = {v.name: PaperBook(v, lambda symbol, name=v.name: book_source(name, symbol)) for v in venues}
        self.orders: dict[str, dict[str, dict]] = {v.name: {} for v in venues}  # venue -> coid -> order json
        self.attempts: Counter = Counter()  # (venue, coid) -> placements attempted
        self.faults: Counter = Counter()

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([
            web.get("/{venue}/api/v3/depth", self.depth),
            web.post("/{venue}/api/v3/order", self.place),
            web.get("/{venue}/api/v3/order", self.query),
            web.delete("/{venue}/api/v3/order", self.cancel),
            web.get("/{venue}/api/v3/allOrders", self.all_orders),
            web.get("/_paper/stats", self.stats),
            web.get("/healthz", lambda _: web.json_response({"ok": True})),
        ])
        return app

    def _venue(self, request: web.Request) -> str:
        name = request.match_info["venue"]
        if name not in self.books:
            raise web.HTTPNotFound(text=f"unknown venue {name}")
        return name

    async def depth(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        quote = self.books[name]._book_source(request.query.get("symbol", ""))
        if quote is None:
            return _error(400, -1121, "Invalid symbol.")
        fmt = lambda levels: [[format(p, "f"), format(q, "f")] for p, q in levels]  # noqa: E731
        return web.json_response({"lastUpdateId": quote.ts, "bids": fmt(quote.bids), "asks": fmt(quote.asks)})

    async def place(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        params = dict(request.query)
        if request.can_read_body:
            params.update(await request.post())
        try:
            coid = params["newClientOrderId"]
            order = LegOrder(coid, params["symbol"], Side(params["side"].lower()), Decimal(params["quantity"]), Decimal(params["price"]))
        except (KeyError, ValueError, InvalidOperation) as exc:
            return _error(400, -1102, f"Mandatory parameter missing or malformed: {exc}")
        venue = self.venues[name]
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
        body = order_json(order.symbol, order.side, order.qty, order.limit_price, report, time.time_ns() // 1_000_000)
        self.orders[name][coid] = body
        if dice.random() < venue.lost_response_rate:
            self.faults["lost_response"] += 1
            return _error(503, -1001, "Internal error; unable to process your request. Please try again.")
        if dice.random() < venue.timeout_rate:
            self.faults["timeout"] += 1
            await asyncio.sleep(venue.timeout_ms * 3 / 1000)
        return web.json_response(body)

    async def query(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        body = self.orders[name].get(request.query.get("origClientOrderId", ""))
        return web.json_response(body) if body else _error(400, -2013, "Order does not exist.")

    async def cancel(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        body = self.orders[name].get(request.query.get("origClientOrderId", ""))
        # IOC orders never rest: there is nothing left to cancel.
        return _error(400, -2011, "Unknown order sent.") if body is None else web.json_response(body)

    async def all_orders(self, request: web.Request) -> web.Response:
        name = self._venue(request)
        symbol = request.query.get("symbol")
        return web.json_response([o for o in self.orders[name].values() if symbol is None or o["symbol"] == symbol])

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
