"""``route(intent, books, venues) -> RoutePlan``: the pure heart of the router.

No clock, no randomness, no I/O: the same inputs always give the same plan (``plan_id``
included), which is what makes replays and crash recovery reproducible.
"""

from __future__ import annotations

import decimal
from bisect import bisect_left, bisect_right
from decimal import Decimal, getcontext, setcontext
from operator import attrgetter, itemgetter
from typing import Any, Mapping, Sequence, TypeVar

from pydantic import BaseModel

from worker.domain.models import (
    Algorithm,
    Exclusion,
    ExclusionReason,
    OrderIntent,
    PlanLeg,
    RoutePlan,
    Side,
    VenueConfig,
    VenueQuote,
    VenueRoute,
    trusted,
)
from worker.domain.money import BPS, PRICE_QUANTUM, ZERO, rounded_average
from worker.routing.allocators import (
    DEFAULT_NODE_LIMIT,
    Allocation,
    Market,
    allocate_best,
    allocate_sor,
    allocate_split,
    market,
    solve_lots,
)
from worker.routing.book import (
    _EXACT,
    MAX_ROUTING_DIGITS,
    ROUTING_CONTEXT,
    PreparedSide,
    BookState,
    SideBook,
    SnapshotSetMemo,
    floor_units,
    forget_prepared_books,
    routing_context,
    to_units,
)
from worker.routing.ranking import BPS_QUANTUM, venue_entry

__all__ = ["DEFAULT_NODE_LIMIT", "allocate", "forget_prepared_books", "plan_id_for", "route"]

M = TypeVar("M", bound=BaseModel)


def plan_id_for(intent_id: str, round_no: int = 0) -> str:
    """Deterministic: a re-plan of the same intent and round has the same id."""
    return f"plan:{intent_id}:{round_no}"


class _Lineup:
    """What a plan takes from the snapshots that does not depend on the quantity or the clock:
    the eligible books in ranking order, the ranking, the exclusions, the integer market.

    Memoised per snapshots, venues, side, limit and venue filter (:data:`_LINEUPS`), and
    dropped as soon as a snapshot of the symbol is replaced: the worker routes many intents
    between two snapshots of a symbol, and they share all of this.
    """

    __slots__ = ("quotes", "venues", "eligible", "routes", "excluded", "stale", "quoted", "market", "digits",
                 "as_of", "legs", "singles")

    def __init__(self, quotes: tuple, venues: tuple, eligible: list[SideBook], routes: list[VenueRoute],
                 excluded: list[Exclusion | None], stale: list[tuple[int, str, VenueQuote]], quoted: list[SideBook]):
        self.quotes, self.venues = quotes, venues  # held: their ids key the memo
        self.eligible, self.routes, self.excluded, self.stale, self.quoted = eligible, routes, excluded, stale, quoted
        self.market: Market | None = market(quoted, eligible) if quoted else None
        # Significant digits of the books' exact sums (see PreparedSide.digits); -1: no book.
        self.digits = max((b.prep.digits + b.step_digits for b in quoted), default=-1)
        self.as_of = max((b.prep.quote.ts for b in eligible), default=None)
        by_name = {r.provider: r for r in routes}
        mk = self.market
        #: Per eligible book, what its leg reads: (name, lots per step unit, step exponent, lots
        #: up to each level, prefix notionals and quantities, prices, fee rate, bid, ask).
        self.legs: list[tuple] = []
        #: Per quoted book, its single-venue benchmark: (lots up to each level, signed costs, rates, prep,
        #: step, smallest order): a venue is a benchmark only for a quantity it would accept whole.
        self.singles: list[tuple] = []
        if mk is not None:
            for b, view in zip(eligible, mk.lots):
                exponent = b.venue.step_size.as_tuple().exponent
                prep, r = b.prep, by_name[b.name]
                self.legs.append((b.name, 10 ** (mk.q_digits + exponent), exponent, view.cum, prep.cum_notional,  # type: ignore[operator]
                                  prep.cum_qty, prep.prices, prep.fee_rate, r.bid_price, r.ask_price))
            self.singles = [(view.cum, view.costs, view.rates, b.prep, view.step, view.min_qty)
                            for b, view in zip(quoted, mk.quoted_lots)]


