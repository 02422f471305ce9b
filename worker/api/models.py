"""The HTTP shapes of `sor api` (the seed's route, split-plan and execution results).

Field names are the seed's, verbatim; money is a JSON string on the way out and a
``Decimal`` inside. These models generate the OpenAPI document and the JSON Schemas under
``schemas/`` (``sor schemas export``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from worker.domain.models import (
    Int64,
    Algorithm,
    Dec,
    Exclusion,
    ExecutionResult,
    ExecutionStatus,
    Fill,
    VisibleIdentifier,
    JsonBool,
    LegStatus,
    OrderType,
    Price,
    Quantity,
    RoutePlan,
    Side,
    TimeInForce,
    VenueName,
    VenueRoute,
)


def _lower(value):
    return value.lower() if isinstance(value, str) else value


def _upper(value):
    return value.upper() if isinstance(value, str) else value


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


#: ``GET /v1/route/{symbol}``: the seed's route result per venue, best first.
RouteResult = VenueRoute


class SplitLeg(_Out):
    provider: str
    qty: Dec
    estimated_price: Dec
    estimated_fee: Dec
    bid_price: Dec | None
    ask_price: Dec | None


class SplitPlan(_Out):
    """``GET /v1/route/{symbol}/split`` and the dry-run answer: the seed's split plan.

    ``unfilled_qty`` (what no venue can take within the limit), ``excluded`` (venues left
    out, and why) and ``quotes_as_of`` are additions; every seed field is there as named.
    """

    symbol: str
    side: Side
    total_qty: Dec
    algorithm: Algorithm
    legs: list[SplitLeg]
    estimated_vwap: Dec | None
    estimated_fees: Dec
    estimated_net: Dec | None
    savings_vs_single_venue: Dec | None = Field(description="bps saved against the whole order on the worst single venue")
    unfilled_qty: Dec
    excluded: list[Exclusion]
    quotes_as_of: int | None

    @classmethod
    def of(cls, plan: RoutePlan) -> "SplitPlan":
        return cls(
            symbol=plan.symbol, side=plan.side, total_qty=plan.total_qty, algorithm=plan.algorithm,
            legs=[SplitLeg(provider=leg.provider, qty=leg.qty, estimated_price=leg.estimated_price, estimated_fee=leg.estimated_fee,
                           bid_price=leg.bid_price, ask_price=leg.ask_price) for leg in plan.legs],
            estimated_vwap=plan.estimated_vwap, estimated_fees=plan.estimated_fees, estimated_net=plan.estimated_net,
            savings_vs_single_venue=plan.savings_vs_single_venue, unfilled_qty=plan.unfilled_qty, excluded=plan.excluded,
            quotes_as_of=plan.quotes_as_of,
        )


IdempotencyKey = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]


class SmartOrderRequest(BaseModel):
    """``POST /v1/smart-order`` and ``/v1/smart-order/split``. JSON numbers are read exactly
    (never through a float); strings are accepted for every amount."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: VisibleIdentifier = Field(description="BTC/USD, or a configured venue-style symbol such as BTCUSDT")
    side: Annotated[Side, BeforeValidator(_lower)]
    qty: Quantity
    type: Annotated[OrderType, BeforeValidator(_lower)] = OrderType.MARKET
    limit_price: Price | None = None
    time_in_force: Annotated[TimeInForce, BeforeValidator(_upper)] = TimeInForce.IOC
    algorithm: Annotated[Algorithm, BeforeValidator(_lower)] | None = Field(
        default=None, description="/v1/smart-order: best (the default); /split: split (the default) or sor")
    venues: list[VenueName] | None = None
    idempotency_key: IdempotencyKey | None = Field(
        default=None, description="the same key (per API key) never executes twice; the Idempotency-Key header works too")
    expires_at: Int64 | None = None  # the domain's: a boolean is not a time
    dry_run: JsonBool = Field(default=False, description="return the split plan; place nothing")


class ExecutionLeg(_Out):
    provider: str
    order_id: str | None
    qty: Dec
    filled_qty: Dec
    price: Dec | None
    status: LegStatus
    latency: str = Field(description="venue round trip, e.g. '45ms'")
    error: str | None = None


class ExecutionReport(_Out):
    """The seed's execution result, plus the intent id, the reason of a rejection and the
    Binance-style allocations (``fills``)."""

    plan_id: str | None
    intent_id: str
    symbol: str
    side: Side
    algorithm: Algorithm
    total_qty: Dec
    filled_qty: Dec
    vwap: Dec | None
    legs: list[ExecutionLeg]
    status: ExecutionStatus
    reason: str | None
    latency: str = Field(description="intent received to final result in the worker, e.g. '120ms'")
    fills: list[Fill]

    @classmethod
    def of(cls, result: ExecutionResult) -> "ExecutionReport":
        return cls(
            plan_id=result.plan_id, intent_id=result.intent_id, symbol=result.symbol, side=result.side,
            algorithm=result.algorithm, total_qty=result.total_qty, filled_qty=result.filled_qty, vwap=result.vwap,
            legs=[ExecutionLeg(provider=leg.provider, order_id=leg.order_id, qty=leg.qty, filled_qty=leg.filled_qty,
                               price=leg.price, status=leg.status, latency=f"{leg.latency_ms}ms", error=leg.error)
                  for leg in result.legs],
            status=result.status, reason=result.reason, latency=f"{result.latency_ms}ms", fills=result.fills,
        )


class Pending(_Out):
    """202: no result within the timeout; the order is in the worker's hands. Poll ``poll``."""

    intent_id: str
    status: Literal["pending"] = "pending"
    poll: str


class Problem(_Out):
    """Every 4xx/5xx of the /v1 endpoints: one line naming the field or the reason."""

    detail: str


class BinanceProblem(_Out):
    """Every error of the /api/v3 endpoints, as Binance sends it."""

    code: int
    msg: str
