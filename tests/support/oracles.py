"""Exact solvers written independently of the router, used only to check it.

``brute_force`` enumerates every quantity each venue accepts; ``milp`` states the problem as
a mixed-integer program for HiGHS (scipy). ``legacy_route`` is the all-``Decimal`` router as it
was before the integer hot path, kept verbatim so that the new one can be compared with it plan
for plan. None of them imports anything from ``worker.routing``.
"""

from __future__ import annotations

import decimal
import heapq
import itertools
import math
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import repeat
from typing import Mapping, Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

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
from worker.domain.money import BPS, PRICE_QUANTUM, ZERO, average_price, ceil_to_step, floor_to_step


@dataclass(frozen=True)
class Venue:
    levels: list[tuple[Decimal, Decimal]]  # (price, qty) best first, already cut at the limit
    fee_bps: Decimal
    step: Decimal
    min_qty: Decimal
    min_notional: Decimal


def walk(levels, qty: Decimal) -> Decimal:
    """Gross notional of ``qty`` walked level by level."""
    left, notional = qty, Decimal(0)
    for price, size in levels:
        take = min(left, size)
        notional += take * price
        left -= take
        if left == 0:
            break
    assert left == 0, "walked past the book"
    return notional


def signed_cost(v: Venue, qty: Decimal, buy: bool) -> Decimal:
    fee = v.fee_bps / 10000
    n = walk(v.levels, qty)
    return n * (1 + fee) if buy else -n * (1 - fee)


def accepted(v: Venue) -> list[Decimal]:
    depth = sum((q for _, q in v.levels), Decimal(0))
    out = [Decimal(0)]
    k = 1
    while k * v.step <= depth:
        q = k * v.step
        if q >= v.min_qty and walk(v.levels, q) >= v.min_notional:
            out.append(q)
        k += 1
    return out


def brute_force(venues: list[Venue], qty: Decimal, buy: bool) -> tuple[Decimal, Decimal]:
    """(max fill, min signed cost at that fill) over every accepted combination."""
    best = None
    for combo in itertools.product(*(accepted(v) for v in venues)):
        fill = sum(combo, Decimal(0))
        if fill > qty:
            continue
        cost = sum((signed_cost(v, q, buy) for v, q in zip(venues, combo) if q > 0), Decimal(0))
        key = (-fill, cost)
        if best is None or key < best:
            best = key
    assert best is not None
    return -best[0], best[1]


def milp_optimum(venues: list[Venue], qty: Decimal, buy: bool) -> tuple[float, float]:
    """Two-stage MILP: maximise fill, then minimise signed cost at that fill.

    Per venue: level quantities q_j, step count k, an on/off y, and level-order binaries z_j
    (level j+1 only once level j is exhausted), so minimums cannot be met out of book order.
    """
    cols: list[tuple[str, int, int]] = []  # (kind, venue, level)
    for vi, v in enumerate(venues):
        cols += [("q", vi, j) for j in range(len(v.levels))]
        cols += [("k", vi, -1), ("y", vi, -1)]
        cols += [("z", vi, j) for j in range(len(v.levels) - 1)]
    idx = {c: i for i, c in enumerate(cols)}
    n = len(cols)
    lb, ub, integrality = np.zeros(n), np.zeros(n), np.zeros(n)
    for c, i in idx.items():
        kind, vi, j = c
        v = venues[vi]
        depth = float(sum(q for _, q in v.levels))
        if kind == "q":
            ub[i] = float(v.levels[j][1])
        elif kind == "k":
            ub[i] = np.floor(depth / float(v.step) + 1e-9)
            integrality[i] = 1
        else:
            ub[i] = 1
            integrality[i] = 1
    rows, lo_r, hi_r = [], [], []

    def row(coefs: dict, lo: float, hi: float) -> None:
        r = np.zeros(n)
        for c, a in coefs.items():
            r[idx[c]] = a
        rows.append(r)
        lo_r.append(lo)
        hi_r.append(hi)

    for vi, v in enumerate(venues):
        qs = {("q", vi, j): 1.0 for j in range(len(v.levels))}
        depth = float(sum(q for _, q in v.levels))
        row({**qs, ("k", vi, -1): -float(v.step)}, 0, 0)
        row({**qs, ("y", vi, -1): -float(v.min_qty)}, 0, np.inf)
        row({**{("q", vi, j): float(p) for j, (p, _) in enumerate(v.levels)}, ("y", vi, -1): -float(v.min_notional)}, 0, np.inf)
        row({**qs, ("y", vi, -1): -depth}, -np.inf, 0)
        for j in range(len(v.levels) - 1):
            row({("q", vi, j): 1.0, ("z", vi, j): -float(v.levels[j][1])}, 0, np.inf)
            row({("q", vi, j + 1): 1.0, ("z", vi, j): -float(v.levels[j + 1][1])}, -np.inf, 0)
    total = {c: 1.0 for c in idx if c[0] == "q"}
    row(total, 0, float(qty))

    def solve(objective: np.ndarray, extra=None):
        A = np.array(rows + ([extra[0]] if extra else []))
        lo = lo_r + ([extra[1]] if extra else [])
        hi = hi_r + ([extra[2]] if extra else [])
        res = milp(objective, constraints=LinearConstraint(A, lo, hi), integrality=integrality, bounds=Bounds(lb, ub),
                   options={"mip_rel_gap": 0, "time_limit": 60})
        assert res.success, res.message
        return res

    fill_obj = np.array([-1.0 if c[0] == "q" else 0.0 for c in cols])
    max_fill = -solve(fill_obj).fun
    cost_obj = np.zeros(n)
    for (kind, vi, j), i in idx.items():
        if kind == "q":
            p, fee = float(venues[vi].levels[j][0]), float(venues[vi].fee_bps) / 10000
            cost_obj[i] = p * (1 + fee) if buy else -p * (1 - fee)
    fill_row = np.array([1.0 if c[0] == "q" else 0.0 for c in cols])
    res = solve(cost_obj, (fill_row, max_fill - 1e-9, np.inf))
    return max_fill, res.fun


