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
from decimal import Decimal
from urllib.parse import urlencode

import aiohttp
from yarl import URL

from worker.domain.models import LegStatus, VenueConfig
from worker.venues.base import DUPLICATE_ORDER, LegOrder, OrderReport, VenueError, VenueTrade, checked

_STATUS = {"FILLED": LegStatus.FILLED, "REJECTED": LegStatus.REJECTED, "NEW": LegStatus.UNKNOWN,
           "PARTIALLY_FILLED": LegStatus.PARTIAL, "CANCELED": LegStatus.EXPIRED, "EXPIRED": LegStatus.EXPIRED}


def binance_signature(secret: str, query: str) -> str:
    """HMAC-SHA256 of the exact query string, hex: Binance's SIGNED endpoint scheme."""
    return hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()


def report_from(body: dict) -> OrderReport:
    """An :class:`OrderReport` from a Binance order JSON; :class:`VenueError` (``unknown``: the
    order may exist) when the answer is not one."""
    try:
        return checked(_report_from(body))
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
            msg = body.get("msg", str(body)) if isinstance(body, dict) else str(body)
            duplicate = isinstance(body, dict) and body.get("code") == -2010
            error = DUPLICATE_ORDER if duplicate else f"{body.get('code')}: {msg}"
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
        return report_from(body)

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