_NAME = attrgetter("name")

#: Line-ups of the latest snapshots: a few per symbol and side (limits, venue filters).
_LINEUPS = SnapshotSetMemo(per_group=32)


def _lineup(
    intent: OrderIntent,
    books: Mapping[str, VenueQuote],
    venues: Sequence[VenueConfig],
    now_ms: int | None,
    max_quote_age_ms: int | None,
    unavailable: Mapping[str, ExclusionReason],
) -> _Lineup:
    """The memoised line-up of this plan; what changes from plan to plan (which quotes are
    stale) is part of the key."""
    quotes = list(map(books.get, map(_NAME, venues)))
    stale: tuple[int, ...] = ()
    if now_ms is not None and max_quote_age_ms is not None:
        # A quote dated in the future is as untrustworthy as an old one: |age| is what counts.
        stale = tuple([i for i, q in enumerate(quotes) if q is not None and abs(now_ms - q.ts) > max_quote_age_ms])
    limit, is_buy = intent.limit_price, intent.side is Side.BUY
    key = (intent.symbol, is_buy, None if limit is None else str(limit), None if intent.venues is None else tuple(intent.venues),
           tuple(unavailable.items()) if unavailable else (), stale, tuple(map(id, venues)), tuple(map(id, quotes)))
    lineup = _LINEUPS.get(key)
    if lineup is None:
        lineup = _eligible_books(intent, quotes, venues, set(stale), unavailable)
        # Kept only while a snapshot of the symbol is: its replacement is what forgets the
        # line-up. Without one (a symbol nobody quotes) nothing would, and every new symbol
        # would leave one behind; such a line-up excludes every venue and costs nothing to build.
        if any(q is not None and q.symbol == intent.symbol for q in quotes):
            _LINEUPS.put(intent.symbol, is_buy, key, lineup)
    return lineup


def _eligible_books(
    intent: OrderIntent,
    quotes: Sequence[VenueQuote | None],
    venues: Sequence[VenueConfig],
    stale: set[int],
    unavailable: Mapping[str, ExclusionReason],
) -> _Lineup:
    allowed = set(intent.venues) if intent.venues is not None else None
    side, limit, symbol = intent.side, intent.limit_price, intent.symbol
    limit_key = None if limit is None else (limit if side is Side.BUY else limit.copy_negate())
    is_buy = side is Side.BUY
    eligible: list[SideBook] = []
    quoted: list[SideBook] = []  # every venue with a usable quote: the single-venue benchmarks
    routes: list[tuple[tuple, VenueRoute]] = []  # (ranking key, entry)
    excluded: list[Exclusion | None] = []
    stale_at: list[tuple[int, str, VenueQuote]] = []  # (index in excluded, venue, quote): their age is the plan's
    for i, (venue, quote) in enumerate(zip(venues, quotes)):
        name = venue.name
        if allowed is not None and name not in allowed:
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NOT_ALLOWED, detail="not in the intent's venues"))
            continue
        if name in unavailable:
            excluded.append(trusted(Exclusion, venue=name, reason=unavailable[name]))
            continue
        if quote is None or quote.symbol != symbol:
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NO_QUOTE, detail=f"no book for {symbol}"))
            continue
        if i in stale:
            stale_at.append((len(excluded), name, quote))
            excluded.append(None)
            continue
        memo = venue_entry(quote, venue, side)
        entry = memo[3]
        if entry is None:
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT,
                                    detail=f"no {'asks' if is_buy else 'bids'}"))
            continue
        routes.append((memo[4], entry))
        book = memo[5] if limit_key is None else SideBook.of(venue, memo[2], bisect_right(memo[2].keys, limit_key))
        state = book.state
        if state is BookState.USABLE:
            quoted.append(book)
            eligible.append(book)
        elif state is BookState.UNROUTABLE:
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT,
                                    detail=f"book or rules need more than {MAX_ROUTING_DIGITS} digits"))
        elif state is BookState.EMPTY:
            quoted.append(book)
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT, detail=f"no level within limit {limit}"))
        else:
            quoted.append(book)
            excluded.append(
                trusted(Exclusion,
                    venue=name,
                    reason=ExclusionReason.BELOW_MINIMUM,
                    detail=f"depth {book.max_qty} within limit is below min_qty {venue.min_qty} / min_notional {venue.min_notional}",
                )
            )
    routes.sort(key=itemgetter(0))  # best first: lowest score for buys, highest for sells; ties by name
    ranked = [entry for _, entry in routes]
    if len(eligible) > 1:
        order = {r.provider: i for i, r in enumerate(ranked)}
        eligible.sort(key=lambda b: order[b.name])
    return _Lineup(tuple(quotes), tuple(venues), eligible, ranked, excluded, stale_at, quoted)