# --- the Decimal router before the integer hot path (commit acdbadb), names prefixed -------------


@dataclass(frozen=True, slots=True)
class LegacyPreparedSide:
    """Prefix sums and fee-adjusted rates of one side of one quote: computed once per quote."""

    quote: VenueQuote  # held so the id() in the memo key cannot be recycled while cached
    side: Side
    keys: tuple[Decimal, ...]  # sign * price: ascending on both sides, for bisecting the limit
    prices: tuple[Decimal, ...]
    cum_qty: tuple[Decimal, ...]  # cum_qty[j] = quantity of the levels before j
    cum_notional: tuple[Decimal, ...]
    rates: tuple[Decimal, ...]
    fee_rate: Decimal
    factor: Decimal  # sign * (1 +/- fee): rates[j] == factor * prices[j]
    derived: dict = field(default_factory=dict, compare=False)  # per-venue values of this quote, memoised


_legacy_MEMO: OrderedDict[tuple[int, Side, Decimal], LegacyPreparedSide] = OrderedDict()
_legacy_MEMO_SIZE = 8192


def legacy_prepare_side(quote: VenueQuote, side: Side, taker_fee_bps: Decimal) -> LegacyPreparedSide:
    """The prepared side of ``quote``, memoised: the worker routes many intents per quote."""
    key = (id(quote), side, taker_fee_bps)
    hit = _legacy_MEMO.get(key)
    if hit is not None and hit.quote is quote:
        return hit
    sign = side.sign
    fee_rate = taker_fee_bps / BPS
    factor = sign * ((1 + fee_rate) if side is Side.BUY else (1 - fee_rate))
    prices, keys, rates, cum_q, cum_n = [], [], [], [ZERO], [ZERO]
    q_total = n_total = ZERO
    for price, qty in quote.side_levels(side):
        prices.append(price)
        keys.append(sign * price)
        rates.append(factor * price)
        q_total += qty
        n_total += price * qty
        cum_q.append(q_total)
        cum_n.append(n_total)
    prepared = LegacyPreparedSide(quote, side, tuple(keys), tuple(prices), tuple(cum_q), tuple(cum_n), tuple(rates), fee_rate, factor)
    _legacy_MEMO[key] = prepared
    if len(_legacy_MEMO) > _legacy_MEMO_SIZE:
        _legacy_MEMO.popitem(last=False)
    return prepared


