"""Typed domain objects shared by every stage.

Every price, quantity and fee is a :class:`~decimal.Decimal`. On the wire they are JSON
strings (pydantic serializes ``Decimal`` as a string in JSON mode). On input, JSON strings and
JSON numbers are both accepted, exactly and within documented bounds (see
:mod:`worker.domain.numbers`): ASCII JSON-number syntax, ``|x| < 1e18``, at most 18 decimal
places; fees in ``[0, 10000)`` bps. Nothing in an order is ever a float.
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import Enum
from operator import itemgetter, methodcaller
from typing import Annotated, Any, Collection, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictBool,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from worker.domain.money import BPS, ZERO
from worker.domain.numbers import (
    JSON_NUMBER_PATTERN,
    MAX_DECIMAL_CHARS,
    MAX_INT64,
    check_integer_input,
    decimal_validator,
)

M = TypeVar("M", bound=BaseModel)


def _to_decimal(value: Any) -> Any:
    # Output models only (built by this code, or read back from our own journal): a float
    # here comes from code, never from input, and repr() is its shortest round-trip literal.
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    return value


#: Plain notation ("0.00001", not "1E-5"): downstream parsers and humans both read it.
#: ``format(value, "f")`` as a C callable: pydantic calls it for every decimal serialized
#: (hundreds per intent), and a Python function frame there was a tenth of the worker's CPU.
_dec_str = methodcaller("__format__", "f")


#: A computed decimal in an outgoing event (plans, results, fills): unbounded, since a notional
#: is a price times a quantity. Input fields use the bounded types below.
Dec = Annotated[Decimal, BeforeValidator(_to_decimal), PlainSerializer(_dec_str, return_type=str, when_used="json")]

_BOUNDS_TEXT = "|x| < 1e18, at most 18 decimal places"


def _decimal_input(description: str, *, gt: Decimal | None = None, ge: Decimal | None = None, lt: Decimal | None = None) -> Any:
    """An input decimal field: exact and bounded (:func:`worker.domain.numbers.parse_decimal`),
    then ``gt``/``ge``/``lt``; its JSON Schema states the syntax and the bounds."""
    number: dict[str, Any] = {"type": "number"}
    for key, bound in (("exclusiveMinimum", gt), ("minimum", ge), ("exclusiveMaximum", lt)):
        if bound is not None:
            number[key] = int(bound)
    schema = {
        "anyOf": [{"type": "string", "pattern": JSON_NUMBER_PATTERN, "maxLength": MAX_DECIMAL_CHARS}, number],
        "description": f"{description}. Exact decimal, preferably a JSON string; {_BOUNDS_TEXT}.",
    }
    return Annotated[
        Decimal,
        PlainValidator(decimal_validator(gt=gt, ge=ge, lt=lt)),
        PlainSerializer(_dec_str, return_type=str, when_used="json"),
        WithJsonSchema(schema, mode="validation"),
    ]


#: A price (> 0).
Price = _decimal_input("A price, > 0", gt=ZERO)
#: A quantity of the base asset (> 0).
Quantity = _decimal_input("A quantity, > 0", gt=ZERO)
#: A minimum (quantity or notional) that may be zero.
Minimum = _decimal_input("A minimum, >= 0", ge=ZERO)
#: A fee in basis points: [0, 10000). 10000 bps would make a sell worth nothing.
FeeBps = _decimal_input("A fee in basis points, 0 <= fee < 10000", ge=ZERO, lt=BPS)
#: A timestamp or other non-negative integer, at most int64 (floats and booleans refused).
Int64 = Annotated[int, Field(ge=0, le=MAX_INT64), BeforeValidator(check_integer_input)]

def _visible(text: str) -> str:
    """Refuse control and invisible characters (a newline, NUL, a zero-width space, a
    direction override): ``acct`` and ``acct`` + U+200B look alike in every log and
    dashboard, yet are two accounts to the allow-list and the notional caps."""
    if not text.isprintable():
        bad = next(c for c in text if not c.isprintable())
        raise ValueError(f"must not contain control or invisible characters (found U+{ord(bad):04X})")
    return text


#: An id or a symbol as the OMS writes it: 1-128 characters. Lenient, because journal records
#: are read with it: what the edges accept is :data:`VisibleIdentifier` (see ``invisible_field``).
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128)]
#: An :data:`Identifier` of visible characters only (spaces and any script allowed): what the
#: edges take from a producer or a client (quotes, HTTP bodies; intents at the Kafka intake).
VisibleIdentifier = Annotated[Identifier, AfterValidator(_visible)]


def invisible_field(intent: "OrderIntent") -> str | None:
    """``field: why`` for the first identifier of ``intent`` with a control or invisible
    character, else ``None``. Checked where intents enter (the Kafka intake), not in the model:
    a journal record of an earlier release holding such an intent must still read back."""
    for name in ("intent_id", "account_id", "symbol"):
        try:
            _visible(getattr(intent, name))
        except ValueError as exc:
            return f"{name}: {exc}"
    return None
#: ``true`` or ``false`` only, as the schemas say (lax parsing took "yes", "no", 1, "false").
JsonBool = StrictBool
VenueName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


def base_asset(symbol: str) -> str:
    """``BTC`` of ``BTC/USD``; the whole symbol when it names no pair."""
    return symbol.split("/", 1)[0]


def quote_asset(symbol: str) -> str:
    """``USD`` of ``BTC/USD``: the asset prices, notionals and fees are counted in."""
    return symbol.split("/", 1)[1] if "/" in symbol else "QUOTE"


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
    """An order as the upstream OMS asks for it: what to trade, never how to route it.

    ``qty`` and ``limit_price`` are exact bounded decimals (``|x| < 1e18``, at most 18 decimal
    places, > 0). A ``limit`` order needs a ``limit_price``; a ``market`` order must not have
    one. Timestamps are epoch milliseconds, ``0 <= t < 2**63``.
    """

    intent_id: Identifier
    account_id: Identifier
    symbol: Identifier
    side: Annotated[Side, BeforeValidator(_lower)]
    type: Annotated[OrderType, BeforeValidator(_lower)] = OrderType.LIMIT
    qty: Quantity
    limit_price: Price | None = None
    time_in_force: Annotated[TimeInForce, BeforeValidator(_upper)] = TimeInForce.IOC
    algorithm: Annotated[Algorithm, BeforeValidator(_lower)] = Algorithm.SOR
    created_at: Int64 | None = None
    expires_at: Int64 | None = None
    venues: list[VenueName] | None = None
    dry_run: JsonBool = False

    def within(self, allowed: "Collection[str] | None") -> "OrderIntent":
        """This intent held to an account's venue allow-list (``None``: no list): the venues it
        names that the account may use, or all of the account's venues if it names none."""
        if allowed is None:
            return self
        venues = sorted(set(allowed) if self.venues is None else set(allowed).intersection(self.venues))
        return self.model_copy(update={"venues": venues})

    @model_validator(mode="after")
    def _limit_matches_type(self) -> "OrderIntent":
        if self.type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("limit_price: required when type is 'limit'")
        if self.type is OrderType.MARKET and self.limit_price is not None:
            # Routing it as a limit order would be a guess; routing it as a market order
            # would ignore a price protection the sender asked for. Neither: refuse it.
            raise ValueError("limit_price: must be absent when type is 'market' (send type 'limit' to cap the price)")
        return self


