"""Real exchanges through ccxt (``adapter = "ccxt"``): orders, reconciliation and books.

A venue's table in the venues file names the ccxt exchange id and optionally its options,
sandbox mode, URL overrides and our symbols -> the exchange's::

    [[venues]]
    name = "binance"
    adapter = "ccxt"
    exchange = "binance"
    sandbox = true
    symbols = { "BTC/USD" = "BTC/USDT" }

Credentials come from ``settings.venue_credentials[name]``.

Money never passes through a float. ccxt returns floats by default, so the exchange class is
subclassed with ``number = str`` (ccxt's own switch: every unified number is then the
exchange's decimal string, or a string computed by ccxt's ``Precise``) and with order-book
levels read as strings; quantities and prices are sent as strings. ccxt's
``decimal_to_precision`` changes the current ``decimal`` context (rounding, traps), so every
ccxt call runs in a local context that is thrown away afterwards.

Errors keep the executor's semantics: a transport failure, a timeout, a 5xx or any error that
does not prove the order was refused is *unknown* (:class:`VenueError` with ``unknown=True``:
reconciled by query, never re-sent); an invalid order, missing funds or a refused request is
*rejected*; a duplicate client order id reports ``duplicate`` so the executor reconciles.
"""

from __future__ import annotations

import asyncio
import decimal
import time
from operator import itemgetter
from collections import OrderedDict
from decimal import Decimal
from typing import Any, Mapping
from urllib.parse import urlsplit

import structlog

from worker.domain.errors import InputError
from worker.domain.models import LegStatus, Side, VenueConfig, VenueQuote
from worker.domain.money import ZERO
from worker.venues.base import DUPLICATE_ORDER, LegOrder, OrderReport, VenueError, VenueTrade, checked
from worker.venues.paper import quote_asset

log = structlog.get_logger("sor.venues.ccxt")

#: ccxt's ``precisionMode`` values (``ccxt.base.decimal_to_precision``), kept here so that
#: importing this module does not load ccxt's hundred exchange classes.
DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE = 2, 3, 4

_CLASSES: dict[str, type] = {}
_RECENT_ORDERS = 100_000

#: Exchanges whose ccxt ``fetch_order`` looks an order up by our client order id (binance:
#: ``origClientOrderId``). Elsewhere the order is found among the symbol's recent orders by
#: its ``clientOrderId``, which every ccxt order structure carries.
FETCH_BY_CLIENT_ID = frozenset({"binance", "binanceus"})


class _NotAmongRecent(Exception):
    """A scan of a market's recent orders did not find the order: no proof it does not exist."""


def exact_exchange_class(exchange_id: str) -> type:
    """ccxt's async exchange class, returning decimal strings instead of floats."""
    cls = _CLASSES.get(exchange_id)
    if cls is not None:
        return cls
    import ccxt.async_support as ccxt_async

    base = getattr(ccxt_async, exchange_id, None) if exchange_id in ccxt_async.exchanges else None
    if not isinstance(base, type):
        raise InputError(f"exchange: {exchange_id!r} is not a ccxt exchange id")

    def parse_order_book_bid_ask(self, bidask, price_key=0, amount_key=1, count_or_id_key=2):
        # ccxt's own version goes through float(); keep the exchange's text.
        return [self.safe_string(bidask, price_key), self.safe_string(bidask, amount_key)]

    cls = type(f"Exact{base.__name__}", (base,), {"number": str, "parse_order_book_bid_ask": parse_order_book_bid_ask})
    _CLASSES[exchange_id] = cls
    return cls


def _dec(value: Any) -> Decimal | None:
    """A ccxt number (a string with ``number = str``) as a Decimal; ``None`` stays ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, float):  # a JSON number in a raw response: its shortest literal, as the codebase reads JSON floats
        value = repr(value)
    return Decimal(str(value))


def _reroot(urls: Any, base: str) -> Any:
    """Every absolute URL in ccxt's ``urls['api']`` tree moved under ``base``, path kept."""
    if isinstance(urls, str):
        parts = urlsplit(urls)
        return base.rstrip("/") + parts.path if parts.scheme else urls
    if isinstance(urls, dict):
        return {k: _reroot(v, base) for k, v in urls.items()}
    return urls


def _step(precision: Any, mode: int) -> Decimal | None:
    """A unified precision value as a step (tick) size."""
    value = _dec(precision)
    if value is None:
        return None
    if mode == TICK_SIZE:
        return value
    if mode == DECIMAL_PLACES:
        return Decimal(1).scaleb(-int(value))
    return None  # significant digits: no fixed grid