@dataclass(frozen=True, slots=True)
class LegacySideBook:
    """The side of one venue's book an order takes from, with the venue's rules and the limit.

    ``rates[j]`` is the signed, fee-adjusted price per unit of level ``j``: buys minimise
    ``price * (1 + taker)``, sells minimise ``-price * (1 - taker)``; one ordering serves both.
    Levels past ``usable`` are beyond the limit price and only serve single-venue benchmarks.
    """

    venue: VenueConfig
    side: Side
    prices: tuple[Decimal, ...]
    cum_qty: tuple[Decimal, ...]
    cum_notional: tuple[Decimal, ...]
    rates: tuple[Decimal, ...]
    fee_rate: Decimal
    factor: Decimal
    usable: int
    max_qty: Decimal  # depth within limit, floored to the venue's step
    min_qty: Decimal  # smallest step-aligned qty meeting min_qty and min_notional; > max_qty: unusable

    @classmethod
    def build(cls, venue: VenueConfig, quote: VenueQuote, side: Side, limit: Decimal | None) -> "LegacySideBook":
        prep = legacy_prepare_side(quote, side, venue.taker_fee_bps)
        usable = len(prep.prices) if limit is None else bisect_right(prep.keys, side.sign * limit)
        max_qty = floor_to_step(prep.cum_qty[usable], venue.step_size)
        book = cls(venue, side, prep.prices, prep.cum_qty, prep.cum_notional, prep.rates, prep.fee_rate, prep.factor, usable, max_qty, ZERO)
        key = ("min", venue.step_size, venue.min_qty, venue.min_notional, usable)
        smallest = prep.derived.get(key)
        if smallest is None:
            smallest = prep.derived[key] = book._smallest_order()
        object.__setattr__(book, "min_qty", smallest)
        return book

    @property
    def name(self) -> str:
        return self.venue.name

    @property
    def depth(self) -> Decimal:
        """Visible quantity on this side, ignoring the limit."""
        return self.cum_qty[-1]

    def _smallest_order(self) -> Decimal:
        step, max_qty = self.venue.step_size, self.max_qty
        smallest = ceil_to_step(max(self.venue.min_qty, step), step)
        if self.venue.min_notional > 0 and self.cum_notional[self.usable] >= self.venue.min_notional:
            j = bisect_left(self.cum_notional, self.venue.min_notional)  # first prefix reaching it
            level = j - 1
            needed = self.cum_qty[level] + (self.venue.min_notional - self.cum_notional[level]) / self.prices[level]
            smallest = max(smallest, ceil_to_step(needed, step))
            # Division rounds at the context precision; nudge up until the notional really holds.
            while smallest <= max_qty and self.notional(smallest) < self.venue.min_notional:
                smallest += step
        elif self.venue.min_notional > 0:
            return max_qty + step  # the whole visible depth is below min_notional
        return smallest

    def level_at(self, qty: Decimal) -> int:
        """Index of the level the next unit after ``qty`` comes from."""
        return bisect_right(self.cum_qty, qty) - 1 if qty < self.cum_qty[-1] else len(self.prices)

    def net_vwap(self, qty: Decimal) -> Decimal | None:
        """Fee-inclusive average price of ``qty`` walked from the top, ignoring the limit."""
        if qty <= 0 or qty > self.depth:
            return None
        return self.side.sign * self.signed_cost(qty) / qty

    def notional(self, qty: Decimal) -> Decimal:
        """Gross quote amount (before fees) of taking ``qty`` from the top of the book."""
        if qty <= 0:
            return ZERO
        j = bisect_left(self.cum_qty, qty) - 1  # level holding the qty-th unit
        return self.cum_notional[j] + (qty - self.cum_qty[j]) * self.prices[j]

    def signed_cost(self, qty: Decimal) -> Decimal:
        """Fee-inclusive cost of ``qty``: positive paid for buys, negative received for sells."""
        return self.factor * self.notional(qty)

    def worst_price(self, qty: Decimal) -> Decimal:
        """Price of the last level touched by ``qty``: the protective limit for the leg."""
        return self.prices[bisect_left(self.cum_qty, qty) - 1]

    def levels_touched(self, qty: Decimal) -> int:
        return bisect_left(self.cum_qty, qty) if qty > 0 else 0


legacy_BPS_QUANTUM = Decimal("0.0001")


def legacy_net_price(side: Side, price: Decimal, taker_fee_bps: Decimal) -> Decimal:
    """What one unit really costs (buy) or yields (sell) after the taker fee."""
    fee = taker_fee_bps / BPS
    return price * (1 + fee) if side is Side.BUY else price * (1 - fee)


def legacy_venue_route(side: Side, venue: VenueConfig, quote: VenueQuote) -> VenueRoute | None:
    """The ranking entry of one venue, or ``None`` when its book has nothing on our side.

    It depends only on the quote and the venue's fees, so it is memoised with the quote's
    prepared side: the worker routes many intents per quote.
    """
    prep = legacy_prepare_side(quote, side, venue.taker_fee_bps)
    key = ("route", venue.name, venue.maker_fee_bps)
    if key not in prep.derived:
        prep.derived[key] = _legacy_venue_route(side, venue, quote)
    return prep.derived[key]