class VenueConfig(_Model):
    """A venue's static trading rules (Hummingbot's ``TradingRule``) and adapter settings.

    Fees are in basis points, ``0 <= fee < 10000``; ``step_size`` > 0 and the minimums >= 0 are
    exact bounded decimals (``|x| < 1e18``, at most 18 decimal places).
    """

    name: VenueName
    taker_fee_bps: FeeBps = Decimal(0)
    maker_fee_bps: FeeBps = Decimal(0)
    step_size: Quantity = Decimal("0.00000001")
    min_qty: Minimum = Decimal(0)
    min_notional: Minimum = Decimal(0)
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
    rate_limit_ms: Annotated[int, Field(ge=0, le=60_000), BeforeValidator(check_integer_input)] | None = None
    #: The price grid; served by ``sor paper-venue`` (PRICE_FILTER), read from real exchanges.
    tick_size: Price | None = None
    # Paper-venue fault injection; ignored by real adapters.
    latency_ms: Annotated[int, Field(ge=0, le=60_000), BeforeValidator(check_integer_input)] = 0
    reject_rate: Annotated[float, Field(ge=0, le=1, validation_alias=AliasChoices("reject_rate", "failure_rate"))] = 0.0
    partial_fill_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    # `sor paper-venue` only: a 5xx before placing, a placed order whose answer is a 5xx,
    # and a placed order answered too late for the client's timeout.
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    lost_response_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    timeout_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    timeout_ms: Annotated[int, Field(ge=1, le=600_000), BeforeValidator(check_integer_input)] = 2_000

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