def lot_rules(market: Mapping, precision_mode: int) -> dict[str, Decimal]:
    """``step_size``, ``min_qty``, ``min_notional`` and ``tick_size`` from a ccxt market's
    unified ``precision`` and ``limits`` (only those the exchange states)."""
    precision, limits = market.get("precision") or {}, market.get("limits") or {}
    rules = {
        "step_size": _step(precision.get("amount"), precision_mode),
        "tick_size": _step(precision.get("price"), precision_mode),
        "min_qty": _dec((limits.get("amount") or {}).get("min")),
        "min_notional": _dec((limits.get("cost") or {}).get("min")),
    }
    return {k: v for k, v in rules.items() if v is not None and v >= 0 and not (k in ("step_size", "tick_size") and v == 0)}


def effective_config(venue: VenueConfig, markets: list[Mapping], precision_mode: int) -> VenueConfig:
    """The venue's config with the lot rules the file leaves out taken from the exchange.

    Explicit values in the file win. With several symbols the coarsest rule of each kind
    applies (the router keeps one set of rules per venue).
    """
    found: dict[str, Decimal] = {}
    for market in markets:
        for key, value in lot_rules(market, precision_mode).items():
            found[key] = max(found.get(key, value), value)
    if len(markets) > 1:
        steps = {lot_rules(m, precision_mode).get("step_size") for m in markets} - {None}
        if any(found.get("step_size", Decimal(1)) % s for s in steps):
            log.warning("lot_steps_not_nested", venue=venue.name, steps=sorted(map(str, steps)))
    update = {k: v for k, v in found.items() if k not in venue.model_fields_set}
    return venue.model_copy(update=update) if update else venue


def _status(order: Mapping, filled: Decimal, amount: Decimal | None) -> LegStatus:
    status = order.get("status")
    if status == "rejected":
        return LegStatus.REJECTED
    if status == "open":
        return LegStatus.UNKNOWN  # an IOC order still working: its outcome is not known yet
    if amount is not None and filled >= amount > 0:
        return LegStatus.FILLED
    if filled > 0:
        return LegStatus.PARTIAL
    if status in ("closed", "canceled", "expired"):
        return LegStatus.EXPIRED
    return LegStatus.UNKNOWN


