"""A Binance-style REST adapter (``adapter = "http"``), used against ``sor paper-venue``.

It speaks the subset of Binance's spot API the router needs: ``POST /api/v3/order``
(LIMIT IOC with ``newClientOrderId``), ``GET /api/v3/order`` by ``origClientOrderId`` and
``DELETE /api/v3/order``. Signing and API keys go here for a real venue; nothing else in
the worker changes.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from dataclasses import replace
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from worker.domain.models import LegStatus, VenueConfig
from worker.venues.base import DUPLICATE_ORDER, LegOrder, OrderReport, VenueError, VenueTrade, checked

#: Binance order statuses. Only final ones are known outcomes: an IOC order ends FILLED or
#: EXPIRED, so ``NEW`` and ``PARTIALLY_FILLED`` in a query answer mean it is still matching
#: (its remainder may yet fill: re-routing it would risk buying twice); every status not
#: listed is unknown too. ``EXPIRED_IN_MATCH`` is self-trade prevention: final.
_STATUS = {"FILLED": LegStatus.FILLED, "REJECTED": LegStatus.REJECTED, "NEW": LegStatus.UNKNOWN,
           "PARTIALLY_FILLED": LegStatus.UNKNOWN, "CANCELED": LegStatus.EXPIRED, "EXPIRED": LegStatus.EXPIRED,
           "EXPIRED_IN_MATCH": LegStatus.EXPIRED}


def binance_signature(secret: str, query: str) -> str:
    """HMAC-SHA256 of the exact query string, hex: Binance's SIGNED endpoint scheme."""
    return hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()


def report_from(body: dict) -> OrderReport:
    """An :class:`OrderReport` from a Binance order JSON; :class:`VenueError` (``unknown``: the
    order may exist) when the answer is not one."""
    return checked(_parsed(body))


def _parsed(body: dict) -> OrderReport:
    try:
        return _report_from(body)
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # ArithmeticError: decimal.InvalidOperation
        raise VenueError(f"unreadable venue report: {type(exc).__name__}: {str(exc)[:80]}", unknown=True) from None


def _report_from(body: dict) -> OrderReport:
    executed = Decimal(body["executedQty"])
    status = _STATUS.get(body["status"], LegStatus.UNKNOWN)
    if status is LegStatus.EXPIRED and 0 < executed:
        status = LegStatus.PARTIAL
    trades = tuple(VenueTrade(Decimal(f["price"]), Decimal(f["qty"]), Decimal(f["commission"]), f["commissionAsset"], str(f["tradeId"]))
                   for f in body.get("fills", []))
    return OrderReport(body["clientOrderId"], str(body["orderId"]), status, executed, trades)


