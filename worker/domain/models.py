"""Typed domain objects shared by every stage.

Every price, quantity and fee is a :class:`~decimal.Decimal`. On the wire they are JSON
strings (pydantic serializes ``Decimal`` as a string in JSON mode); on input JSON numbers
are accepted too. Nothing in an order is ever a float.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
    field_validator,
    model_validator,
)


M = TypeVar("M", bound=BaseModel)


def _to_decimal(value: Any) -> Any:
    # JSON floats reach us as Python floats; repr() is the shortest string that round-trips,
    # i.e. the literal the producer wrote, so "0.1" stays 0.1 rather than 0.1000000000000000055.
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


def _dec_str(value: Decimal) -> str:
    # Plain notation ("0.00001", not "1E-5"): downstream parsers and humans both read it.
    return format(value, "f")


Dec = Annotated[Decimal, BeforeValidator(_to_decimal), PlainSerializer(_dec_str, return_type=str, when_used="json")]
PositiveDec = Annotated[Dec, Field(gt=0, allow_inf_nan=False)]
NonNegDec = Annotated[Dec, Field(ge=0, allow_inf_nan=False)]

Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
VenueName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class Side(str, Enum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        """+1 for buys (we pay), -1 for sells (we receive): turns both into one minimisation."""
        return 1 if self is Side.BUY else -1


class OrderType(str, Enum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(str, Enum):
    IOC = "IOC"
    FOK = "FOK"


class Algorithm(str, Enum):
    SOR = "sor"
    SPLIT = "split"
    BEST = "best"


class ExclusionReason(str, Enum):
    NO_QUOTE = "no_quote"
    STALE = "stale"
    NOT_ALLOWED = "not_allowed"
    NO_LIQUIDITY_WITHIN_LIMIT = "no_liquidity_within_limit"
    BELOW_MINIMUM = "below_minimum"
    CIRCUIT_OPEN = "circuit_open"
    VENUE_FAILED = "venue_failed"  # rejected or errored an earlier round of this intent


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", use_enum_values=False)


class OrderIntent(_Model):
    """An order as the upstream OMS asks for it: what to trade, never how to route it."""

    intent_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
    account_id: Identifier
    symbol: Identifier
    side: Annotated[Side, BeforeValidator(_lower)]
    type: Annotated[OrderType, BeforeValidator(_lower)] = OrderType.LIMIT
    qty: PositiveDec
    limit_price: PositiveDec | None = None
    time_in_force: Annotated[TimeInForce, BeforeValidator(_upper)] = TimeInForce.IOC
    algorithm: Annotated[Algorithm, BeforeValidator(_lower)] = Algorithm.SOR
    created_at: Annotated[int, Field(ge=0)] | None = None
    expires_at: Annotated[int, Field(ge=0)] | None = None
    venues: list[VenueName] | None = None
    dry_run: bool = False

    @model_validator(mode="after")
    def _limit_matches_type(self) -> "OrderIntent":
        if self.type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("limit_price: required when type is 'limit'")
        return self


class VenueConfig(_Model):
    """A venue's static trading rules (Hummingbot's ``TradingRule``) and adapter settings."""

    name: VenueName
    taker_fee_bps: NonNegDec = Decimal(0)
    maker_fee_bps: NonNegDec = Decimal(0)
    step_size: PositiveDec = Decimal("0.00000001")
    min_qty: NonNegDec = Decimal(0)
    min_notional: NonNegDec = Decimal(0)
    adapter: Literal["paper", "http", "ccxt"] = "paper"
    #: ``http``: the venue's base URL. ``ccxt``: re-roots every API URL of the exchange here
    #: (``http://127.0.0.1:PORT/binance`` for ``sor paper-venue``), so nothing leaves it.
    url: str | None = None
    # ccxt adapter (``adapter = "ccxt"``): the ccxt exchange id, its constructor options, the
    # exchange's sandbox/testnet, explicit API URLs (deep-merged into ccxt's ``urls``) and our
    # symbols -> the exchange's (ccxt unified symbol or raw market id; default: the same).
    # Lot rules left out of the file come from the exchange's markets; the file's values win.
    exchange: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    sandbox: bool = False
    urls: dict[str, Any] = Field(default_factory=dict)
    symbols: dict[Identifier, Identifier] = Field(default_factory=dict)
    #: ccxt's ``rateLimit`` (ms per request-weight unit); default: ccxt's for the exchange.
    rate_limit_ms: Annotated[int, Field(ge=0, le=60_000)] | None = None
    #: The price grid; served by ``sor paper-venue`` (PRICE_FILTER), read from real exchanges.
    tick_size: PositiveDec | None = None
    # Paper-venue fault injection; ignored by real adapters.
    latency_ms: Annotated[int, Field(ge=0, le=60_000)] = 0
    reject_rate: Annotated[float, Field(ge=0, le=1, validation_alias=AliasChoices("reject_rate", "failure_rate"))] = 0.0
    partial_fill_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    # `sor paper-venue` only: a 5xx before placing, a placed order whose answer is a 5xx,
    # and a placed order answered too late for the client's timeout.
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    lost_response_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    timeout_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    timeout_ms: Annotated[int, Field(ge=1, le=600_000)] = 2_000

    @model_validator(mode="after")
    def _adapter_needs(self) -> "VenueConfig":
        if self.adapter == "ccxt" and not self.exchange:
            raise ValueError("exchange: required when adapter is 'ccxt' (a ccxt exchange id, e.g. 'binance')")
        if self.adapter == "ccxt" and not self.symbols:
            # Orders are looked up by client order id per market after a restart, and the feed
            # polls these markets: they must be declared.
            raise ValueError("symbols: required when adapter is 'ccxt' (ours -> the exchange's, e.g. {\"BTC/USD\" = \"BTC/USDT\"})")
        return self

    def exchange_symbol(self, symbol: str) -> str:
        """The venue's name for one of our symbols (the ``symbols`` map, else the same)."""
        return self.symbols.get(symbol, symbol)


