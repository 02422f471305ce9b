"""A venue's book side prepared for routing: prefix sums, lot rules and integer views.

Two representations of the same book live side by side:

- exact ``Decimal`` prefix sums, for the numbers a plan reports (notional, fees, prices);
- scaled integers (quantities in lots of ``10**-Q``, prices in ticks of ``10**-P``), for the
  hot path: the allocators compare and add plain Python ``int`` s, which are exact at any size
  and several times faster than ``Decimal``.

Every ``Decimal`` operation of the routing core runs in one explicit context
(:func:`routing_context`), never in the caller's ambient one: a book prepared by the worker
as a snapshot arrives is the same book ``sor plan`` prepares on demand.
"""

from __future__ import annotations

import decimal
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from itertools import islice
from operator import add, is_
from typing import Sequence

from worker.domain.models import Side, VenueConfig, VenueQuote
from worker.domain.money import BPS, MONEY_CONTEXT, ZERO

#: The one context of every routing computation: enough digits that sums of
#: price x qty x fee products never round on realistic books.
ROUTING_CONTEXT = MONEY_CONTEXT  # the one money context (worker.domain.money), by its routing name
#: Exact integer-valued conversions (scaling by a power of ten never rounds here).
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
#: A book whose exact arithmetic would need more digits than this is not routable: it would
#: take seconds and megabytes per plan (such numbers are rejected at the edge anyway).
MAX_ROUTING_DIGITS = 1_000


@lru_cache(maxsize=64)
def _wide_context(prec: int) -> decimal.Context:
    return decimal.Context(prec=prec, rounding=decimal.ROUND_HALF_EVEN)