def _legacy_venue_route(side: Side, venue: VenueConfig, quote: VenueQuote) -> VenueRoute | None:
    levels = quote.side_levels(side)
    if not levels:
        return None
    bid = quote.bids[0][0] if quote.bids else None
    ask = quote.asks[0][0] if quote.asks else None
    spread = spread_bps = None
    if bid is not None and ask is not None:
        spread = ask - bid
        spread_bps = (spread / ((ask + bid) / 2) * BPS).quantize(legacy_BPS_QUANTUM)
    net = legacy_net_price(side, levels[0][0], venue.taker_fee_bps)
    return trusted(VenueRoute,
        provider=venue.name,
        symbol=quote.symbol,
        bid_price=bid,
        ask_price=ask,
        spread=spread,
        spread_bps=spread_bps,
        maker_fee_bps=venue.maker_fee_bps,
        taker_fee_bps=venue.taker_fee_bps,
        net_price=net,
        score=net,
    )


def legacy_rank(side: Side, routes: list[VenueRoute]) -> list[VenueRoute]:
    """Best first: lowest score for buys, highest for sells; ties by venue name."""
    return sorted(routes, key=lambda r: (side.sign * r.score, r.provider))


#: Branch-and-bound nodes before settling for the best plan found (reported as optimal=False).
legacy_DEFAULT_NODE_LIMIT = 2_000


@dataclass(frozen=True, slots=True)
class LegacyAllocation:
    """Quantity per venue name (only venues that trade), and whether it is proven optimal."""

    qty: dict[str, Decimal]
    optimal: bool = True
    nodes: int = 0  # branch-and-bound nodes expanded: the search effort


def _legacy_clip_to_rules(book: LegacySideBook, qty: Decimal) -> Decimal:
    """Round down to the step, cap at depth, and drop an order the venue would refuse."""
    qty = min(floor_to_step(qty, book.venue.step_size), book.max_qty)
    return qty if qty >= book.min_qty else ZERO


def legacy_allocate_best(books: Sequence[LegacySideBook], qty: Decimal) -> LegacyAllocation:
    """The whole order to the best-ranked venue, walking its book."""
    if not books:
        return LegacyAllocation({})
    top = books[0]
    take = _legacy_clip_to_rules(top, qty)
    return LegacyAllocation({top.name: take} if take > 0 else {})


def legacy_allocate_split(books: Sequence[LegacySideBook], routes: Sequence[VenueRoute], side: Side, qty: Decimal) -> LegacyAllocation:
    """The seed's VWAP split: weights inverse to score (buys) or proportional to it (sells).

    Either way the better-priced venue gets more. The last leg takes the remainder, then every
    leg is held to its venue's rules; what they refuse stays unfilled.
    """
    if not books:
        return LegacyAllocation({})
    score = {r.provider: r.score for r in routes}
    weights = [(1 / score[b.name]) if side is Side.BUY else score[b.name] for b in books]
    total_weight = sum(weights, ZERO)
    out: dict[str, Decimal] = {}
    assigned = ZERO
    for i, book in enumerate(books):
        is_last = i == len(books) - 1
        share = qty - assigned if is_last else floor_to_step(qty * weights[i] / total_weight, book.venue.step_size)
        assigned += share
        take = _legacy_clip_to_rules(book, share)
        if take > 0:
            out[book.name] = take
    return LegacyAllocation(out)


class _legacy_Lattice:
    """The grid every fill lies on: the gcd of the steps of venues still allowed to trade.

    Computed in integers once per allocation and memoised per set of venues, since every
    node asks for it.
    """

    def __init__(self, books: Sequence[LegacySideBook]):
        exponent = min(b.venue.step_size.as_tuple().exponent for b in books)
        self.scale = Decimal(1).scaleb(-exponent)
        self.units = [int(b.venue.step_size * self.scale) for b in books]
        self._memo: dict[tuple[bool, ...], Decimal | None] = {}

    def grid(self, allowed: Sequence[bool]) -> Decimal | None:
        key = tuple(allowed)
        if key not in self._memo:
            g = 0
            for unit, ok in zip(self.units, key):
                if ok:
                    g = math.gcd(g, unit)
            self._memo[key] = Decimal(g) / self.scale if g else None
        return self._memo[key]

    def target(self, hi: Sequence[Decimal], qty: Decimal) -> Decimal:
        """The most a node can fill: the quantity floored to its lattice (a valid bound, since
        every sum of venue quantities lies on it, and far tighter when a fine-step venue is out)."""
        g = self.grid([h > 0 for h in hi])
        return ZERO if g is None else floor_to_step(qty, g)


@dataclass(slots=True)
class _legacy_Relaxed:
    """A node's relaxed solution; ``stop`` is the merged index where the walk stopped."""

    fill: Decimal
    cost: Decimal
    x: list[Decimal]
    stop: int

    @property
    def key(self) -> tuple[Decimal, Decimal]:
        # Lexicographic: fill as much as the books allow, then at the lowest signed cost.
        return (-self.fill, self.cost)


