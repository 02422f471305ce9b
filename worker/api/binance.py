"""Binance's SOR vocabulary: ``POST /api/v3/sor/order`` parameters in, Binance's ACK, RESULT
and FULL responses, ``exchangeInfo`` (with ``sors``) and ``myAllocations`` out.

Pure functions over the domain objects; the HTTP edge (``worker.api.app``) calls them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Mapping, Sequence
from urllib.parse import parse_qsl

from worker.domain.numbers import ascii_digits
from worker.domain.models import (
    ExecutionResult,
    ExecutionStatus,
    LegStatus,
    OrderIntent,
    OrderType,
    RoutePlan,
    Side,
    TimeInForce,
    VenueConfig,
)
from worker.domain.money import BPS, ZERO
from worker.service.results import BINANCE_NAMESPACE, Settled

#: Binance's pattern for decimal parameters.
DECIMAL_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
CLIENT_ORDER_ID_RE = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
#: Allocation ids: ``position * ALLOCS_PER_RESULT + allocId``.
ALLOCS_PER_RESULT = 1_024
EIGHT = Decimal("0.00000001")


class BinanceError(Exception):
    """A Binance error response: ``{"code": code, "msg": msg}`` with HTTP ``status``."""

    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def parse_params(query: str, body: str) -> dict[str, str]:
    """Parameters from the query string and the form body. A name sent twice in one of them
    is an error (-1101); sent in both, the query string's value is used, as on Binance."""
    out: dict[str, str] = {}
    for raw in (body, query):  # the query last: its values win
        seen: set[str] = set()
        for name, value in parse_qsl(raw, keep_blank_values=True):
            if name in seen:
                raise BinanceError(-1101, f"Duplicate values for parameter '{name}'.")
            seen.add(name)
            out[name] = value
    return out


