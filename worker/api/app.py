"""The FastAPI application of `sor api`: the seed's six endpoints, Binance's SOR endpoints and
the probes. ``create_app`` takes its collaborators, so tests can hand it fakes; the wiring
to Kafka is ``worker.bootstrap.serve_api``.

Why FastAPI (on uvicorn): the OpenAPI document comes from the same pydantic v2 models as the
events, validation errors are structured (we turn them into one line naming the field), and
it is the Python ecosystem's convention, so operators and contributors know it. The hot
paths bypass its response-model re-validation by returning pre-serialized bytes.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Annotated, Any, Callable, Sequence

import structlog
from fastapi import FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BeforeValidator, TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from worker.api import binance
from worker.api.metrics import ApiMetrics
from worker.api.models import (
    BinanceProblem,
    ExecutionReport,
    Pending,
    Problem,
    RouteResult,
    SmartOrderRequest,
    SplitPlan,
)
from worker.api.orders import IdempotencyConflict, OrderDesk, Placement, intent_id_for
from worker.api.security import AuthError, Caller, GuardMiddleware, TokenBuckets, authenticate, error_body, is_binance_path
from worker.config import Settings
from worker.domain.clock import Clock, now_ms
from worker.domain.ids import by_name
from worker.domain.errors import InputError, describe, field_path
from worker.domain.numbers import ascii_digits
from worker.domain.models import Algorithm, OrderIntent, OrderType, Quantity, RoutePlan, Side, VenueConfig, VenueRoute
from worker.pipeline.codec import loads_exact
from worker.routing.planner import route
from worker.routing.ranking import rank, venue_route
from worker.service.quotes import QuoteCache
from worker.service.results import API_NAMESPACE, BINANCE_NAMESPACE, IntentGateway

log = structlog.get_logger("sor.api")

_ROUTES = TypeAdapter(list[VenueRoute])
JSON = "application/json"


class ApiError(Exception):
    """An answer other than 2xx; rendered as ``{detail}`` or, under /api, ``{code, msg}``."""

    def __init__(self, status: int, detail: str, code: int = -1000, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.code, self.headers = status, detail, code, headers


@dataclass
class ApiDeps:
    """What the app needs; ``worker.bootstrap.serve_api`` builds the real ones."""

    settings: Settings
    venues: Sequence[VenueConfig]
    quotes: QuoteCache
    gateway: IntentGateway
    ready: Callable[[], bool] = lambda: True
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    clock: Clock = now_ms


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


SideQuery = Annotated[Side, BeforeValidator(_lower), Query(description="buy (default) or sell")]
AlgorithmQuery = Annotated[Algorithm, BeforeValidator(_lower), Query(description="split (default), sor or best")]
QtyQuery = Annotated[Quantity, Query(description="base quantity, e.g. 10 or 0.25")]
IdemHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128)]  # "" is no key: never merge orders on it
SymbolPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]


def _json_exact(raw: bytes) -> Any:
    """JSON with every number read exactly (the Kafka edge's parser): never through a float."""
    try:
        return loads_exact(raw, "(body)")
    except InputError as exc:
        raise ApiError(400, str(exc)) from None


def _ms(value: int) -> str:
    return f"{value}ms"


class _Api:
    """The handlers' shared state; one instance per app."""

    def __init__(self, deps: ApiDeps):
        self.deps = deps
        self.settings = deps.settings
        self.venues = list(deps.venues)
        self.desk = OrderDesk(deps.gateway)
        self.symbols = {k.upper(): v for k, v in deps.settings.api_symbols.items()}
        self.api_symbol_of = {v: k for k, v in sorted(self.symbols.items(), reverse=True)}
        self.allow = {account: frozenset(names) for account, names in deps.settings.account_venues.items()}
        #: The client order id of the Binance orders this replica took, for a query by orderId
        #: (the intent id is a digest of it); bounded like the result book.
        self.client_ids: OrderedDict[str, str] = OrderedDict()

    def remember_client_id(self, intent_id: str, client_order_id: str) -> None:
        self.client_ids[intent_id] = client_order_id
        self.client_ids.move_to_end(intent_id)
        if len(self.client_ids) > self.settings.api_result_capacity:
            self.client_ids.popitem(last=False)

    # --- shared steps ----------------------------------------------------------------------

    def require_ready(self) -> None:
        if not self.deps.ready():
            raise ApiError(503, "not ready: connecting to Kafka or reading quotes and results", -1001)

    def resolve(self, symbol: str, quote: str | None = None) -> str:
        """``BTC`` + ``USD`` -> ``BTC/USD``; ``BTCUSDT`` -> its configured mapping; ``BTC`` -> ``BTC/<default quote>``."""
        if quote is not None:
            return f"{symbol.upper()}/{quote.upper()}"
        if "/" in symbol:
            return symbol.upper()
        mapped = self.symbols.get(symbol.upper())
        return mapped if mapped is not None else f"{symbol.upper()}/{self.settings.api_default_quote.upper()}"

    def books(self, symbol: str):
        books = self.deps.quotes.books(symbol)
        if not books:
            raise ApiError(404, f"symbol: no venue quotes {symbol!r}", -1121)
        return books

    def ranking(self, symbol: str, side: Side) -> list[VenueRoute]:
        books, now, max_age = self.books(symbol), self.deps.clock(), self.settings.max_quote_age_ms
        entries = []
        for venue in self.venues:
            quote = books.get(venue.name)
            if quote is None or now - quote.ts > max_age:
                continue
            entry = venue_route(side, venue, quote)
            if entry is not None:
                entries.append(entry)
        return rank(side, entries)

    def plan(self, intent: OrderIntent, algorithm: Algorithm | None = None) -> RoutePlan:
        return route(intent, self.books(intent.symbol), self.venues, now_ms=self.deps.clock(),
                     max_quote_age_ms=self.settings.max_quote_age_ms, algorithm=algorithm,
                     node_limit=self.settings.routing_node_limit)

    def preview_intent(self, symbol: str, side: Side, qty: Decimal, algorithm: Algorithm) -> OrderIntent:
        return OrderIntent(intent_id="preview", account_id="preview", symbol=symbol, side=side, type=OrderType.MARKET,
                           qty=qty, algorithm=algorithm)

    def with_allow_list(self, intent: OrderIntent) -> OrderIntent:
        return intent.within(by_name(self.allow, intent.account_id))

    async def caller(self, request: Request, body: bytes) -> tuple[Caller, dict[str, str]]:
        """Authenticate (Binance's scheme); returns the caller and the query parameters."""
        query = request.scope["query_string"].decode("latin-1")
        text = body.decode("utf-8", errors="replace")
        form = is_binance_path(request.url.path)
        try:
            params = binance.parse_params(query, text if form else "")
        except binance.BinanceError as exc:
            raise ApiError(exc.status, exc.msg, exc.code) from None
        try:
            return authenticate(self.settings.api_keys, request.headers.get("x-mbx-apikey"), query, text, params,
                                self.deps.clock(), form_body=form), params
        except AuthError as exc:
            raise ApiError(exc.status, exc.msg, exc.code) from None

    async def place(self, intent: OrderIntent, wait: bool = True) -> Placement:
        started = time.perf_counter()
        try:
            placement = await self.desk.place(intent, self.settings.api_result_timeout_ms / 1000, wait=wait)
        except IdempotencyConflict:
            self.deps.metrics.orders.labels("conflict").inc()
            raise
        except Exception as exc:  # the broker refused or is unreachable: nothing was placed
            log.error("intent_not_published", intent_id=intent.intent_id, error=repr(exc))
            self.deps.metrics.orders.labels("unavailable").inc()
            raise ApiError(503, "order not placed: the order bus is unavailable; retry with the same idempotency key", -1001) from None
        if placement.settled is None:
            outcome = "accepted" if not wait else "pending"
        else:
            outcome = "replayed" if placement.replayed else placement.settled.result.status.value
            if not placement.replayed:
                self.deps.metrics.order_latency.observe(time.perf_counter() - started)
        self.deps.metrics.orders.labels(outcome).inc()
        log.info("api_order", intent_id=intent.intent_id, account_id=intent.account_id, outcome=outcome)
        return placement


def _problem(status: int, detail: str) -> dict:
    return {"model": Problem, "description": detail}


def create_app(deps: ApiDeps) -> FastAPI:
    """The ASGI app; every collaborator comes from ``deps``."""
    api = _Api(deps)
    deps.gateway.book.index_by(binance.order_id_of)  # GET /api/v3/order by orderId
    started = time.monotonic()
    app = FastAPI(
        title="Smart order router API",
        version="1.0.0",
        description=("The seed's route, split and smart-order endpoints and Binance's SOR endpoints over the worker. "
                     "Money is a JSON string. Order endpoints are signed: X-MBX-APIKEY header, timestamp and "
                     "signature (HMAC-SHA256 of query string + body) parameters."),
    )

    # --- errors ------------------------------------------------------------------------------

    def render(request: Request, status: int, detail: str, code: int, headers: dict | None = None) -> Response:
        return Response(error_body(request.url.path, status, detail, code), status_code=status, media_type=JSON, headers=headers)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return render(request, exc.status, exc.detail, exc.code, exc.headers)

    @app.exception_handler(binance.BinanceError)
    async def _binance_error(request: Request, exc: binance.BinanceError) -> Response:
        return render(request, exc.status, exc.msg, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))[1:]  # drop "query"/"path"/"body"
            got = err.get("input")
            suffix = f" (got {got!r})" if err.get("type") != "missing" and isinstance(got, (str, int)) else ""
            parts.append(f"{field_path(loc)}: {err.get('msg', 'invalid')}{suffix}")
        first = tuple(exc.errors()[0].get("loc", ()))[1:] if exc.errors() else ()
        code = -1102 if exc.errors() and exc.errors()[0].get("type") == "missing" else -1100
        detail = "; ".join(parts) if not is_binance_path(request.url.path) else (
            f"Illegal or missing parameter '{field_path(first)}': {parts[0] if parts else ''}")
        return render(request, 400, detail, code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return render(request, exc.status_code, str(exc.detail), -1000, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("api_internal_error", path=request.url.path, error=repr(exc))
        return render(request, 500, "internal error", -1000)

    # --- probes ------------------------------------------------------------------------------

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        return {"status": "ok", "uptime_s": round(time.monotonic() - started, 1)}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> Response:
        ok = deps.ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        return Response(deps.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # --- the seed's route endpoints ----------------------------------------------------------
    # The split routes are registered first: /v1/route/BTC/split is BTC's split plan, not BTC/SPLIT.

    def split_answer(symbol: str, side: Side, qty: Decimal, algorithm: Algorithm) -> Response:
        api.require_ready()
        try:
            intent = api.preview_intent(symbol, side, qty, algorithm)
        except ValidationError as exc:
            raise ApiError(400, describe(exc)) from None
        plan = api.plan(intent)
        return Response(SplitPlan.of(plan).model_dump_json(), media_type=JSON)

    def route_answer(symbol: str, side: Side) -> Response:
        api.require_ready()
        return Response(_ROUTES.dump_json(api.ranking(symbol, side)), media_type=JSON)

    split_doc = dict(response_model=SplitPlan, tags=["route"], responses={400: _problem(400, "a parameter is invalid; the message names it"),
                                                                          404: _problem(404, "no venue quotes the symbol")})
    route_doc = dict(response_model=list[RouteResult], tags=["route"], responses={404: _problem(404, "no venue quotes the symbol")})

    @app.get("/v1/route/{symbol}/split", summary="VWAP split plan for a symbol", **split_doc)
    async def split_symbol(symbol: SymbolPath, qty: QtyQuery, side: SideQuery = Side.BUY,
                           algorithm: AlgorithmQuery = Algorithm.SPLIT) -> Response:
        return split_answer(api.resolve(symbol), side, qty, algorithm)

    @app.get("/v1/route/{symbol}/{quote}/split", summary="VWAP split plan for a pair", **split_doc)
    async def split_pair(symbol: SymbolPath, quote: SymbolPath, qty: QtyQuery, side: SideQuery = Side.BUY,
                         algorithm: AlgorithmQuery = Algorithm.SPLIT) -> Response:
        return split_answer(api.resolve(symbol, quote), side, qty, algorithm)

    @app.get("/v1/route/{symbol}", summary="Best venues for a symbol, ranked by net price", **route_doc)
    async def route_symbol(symbol: SymbolPath, side: SideQuery = Side.BUY) -> Response:
        return route_answer(api.resolve(symbol), side)

    @app.get("/v1/route/{symbol}/{quote}", summary="Best venues for a pair (e.g. BTC/USD)", **route_doc)
    async def route_pair(symbol: SymbolPath, quote: SymbolPath, side: SideQuery = Side.BUY) -> Response:
        return route_answer(api.resolve(symbol, quote), side)

    # --- the seed's smart-order endpoints ----------------------------------------------------

    order_body = {"requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": "#/components/schemas/SmartOrderRequest"}}}},
                  "parameters": [{"name": n, "in": "query", "required": n != "recvWindow", "schema": {"type": "string"}}
                                 for n in ("timestamp", "signature", "recvWindow")]}
    order_responses = {200: {"model": ExecutionReport, "description": "executed (or, with dry_run, the SplitPlan)"},
                       202: {"model": Pending, "description": "no result within the timeout: poll"},
                       400: _problem(400, "bad input; the message names the field"),
                       401: _problem(401, "not authenticated; nothing placed"),
                       409: _problem(409, "idempotency key used for a different order"),
                       429: _problem(429, "rate limit"), 503: _problem(503, "not ready or the order bus is unavailable")}

    async def smart_order(request: Request, split: bool, header_key: str | None) -> Response:
        api.require_ready()
        body = await request.body()
        caller, _ = await api.caller(request, body)  # before parsing: an unauthenticated caller learns nothing
        doc = _json_exact(body)
        if not isinstance(doc, dict):
            raise ApiError(400, "(body): expected a JSON object")
        try:
            order = SmartOrderRequest.model_validate(doc)
        except ValidationError as exc:
            raise ApiError(400, describe(exc)) from None
        if header_key is not None and order.idempotency_key is not None and header_key != order.idempotency_key:
            raise ApiError(400, "idempotency_key: differs from the Idempotency-Key header")
        key = order.idempotency_key or header_key
        if split:
            algorithm = order.algorithm or Algorithm.SPLIT
            if algorithm is Algorithm.BEST:
                raise ApiError(400, "algorithm: /v1/smart-order/split takes 'split' or 'sor'; use /v1/smart-order for 'best'")
        else:
            algorithm = order.algorithm or Algorithm.BEST
            if algorithm is not Algorithm.BEST:
                raise ApiError(400, f"algorithm: /v1/smart-order routes to the best venue; use /v1/smart-order/split for {algorithm.value!r}")
        try:
            intent = OrderIntent(
                intent_id=intent_id_for(API_NAMESPACE, caller.account_id, key), account_id=caller.account_id,
                symbol=api.resolve(order.symbol), side=order.side, type=order.type, qty=order.qty, limit_price=order.limit_price,
                time_in_force=order.time_in_force, algorithm=algorithm, created_at=deps.clock(), expires_at=order.expires_at,
                venues=order.venues, dry_run=order.dry_run)
        except ValidationError as exc:
            raise ApiError(400, describe(exc)) from None
        if order.dry_run:
            return Response(SplitPlan.of(api.plan(api.with_allow_list(intent))).model_dump_json(), media_type=JSON)
        try:
            placement = await api.place(intent)
        except IdempotencyConflict:
            raise ApiError(409, "idempotency_key: already used for a different order") from None
        if placement.settled is None:
            poll = f"/v1/smart-order/{placement.intent_id}"
            return Response(Pending(intent_id=placement.intent_id, poll=poll).model_dump_json(), status_code=202,
                            media_type=JSON, headers={"Location": poll})
        return Response(ExecutionReport.of(placement.settled.result).model_dump_json(), media_type=JSON)

    @app.post("/v1/smart-order", summary="Execute an order via the best venue", tags=["smart-order"],
              response_model=ExecutionReport, responses=order_responses, openapi_extra=order_body)
    async def smart_order_best(request: Request, idempotency_key: IdemHeader = None) -> Response:
        return await smart_order(request, False, idempotency_key)

    @app.post("/v1/smart-order/split", summary="Execute a split order across venues", tags=["smart-order"],
              response_model=ExecutionReport, responses=order_responses, openapi_extra=order_body)
    async def smart_order_split(request: Request, idempotency_key: IdemHeader = None) -> Response:
        return await smart_order(request, True, idempotency_key)

    @app.get("/v1/smart-order/{intent_id}", summary="The result of a smart order (after a 202)", tags=["smart-order"],
             response_model=ExecutionReport, responses={202: {"model": Pending, "description": "still executing"},
                                                        401: _problem(401, "not authenticated"),
                                                        404: _problem(404, "no such order for this API key")},
             openapi_extra={"parameters": order_body["parameters"]})
    async def smart_order_result(request: Request, intent_id: Annotated[str, Path(min_length=1, max_length=128)]) -> Response:
        api.require_ready()
        caller, _ = await api.caller(request, b"")
        settled = deps.gateway.book.get(intent_id)
        if settled is not None and settled.result.account_id == caller.account_id:
            return Response(ExecutionReport.of(settled.result).model_dump_json(), media_type=JSON)
        pending = deps.gateway.book.pending(intent_id)
        if pending is not None and pending.account_id == caller.account_id:
            poll = f"/v1/smart-order/{intent_id}"
            return Response(Pending(intent_id=intent_id, poll=poll).model_dump_json(), status_code=202, media_type=JSON)
        raise ApiError(404, f"intent_id: no order {intent_id!r} for this API key")

    # --- Binance's SOR endpoints -------------------------------------------------------------

    binance_params = {"parameters": [{"name": n, "in": "query", "required": n in ("symbol", "side", "type", "quantity", "timestamp", "signature"),
                                      "schema": {"type": "string"}}
                                     for n in ("symbol", "side", "type", "timeInForce", "quantity", "price", "newClientOrderId",
                                               "newOrderRespType", "recvWindow", "timestamp", "signature")],
                      "description": "Parameters in the query string or an application/x-www-form-urlencoded body; signed."}
    binance_errors = {400: {"model": BinanceProblem, "description": "Binance error code and message"},
                      401: {"model": BinanceProblem, "description": "-2014/-2015/-1022: nothing placed"},
                      503: {"model": BinanceProblem, "description": "-1007: no result within the timeout (retry with the same newClientOrderId)"}}

    async def sor_request(request: Request) -> tuple[Caller, dict[str, str], binance.SorOrder]:
        api.require_ready()
        body = await request.body()
        caller, _ = await api.caller(request, body)
        query = request.scope["query_string"].decode("latin-1")
        params = binance.parse_params(query, body.decode("utf-8", errors="replace"))
        return caller, params, binance.parse_sor_order(params, api.symbols)

    def sor_intent(caller: Caller, order: binance.SorOrder, coid: str) -> OrderIntent:
        try:
            return OrderIntent(intent_id=intent_id_for(BINANCE_NAMESPACE, caller.account_id, coid), account_id=caller.account_id,
                               symbol=order.symbol, side=order.side, type=order.type, qty=order.quantity, limit_price=order.price,
                               time_in_force=order.time_in_force, algorithm=Algorithm.SOR, created_at=deps.clock())
        except ValidationError as exc:  # Binance's patterns take 20 digits each side; the domain's bounds are tighter
            err = exc.errors(include_url=False)[0]
            name = {"qty": "quantity", "limit_price": "price"}.get(str(err["loc"][0]), str(err["loc"][0])) if err["loc"] else "order"
            raise binance.BinanceError(-1100, f"Illegal value in parameter '{name}': {err['msg']}.") from None

    @app.post("/api/v3/sor/order", summary="New order using SOR (TRADE)", tags=["binance"], responses=binance_errors,
              openapi_extra=binance_params)
    async def sor_order(request: Request) -> Response:
        caller, _, order = await sor_request(request)
        coid = order.client_order_id or secrets.token_urlsafe(16)[:22]
        intent = sor_intent(caller, order, coid)
        api.remember_client_id(intent.intent_id, coid)
        try:
            placement = await api.place(intent, wait=order.resp_type != "ACK")
        except IdempotencyConflict:
            raise binance.BinanceError(-2010, "Duplicate order sent.") from None
        if order.resp_type == "ACK":
            settled = placement.settled
            return JSONResponse(binance.ack(order, intent.intent_id, coid, settled.received_ms if settled else deps.clock()))
        if placement.settled is None:
            raise binance.BinanceError(-1007, "Timeout waiting for response from backend server. Send status unknown; "
                                              "execution status unknown. Retry with the same newClientOrderId.", 503)
        return JSONResponse(binance.order_response(order, placement.settled, coid))

    @app.post("/api/v3/sor/order/test", summary="Test new order using SOR (TRADE)", tags=["binance"], responses=binance_errors,
              openapi_extra=binance_params)
    async def sor_order_test(request: Request) -> Response:
        caller, params, order = await sor_request(request)
        if params.get("computeCommissionRates", "false").lower() != "true":
            return JSONResponse({})
        intent = api.with_allow_list(sor_intent(caller, order, order.client_order_id or "test"))
        return JSONResponse(binance.commission_rates(api.plan(intent), api.venues))

    @app.get("/api/v3/exchangeInfo", summary="Exchange information, with sors", tags=["binance"])
    async def exchange_info(symbol: str | None = None, symbols: str | None = None) -> Response:
        only = None
        if symbol:
            only = [symbol.upper()]
        elif symbols:
            try:
                parsed = json.loads(symbols)
            except (ValueError, RecursionError):  # RecursionError: "[[[[..." from anyone, unauthenticated
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
                raise binance.BinanceError(-1100, "Illegal characters found in parameter 'symbols'.")
            only = [s.upper() for s in parsed]
        if only and not all(s in api.symbols for s in only):
            raise binance.BinanceError(-1121, "Invalid symbol.")
        return JSONResponse(binance.exchange_info(api.symbols, api.venues, deps.clock(), deps.settings.api_rate_limit_per_s, only))

    def user_data_params(*names: str) -> dict:
        """The OpenAPI parameters of a signed GET (USER_DATA) endpoint: ``symbol``, ``names``, the signature's."""
        return {"parameters": [{"name": n, "in": "query", "required": n in ("symbol", "timestamp", "signature"),
                                "schema": {"type": "string"}}
                               for n in ("symbol", *names, "recvWindow", "timestamp", "signature")]}

    async def user_data(request: Request) -> tuple[Caller, dict[str, str], str, str]:
        """A signed GET with a ``symbol``: the caller, the parameters, the API symbol and ours."""
        api.require_ready()
        caller, params = await api.caller(request, b"")
        api_symbol = (params.get("symbol") or "").upper()
        if not api_symbol:
            raise binance.BinanceError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        symbol = api.symbols.get(api_symbol)
        if symbol is None:
            raise binance.BinanceError(-1121, "Invalid symbol.")
        return caller, params, api_symbol, symbol

    @app.get("/api/v3/myAllocations", summary="Query allocations (USER_DATA)", tags=["binance"], responses=binance_errors,
             openapi_extra=user_data_params("startTime", "endTime", "fromAllocationId", "limit", "orderId"))
    async def my_allocations(request: Request) -> Response:
        caller, params, api_symbol, symbol = await user_data(request)
        return JSONResponse(binance.allocations(deps.gateway.book, caller.account_id, api_symbol, symbol, params))

    @app.get("/api/v3/order", summary="Query order (USER_DATA)", tags=["binance"], responses=binance_errors,
             openapi_extra=user_data_params("origClientOrderId", "orderId"))
    async def query_order(request: Request) -> Response:
        caller, params, api_symbol, symbol = await user_data(request)
        coid, raw_id = params.get("origClientOrderId") or None, params.get("orderId") or None
        if coid is None and raw_id is None:
            raise binance.BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        if raw_id is not None and not ascii_digits(raw_id):
            raise binance.BinanceError(-1100, "Illegal characters found in parameter 'orderId'; legal range is '^[0-9]{1,20}$'.")
        book = deps.gateway.book
        if coid is not None:
            intent_id: str | None = intent_id_for(BINANCE_NAMESPACE, caller.account_id, coid)
        else:
            intent_id = book.find(int(raw_id))  # type: ignore[arg-type]
        intent, settled = (book.order(intent_id), book.get(intent_id)) if intent_id is not None else (None, None)
        owner = intent or (settled.result if settled is not None else None)
        if (owner is None or owner.account_id != caller.account_id or owner.symbol != symbol
                or (raw_id is not None and binance.order_id(intent_id) != int(raw_id))):  # type: ignore[arg-type]
            raise binance.BinanceError(-2013, "Order does not exist.")
        client_id = coid if coid is not None else api.client_ids.get(intent_id, "")  # type: ignore[arg-type]
        return JSONResponse(binance.query_order(api_symbol, intent, settled, client_id))

    @app.get("/api/v3/ping", tags=["binance"])
    async def ping() -> dict:
        return {}

    @app.get("/api/v3/time", tags=["binance"])
    async def server_time() -> dict:
        return {"serverTime": deps.clock()}

    # --- the document, the guards and the metrics --------------------------------------------

    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            extra = SmartOrderRequest.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas.update(extra.pop("$defs", {}))
            schemas["SmartOrderRequest"] = extra
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(GuardMiddleware, max_body_bytes=deps.settings.api_max_body_bytes,
                       buckets=TokenBuckets(deps.settings.api_rate_limit_per_s, deps.settings.api_rate_limit_burst),
                       keys=deps.settings.api_keys, clock=deps.clock)
    app.add_middleware(_MetricsMiddleware, metrics=deps.metrics)
    return app


class _MetricsMiddleware:
    """Counts and times every request by its route template (bounded label values)."""

    def __init__(self, app, metrics: ApiMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def capture(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            matched = scope.get("route")
            template = getattr(matched, "path", "unmatched")
            self.metrics.requests.labels(template, str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)