class _legacy_MergedLevels:
    """Every usable level of every venue in fee-adjusted price order, merged lazily once.

    All branch-and-bound nodes share this order (bounds only clip venues); most walks stop
    after a handful of levels, so most of the merge is never done.
    """

    def __init__(self, books: Sequence[LegacySideBook]):
        self._source = heapq.merge(*(zip(b.rates[: b.usable], repeat(i), range(b.usable)) for i, b in enumerate(books)))
        self._seen: list[tuple[Decimal, int, int]] = []

    def get(self, k: int) -> tuple[Decimal, int, int] | None:
        if k < 0:
            return None
        seen = self._seen
        while k >= len(seen):
            nxt = next(self._source, None)
            if nxt is None:
                return None
            seen.append(nxt)
        return seen[k]


def _legacy_rebalance(books, levels: _legacy_MergedLevels, x: list[Decimal], lo, hi, cost: Decimal, fill: Decimal, target: Decimal,
               k: int, pinned: int = -1) -> _legacy_Relaxed:
    """Bring a node's relaxed solution to ``target`` from the merged index ``k`` of its parent.

    Below target: take the cheapest open capacity forward (everything before ``k`` is taken
    or clipped). Above it: give back the most expensive units taken, walking backward
    (never below a venue's lower bound, never from ``pinned``). Both keep the relaxation
    exactly optimal, since each venue's cost is convex in quantity.
    """
    if fill < target:
        rem = target - fill
        while rem > 0:
            item = levels.get(k)
            if item is None:
                break
            rate, i, j = item
            cap = books[i].cum_qty[j + 1]
            if cap > hi[i]:
                cap = hi[i]
            take = cap - x[i]
            if take > 0:
                if take >= rem:
                    x[i] += rem
                    cost += rate * rem
                    rem = ZERO
                    break
                x[i] = cap
                cost += rate * take
                rem -= take
            k += 1
        return _legacy_Relaxed(target - rem, cost, x, k)
    excess = fill - target
    k = min(k, len(levels._seen) - 1)
    while excess > 0 and k >= 0:
        rate, v, j = levels._seen[k]
        if v != pinned:
            floor = books[v].cum_qty[j]
            if lo[v] > floor:
                floor = lo[v]
            give = x[v] - floor
            if give > 0:
                if give >= excess:
                    x[v] -= excess
                    cost -= rate * excess
                    excess = ZERO
                    break
                x[v] = floor
                cost -= rate * give
                excess -= give
        k -= 1
    if excess > 0:
        return None  # forced minimums alone exceed the target
    return _legacy_Relaxed(target, cost, x, max(k, 0))


def _legacy_violation(books: Sequence[LegacySideBook], x: list[Decimal]) -> int | None:
    """First venue whose relaxed quantity it would refuse (minimum first, then step)."""
    step_violation = None
    for i, q in enumerate(x):
        if q > 0:
            book = books[i]
            if q < book.min_qty:
                return i
            if step_violation is None and q % book.venue.step_size:
                step_violation = i
    return step_violation


def _legacy_fine_idle(books: Sequence[LegacySideBook], lattice: _legacy_Lattice, x, lo, hi) -> list[int]:
    """Idle venues that alone make the lattice finer than the trading venues' steps.

    A remainder finer than every trading venue's step can only go to one of them; branching
    on them first (skip them all, or trade one) ends the step-by-step shuffling of such a
    remainder between coarse venues.
    """
    trading = lattice.grid([q > 0 and h > 0 for q, h in zip(x, hi)])
    if trading is None:
        return []
    return [j for j, b in enumerate(books) if x[j] == 0 and lo[j] == 0 and hi[j] > 0 and b.venue.step_size % trading != 0]


def _legacy_with(bounds: list[Decimal], changes: dict[int, Decimal]) -> list[Decimal]:
    out = list(bounds)
    for i, v in changes.items():
        out[i] = v
    return out


def _legacy_branches(books: Sequence[LegacySideBook], lattice: _legacy_Lattice, node: _legacy_Relaxed, lo, hi):
    """(lo, hi, pinned venue or -1, venues whose bounds changed) of each child; together the
    children cover every integer plan of the node."""
    x = node.x
    i = _legacy_violation(books, x)
    book = books[i]
    if x[i] < book.min_qty:  # semi-continuous: 0 or >= min_qty
        yield lo, _legacy_with(hi, {i: ZERO}), -1, (i,)
        yield _legacy_with(lo, {i: book.min_qty}), hi, i, (i,)
        return
    fine = _legacy_fine_idle(books, lattice, x, lo, hi)
    if fine:
        yield lo, _legacy_with(hi, dict.fromkeys(fine, ZERO)), -1, tuple(fine)
        for j in fine:
            yield _legacy_with(lo, {j: books[j].min_qty}), hi, j, (j,)
        return
    step = book.venue.step_size
    down = floor_to_step(x[i], step)
    if down >= max(lo[i], book.min_qty):
        yield lo, _legacy_with(hi, {i: down}), -1, (i,)
    elif lo[i] == 0:
        yield lo, _legacy_with(hi, {i: ZERO}), -1, (i,)
    up = down + step
    if up <= hi[i]:
        yield _legacy_with(lo, {i: max(lo[i], up)}), hi, i, (i,)