class HttpVenue:
    """:class:`~worker.venues.base.VenueAdapter` over HTTP; one session per venue."""

    def __init__(self, venue: VenueConfig, timeout_s: float = 5.0, credentials=None, recv_window_ms: int = 5000):
        self.name = venue.name
        self.base = venue.url.rstrip("/")
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.credentials = credentials
        self.recv_window_ms = recv_window_ms
        # The venue takes a signed request until recvWindow after its timestamp, by its own
        # clock: a second more for the skew between the two clocks.
        self.request_lifetime_ms = recv_window_ms + 1_000 if credentials is not None else 0
        self._session: aiohttp.ClientSession | None = None

    def signed(self, params: dict, now_ms: int | None = None) -> tuple[str, dict[str, str]]:
        """The query string to send (signed when credentials are set) and the headers."""
        if self.credentials is None:
            return urlencode(params), {}
        params = {**params, "recvWindow": self.recv_window_ms, "timestamp": now_ms or time.time_ns() // 1_000_000}
        query = urlencode(params)
        signature = binance_signature(self.credentials.api_secret.get_secret_value(), query)
        return f"{query}&signature={signature}", {"X-MBX-APIKEY": self.credentials.api_key}

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def _call(self, method: str, path: str, params: dict) -> tuple[int, dict]:
        query, headers = self.signed(params)
        try:
            # encoded=True: send the query byte for byte as signed, no re-quoting
            async with self._http().request(method, URL(f"{self.base}{path}?{query}", encoded=True), headers=headers) as resp:
                body = await resp.json(content_type=None)
                return resp.status, body
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise VenueError(f"{self.name}: {type(exc).__name__}: {exc}", unknown=True) from None

    async def place(self, order: LegOrder) -> OrderReport:
        status, body = await self._call("POST", "/api/v3/order", {
            "symbol": order.symbol, "side": order.side.value.upper(), "type": "LIMIT", "timeInForce": "IOC",
            "quantity": format(order.qty, "f"), "price": format(order.limit_price, "f"),
            "newClientOrderId": order.client_order_id, "newOrderRespType": "FULL",
        })
        if status >= 500:
            raise VenueError(f"{self.name}: HTTP {status}: {body}", unknown=True)  # may or may not exist
        if status >= 400:
            code, msg = (body.get("code"), body.get("msg", str(body))) if isinstance(body, dict) else (None, str(body))
            # -2010 is every refusal of a new order (insufficient balance, market closed, ...):
            # only its "Duplicate order sent." says the client order id exists already.
            duplicate = code == -2010 and str(msg).strip().lower() == DUPLICATE_ORDER.lower()
            error = DUPLICATE_ORDER if duplicate else f"{code}: {msg}"[:500]
            return OrderReport(order.client_order_id, None, LegStatus.REJECTED, Decimal(0), error=error, duplicate=duplicate)
        return report_from(body)

    async def query(self, client_order_id: str) -> OrderReport | None:
        status, body = await self._call("GET", "/api/v3/order", {"origClientOrderId": client_order_id})
        if status >= 500:
            raise VenueError(f"{self.name}: HTTP {status}", unknown=True)
        if status >= 400:
            if isinstance(body, dict) and body.get("code") == -2013:
                return None
            raise VenueError(f"{self.name}: query refused: {body}")
        report = _parsed(body)
        if report.filled_qty > 0 and not report.trades:
            return await self._with_trades(body, report)
        return checked(report)

    async def _with_trades(self, order: dict, report: OrderReport) -> OrderReport:
        """Binance's order query has no ``fills``: its trades come from ``myTrades``. Until
        they add up to what the order executed, its state is unknown (a leg is never settled
        on a quantity it cannot itemize: the fills and the result are built from trades)."""
        symbol, order_id = order.get("symbol"), order.get("orderId")
        if symbol is None or order_id is None:
            raise VenueError(f"{self.name}: an order executed {report.filled_qty} without a symbol and id to ask its trades by",
                             unknown=True)
        status, body = await self._call("GET", "/api/v3/myTrades", {"symbol": symbol, "orderId": order_id})
        if status >= 400 or not isinstance(body, list):
            raise VenueError(f"{self.name}: trades of order {order_id} unavailable: HTTP {status}", unknown=True)
        try:
            trades = tuple(VenueTrade(Decimal(t["price"]), Decimal(t["qty"]), Decimal(t["commission"]), t["commissionAsset"],
                                      str(t["id"])) for t in body if str(t.get("orderId")) == str(order_id))
        except (KeyError, TypeError, ValueError, ArithmeticError, AttributeError) as exc:
            raise VenueError(f"unreadable venue trades: {type(exc).__name__}: {str(exc)[:80]}", unknown=True) from None
        if sum((t.qty for t in trades), Decimal(0)) != report.filled_qty:
            raise VenueError(f"{self.name}: order {order_id} executed {report.filled_qty}, its trades are not all "
                             "visible yet", unknown=True)
        return checked(replace(report, trades=trades))

    async def cancel(self, client_order_id: str) -> OrderReport | None:
        status, body = await self._call("DELETE", "/api/v3/order", {"origClientOrderId": client_order_id})
        if status >= 400:
            return None
        return report_from(body)

    async def start(self) -> None:
        self._http()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