def _mandatory(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise BinanceError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def _decimal(params: Mapping[str, str], name: str) -> Decimal:
    raw = _mandatory(params, name)
    if not DECIMAL_RE.match(raw):
        raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{DECIMAL_RE.pattern}'.")
    value = Decimal(raw)
    if value <= 0:
        raise BinanceError(-1013, f"Invalid {name}: must be greater than 0.")
    return value


@dataclass(frozen=True)
class SorOrder:
    """A validated ``POST /api/v3/sor/order``."""

    api_symbol: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    price: Decimal | None
    client_order_id: str | None
    resp_type: str


def parse_sor_order(params: Mapping[str, str], symbols: Mapping[str, str]) -> SorOrder:
    """Binance's checks, in Binance's order, with Binance's codes."""
    api_symbol = _mandatory(params, "symbol").upper()
    symbol = symbols.get(api_symbol)
    if symbol is None:
        raise BinanceError(-1121, "Invalid symbol.")
    side_raw = _mandatory(params, "side").upper()
    if side_raw not in ("BUY", "SELL"):
        raise BinanceError(-1117, "Invalid side.")
    type_raw = _mandatory(params, "type").upper()
    if type_raw not in ("MARKET", "LIMIT"):
        raise BinanceError(-1116, "Invalid orderType: the SOR takes MARKET and LIMIT.")
    quantity = _decimal(params, "quantity")
    price = None
    tif = TimeInForce.IOC
    if type_raw == "LIMIT":
        price = _decimal(params, "price")
        tif_raw = _mandatory(params, "timeInForce").upper()
        if tif_raw not in ("IOC", "FOK"):
            raise BinanceError(-1115, "Invalid timeInForce: the router takes liquidity (IOC, FOK) and never rests an order.")
        tif = TimeInForce(tif_raw)
    else:
        for name in ("price", "timeInForce"):  # a MARKET FOK would silently run IOC: refused, as Binance does
            if params.get(name):
                raise BinanceError(-1106, f"Parameter '{name}' sent when not required.")
    coid = params.get("newClientOrderId") or None
    if coid is not None and not CLIENT_ORDER_ID_RE.match(coid):
        raise BinanceError(-1100, f"Illegal characters found in parameter 'newClientOrderId'; legal range is '{CLIENT_ORDER_ID_RE.pattern}'.")
    resp = (params.get("newOrderRespType") or "FULL").upper()
    if resp not in ("ACK", "RESULT", "FULL"):
        raise BinanceError(-1100, "Illegal characters found in parameter 'newOrderRespType'; legal range is 'ACK, RESULT, FULL'.")
    return SorOrder(api_symbol, symbol, Side(side_raw.lower()), OrderType(type_raw.lower()), tif, quantity, price, coid, resp)


def order_id(intent_id: str) -> int:
    """A stable numeric ``orderId`` (53 bits: exact in JavaScript too)."""
    return int.from_bytes(hashlib.blake2b(intent_id.encode(), digest_size=8).digest(), "big") & ((1 << 53) - 1)


def order_id_of(intent_id: str) -> int | None:
    """:func:`order_id` of an intent this API took as a Binance order, else ``None``."""
    return order_id(intent_id) if intent_id.startswith(f"{BINANCE_NAMESPACE}-") else None


def _status(result: ExecutionResult) -> str:
    # A taking order that did not fill completely ends EXPIRED on Binance (IOC semantics). Not
    # while a leg's state is unknown: the late-fill sweeper may still find it filled (a
    # correction follows), so the order is still working, as Binance says of an order that
    # can still fill.
    if result.status is ExecutionStatus.FILLED:
        return "FILLED"
    if _working(result):
        return "PARTIALLY_FILLED" if result.executedQty > 0 else "NEW"
    return "EXPIRED"


def _working(result: ExecutionResult) -> bool:
    return any(leg.status is LegStatus.UNKNOWN for leg in result.legs)


def _fmt(value: Decimal | None) -> str:
    return format(value if value is not None else ZERO, "f")


def ack(order: SorOrder, intent_id: str, client_order_id: str, transact_ms: int) -> dict:
    return {"symbol": order.api_symbol, "orderId": order_id(intent_id), "orderListId": -1,
            "clientOrderId": client_order_id, "transactTime": transact_ms}


#: Rejections that are the market's answer to a taking order, not a refusal: on Binance such
#: an order is accepted and ends EXPIRED with nothing filled (a LIMIT FOK that cannot fill).
_EXPIRED_NOT_REJECTED = ("fok_not_coverable", "no_liquidity")


def _refused(result: ExecutionResult) -> bool:
    """Rejected for a reason other than the book's answer (risk, an unusable intent)."""
    return result.status is ExecutionStatus.REJECTED and not (result.reason or "").startswith(_EXPIRED_NOT_REJECTED)


def order_response(order: SorOrder, settled: Settled, client_order_id: str) -> dict:
    """RESULT or FULL (with ``fills``); a rejected intent is Binance's -2010, unless the book
    could not fill it (EXPIRED, nothing filled, as Binance answers)."""
    r = settled.result
    if _refused(r):
        raise BinanceError(-2010, f"Order was rejected: {r.reason}")
    out = ack(order, r.intent_id, client_order_id, settled.received_ms) | {
        "price": _fmt(order.price), "origQty": _fmt(r.total_qty), "executedQty": _fmt(r.executedQty),
        "origQuoteOrderQty": "0", "cummulativeQuoteQty": _fmt(r.cummulativeQuoteQty), "status": _status(r),
        # Binance reports GTC for MARKET orders.
        "timeInForce": order.time_in_force.value if order.type is OrderType.LIMIT else "GTC",
        "type": order.type.value.upper(), "side": order.side.value.upper(), "workingTime": settled.received_ms,
        "selfTradePreventionMode": "NONE",
    }
    if order.resp_type == "FULL":
        out["fills"] = [{"matchType": f.matchType, "price": _fmt(f.price), "qty": _fmt(f.qty), "commission": _fmt(f.commission),
                         "commissionAsset": f.commissionAsset, "tradeId": f.tradeId, "allocId": f.allocId} for f in r.fills]
    out["workingFloor"] = "SOR"
    out["usedSor"] = True
    return out


def query_order(api_symbol: str, intent: OrderIntent | None, settled: Settled | None, client_order_id: str) -> dict:
    """``GET /api/v3/order`` (Binance's "Query order"): ``NEW`` while the result is awaited,
    then FILLED, EXPIRED (an IOC remainder, or a book that could not fill it) or REJECTED.
    Without the intent (read before this process started, past the intent TTL), type and
    price are not known: the order shows as a MARKET order."""
    r = settled.result if settled is not None else None
    if r is None:
        status = "NEW"
    elif _refused(r):
        status = "REJECTED"
    else:
        status = _status(r)
    limit = intent.limit_price if intent is not None else None
    is_limit = intent is not None and intent.type is OrderType.LIMIT
    at = settled.received_ms if settled is not None else (intent.created_at or 0) if intent is not None else 0
    side = (intent.side if intent is not None else r.side).value.upper()  # type: ignore[union-attr]
    return {
        "symbol": api_symbol, "orderId": order_id(intent.intent_id if intent is not None else r.intent_id),  # type: ignore[union-attr]
        "orderListId": -1, "clientOrderId": client_order_id, "price": _fmt(limit),
        "origQty": _fmt(intent.qty if intent is not None else r.total_qty),  # type: ignore[union-attr]
        "executedQty": _fmt(r.executedQty if r else ZERO), "cummulativeQuoteQty": _fmt(r.cummulativeQuoteQty if r else ZERO),
        "status": status, "timeInForce": intent.time_in_force.value if is_limit else "GTC",  # type: ignore[union-attr]
        "type": "LIMIT" if is_limit else "MARKET", "side": side, "stopPrice": "0", "icebergQty": "0",
        "time": at, "updateTime": at, "isWorking": r is None or _working(r), "workingTime": at, "origQuoteOrderQty": "0",
        "selfTradePreventionMode": "NONE", "workingFloor": "SOR", "usedSor": True,
    }


def commission_rates(plan: RoutePlan, venues: Sequence[VenueConfig]) -> dict:
    """``computeCommissionRates``: the plan's fee rates, weighted by each leg's notional."""
    fees = {v.name: v for v in venues}
    notional = sum((leg.estimated_notional for leg in plan.legs), ZERO)
    taker = maker = ZERO
    if notional > 0:
        taker = sum((leg.estimated_notional * fees[leg.provider].taker_fee_bps for leg in plan.legs), ZERO) / notional / BPS
        maker = sum((leg.estimated_notional * fees[leg.provider].maker_fee_bps for leg in plan.legs), ZERO) / notional / BPS
    rate = lambda x: format(x.quantize(EIGHT), "f")  # noqa: E731
    return {
        "standardCommissionForOrder": {"maker": rate(maker), "taker": rate(taker)},
        "taxCommissionForOrder": {"maker": "0.00000000", "taker": "0.00000000"},
        "discount": {"enabledForAccount": False, "enabledForSymbol": False, "discountAsset": "BNB", "discount": "0.00000000"},
    }


def _split(api_symbol: str, symbol: str) -> tuple[str, str]:
    base = symbol.split("/")[0]
    quote = api_symbol[len(base):] if api_symbol.startswith(base) else symbol.split("/")[-1]
    return base, quote


def exchange_info(symbols: Mapping[str, str], venues: Sequence[VenueConfig], now_ms: int, rate_per_s: float,
                  only: Iterable[str] | None = None) -> dict:
    """Binance's ``exchangeInfo`` for the configured symbols; ``sors`` groups the symbols
    with the same base asset (the ones the router takes liquidity for together)."""
    wanted = set(only) if only is not None else None
    step = min((v.step_size for v in venues), default=EIGHT)
    min_qty = min((v.min_qty for v in venues), default=ZERO)
    entries, sors = [], {}
    for api_symbol, symbol in sorted(symbols.items()):
        if wanted is not None and api_symbol not in wanted:
            continue
        base, quote = _split(api_symbol, symbol)
        sors.setdefault(base, []).append(api_symbol)
        entries.append({
            "symbol": api_symbol, "status": "TRADING", "baseAsset": base, "baseAssetPrecision": 8, "quoteAsset": quote,
            "quotePrecision": 8, "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"], "icebergAllowed": False,
            "ocoAllowed": False, "otoAllowed": False, "quoteOrderQtyMarketAllowed": False, "allowTrailingStop": False,
            "cancelReplaceAllowed": False, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": [{"filterType": "LOT_SIZE", "minQty": _fmt(min_qty), "maxQty": "9000000000.00000000", "stepSize": _fmt(step)},
                        {"filterType": "MARKET_LOT_SIZE", "minQty": _fmt(min_qty), "maxQty": "9000000000.00000000", "stepSize": _fmt(step)}],
            "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "NONE",
            "allowedSelfTradePreventionModes": ["NONE"], "ourSymbol": symbol,
        })
    return {
        "timezone": "UTC", "serverTime": now_ms,
        "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "SECOND", "intervalNum": 1, "limit": int(rate_per_s)}],
        "exchangeFilters": [], "symbols": entries,
        "sors": [{"baseAsset": base, "symbols": names} for base, names in sorted(sors.items())],
    }