def _legacy_child(books, levels, lattice: _legacy_Lattice, parent: _legacy_Relaxed, lo, hi, pinned: int, changed, qty: Decimal) -> _legacy_Relaxed | None:
    """A child's relaxation, derived from its parent's instead of walked from the top."""
    x = list(parent.x)
    cost, fill = parent.cost, parent.fill
    for i in changed:
        b = books[i]
        q = x[i]
        if q < lo[i]:
            q = lo[i]
        elif q > hi[i]:
            q = hi[i]
        if q != x[i]:
            cost += b.signed_cost(q) - b.signed_cost(x[i])
            fill += q - x[i]
            x[i] = q
    return _legacy_rebalance(books, levels, x, lo, hi, cost, fill, lattice.target(hi, qty), parent.stop, pinned)


def _legacy_repair(books: Sequence[LegacySideBook], x: list[Decimal], lo, hi, target: Decimal) -> list[Decimal]:
    """A feasible plan near a relaxed one: every venue rounded down to its rules, then the
    remainder placed in whole steps on the venues with the cheapest next unit."""
    y = []
    for b, q, l in zip(books, x, lo):
        r = floor_to_step(q, b.venue.step_size)
        y.append(r if r >= b.min_qty or r == 0 else (l if l > 0 else ZERO))
    rem = target - sum(y, ZERO)
    if rem <= 0:
        return y
    order = sorted((b.rates[b.level_at(q)] if b.level_at(q) < b.usable else b.rates[-1], i)
                   for i, (b, q) in enumerate(zip(books, y)) if hi[i] > q)
    for _, i in order:
        b = books[i]
        add = floor_to_step(min(rem, hi[i] - y[i]), b.venue.step_size)
        if add <= 0 or (y[i] == 0 and add < b.min_qty):
            continue
        y[i] += add
        rem -= add
        if rem == 0:
            break
    return y


def legacy_allocate_sor(books: Sequence[LegacySideBook], qty: Decimal, node_limit: int = legacy_DEFAULT_NODE_LIMIT) -> LegacyAllocation:
    """The exact depth-aware optimum across all books under every venue's lot rules.

    Branch and bound. A node's bound is the greedy relaxation (all levels of all venues
    merged by fee-adjusted price) with the fill capped at the node's lattice. A relaxed
    quantity a venue would refuse branches on the venue's minimum (skip it, or trade at least
    its minimum), on idle fine-step venues, or on its step (floor, or one step more). A
    depth-first dive finds a good plan fast; best-first search then proves it optimal or
    improves it. Realistic books finish at the root. Past ``node_limit`` the best plan found
    is returned with ``optimal=False``.
    """
    if not books:
        return LegacyAllocation({})
    n = len(books)
    levels = _legacy_MergedLevels(books)
    lattice = _legacy_Lattice(books)
    root_lo, root_hi = [ZERO] * n, [b.max_qty for b in books]
    root = _legacy_rebalance(books, levels, [ZERO] * n, root_lo, root_hi, ZERO, ZERO, lattice.target(root_hi, qty), 0)
    if _legacy_violation(books, root.x) is None:
        return LegacyAllocation({b.name: q for b, q in zip(books, root.x) if q > 0}, optimal=True, nodes=0)

    # A quick feasible plan (round every venue down to its rules) makes pruning bite early.
    best_x = [_legacy_clip_to_rules(b, q) for b, q in zip(books, root.x)]
    best_key = (-sum(best_x, ZERO), sum((b.signed_cost(q) for b, q in zip(books, best_x)), ZERO))
    nodes = 0

    def offer(candidate: list[Decimal]) -> None:
        nonlocal best_key, best_x
        key = (-sum(candidate, ZERO), sum((b.signed_cost(q) for b, q in zip(books, candidate) if q > 0), ZERO))
        if key < best_key:
            best_key, best_x = key, candidate

    def expand(lo, hi, node):
        """Open children that might beat the incumbent, best bound first."""
        nonlocal best_key, best_x
        if -best_key[0] < node.fill:  # the incumbent does not fill what this node could yet
            offer(_legacy_repair(books, node.x, lo, hi, lattice.target(hi, qty)))
        kids = []
        for c_lo, c_hi, pinned, changed in _legacy_branches(books, lattice, node, lo, hi):
            child = _legacy_child(books, levels, lattice, node, c_lo, c_hi, pinned, changed, qty)
            if child is None or child.key >= best_key:
                continue
            if _legacy_violation(books, child.x) is None:
                best_key, best_x = child.key, child.x
                continue
            kids.append((child.key, c_lo, c_hi, child))
        kids.sort(key=lambda k: k[0])
        return kids

    counter = 0
    frontier: list = []
    # Dive: follow the most promising child down to a feasible plan, parking its siblings.
    lo, hi, node = root_lo, root_hi, root
    while node is not None and nodes < node_limit:
        nodes += 1
        kids = expand(lo, hi, node)
        for key, c_lo, c_hi, child in kids[1:]:
            counter += 1
            heapq.heappush(frontier, (key, counter, c_lo, c_hi, child))
        node = None
        if kids:
            _, lo, hi, node = kids[0]
    if node is not None:
        counter += 1
        heapq.heappush(frontier, (node.key, counter, lo, hi, node))

    optimal = True
    while frontier:
        key, _, lo, hi, node = heapq.heappop(frontier)
        if key >= best_key:
            frontier.clear()  # best-first: no open node can beat the incumbent
            break
        nodes += 1
        if nodes > node_limit:
            optimal = False
            break
        for key, c_lo, c_hi, child in expand(lo, hi, node):
            counter += 1
            heapq.heappush(frontier, (key, counter, c_lo, c_hi, child))
    return LegacyAllocation({b.name: q for b, q in zip(books, best_x) if q > 0}, optimal=optimal and not frontier, nodes=nodes)