def _excluded(lineup: _Lineup, now_ms: int | None, max_quote_age_ms: int | None) -> list[Exclusion]:
    """The line-up's exclusions, with this plan's stale quotes and their age."""
    excluded = list(lineup.excluded)
    for at, name, quote in lineup.stale:
        excluded[at] = trusted(Exclusion, venue=name, reason=ExclusionReason.STALE,
                               detail=f"quote is {now_ms - quote.ts} ms old (max {max_quote_age_ms})")  # type: ignore[operator]
    return excluded  # type: ignore[return-value]


def _savings_bps(sign: int, reference: Decimal, net: Decimal) -> Decimal | None:
    if reference == 0:  # a sell whose fee takes everything: no ratio to report
        return None
    return (sign * (reference - net) / reference * BPS).quantize(BPS_QUANTUM)


def allocate(algorithm: Algorithm, ranked: Sequence[SideBook], routes: Sequence[VenueRoute], side: Side, qty: Decimal,
             node_limit: int = DEFAULT_NODE_LIMIT) -> Allocation:
    """Dispatch to the allocator the intent asked for."""
    if algorithm is Algorithm.BEST:
        return allocate_best(ranked, qty)
    if algorithm is Algorithm.SPLIT:
        return allocate_split(ranked, routes, side, qty)
    return allocate_sor(ranked, qty, node_limit)


def route(
    intent: OrderIntent,
    books: Mapping[str, VenueQuote],
    venues: Sequence[VenueConfig],
    *,
    now_ms: int | None = None,
    max_quote_age_ms: int | None = None,
    round_no: int = 0,
    qty: Decimal | None = None,
    unavailable: Mapping[str, ExclusionReason] | None = None,
    algorithm: Algorithm | None = None,
    node_limit: int = DEFAULT_NODE_LIMIT,
) -> RoutePlan:
    """Build the split plan of ``intent`` over the venues' books.

    ``books`` maps venue name to its latest quote for the intent's symbol. Quotes older than
    ``max_quote_age_ms`` at ``now_ms`` are excluded as stale (both ``None``: no check). ``qty``
    overrides the intent's quantity for a re-route of a remainder; ``unavailable`` names venues
    the caller has ruled out (an open circuit breaker, a venue that already failed this intent).
    ``node_limit`` bounds the ``sor`` branch and bound; past it the plan carries the best
    allocation found and says ``optimal: false``.

    The result does not depend on the caller's decimal context: every computation runs in
    :data:`~worker.routing.book.ROUTING_CONTEXT` (60 digits), widened only for a plan whose
    exact sums need more, so extreme but valid numbers never raise.
    """
    if algorithm is None:
        chosen = intent.algorithm
    else:  # a member already (the usual case) skips the enum's lookup by value
        chosen = algorithm if type(algorithm) is Algorithm else Algorithm(algorithm)
    caller = getcontext()
    setcontext(_CONTEXT)  # what localcontext(ROUTING_CONTEXT) does, without a copy per plan
    try:
        total = intent.qty if qty is None else qty
        lineup = _lineup(intent, books, venues, now_ms, max_quote_age_ms, unavailable or {})
        excluded = _excluded(lineup, now_ms, max_quote_age_ms) if lineup.stale else list(lineup.excluded)
        # Significant digits that hold this plan's sums exactly (see PreparedSide.digits).
        ctx = routing_context(lineup.digits + max(0, total.adjusted() + 1) + 10 if lineup.digits >= 0 else 0)
        if ctx is ROUTING_CONTEXT:
            return _plan(intent, total, lineup, excluded, round_no, chosen, node_limit)  # type: ignore[arg-type]
    finally:
        setcontext(caller)
    with decimal.localcontext(ctx):
        return _plan(intent, total, lineup, excluded, round_no, chosen, node_limit)  # type: ignore[arg-type]