class CcxtVenue:
    """:class:`~worker.venues.base.VenueAdapter` over a ccxt ``async_support`` exchange."""

    def __init__(self, venue: VenueConfig, credentials=None, timeout_s: float = 10.0):
        if venue.adapter != "ccxt" or not venue.exchange:
            raise ValueError(f"venue {venue.name}: not a ccxt venue")
        self.name = venue.name
        self.venue = venue
        exact_exchange_class(venue.exchange)  # an unknown exchange id is a config error, found now
        #: The venue's config with the exchange's lot rules filled in, once started.
        self.config = venue
        self.credentials = credentials
        self.timeout_s = timeout_s
        self.exchange: Any = None
        self.symbols: dict[str, str] = {}  # ours -> ccxt unified symbol, once started
        # client order id -> our symbol, for the recent orders: a query's first guess
        self._placed_symbol: OrderedDict[str, str] = OrderedDict()
        self._start_lock = asyncio.Lock()
        self._started = False
        self.request_lifetime_ms = 0  # the exchange's recvWindow, once built

    @staticmethod
    def _lifetime_ms(exchange: Any) -> int:
        """How long the exchange accepts a signed request (ccxt's ``recvWindow`` option, e.g.
        10 s on Binance), plus a second of clock skew; 0 for an exchange without one."""
        window = (exchange.options or {}).get("recvWindow") if isinstance(getattr(exchange, "options", None), dict) else None
        return int(window) + 1_000 if isinstance(window, (int, float)) and window > 0 else 0

    # -- lifecycle ----------------------------------------------------------------------

    def _build_exchange(self) -> Any:
        v = self.venue
        config: dict[str, Any] = {"enableRateLimit": True, "timeout": int(self.timeout_s * 1000), "options": dict(v.options)}
        if v.rate_limit_ms is not None:
            config["rateLimit"] = v.rate_limit_ms
        if self.credentials is not None:
            config["apiKey"] = self.credentials.api_key
            config["secret"] = self.credentials.api_secret.get_secret_value()
        exchange = exact_exchange_class(v.exchange)(config)
        if v.sandbox:
            exchange.set_sandbox_mode(True)
        if v.url:
            exchange.urls["api"] = _reroot(exchange.urls["api"], v.url)
        if v.urls:
            exchange.urls = exchange.deep_extend(exchange.urls, v.urls)
        self.request_lifetime_ms = self._lifetime_ms(exchange)
        return exchange

    async def start(self) -> None:
        """Load the exchange's markets, resolve our symbols and fill in the lot rules."""
        async with self._start_lock:
            if self._started:
                return
            if self.exchange is None:
                try:
                    self.exchange = self._build_exchange()
                except Exception as exc:  # NotSupported (no sandbox), a bad id: a config error
                    raise VenueError(f"{self.name}: {type(exc).__name__}: {exc}") from None
            try:
                with decimal.localcontext():
                    await self.exchange.load_markets()
            except Exception as exc:
                import ccxt

                transient = isinstance(exc, ccxt.OperationFailed)  # the network, a 5xx: try again later
                raise VenueError(f"{self.name}: load_markets failed: {self._reason(exc)}", unknown=transient) from None
            markets = []
            for ours, theirs in (self.venue.symbols or {}).items():
                market = self._market(theirs)
                if market is None:
                    raise VenueError(f"{self.name}: symbols: {theirs!r} (for {ours}) is not a market of {self.venue.exchange}")
                self.symbols[ours] = market["symbol"]
                markets.append(market)
            self.config = effective_config(self.venue, markets, getattr(self.exchange, "precisionMode", TICK_SIZE))
            self._started = True
            log.info("ccxt_venue_started", venue=self.name, exchange=self.venue.exchange, sandbox=self.venue.sandbox,
                     symbols=self.symbols, step_size=str(self.config.step_size), min_qty=str(self.config.min_qty),
                     min_notional=str(self.config.min_notional))

    async def close(self) -> None:
        if self.exchange is not None:
            await self.exchange.close()

    def _market(self, symbol: str) -> Mapping | None:
        markets = self.exchange.markets or {}
        if symbol in markets:
            return markets[symbol]
        by_id = (self.exchange.markets_by_id or {}).get(symbol)
        return by_id[0] if by_id else None

    def _unified(self, symbol: str) -> str | None:
        """The ccxt symbol of one of our symbols; ``None`` unless the venues file declares it
        (a restarted worker looks orders up in the declared markets only)."""
        return self.symbols.get(symbol)

    # -- orders -------------------------------------------------------------------------

    def _price_on_grid(self, unified: str, order: LegOrder) -> Decimal:
        """The limit on the venue's price grid, rounded the protective way (a buy down, a sell up)."""
        precision, mode = self.exchange.markets[unified]["precision"].get("price"), self.exchange.precisionMode
        tick = _step(precision, mode)
        if not tick and mode == SIGNIFICANT_DIGITS and _dec(precision):
            # A grid of significant digits: the tick of this price's magnitude. Rounded here,
            # the protective way, ccxt's own rounding (to the nearest) then changes nothing.
            tick = Decimal(1).scaleb(order.limit_price.adjusted() - int(_dec(precision)) + 1)
        if not tick:
            return order.limit_price
        units = order.limit_price / tick
        units = units.to_integral_value(decimal.ROUND_FLOOR if order.side is Side.BUY else decimal.ROUND_CEILING)
        return units * tick

    async def place(self, order: LegOrder) -> OrderReport:
        await self.start()
        unified = self._unified(order.symbol)
        if unified is None:
            return self._rejected(order.client_order_id, f"{order.symbol} is not in {self.name}'s symbols")
        self._placed_symbol[order.client_order_id] = order.symbol
        if len(self._placed_symbol) > _RECENT_ORDERS:
            self._placed_symbol.popitem(last=False)
        price = self._price_on_grid(unified, order)
        params = {"timeInForce": "IOC", "clientOrderId": order.client_order_id}
        import ccxt

        try:
            with decimal.localcontext():
                amount = self.exchange.amount_to_precision(unified, format(order.qty, "f"))
                if Decimal(amount) != order.qty:
                    log.warning("qty_off_lot_step", venue=self.name, client_order_id=order.client_order_id,
                                qty=str(order.qty), sent=amount)
                result = await self.exchange.create_order(unified, "limit", order.side.value, amount, format(price, "f"), params)
        except ccxt.DuplicateOrderId:
            return self._duplicate(order.client_order_id)
        except ccxt.InvalidOrder as exc:
            if DUPLICATE_ORDER.lower() in str(exc).lower():  # binance -2010 "Duplicate order sent."
                return self._duplicate(order.client_order_id)
            return self._rejected(order.client_order_id, self._reason(exc))
        except (ccxt.InsufficientFunds, ccxt.BadRequest, ccxt.AuthenticationError, ccxt.OperationRejected, ccxt.NotSupported) as exc:
            return self._rejected(order.client_order_id, self._reason(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - network, 5xx, anything not a proven refusal: unknown
            raise VenueError(f"{self.name}: {self._reason(exc)}", unknown=True) from None
        return await self._report(result, unified)

    async def query(self, client_order_id: str) -> OrderReport | None:
        await self.start()
        import ccxt

        first = self._placed_symbol.get(client_order_id)
        candidates = ([first] if first else []) + [s for s in self.symbols if s != first]
        unproven: list[str] = []  # markets only scanned: a page of recent orders proves no absence
        for ours in candidates:
            unified = self._unified(ours)
            if unified is None:
                continue
            try:
                with decimal.localcontext():
                    found = await self._find(client_order_id, unified)
            except ccxt.OrderNotFound:
                continue
            except _NotAmongRecent:
                unproven.append(unified)
                continue
            except (ccxt.BadRequest, ccxt.AuthenticationError, ccxt.NotSupported) as exc:
                raise VenueError(f"{self.name}: query refused: {self._reason(exc)}") from None
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise VenueError(f"{self.name}: {self._reason(exc)}", unknown=True) from None
            if found is None:
                continue
            return await self._report(found, unified)
        if unproven:
            # "No such order" would re-route a leg that may have filled (an older order is not on
            # the exchange's newest page): its state stays unknown, asked again by the sweeper.
            raise VenueError(f"{self.name}: {client_order_id} is not among the recent orders of {', '.join(unproven)}",
                             unknown=True)
        return None

    async def _find(self, client_order_id: str, unified: str) -> Mapping | None:
        ex = self.exchange
        if self.venue.exchange in FETCH_BY_CLIENT_ID:
            return await ex.fetch_order(None, unified, {"clientOrderId": client_order_id})
        if ex.has.get("fetchOrders"):
            orders = await ex.fetch_orders(unified)
        else:
            orders = (await ex.fetch_open_orders(unified) if ex.has.get("fetchOpenOrders") else []) + \
                     (await ex.fetch_closed_orders(unified) if ex.has.get("fetchClosedOrders") else [])
        found = next((o for o in orders if o.get("clientOrderId") == client_order_id), None)
        if found is None:
            raise _NotAmongRecent(unified)
        return found

    async def cancel(self, client_order_id: str) -> OrderReport | None:
        """Cancel what is left; an IOC order is normally finished, and then its state is the answer."""
        await self.start()
        import ccxt

        ours = self._placed_symbol.get(client_order_id)
        unified = self._unified(ours) if ours else None
        if unified is not None:
            try:
                with decimal.localcontext():
                    result = await self.exchange.cancel_order(None, unified, {"clientOrderId": client_order_id})
                return await self._report(result, unified)
            except (ccxt.OrderNotFound, ccxt.OperationRejected, ccxt.InvalidOrder):
                pass  # already finished (binance -2011): ask for its final state
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise VenueError(f"{self.name}: {self._reason(exc)}", unknown=True) from None
        return await self.query(client_order_id)

    # -- market data --------------------------------------------------------------------

    async def fetch_quote(self, symbol: str, depth: int) -> VenueQuote:
        """One order-book snapshot of one of our symbols, stamped with the exchange's time
        (our receipt time when the exchange gives none)."""
        await self.start()
        unified = self._unified(symbol)
        if unified is None:
            raise VenueError(f"{self.name}: {symbol} is not listed")
        # Without the exchange's time (Binance spot's depth has none), the book is dated when it
        # was asked for, never when it arrived: a book taken before one of our fills must not
        # look newer than the fill (the quote cache would release the fill's hold on it).
        asked_ms = time.time_ns() // 1_000_000
        try:
            with decimal.localcontext():
                book = await self.exchange.fetch_order_book(unified, depth)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise VenueError(f"{self.name}: {self._reason(exc)}", unknown=True) from None

        def levels(side: str) -> list[tuple[Decimal, Decimal]]:
            # Sorted here, by number: ccxt sorted the exchange's text ("99995" above "100010"),
            # and an exchange may send more levels than asked; the best ones are kept.
            rows = [(Decimal(p), Decimal(q)) for p, q, *_ in book.get(side) or [] if Decimal(q) > 0]
            return sorted(rows, key=itemgetter(0), reverse=side == "bids")[:depth]

        ts = book.get("timestamp") or asked_ms
        return VenueQuote(venue=self.name, symbol=symbol, ts=int(ts), bids=levels("bids"), asks=levels("asks"))

    # -- mapping ------------------------------------------------------------------------

    def _reason(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {str(exc)[:300]}" if str(exc) else type(exc).__name__

    @staticmethod
    def _rejected(client_order_id: str, error: str) -> OrderReport:
        return OrderReport(client_order_id, None, LegStatus.REJECTED, ZERO, error=error)

    @staticmethod
    def _duplicate(client_order_id: str) -> OrderReport:
        return OrderReport(client_order_id, None, LegStatus.REJECTED, ZERO, error=DUPLICATE_ORDER, duplicate=True)

    async def _report(self, order: Mapping, unified: str) -> OrderReport:
        """An :class:`OrderReport` from a unified ccxt order; trades from the order, or from
        ``fetch_order_trades`` where the exchange's order answer carries none."""
        try:
            filled = _dec(order.get("filled")) or ZERO
            amount = _dec(order.get("amount"))
        except (TypeError, ValueError, ArithmeticError) as exc:
            raise VenueError(f"{self.name}: unreadable order {order.get('id')}: {type(exc).__name__}", unknown=True) from None
        trades = order.get("trades") or []
        if filled > 0 and not trades and self.exchange.has.get("fetchOrderTrades") and order.get("id"):
            try:
                with decimal.localcontext():
                    trades = await self.exchange.fetch_order_trades(order["id"], unified)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the order's state is known; its trades are not yet
                raise VenueError(f"{self.name}: trades of {order['id']}: {self._reason(exc)}", unknown=True) from None
        try:
            return self._parsed_report(order, trades, filled, amount, unified)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # ArithmeticError: decimal.InvalidOperation
            raise VenueError(f"{self.name}: unreadable order {order.get('id')}: {type(exc).__name__}: {str(exc)[:80]}",
                             unknown=True) from None

    def _parsed_report(self, order: Mapping, trades: list, filled: Decimal, amount: Decimal | None, unified: str) -> OrderReport:
        coid = order.get("clientOrderId") or ""
        parsed = tuple(self._trade(t, unified, i) for i, t in enumerate(trades))
        status = _status(order, filled, amount)
        if filled > 0 and not parsed and status is LegStatus.UNKNOWN:
            # Still working, no trade detail: a trade made up now would change as the order
            # fills (same id, more quantity) and a correction could not tell what is new.
            # Unknown until it is final, then one trade for all it filled.
            raise ValueError(f"order {order.get('id')} still working with {filled} filled and no trade detail yet")
        if filled > 0 and not parsed:
            # No per-trade detail to be had: one trade at the average price.
            average = _dec(order.get("average")) or _dec(order.get("price")) or ZERO
            fee = order.get("fee") or {}
            parsed = (VenueTrade(average, filled, _dec(fee.get("cost")) or ZERO, fee.get("currency") or self._quote(unified),
                                 f"{order.get('id')}-avg"),)
        traded = sum((t.qty for t in parsed), ZERO)
        if parsed and traded != filled:
            log.warning("trades_differ_from_filled", venue=self.name, client_order_id=coid, filled=str(filled), trades=str(traded))
        return checked(OrderReport(coid, str(order["id"]) if order.get("id") is not None else None, status,
                                   filled, parsed, error=None if order.get("status") != "rejected" else "rejected by the venue"))

    def _market_info(self, unified: str) -> Mapping:
        markets = getattr(self.exchange, "markets", None) or {}
        return markets.get(unified) or {}

    def _quote(self, unified: str) -> str:
        return self._market_info(unified).get("quote") or quote_asset(unified)

    def _trade(self, trade: Mapping, unified: str, index: int) -> VenueTrade:
        fee = trade.get("fee") or {}
        fees = [f for f in trade.get("fees") or [] if f] or ([fee] if fee else [])
        price = _dec(trade["price"])
        by_asset: dict[str, Decimal] = {}
        for f in fees:
            asset = f.get("currency") or self._quote(unified)
            by_asset[asset] = by_asset.get(asset, ZERO) + (_dec(f.get("cost")) or ZERO)
        if len(by_asset) == 1:
            [(asset, commission)] = by_asset.items()
        elif not by_asset:
            asset, commission = self._quote(unified), ZERO
        else:
            # One trade, fees in several assets: one commission in the quote asset, a base-asset
            # part valued at the trade's price. A third asset has no price here: never guessed.
            quote, base = self._quote(unified), self._market_info(unified).get("base") or unified.split("/")[0]
            if set(by_asset) - {quote, base}:
                raise ValueError(f"fees in several assets, not all the pair's: {sorted(by_asset)}")
            asset, commission = quote, by_asset.get(quote, ZERO) + by_asset.get(base, ZERO) * price
        trade_id = trade.get("id") or f"{trade.get('order')}-{index}"
        return VenueTrade(price, _dec(trade["amount"]), commission, asset, str(trade_id))