#: Enough digits that sums of price x qty x fee products never round.
_legacy_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)


def legacy_plan_id_for(intent_id: str, round_no: int = 0) -> str:
    """Deterministic: a re-plan of the same intent and round has the same id."""
    return f"plan:{intent_id}:{round_no}"


def _legacy_eligible_books(
    intent: OrderIntent,
    books: Mapping[str, VenueQuote],
    venues: Sequence[VenueConfig],
    now_ms: int | None,
    max_quote_age_ms: int | None,
    unavailable: Mapping[str, ExclusionReason],
) -> tuple[list[LegacySideBook], list[VenueRoute], list[Exclusion], list[LegacySideBook]]:
    allowed = set(intent.venues) if intent.venues is not None else None
    side, limit = intent.side, intent.limit_price
    eligible: list[LegacySideBook] = []
    quoted: list[LegacySideBook] = []  # every venue with a usable quote: the single-venue benchmarks
    routes: list[VenueRoute] = []
    excluded: list[Exclusion] = []
    for venue in venues:
        name = venue.name
        if allowed is not None and name not in allowed:
            excluded.append(Exclusion(venue=name, reason=ExclusionReason.NOT_ALLOWED, detail="not in the intent's venues"))
            continue
        if name in unavailable:
            excluded.append(Exclusion(venue=name, reason=unavailable[name]))
            continue
        quote = books.get(name)
        if quote is None or quote.symbol != intent.symbol:
            excluded.append(Exclusion(venue=name, reason=ExclusionReason.NO_QUOTE, detail=f"no book for {intent.symbol}"))
            continue
        if now_ms is not None and max_quote_age_ms is not None and now_ms - quote.ts > max_quote_age_ms:
            excluded.append(
                Exclusion(venue=name, reason=ExclusionReason.STALE, detail=f"quote is {now_ms - quote.ts} ms old (max {max_quote_age_ms})")
            )
            continue
        entry = legacy_venue_route(side, venue, quote)
        if entry is None:
            excluded.append(Exclusion(venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT, detail=f"no {'asks' if side is Side.BUY else 'bids'}"))
            continue
        routes.append(entry)
        book = LegacySideBook.build(venue, quote, side, limit)
        quoted.append(book)
        if book.max_qty == 0:
            excluded.append(Exclusion(venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT, detail=f"no level within limit {limit}"))
        elif book.min_qty > book.max_qty:
            excluded.append(
                Exclusion(
                    venue=name,
                    reason=ExclusionReason.BELOW_MINIMUM,
                    detail=f"depth {book.max_qty} within limit is below min_qty {venue.min_qty} / min_notional {venue.min_notional}",
                )
            )
        else:
            eligible.append(book)
    return eligible, routes, excluded, quoted


def _legacy_savings_bps(side: Side, reference: Decimal, net: Decimal) -> Decimal:
    return (side.sign * (reference - net) / reference * BPS).quantize(legacy_BPS_QUANTUM)