PriceLevel = tuple[PositiveDec, PositiveDec]


class VenueQuote(_Model):
    """An order-book snapshot of one venue for one symbol, best level first on each side."""

    venue: VenueName
    symbol: Identifier
    ts: Annotated[int, Field(ge=0)]
    bids: list[PriceLevel] = Field(default_factory=list)
    asks: list[PriceLevel] = Field(default_factory=list)

    @field_validator("bids")
    @classmethod
    def _bids_best_first(cls, levels: list[PriceLevel]) -> list[PriceLevel]:
        # Sorting (stable) instead of rejecting: a feed that lists worst-first, like the
        # Binance SOR FAQ does, still describes a valid book.
        return sorted(levels, key=lambda lvl: -lvl[0])

    @field_validator("asks")
    @classmethod
    def _asks_best_first(cls, levels: list[PriceLevel]) -> list[PriceLevel]:
        return sorted(levels, key=lambda lvl: lvl[0])

    @property
    def key(self) -> str:
        return f"{self.venue}:{self.symbol}"

    def side_levels(self, side: Side) -> list[PriceLevel]:
        """The levels an order of ``side`` takes from: asks for a buy, bids for a sell."""
        return self.asks if side is Side.BUY else self.bids


class VenueRoute(_Model):
    """One venue in the ranking (the seed's route result)."""

    provider: str
    symbol: str
    bid_price: Dec | None
    ask_price: Dec | None
    spread: Dec | None
    spread_bps: Dec | None
    maker_fee_bps: Dec
    taker_fee_bps: Dec
    net_price: Dec
    score: Dec


class Exclusion(_Model):
    venue: str
    reason: ExclusionReason
    detail: str = ""


class PlanLeg(_Model):
    """One venue's share of a plan: what to send and what it should cost."""

    provider: str
    qty: Dec
    estimated_price: Dec
    estimated_fee: Dec
    estimated_notional: Dec
    bid_price: Dec | None
    ask_price: Dec | None
    worst_price: Dec
    levels: int