def allocations(results: Iterable[Settled], account_id: str, api_symbol: str, symbol: str, params: Mapping[str, str]) -> list[dict]:
    """``myAllocations``: the account's SOR allocations of one symbol, oldest first."""
    def number(name: str) -> int | None:
        raw = params.get(name)
        if raw is None or raw == "":
            return None
        if not ascii_digits(raw):
            raise BinanceError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
        return int(raw)

    start, end, from_id, want_order = number("startTime"), number("endTime"), number("fromAllocationId"), number("orderId")
    limit = number("limit")
    limit = 500 if limit is None else limit
    if not 1 <= limit <= 1000:
        raise BinanceError(-1100, "Illegal characters found in parameter 'limit'; legal range is '1-1000'.")
    rows = []
    for settled in results:
        r = settled.result
        if r.account_id != account_id or r.symbol != symbol:
            continue
        oid = order_id(r.intent_id)
        if want_order is not None and oid != want_order:
            continue
        if (start is not None and settled.received_ms < start) or (end is not None and settled.received_ms > end):
            continue
        for f in r.fills:
            alloc = settled.position * ALLOCS_PER_RESULT + f.allocId
            if from_id is not None and alloc < from_id:
                continue
            # Binance's allocation row (allocationId, allocationType), plus the fields earlier
            # releases answered (id, tradeId, isBestMatch, allocId): the answer only grows.
            rows.append({
                "symbol": api_symbol, "allocationId": alloc, "allocationType": "SOR", "orderId": oid, "orderListId": -1,
                "price": _fmt(f.price), "qty": _fmt(f.qty), "quoteQty": _fmt(f.price * f.qty), "commission": _fmt(f.commission),
                "commissionAsset": f.commissionAsset, "time": settled.received_ms, "isBuyer": r.side is Side.BUY,
                "isMaker": False, "isAllocator": False,
                "id": alloc, "tradeId": f.tradeId, "isBestMatch": True, "allocId": f.allocId,
            })
    rows.sort(key=lambda row: row["id"] if from_id is not None else (row["time"], row["id"]))
    if end is not None and start is None and from_id is None:
        return rows[-limit:]  # symbol + endTime: the newest allocations until endTime (still oldest first)
    return rows[:limit]