#: ``[price, size]``: both exact and bounded, size > 0.
PriceLevel = tuple[Price, Quantity]


def _best_first(levels: list[PriceLevel], descending: bool) -> list[PriceLevel]:
    # Sorting instead of rejecting: a feed that lists worst-first, like the Binance SOR FAQ
    # does, still describes a valid book. Two levels at one price do not: is the second an
    # update of the first or more size? Guessing either way misprices the book, so refuse it.
    ordered = sorted(levels, key=itemgetter(0), reverse=descending)
    for previous, level in zip(ordered, ordered[1:]):
        if previous[0] == level[0]:
            raise ValueError(f"duplicate price level {level[0]}")
    return ordered


class VenueQuote(_Model):
    """An order-book snapshot of one venue for one symbol.

    Levels are ``[price, size]`` pairs (strings preferred); each side is stored best level
    first whatever order it arrives in. A price may appear once per side, and the book must
    not be crossed or locked (best bid < best ask); otherwise the quote is refused.
    """

    venue: VenueName
    symbol: VisibleIdentifier
    ts: Int64
    bids: list[PriceLevel] = Field(default_factory=list)
    asks: list[PriceLevel] = Field(default_factory=list)

    @field_validator("bids")
    @classmethod
    def _bids_best_first(cls, levels: list[PriceLevel]) -> list[PriceLevel]:
        return _best_first(levels, descending=True)

    @field_validator("asks")
    @classmethod
    def _asks_best_first(cls, levels: list[PriceLevel]) -> list[PriceLevel]:
        return _best_first(levels, descending=False)

    @model_validator(mode="after")
    def _not_crossed(self) -> "VenueQuote":
        if self.bids and self.asks and self.bids[0][0] >= self.asks[0][0]:
            raise ValueError(f"bids/asks: crossed book: best bid {self.bids[0][0]} >= best ask {self.asks[0][0]}")
        return self

    @property
    def key(self) -> str:
        return f"{self.venue}:{self.symbol}"

    def replaces(self, current: "VenueQuote | None") -> bool:
        """The one rule for a book cache: a snapshot replaces the current one unless older."""
        return current is None or current.ts <= self.ts

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
    best_single_venue_net: Dec | None = Field(
        default=None,
        description="Fee-inclusive average price of planned_qty sent whole to the best single venue, walking its whole "
        "visible book (the reference of savings_vs_best_single_venue_bps); null when no venue could take it all.")
    worst_single_venue_net: Dec | None = Field(
        default=None,
        description="Fee-inclusive average price of planned_qty sent whole to the worst single venue, walking its whole "
        "visible book (the reference of savings_vs_single_venue); null when no venue could take it all.")
    #: Venues whose book was deeper than SOR_MAX_BOOK_LEVELS per side, and how many levels
    #: the cap dropped: this plan saw only the best levels of those books.
    book_levels_dropped: dict[str, int] = Field(default_factory=dict)

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


