"""The one narrow protocol every venue adapter implements.

The router and the pipeline only see :class:`VenueAdapter`; a real exchange adapter plugs
in by implementing these three coroutines, nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, runtime_checkable

from worker.domain.models import LegStatus, Side


@dataclass(frozen=True, slots=True)
class LegOrder:
    """A limit IOC order for one leg; ``limit_price`` is the leg's protective worst price."""

    client_order_id: str
    symbol: str
    side: Side
    qty: Decimal
    limit_price: Decimal


@dataclass(frozen=True, slots=True)
class VenueTrade:
    """One match on the venue: a venue reports one per book level it takes."""

    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    trade_id: str


#: Binance's text for a refused re-use of a client order id (error -2010).
DUPLICATE_ORDER = "Duplicate order sent."


@dataclass(frozen=True, slots=True)
class OrderReport:
    """What a venue says about one order: its state and every trade so far.

    ``duplicate`` is set when the venue refused the order because its client order id is
    already known: the order exists, and the venue's record of it is the truth.
    """

    client_order_id: str
    order_id: str | None
    status: LegStatus
    filled_qty: Decimal
    trades: tuple[VenueTrade, ...] = field(default_factory=tuple)
    error: str | None = None
    duplicate: bool = False


class VenueError(Exception):
    """The venue refused or failed the request; ``unknown`` means the order may exist."""

    def __init__(self, message: str, *, unknown: bool = False):
        super().__init__(message)
        self.unknown = unknown


def checked(report: OrderReport) -> OrderReport:
    """``report`` as an adapter parsed it from a venue's answer, checked where it enters: the
    result and fills are built from it without validation, and a value that is not what the
    fills' schema says would reach the wire and leave a journal record that does not read back.
    The order may exist, so a report that fails is an unknown state (:class:`VenueError`).

    Only here, not in the classes: a journal record written before these checks must still
    read back."""
    if type(report.client_order_id) is not str:  # may be empty: an exchange that does not echo it
        raise _unreadable("client_order_id", report.client_order_id)
    if report.order_id is not None:
        _check_text("order_id", report.order_id)
    if type(report.status) is not LegStatus:
        raise _unreadable("status", report.status)
    _check_number("filled_qty", report.filled_qty, zero=True)
    if report.filled_qty > 0 and not report.trades:  # fills and results are built from trades: it would vanish
        raise VenueError(f"unreadable venue report: filled_qty = {report.filled_qty} without its trades", unknown=True)
    for trade in report.trades:
        _check_number("price", trade.price, positive=True)
        _check_number("qty", trade.qty, positive=True)
        _check_number("commission", trade.commission)  # a maker rebate may be negative
        _check_text("commission_asset", trade.commission_asset)
        _check_text("trade_id", trade.trade_id)
    return report


def _unreadable(name: str, value: object) -> "VenueError":
    shown = repr(value)
    return VenueError(f"unreadable venue report: {name} = {shown[:80]}{'...' if len(shown) > 80 else ''}", unknown=True)


def _check_number(name: str, value: object, *, positive: bool = False, zero: bool = False) -> None:
    """A finite ``Decimal``; > 0 with ``positive``, >= 0 with ``zero``."""
    if type(value) is not Decimal or not value.is_finite() or (positive and value <= 0) or (zero and value < 0):
        raise _unreadable(name, value)


def _check_text(name: str, value: object) -> None:
    if type(value) is not str or not value:
        raise _unreadable(name, value)


@runtime_checkable
class VenueAdapter(Protocol):
    name: str
    #: How long after it was sent the venue may still accept a request (a signed Binance
    #: request: its recvWindow, plus clock skew). The executor never takes "no such order" for
    #: an answer before then. Optional: 0 when a request cannot outlive its connection.
    request_lifetime_ms: int

    async def place(self, order: LegOrder) -> OrderReport:
        """Send a new IOC order. A refused order returns status ``rejected``; a transport
        failure raises :class:`VenueError` with ``unknown=True``."""

    async def query(self, client_order_id: str) -> OrderReport | None:
        """The order's current state, or ``None`` if the venue never saw it."""

    async def cancel(self, client_order_id: str) -> OrderReport | None:
        """Cancel what is left of the order (a no-op for a finished IOC order)."""

    async def start(self) -> None:
        """Open sessions, load markets: called once by the composition root before use."""

    async def close(self) -> None:
        """Release sessions: called once on shutdown, in reverse order of ``start``."""