#: The routing context the planner runs in: a private copy of ROUTING_CONTEXT, so the flags
#: its operations raise never touch the shared one (nothing reads them; no trap is enabled).
_CONTEXT = ROUTING_CONTEXT.copy()


def _lots(algorithm: Algorithm, lineup: _Lineup, side: Side, total: Decimal, node_limit: int) -> tuple[list[int], bool]:
    """Lots per eligible book (in the market's units) and whether the allocation is proven optimal."""
    eligible, mk = lineup.eligible, lineup.market
    if not eligible:
        return [], True
    if algorithm is Algorithm.SOR:
        x, optimal, _ = solve_lots(mk.lots, floor_units(total, mk.q_digits), node_limit, mk.merged, mk.grids, mk.steps)  # type: ignore[union-attr]
        return x, optimal
    allocation = allocate(algorithm, eligible, lineup.routes, side, total, node_limit)
    q = mk.q_digits  # type: ignore[union-attr]
    # Every quantity is on its venue's step, so exact on the market's grid.
    return [to_units(allocation.qty[b.name], q) if b.name in allocation.qty else 0 for b in eligible], allocation.optimal


#: Every field is set when the router builds these models (see :func:`_model`).
_LEG_FIELDS = frozenset(PlanLeg.model_fields)
_PLAN_FIELDS = frozenset(RoutePlan.model_fields)
_COMPLETE: dict[type, bool] = {}  # per model: does the router's dict hold every field, in order?
_new = object.__new__
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__


def _model(cls: type[M], fields: frozenset[str], data: dict[str, Any]) -> M:
    """:func:`~worker.domain.models.trusted` for a model whose every field is in ``data``, in
    declaration order: the router builds one per leg and plan, and this is five times faster.

    Should the model gain a field the router does not set, ``trusted`` builds it instead (with
    the field's default, in declaration order), so a plan is never missing a field."""
    complete = _COMPLETE.get(cls)
    if complete is None:
        complete = _COMPLETE[cls] = list(data) == list(cls.model_fields)
    if not complete:
        return trusted(cls, **data)
    obj = _new(cls)
    _set_dict(obj, data)
    _set_fields_set(obj, set(fields))
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


def _net_vwap(sign: int, prep: PreparedSide, j: int, qty: Decimal) -> Decimal:
    """``SideBook.net_vwap`` of ``qty``, whose last unit is on level ``j`` (known from the lots)."""
    return sign * (prep.factor * (prep.cum_notional[j] + (qty - prep.cum_qty[j]) * prep.prices[j])) / qty


_scaleb = _EXACT.scaleb
_INFINITY = float("inf")