def routing_context(digits: int = 0) -> decimal.Context:
    """The routing context, widened (in steps of 20 digits) when a plan's exact sums need
    more than its 60 digits. Realistic books always get :data:`ROUTING_CONTEXT` itself, so
    every result equals what a 60-digit computation gives."""
    if digits <= ROUTING_CONTEXT.prec:
        return ROUTING_CONTEXT
    return _wide_context(-(-digits // 20) * 20)


def fraction_digits(value: Decimal) -> int:
    """Digits after the point in ``value``'s representation (0 for integers)."""
    exponent = value.as_tuple().exponent
    return -exponent if exponent < 0 else 0  # type: ignore[operator]


def to_units(value: Decimal, digits: int) -> int:
    """``value * 10**digits`` as an exact ``int`` (``value`` must have at most ``digits``
    fraction digits)."""
    return int(_EXACT.scaleb(value, digits))


def floor_units(value: Decimal, digits: int) -> int:
    """``floor(value * 10**digits)``: a quantity floored onto the lot grid ``10**-digits``."""
    if value >= 0:
        return int(_EXACT.scaleb(value, digits))  # int() truncates: the floor of a positive number
    return int(_EXACT.scaleb(value, digits).to_integral_value(rounding=decimal.ROUND_FLOOR))


def from_units(units: int, digits: int) -> Decimal:
    """The exact ``Decimal`` of ``units * 10**-digits``."""
    return _EXACT.scaleb(Decimal(units), -digits)


@dataclass(slots=True, eq=False)
class PreparedSide:
    """Prefix sums and integer views of one side of one quote: computed once per quote."""

    quote: VenueQuote
    side: Side
    keys: tuple[Decimal, ...]  # sign * price: ascending on both sides, for bisecting the limit
    prices: tuple[Decimal, ...]
    cum_qty: tuple[Decimal, ...]  # cum_qty[j] = quantity of the levels before j
    cum_notional: tuple[Decimal, ...]
    fee_rate: Decimal
    factor: Decimal  # sign * (1 +/- fee): the fee-adjusted rate of a level is factor * price
    qty_digits: int  # fraction digits of the sizes: cum_qty is exact in lots of 10**-qty_digits
    price_digits: int
    fee_digits: int
    digits: int  # significant digits the exact sums of this book need
    int_prices: tuple[int, ...]  # prices in ticks of 10**-price_digits
    int_cum_qty: tuple[int, ...]  # in lots of 10**-qty_digits
    fee_units: int  # taker fee in units of 10**-fee_digits bps
    derived: dict = field(default_factory=dict)  # per-venue values of this quote, memoised


@dataclass(slots=True, eq=False)
class SnapshotMemo:
    """What routing derived from one venue's latest snapshot of one symbol.

    Replaced as a whole when a newer snapshot of the same venue and symbol is routed, so
    nothing derived from an older snapshot outlives it: memory follows the number of venue
    and symbol pairs, never the number of snapshots seen.
    """

    quote: VenueQuote
    sides: dict = field(default_factory=dict)  # (is buy, taker fee) -> PreparedSide
    entries: dict = field(default_factory=dict)  # (id(venue), is buy) -> ranking.venue_entry tuple


#: The latest snapshot's memo per (venue, symbol), oldest first.
_LATEST: OrderedDict[tuple[str, str], SnapshotMemo] = OrderedDict()
#: (venue, symbol) pairs kept: far more than any deployment routes; beyond it the pair whose
#: snapshot is oldest is prepared again if it is routed again.
LATEST_SIZE = 4096
#: Entries of the memos kept per venue, symbol and side (each side and fee configuration of the
#: snapshots :data:`_LATEST` holds); beyond it they start afresh.
SHARED_SIZE = 4 * LATEST_SIZE
#: Entries kept per snapshot (venue configurations, limit depths): a deployment has a handful;
#: only a caller that invents new ones for every plan reaches it, and then starts afresh.
PER_SNAPSHOT_SIZE = 256


def snapshot_memo(quote: VenueQuote) -> SnapshotMemo:
    """The memo of ``quote``: a fresh one, replacing its venue and symbol's previous snapshot,
    the first time ``quote`` is seen."""
    key = (quote.venue, quote.symbol)
    memo = _LATEST.get(key)
    if memo is None or memo.quote is not quote:
        if memo is not None:
            del _LATEST[key]  # re-inserted last: the pairs in use stay clear of eviction
            _forget_symbol(quote.symbol)
        memo = _LATEST[key] = SnapshotMemo(quote)
        if len(_LATEST) > LATEST_SIZE:
            (_, symbol), _ = _LATEST.popitem(last=False)
            _forget_symbol(symbol)
    return memo


def _forget_symbol(symbol: str) -> None:
    for memo in _SET_MEMOS:
        memo.forget(symbol)


class SnapshotSetMemo:
    """Values derived from several snapshots of one symbol (a market, a plan's line-up).

    Grouped by symbol and side; a symbol's values are dropped as soon as any of its
    snapshots is replaced (:func:`snapshot_memo`), so only values of the latest snapshots
    are kept, at most ``per_group`` per symbol and side (limits, venue filters), oldest
    dropped first.
    """

    def __init__(self, per_group: int) -> None:
        self.per_group = per_group
        self._values: dict = {}
        self._groups: dict[tuple[str, bool], list] = {}  # (symbol, is buy) -> keys, oldest first
        #: The value put under a key, or ``None``: the dict's own lookup (one per plan).
        self.get = self._values.get
        _SET_MEMOS.append(self)

    def put(self, symbol: str, is_buy: bool, key, value):
        """Keep ``value`` under ``key`` until a snapshot of ``symbol`` is replaced."""
        keys = self._groups.setdefault((symbol, is_buy), [])
        if key in self._values:
            keys.remove(key)
        elif len(keys) >= self.per_group:
            del self._values[keys.pop(0)]
        keys.append(key)
        self._values[key] = value
        return value

    def forget(self, symbol: str) -> None:
        """Drop every value derived from ``symbol``'s snapshots."""
        for is_buy in (True, False):
            for key in self._groups.pop((symbol, is_buy), ()):
                del self._values[key]

    def clear(self) -> None:
        self._values.clear()
        self._groups.clear()

    def __len__(self) -> int:
        return len(self._values)


_SET_MEMOS: list[SnapshotSetMemo] = []


def forget_prepared_books() -> None:
    """Drop every memoised snapshot and everything derived from it: the next plans prepare
    their books again, as the first intent after a snapshot does (benchmarks)."""
    _LATEST.clear()
    for memo in _SET_MEMOS:
        memo.clear()
    for memo in _FORGOTTEN_WITH_BOOKS:
        memo.clear()


#: Other modules' memos of prepared books, emptied by :func:`forget_prepared_books` too.
_FORGOTTEN_WITH_BOOKS: list[dict] = []


def forgotten_with_books(memo: dict) -> dict:
    """Register ``memo`` to be emptied whenever the prepared books are forgotten; returns it."""
    _FORGOTTEN_WITH_BOOKS.append(memo)
    return memo


def bounded_put(memo: dict, key, value, limit: int = PER_SNAPSHOT_SIZE):
    """``memo[key] = value``, starting ``memo`` afresh once it holds ``limit`` entries."""
    if len(memo) >= limit:
        memo.clear()
    memo[key] = value
    return value


def prepare_side(quote: VenueQuote, side: Side, taker_fee_bps: Decimal) -> PreparedSide:
    """The prepared side of ``quote``, memoised with the snapshot: the worker routes many
    intents per snapshot.

    A quote whose side is the very level list of the latest quote prepared for its venue and
    symbol shares that preparation (the quote cache's view of a book less this worker's
    reservations keeps the raw list of a side nothing was taken from), so the returned side's
    ``quote`` may be that other quote: same venue, symbol, timestamp and levels on ``side``.

    The result does not depend on the caller's decimal context.
    """
    sides = snapshot_memo(quote).sides
    key = (side is Side.BUY, taker_fee_bps)  # a bool hashes in C; an Enum in Python
    hit = sides.get(key)
    if hit is None:
        levels = quote.side_levels(side)
        shared_key = (quote.venue, quote.symbol, *key)
        base = _BY_LEVELS.get(shared_key)
        if base is not None and base.quote.ts == quote.ts and base.quote.side_levels(side) is levels:
            hit = base
        else:
            if base is not None and base.quote.ts == quote.ts:
                hit = derive_side(base, quote, levels)
            if hit is None:
                hit = _prepare(quote, side, taker_fee_bps)
            bounded_put(_BY_LEVELS, shared_key, hit, SHARED_SIZE)
        bounded_put(sides, key, hit)
    return hit


#: The latest prepared side per (venue, symbol, is buy, taker fee), by the level list it was
#: prepared from (see :func:`prepare_side`); it holds its quote, so the list's identity stays its own.
_BY_LEVELS: dict[tuple, PreparedSide] = forgotten_with_books({})


def _prefix_sums(levels, ctx: decimal.Context):
    """(prices, prefix quantities, prefix notionals, sum of prices, whether any was rounded)."""
    prices, cum_q, cum_n = [], [ZERO], [ZERO]
    q_total = n_total = price_sum = ZERO
    # localcontext() runs on a copy of ctx: its flags are read from that copy.
    with decimal.localcontext(ctx) as running:
        running.clear_flags()
        for price, qty in levels:
            prices.append(price)
            price_sum += price  # its exponent is the finest price's: the tick digits
            q_total += qty
            n_total += price * qty
            cum_q.append(q_total)
            cum_n.append(n_total)
        rounded = bool(running.flags[decimal.Rounded])
    return prices, cum_q, cum_n, price_sum, rounded


def _prepare(quote: VenueQuote, side: Side, taker_fee_bps: Decimal) -> PreparedSide:
    levels = quote.side_levels(side)
    prices, cum_q, cum_n, price_sum, rounded = _prefix_sums(levels, ROUTING_CONTEXT)
    if rounded:
        # Beyond 60 digits: redo the sums exactly in a context wide enough for this book.
        need = _digits_needed(levels)
        prices, cum_q, cum_n, price_sum, _ = _prefix_sums(levels, routing_context(min(need, MAX_ROUTING_DIGITS)))
    else:
        need = 0
    sign = side.sign
    with decimal.localcontext(routing_context(need)):
        fee_rate = taker_fee_bps / BPS
        factor = sign * ((1 + fee_rate) if side is Side.BUY else (1 - fee_rate))
        keys = prices if sign == 1 else [-p for p in prices]
    qty_digits = fraction_digits(cum_q[-1])
    price_digits = fraction_digits(price_sum)
    fee_digits = fraction_digits(taker_fee_bps)
    magnitude = max(cum_n[-1].adjusted(), cum_q[-1].adjusted(), price_sum.adjusted(), 0) + 1
    digits = max(need, magnitude + qty_digits + price_digits + fee_digits + 5)
    if digits > MAX_ROUTING_DIGITS:
        int_prices, int_cum_q = (), (0,)  # not routable: see SideBook.build
    else:
        scaleb = _EXACT.scaleb
        int_prices = tuple([int(scaleb(p, price_digits)) for p in prices])
        int_cum_q = tuple([int(scaleb(q, qty_digits)) for q in cum_q])
    return PreparedSide(
        quote, side, tuple(keys), tuple(prices), tuple(cum_q), tuple(cum_n), fee_rate, factor,
        qty_digits, price_digits, fee_digits, digits, int_prices, int_cum_q, to_units(taker_fee_bps, fee_digits),
    )


def _exponents(prep: PreparedSide) -> tuple[list[int], list[int], list[int], list[int]]:
    """Per level of ``prep``: the exponents of its sizes and prices, and of the prefix sums of
    quantity and notional (``cum_qty[j]``, ``cum_notional[j]``). An exact ``Decimal`` sum has the
    smallest exponent of its terms, so those are running minima (from 0: the sums start at ZERO)."""
    hit = prep.derived.get("exponents")
    if hit is None:
        levels = prep.quote.side_levels(prep.side)
        e_q = [q.as_tuple().exponent for _, q in levels]
        e_p = [p.as_tuple().exponent for p, _ in levels]
        hit = prep.derived["exponents"] = (e_q, e_p, _running_min(e_q), _running_min(map(add, e_p, e_q)))
    return hit


def _running_min(exponents) -> list[int]:
    out, low = [0], 0
    for e in exponents:
        if e < low:
            low = e
        out.append(low)
    return out


def derive_side(base: PreparedSide, quote: VenueQuote, levels: list) -> PreparedSide | None:
    """:func:`_prepare` of ``levels`` (a side of ``quote``) from ``base``, the prepared side of
    the same book before some of its top liquidity was taken, without walking the book in
    ``Decimal`` again; ``None`` when ``levels`` is not of that shape.

    The shape is what the quote cache's reservations make: ``base``'s levels without its
    first ``m``, the next one's size reduced, the rest the very same level objects. Every
    field equals what :func:`_prepare` gives, down to the exponents of the ``Decimal`` sums
    (the plans' numbers are printed from them): each sum is ``base``'s less what was taken,
    re-expressed at the exponent a fresh sum would have.
    """
    side = base.side
    raw = base.quote.side_levels(side)
    n = len(levels)
    m = len(raw) - n
    if n == 0 or m < 0 or base.digits > ROUTING_CONTEXT.prec:
        return None
    top_price, top_qty = levels[0]
    if top_price is not raw[m][0] or not all(map(is_, islice(levels, 1, None), islice(raw, m + 1, None))):
        return None
    e_q, e_p, base_eq, base_en = _exponents(base)
    e_q0 = top_qty.as_tuple().exponent
    v_eq = [e_q0, *e_q[m + 1:]]
    v_ep = e_p[m:]
    cum_e_q, cum_e_n = _running_min(v_eq), _running_min(map(add, v_ep, v_eq))
    with decimal.localcontext(ROUTING_CONTEXT):
        first_q, first_n = ZERO + top_qty, ZERO + top_price * top_qty
        taken_q = base.cum_qty[m + 1] - first_q  # what the view lacks, before each of its levels past the first
        taken_n = base.cum_notional[m + 1] - first_n
        cum_q, cum_n = [ZERO, first_q], [ZERO, first_n]
        e_taken_q, e_taken_n = min(base_eq[m + 1], cum_e_q[1]), min(base_en[m + 1], cum_e_n[1])
        for i in range(2, n + 1):
            q = base.cum_qty[m + i] - taken_q
            if min(base_eq[m + i], e_taken_q) != cum_e_q[i]:
                q = q.quantize(_POWERS[cum_e_q[i]])  # exact: a fresh sum has no finer digit
            cum_q.append(q)
            v = base.cum_notional[m + i] - taken_n
            if min(base_en[m + i], e_taken_n) != cum_e_n[i]:
                v = v.quantize(_POWERS[cum_e_n[i]])
            cum_n.append(v)
        prices = base.prices[m:]
        price_sum = sum(prices, ZERO)
    qty_digits = max(0, -cum_e_q[-1])
    price_digits = max(0, -min(v_ep))
    magnitude = max(cum_n[-1].adjusted(), cum_q[-1].adjusted(), price_sum.adjusted(), 0) + 1
    digits = magnitude + qty_digits + price_digits + base.fee_digits + 5
    if digits > ROUTING_CONTEXT.prec:
        return None  # _prepare decides about wide books
    down = 10 ** (base.price_digits - price_digits)
    int_prices = base.int_prices[m:] if down == 1 else tuple([t // down for t in base.int_prices[m:]])
    scale = max(base.qty_digits, qty_digits)  # both the base's and the view's sums are whole lots of it
    up, down = 10 ** (scale - base.qty_digits), 10 ** (scale - qty_digits)
    taken_units = base.int_cum_qty[m + 1] * up - to_units(top_qty, scale)
    int_cum = [0, *[(c * up - taken_units) // down for c in base.int_cum_qty[m + 1:]]]
    prep = PreparedSide(quote, side, base.keys[m:], prices, tuple(cum_q), tuple(cum_n), base.fee_rate, base.factor,
                        qty_digits, price_digits, base.fee_digits, digits, int_prices, tuple(int_cum), base.fee_units)
    prep.derived["exponents"] = (v_eq, v_ep, cum_e_q, cum_e_n)
    return prep


class _Powers(dict):
    """``_POWERS[e]``: ``Decimal(1).scaleb(e)``, the quantum of exponent ``e``."""

    def __missing__(self, e: int) -> Decimal:
        value = self[e] = Decimal((0, (1,), e))
        return value


_POWERS = _Powers()


def _digits_needed(levels) -> int:
    """Digits that hold every prefix sum of ``levels`` exactly (the slow path: huge books)."""
    hi, lo = 0, 0
    for price, qty in levels:
        for value in (price, qty):
            t = value.as_tuple()
            hi = max(hi, value.adjusted())
            lo = min(lo, t.exponent)  # type: ignore[type-var]
    # Products add exponents; sums of len(levels) terms add a few digits.
    return 2 * (hi - lo) + len(str(len(levels))) + 10


@dataclass(slots=True, eq=False)
class Lots:
    """One book in the integer units of one allocation: quantities in lots of ``10**-Q``,
    signed fee-adjusted costs in units of ``10**-(Q + P + 4 + F)``.

    ``rates[j]`` is the signed cost of one lot at level ``j``; ``costs[j]`` the signed cost of
    the levels before ``j``. Buys minimise ``price * (1 + taker)``, sells minimise
    ``-price * (1 - taker)``: one ordering serves both.
    """

    cum: tuple[int, ...]
    rates: tuple[int, ...]
    costs: tuple[int, ...]
    step: int
    min_qty: int  # smallest acceptable order; > max_qty: unusable
    max_qty: int  # depth within limit, floored to the step
    usable: int

    def signed_cost(self, qty: int) -> int:
        """Fee-inclusive signed cost of ``qty`` lots walked from the top."""
        if qty <= 0:
            return 0
        j = bisect_left(self.cum, qty) - 1  # level holding the qty-th lot
        return self.costs[j] + (qty - self.cum[j]) * self.rates[j]

    def level_at(self, qty: int) -> int:
        """Index of the level the next lot after ``qty`` comes from."""
        return bisect_right(self.cum, qty) - 1 if qty < self.cum[-1] else len(self.rates)


class BookState(Enum):
    """Whether a venue's book can take part in a plan, and if not, why."""

    USABLE = "usable"
    EMPTY = "empty"  # nothing on the step within the limit
    BELOW_MINIMUM = "below_minimum"  # the depth within the limit is below min_qty / min_notional
    UNROUTABLE = "unroutable"  # numbers beyond MAX_ROUTING_DIGITS


@dataclass(slots=True, eq=False)
class SideBook:
    """The side of one venue's book an order takes from, with the venue's rules and the limit.

    Levels past ``usable`` are beyond the limit price and only serve single-venue benchmarks.
    Built once per venue, quote and limit depth, and memoised with the quote.
    """

    venue: VenueConfig
    prep: PreparedSide
    usable: int
    max_qty: Decimal  # depth within limit, floored to the venue's step
    min_qty: Decimal  # smallest step-aligned qty meeting min_qty and min_notional; > max_qty: unusable
    step_digits: int
    routable: bool
    state: BookState = BookState.USABLE
    name: str = ""  # the venue's
    _lots: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = self.venue.name

    @classmethod
    def build(cls, venue: VenueConfig, quote: VenueQuote, side: Side, limit: Decimal | None) -> "SideBook":
        prep = prepare_side(quote, side, venue.taker_fee_bps)
        return cls.of(venue, prep, len(prep.prices) if limit is None else bisect_right(prep.keys, side.sign * limit))

    @classmethod
    def of(cls, venue: VenueConfig, prep: PreparedSide, usable: int) -> "SideBook":
        """The memoised book of ``venue`` on ``prep`` with the first ``usable`` levels in the limit."""
        # The rules as written, not by value (0.01 == 0.010): a plan's quantities take the
        # exponent of the step of the venue its book holds.
        key = (venue.name, str(venue.step_size), str(venue.min_qty), str(venue.min_notional), usable)
        book = prep.derived.get(key)
        if book is None:
            book = bounded_put(prep.derived, key, cls._make(venue, prep, usable))
        return book

    @classmethod
    def _make(cls, venue: VenueConfig, prep: PreparedSide, usable: int) -> "SideBook":
        step_digits = max(fraction_digits(venue.step_size), fraction_digits(venue.min_qty))
        digits = prep.digits + step_digits + max(0, venue.min_qty.adjusted(), venue.min_notional.adjusted()) + 2
        routable = digits <= MAX_ROUTING_DIGITS and venue.step_size.adjusted() < MAX_ROUTING_DIGITS
        if not routable:
            return cls(venue, prep, usable, ZERO, venue.step_size, step_digits, False, BookState.UNROUTABLE)
        # Lots at this book's own scale, to compute the minimum exactly in integers.
        q = max(prep.qty_digits, step_digits)
        scale = 10 ** (q - prep.qty_digits)
        cum = prep.int_cum_qty if scale == 1 else [c * scale for c in prep.int_cum_qty]
        step = to_units(venue.step_size, q)
        max_lots = cum[usable] // step * step
        min_lots = _smallest_order(venue, prep, cum, q, step, usable, max_lots)
        # floor_to_step(depth, step_size), from the lots: whole steps times the step, so the
        # step's exponent, as reported. Exact at any size.
        max_qty = _EXACT.multiply(Decimal(max_lots // step), venue.step_size)
        state = BookState.EMPTY if max_lots == 0 else BookState.BELOW_MINIMUM if min_lots > max_lots else BookState.USABLE
        return cls(venue, prep, usable, max_qty, from_units(min_lots, q), step_digits, True, state)


    @property
    def side(self) -> Side:
        return self.prep.side

    @property
    def prices(self) -> tuple[Decimal, ...]:
        return self.prep.prices

    @property
    def cum_qty(self) -> tuple[Decimal, ...]:
        return self.prep.cum_qty

    @property
    def fee_rate(self) -> Decimal:
        return self.prep.fee_rate

    @property
    def depth(self) -> Decimal:
        """Visible quantity on this side, ignoring the limit."""
        return self.prep.cum_qty[-1]

    def lots(self, q: int, p: int, f: int) -> Lots:
        """This book in the integer units of an allocation at scales ``(q, p, f)``: memoised,
        since an allocation's scales are the same from plan to plan."""
        key = (q, p, f)
        out = self._lots.get(key)
        if out is None:
            out = bounded_put(self._lots, key, self._make_lots(q, p, f))
        return out

    def _make_lots(self, q: int, p: int, f: int) -> Lots:
        prep = self.prep
        q_scale = 10 ** (q - prep.qty_digits)
        p_scale = 10 ** (p - prep.price_digits)
        one = 10 ** (4 + f)
        fee = prep.fee_units * 10 ** (f - prep.fee_digits)
        factor = (one + fee) if prep.side is Side.BUY else -(one - fee)
        cum = prep.int_cum_qty if q_scale == 1 else tuple([c * q_scale for c in prep.int_cum_qty])
        factor *= p_scale
        rates = tuple([factor * t for t in prep.int_prices])
        costs = [0]
        total = 0
        previous = 0
        for c, r in zip(cum[1:], rates):
            total += (c - previous) * r
            previous = c
            costs.append(total)
        return Lots(cum, rates, tuple(costs), to_units(self.venue.step_size, q), to_units(self.min_qty, q),
                    to_units(self.max_qty, q), self.usable)

    def notional(self, qty: Decimal) -> Decimal:
        """Gross quote amount (before fees) of taking ``qty`` from the top of the book."""
        if qty <= 0:
            return ZERO
        prep = self.prep
        j = bisect_left(prep.cum_qty, qty) - 1  # level holding the qty-th unit
        return prep.cum_notional[j] + (qty - prep.cum_qty[j]) * prep.prices[j]

    def signed_cost(self, qty: Decimal) -> Decimal:
        """Fee-inclusive cost of ``qty``: positive paid for buys, negative received for sells."""
        return self.prep.factor * self.notional(qty)

    def net_vwap(self, qty: Decimal) -> Decimal | None:
        """Fee-inclusive average price of ``qty`` walked from the top, ignoring the limit."""
        if qty <= 0 or qty > self.depth:
            return None
        return self.prep.side.sign * self.signed_cost(qty) / qty

    def worst_price(self, qty: Decimal) -> Decimal:
        """Price of the last level touched by ``qty``: the protective limit for the leg."""
        return self.prep.prices[bisect_left(self.prep.cum_qty, qty) - 1]

    def levels_touched(self, qty: Decimal) -> int:
        return bisect_left(self.prep.cum_qty, qty) if qty > 0 else 0


def _smallest_order(venue: VenueConfig, prep: PreparedSide, cum: Sequence[int], q: int, step: int, usable: int, max_lots: int) -> int:
    """The smallest step-aligned quantity (lots of ``10**-q``) the venue accepts: at least one
    step, at least ``min_qty``, and a notional of at least ``min_notional``. Exact: integer
    arithmetic, no division rounding."""
    min_qty = to_units(venue.min_qty, q)
    smallest = max(min_qty, step)
    smallest = -(-smallest // step) * step
    if venue.min_notional > 0:
        # Notional in units of 10**-(q + price digits), the minimum on the same grid (ceiled).
        n_digits = q + prep.price_digits
        min_notional = int(_EXACT.scaleb(venue.min_notional, n_digits).to_integral_value(rounding=decimal.ROUND_CEILING))
        prices = prep.int_prices
        total = 0
        for j in range(usable):
            level = (cum[j + 1] - cum[j]) * prices[j]
            if total + level >= min_notional:
                needed = cum[j] + -(-(min_notional - total) // prices[j])
                return max(smallest, -(-needed // step) * step)
            total += level
        return max_lots + step  # the whole depth within the limit is below min_notional
    return smallest