class RoutePlan(_Model):
    """A split plan: the legs, their estimates, the ranking and what was left out."""

    event_id: str  # == plan_id: stable across republishing, for downstream de-duplication
    plan_id: str
    intent_id: str
    symbol: str
    side: Side
    total_qty: Dec
    algorithm: Algorithm
    time_in_force: TimeInForce
    limit_price: Dec | None
    round: int = 0
    legs: list[PlanLeg]
    planned_qty: Dec
    unfilled_qty: Dec
    estimated_vwap: Dec | None
    estimated_fees: Dec
    estimated_net: Dec | None
    savings_vs_single_venue: Dec | None
    savings_vs_best_single_venue_bps: Dec | None
    routes: list[VenueRoute]
    excluded: list[Exclusion]
    optimal: bool = True
    quotes_as_of: int | None = None

    @property
    def covers_total(self) -> bool:
        return self.unfilled_qty == 0


class ExecutionStatus(str, Enum):
    FILLED = "filled"
    PARTIAL = "partial"
    FAILED = "failed"
    REJECTED = "rejected"


class LegStatus(str, Enum):
    FILLED = "filled"
    PARTIAL = "partial"
    REJECTED = "rejected"
    EXPIRED = "expired"
    FAILED = "failed"
    UNKNOWN = "unknown"
    NOT_PLACED = "not_placed"  # journaled, but the venue never received it (the worker died first)


class Fill(_Model):
    """One allocation in Binance's SOR vocabulary, plus the venue it came from."""

    matchType: Literal["ONE_PARTY_TRADE_REPORT"] = "ONE_PARTY_TRADE_REPORT"
    price: Dec
    qty: Dec
    commission: Dec
    commissionAsset: str
    tradeId: int = -1
    allocId: int
    provider: str


class LegResult(_Model):
    provider: str
    order_id: str | None
    client_order_id: str
    qty: Dec
    filled_qty: Dec
    price: Dec | None
    status: LegStatus
    latency_ms: int
    error: str | None = None


class ExecutionResult(_Model):
    """The one final outcome per intent (seed fields plus Binance's SOR fields verbatim)."""

    event_id: str
    plan_id: str | None
    intent_id: str
    account_id: str
    symbol: str
    side: Side
    algorithm: Algorithm
    total_qty: Dec
    filled_qty: Dec
    vwap: Dec | None
    legs: list[LegResult] = Field(default_factory=list)
    rounds: int = 0
    status: ExecutionStatus
    reason: str | None = None
    latency_ms: int
    workingFloor: Literal["SOR"] = "SOR"
    usedSor: Literal[True] = True
    executedQty: Dec
    cummulativeQuoteQty: Dec
    fills: list[Fill] = Field(default_factory=list)


class FillEvent(_Model):
    """One allocation published on the fills topic; ``fill_id`` is the de-duplication key."""

    event_id: str
    fill_id: str
    intent_id: str
    account_id: str
    plan_id: str
    symbol: str
    side: Side
    client_order_id: str
    fill: Fill


CLIENT_ORDER_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,36}$")

_TRUSTED_DEFAULTS: dict[type, dict[str, Any]] = {}


def trusted(cls: type[M], /, **values: Any) -> M:
    """Build ``cls`` from values this code computed (already typed and checked).

    The router builds a dozen models per plan on the hot path; this skips validation and
    ``model_construct``'s bookkeeping. Input from outside never comes through here.
    """
    defaults = _TRUSTED_DEFAULTS.get(cls)
    if defaults is None:
        defaults = {n: f.get_default(call_default_factory=True) for n, f in cls.model_fields.items() if not f.is_required()}
        _TRUSTED_DEFAULTS[cls] = defaults
    obj = cls.__new__(cls)
    data = {**defaults, **values} if len(values) < len(cls.model_fields) else values
    object.__setattr__(obj, "__dict__", data)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class DeadLetter(_Model):
    """The value of a ``sor.dlq.v1`` record: what could not be decoded, where from, and why."""

    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    original_key: str | None
    original_value_b64: str | None
    original_value: str | None
    failed_at: int