class Tca(_Model):
    """Transaction cost analysis of one executed intent, against the snapshot its first round routed on.

    Sign conventions: costs (``shortfall_bps``, ``slippage_bps``) are positive when the
    execution cost money, for buys and sells alike; savings are positive when the execution
    beat the reference, like the plan's ``savings_vs_single_venue``. Prices are quote-asset
    per unit; bps are quantized to 4 places.
    """

    arrival_ts: int | None = Field(
        description="Epoch ms of the newest quote the first round routed on (the plan's quotes_as_of).")
    arrival_bid: Dec | None = Field(
        description="Best (highest) bid across the venues of the first round's ranking; null if none showed a bid.")
    arrival_ask: Dec | None = Field(
        description="Best (lowest) ask across the venues of the first round's ranking; null if none showed an ask.")
    arrival_mid: Dec | None = Field(
        description="(arrival_bid + arrival_ask) / 2: the benchmark of implementation shortfall.")
    fill_rate: Dec = Field(description="filled_qty / the intent's qty, 0 to 1, 6 places.")
    vwap: Dec | None = Field(description="Achieved volume-weighted average fill price, before fees; null if nothing filled.")
    fees: Dec | None = Field(
        description="Commissions in the quote asset (a base-asset commission is valued at its fill price); null if a "
        "commission is in a third asset that cannot be valued from the fills.")
    net_vwap: Dec | None = Field(
        description="All-in average price: (quote amount + fees) / filled_qty for buys, (quote amount - fees) / "
        "filled_qty for sells; null if nothing filled or fees is null.")
    shortfall_bps: Dec | None = Field(
        description="Implementation shortfall of net_vwap against arrival_mid, in bps of arrival_mid: "
        "buy (net_vwap - mid) / mid, sell (mid - net_vwap) / mid. Positive = cost (spread, depth and fees paid).")
    estimated_net: Dec | None = Field(
        description="The first round's fee-inclusive estimate (the plan's estimated_net) for its planned_qty.")
    slippage_bps: Dec | None = Field(
        description="net_vwap against estimated_net in bps of estimated_net, same sign as shortfall_bps: "
        "positive = the execution cost more than the plan estimated.")
    estimated_savings_vs_worst_venue_bps: Dec | None = Field(
        description="The first plan's savings_vs_single_venue: estimated saving against the worst single venue.")
    estimated_savings_vs_best_venue_bps: Dec | None = Field(
        description="The first plan's savings_vs_best_single_venue_bps: estimated saving against the best single venue.")
    realized_savings_vs_worst_venue_bps: Dec | None = Field(
        description="Realized saving against sending the planned quantity whole to the worst single venue (the seed's "
        "savings_vs_single_venue, measured on the fills): buy (worst - net_vwap) / worst, sell (net_vwap - worst) / "
        "worst, in bps. Positive = routing paid off.")
    realized_savings_vs_best_venue_bps: Dec | None = Field(
        description="The same against the best single venue (the plan's best_single_venue_net); usually near zero or "
        "negative for tiny orders, positive when splitting beat the deepest book.")
    time_to_fill_ms: int | None = Field(
        description="From the intent's receipt by the worker to the last leg's report, across all rounds; null if "
        "nothing filled.")


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
    #: How many allocations the intent has; ``fills`` lists them all unless
    #: ``fills_complete`` is false, when the whole list would exceed the record size limit
    #: (``SOR_MAX_REQUEST_BYTES``). Every allocation is always on the fills topic.
    fill_count: int = 0
    fills_complete: bool = True
    #: 1 for the first result; a correction (a leg whose state was unknown turned out to
    #: have filled, found by the late-fill sweeper) is published with the same ``intent_id``,
    #: a higher ``version`` and its own ``event_id``; its new allocations are on the fills topic.
    version: int = 1
    tca: Tca | None = Field(default=None, description="Transaction cost analysis; null for rejected intents.")


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

_MISSING = object()
#: cls -> (every field in declaration order with its default or _MISSING, the required fields,
#: the default factories: called for each object, so no two share a mutable default)
_TRUSTED_TEMPLATES: dict[type, tuple[dict[str, Any], frozenset[str], dict[str, Any]]] = {}
_set = object.__setattr__


def trusted(cls: type[M], /, **values: Any) -> M:
    """Build ``cls`` from values this code computed (already typed and checked).

    The router builds a dozen models per plan on the hot path; this skips validation and
    ``model_construct``'s bookkeeping. Input from outside never comes through here.
    """
    known = _TRUSTED_TEMPLATES.get(cls)
    if known is None:
        fields = cls.model_fields
        template = {n: _MISSING if f.is_required() else f.get_default(call_default_factory=True) for n, f in fields.items()}
        factories = {n: f.default_factory for n, f in fields.items() if f.default_factory is not None}
        known = (template, frozenset(n for n, f in fields.items() if f.is_required()), factories)
        _TRUSTED_TEMPLATES[cls] = known
    template, required, factories = known
    if not required <= values.keys():
        raise KeyError(f"{cls.__name__}: missing {sorted(required - values.keys())}")
    # In declaration order, as validation builds it: the JSON follows the dict's order, and
    # a republished copy (decoded from the journal) must be byte-identical to the first.
    # (update() keeps each key where the template put it.)
    data = template.copy()
    data.update(values)
    if len(data) != len(template):  # names that are not fields are ignored, as validation does
        data = {n: data[n] for n in template}
    for name, factory in factories.items():
        if name not in values:
            data[name] = factory()
    obj = cls.__new__(cls)
    _set(obj, "__dict__", data)
    _set(obj, "__pydantic_fields_set__", set(values))
    _set(obj, "__pydantic_extra__", None)
    _set(obj, "__pydantic_private__", None)
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
    #: The original value's size in bytes and sha256 (hex); ``original_value_b64`` and
    #: ``original_value`` hold at most a prefix of it when ``original_truncated``.
    original_size: int | None = None
    original_sha256: str | None = None
    original_truncated: bool = False