def legacy_allocate(algorithm: Algorithm, ranked: Sequence[LegacySideBook], routes: Sequence[VenueRoute], side: Side, qty: Decimal) -> LegacyAllocation:
    """Dispatch to the allocator the intent asked for."""
    if algorithm is Algorithm.BEST:
        return legacy_allocate_best(ranked, qty)
    if algorithm is Algorithm.SPLIT:
        return legacy_allocate_split(ranked, routes, side, qty)
    return legacy_allocate_sor(ranked, qty)


def legacy_route(
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
) -> RoutePlan:
    """Build the split plan of ``intent`` over the venues' books.

    ``books`` maps venue name to its latest quote for the intent's symbol. Quotes older than
    ``max_quote_age_ms`` at ``now_ms`` are excluded as stale (both ``None``: no check). ``qty``
    overrides the intent's quantity for a re-route of a remainder; ``unavailable`` names venues
    the caller has ruled out (an open circuit breaker, a venue that already failed this intent).
    """
    with decimal.localcontext(_legacy_CONTEXT):
        chosen = intent.algorithm if algorithm is None else Algorithm(algorithm)
        return _legacy_route(intent, books, venues, now_ms, max_quote_age_ms, round_no, qty, unavailable or {}, chosen)


def _legacy_route(intent, books, venues, now_ms, max_quote_age_ms, round_no, qty, unavailable, algorithm) -> RoutePlan:
    side = intent.side
    total = intent.qty if qty is None else qty
    eligible, routes, excluded, quoted = _legacy_eligible_books(intent, books, venues, now_ms, max_quote_age_ms, unavailable)
    routes = legacy_rank(side, routes)
    order = {r.provider: i for i, r in enumerate(routes)}
    eligible.sort(key=lambda b: order[b.name])
    allocation = legacy_allocate(algorithm, eligible, routes, side, total)

    by_name = {r.provider: r for r in routes}
    legs: list[PlanLeg] = []
    notional_sum = fees = planned = ZERO
    for book in eligible:
        leg_qty = allocation.qty.get(book.name, ZERO)
        if leg_qty <= 0:
            continue
        leg_qty = leg_qty.quantize(book.venue.step_size)  # venue precision; exact, it is on the step
        notional = book.notional(leg_qty)
        fee = notional * book.fee_rate
        r = by_name[book.name]
        legs.append(
            trusted(PlanLeg,
                provider=book.name,
                qty=leg_qty,
                estimated_price=average_price(notional, leg_qty),
                estimated_fee=fee,
                estimated_notional=notional,
                bid_price=r.bid_price,
                ask_price=r.ask_price,
                worst_price=book.worst_price(leg_qty),
                levels=book.levels_touched(leg_qty),
            )
        )
        notional_sum += notional
        fees += fee
        planned += leg_qty

    vwap = net = savings_worst = savings_best = best_net = worst_net = None
    if planned > 0:
        vwap = average_price(notional_sum, planned)
        net = average_price(notional_sum + side.sign * fees, planned)
        # Single-venue benchmarks: the same quantity sent whole to one venue, walking its
        # whole visible book (the seed compares against the worst venue).
        # Only venues that would take the whole quantity (on their step, at least their minimums).
        benchmarks = [v for v in (b.net_vwap(planned) for b in quoted
                                  if planned % b.venue.step_size == 0 and planned >= b.min_qty) if v is not None]
        if benchmarks:
            worst = max(benchmarks, key=lambda p: side.sign * p)
            best = min(benchmarks, key=lambda p: side.sign * p)
            savings_worst = _legacy_savings_bps(side, worst, net)
            savings_best = _legacy_savings_bps(side, best, net)
            best_net, worst_net = best.quantize(PRICE_QUANTUM).normalize(), worst.quantize(PRICE_QUANTUM).normalize()

    as_of = max((books[b.name].ts for b in eligible), default=None)
    plan_id = legacy_plan_id_for(intent.intent_id, round_no)
    return trusted(RoutePlan,
        event_id=plan_id,
        plan_id=plan_id,
        intent_id=intent.intent_id,
        symbol=intent.symbol,
        side=side,
        total_qty=total,
        algorithm=algorithm,
        time_in_force=intent.time_in_force,
        limit_price=intent.limit_price,
        round=round_no,
        legs=legs,
        planned_qty=planned,
        unfilled_qty=total - planned,
        estimated_vwap=vwap,
        estimated_fees=fees,
        estimated_net=net,
        savings_vs_single_venue=savings_worst,
        savings_vs_best_single_venue_bps=savings_best,
        best_single_venue_net=best_net,
        worst_single_venue_net=worst_net,
        routes=routes,
        excluded=excluded,
        optimal=allocation.optimal,
        quotes_as_of=as_of,
    )