def _plan(intent: OrderIntent, total: Decimal, lineup: _Lineup, excluded: list[Exclusion], round_no: int,
          algorithm: Algorithm, node_limit: int) -> RoutePlan:
    # Runs in the routing context (see route()), which is what average_price would enter:
    # rounded_average divides in it directly.
    side = intent.side
    sign = 1 if side is Side.BUY else -1
    x, optimal = _lots(algorithm, lineup, side, total, node_limit)
    legs: list[PlanLeg] = []
    notional_sum = fees = planned = ZERO
    planned_lots = 0  # planned in the market's lots: exact, every leg is on its venue's step
    for leg, lots in zip(lineup.legs, x):
        if lots <= 0:
            continue
        name, unit, exponent, cum, cum_notional, cum_qty, prices, fee_rate, bid, ask = leg
        # The leg at the venue's precision (the step's exponent): exact, it is on the step.
        on_step = lots // unit  # in units of the step's last digit (10**exponent)
        leg_qty = _scaleb(Decimal(on_step), exponent)
        planned_lots += on_step * unit
        touched = bisect_left(cum, lots)  # levels touched; the last holds the leg's last unit
        last = touched - 1
        notional = cum_notional[last] + (leg_qty - cum_qty[last]) * prices[last]
        fee = notional * fee_rate
        legs.append(_model(PlanLeg, _LEG_FIELDS, {
            "provider": name,
            "qty": leg_qty,
            "estimated_price": rounded_average(notional, leg_qty),
            "estimated_fee": fee,
            "estimated_notional": notional,
            "bid_price": bid,
            "ask_price": ask,
            "worst_price": prices[last],
            "levels": touched,
        }))
        notional_sum += notional
        fees += fee
        planned += leg_qty

    vwap = net = savings_worst = savings_best = best_net = worst_net = None
    if planned > 0:
        vwap = rounded_average(notional_sum, planned)
        net = rounded_average(notional_sum + sign * fees, planned)
        # Single-venue benchmarks: the same quantity sent whole to one venue, walking its
        # whole visible book (the seed compares against the worst venue). The same quantity
        # everywhere: the signed costs rank the venues, and only two averages are divided out.
        worst = best = None
        worst_cost, best_cost = -_INFINITY, _INFINITY  # the first book that can take it is both
        for cum, costs, rates, prep, step, smallest in lineup.singles:
            # Only a venue that would take the whole quantity: deep enough, on its step, at
            # least its minimums (a venue that refuses the order is no alternative to it).
            if planned_lots <= cum[-1] and planned_lots >= smallest and not planned_lots % step:
                j = bisect_left(cum, planned_lots) - 1  # Lots.signed_cost, inlined: ten books per plan
                cost = costs[j] + (planned_lots - cum[j]) * rates[j]
                if cost > worst_cost:
                    worst, worst_cost = (prep, j), cost
                if cost < best_cost:
                    best, best_cost = (prep, j), cost
        if worst is not None:
            worst_vwap, best_vwap = _net_vwap(sign, *worst, planned), _net_vwap(sign, *best, planned)  # type: ignore[misc]
            savings_worst = _savings_bps(sign, worst_vwap, net)
            savings_best = _savings_bps(sign, best_vwap, net)
            best_net, worst_net = best_vwap.quantize(PRICE_QUANTUM).normalize(), worst_vwap.quantize(PRICE_QUANTUM).normalize()

    plan_id = plan_id_for(intent.intent_id, round_no)
    return _model(RoutePlan, _PLAN_FIELDS, {
        "event_id": plan_id,
        "plan_id": plan_id,
        "intent_id": intent.intent_id,
        "symbol": intent.symbol,
        "side": side,
        "total_qty": total,
        "algorithm": algorithm,
        "time_in_force": intent.time_in_force,
        "limit_price": intent.limit_price,
        "round": round_no,
        "legs": legs,
        "planned_qty": planned,
        "unfilled_qty": total - planned,
        "estimated_vwap": vwap,
        "estimated_fees": fees,
        "estimated_net": net,
        "savings_vs_single_venue": savings_worst,
        "savings_vs_best_single_venue_bps": savings_best,
        "routes": list(lineup.routes),
        "excluded": excluded,
        "optimal": optimal,
        "quotes_as_of": lineup.as_of,
        "best_single_venue_net": best_net,
        "worst_single_venue_net": worst_net,
        "book_levels_dropped": {},  # the quote cache's depth cap: the service fills it in
    })
