"""How a quantity is split across venue books: ``best``, ``split`` and the exact ``sor``.

Every allocator takes the eligible :class:`SideBook` s in ranking order and returns a
quantity per venue that the venue accepts (on its step, above its minimums, within the
limit-cut depth). None of them does I/O.
"""

from __future__ import annotations

import heapq
import math
from itertools import repeat
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Sequence

from worker.domain.models import Side, VenueRoute
from worker.routing.book import ZERO, SideBook, floor_to_step

#: Branch-and-bound nodes before settling for the best plan found (reported as optimal=False).
DEFAULT_NODE_LIMIT = 2_000


@dataclass(frozen=True, slots=True)
class Allocation:
    """Quantity per venue name (only venues that trade), and whether it is proven optimal."""

    qty: dict[str, Decimal]
    optimal: bool = True
    nodes: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return sum(self.qty.values(), ZERO)


def _clip_to_rules(book: SideBook, qty: Decimal) -> Decimal:
    """Round down to the step, cap at depth, and drop an order the venue would refuse."""
    qty = min(floor_to_step(qty, book.venue.step_size), book.max_qty)
    return qty if qty >= book.min_qty else ZERO


def allocate_best(books: Sequence[SideBook], qty: Decimal) -> Allocation:
    """The whole order to the best-ranked venue, walking its book."""
    if not books:
        return Allocation({})
    top = books[0]
    take = _clip_to_rules(top, qty)
    return Allocation({top.name: take} if take > 0 else {})


def allocate_split(books: Sequence[SideBook], routes: Sequence[VenueRoute], side: Side, qty: Decimal) -> Allocation:
    """The seed's VWAP split: weights inverse to score (buys) or proportional to it (sells).

    Either way the better-priced venue gets more. The last leg takes the remainder, then every
    leg is held to its venue's rules; what they refuse stays unfilled.
    """
    if not books:
        return Allocation({})
    score = {r.provider: r.score for r in routes}
    weights = [(1 / score[b.name]) if side is Side.BUY else score[b.name] for b in books]
    total_weight = sum(weights, ZERO)
    out: dict[str, Decimal] = {}
    assigned = ZERO
    for i, book in enumerate(books):
        is_last = i == len(books) - 1
        share = qty - assigned if is_last else floor_to_step(qty * weights[i] / total_weight, book.venue.step_size)
        assigned += share
        take = _clip_to_rules(book, share)
        if take > 0:
            out[book.name] = take
    return Allocation(out)


def _grid(books: Sequence[SideBook]) -> Decimal:
    """The coarsest quantity grid every combination of venue steps lies on (their gcd)."""
    exponent = min(b.venue.step_size.as_tuple().exponent for b in books)
    scale = Decimal(1).scaleb(-exponent)
    g = 0
    for b in books:
        g = math.gcd(g, int(b.venue.step_size * scale))
    return Decimal(g) / scale


@dataclass(slots=True)
class _Relaxed:
    """A node's relaxed solution; ``stop`` is the merged index where the walk stopped."""

    fill: Decimal
    cost: Decimal
    x: list[Decimal]
    stop: int

    @property
    def key(self) -> tuple[Decimal, Decimal]:
        # Lexicographic: fill as much as the books allow, then at the lowest signed cost.
        return (-self.fill, self.cost)


class _MergedLevels:
    """Every usable level of every venue in fee-adjusted price order, merged lazily once.

    All branch-and-bound nodes share this order (bounds only clip venues); most walks stop
    after a handful of levels, so most of the merge is never done.
    """

    def __init__(self, books: Sequence[SideBook]):
        self._source = heapq.merge(*(zip(b.rates[: b.usable], repeat(i), range(b.usable)) for i, b in enumerate(books)))
        self._seen: list[tuple[Decimal, int, int]] = []

    def get(self, k: int) -> tuple[Decimal, int, int] | None:
        seen = self._seen
        while k >= len(seen):
            nxt = next(self._source, None)
            if nxt is None:
                return None
            seen.append(nxt)
        return seen[k]


def _fill_forward(books, levels: _MergedLevels, x: list[Decimal], hi: list[Decimal], cost: Decimal, rem: Decimal, k: int):
    """Take the cheapest open capacity from merged index ``k`` on; returns (cost, rem, stop)."""
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
                return cost + rate * rem, ZERO, k
            x[i] = cap
            cost += rate * take
            rem -= take
        k += 1
    return cost, rem, k


def _root(books, levels: _MergedLevels, hi: list[Decimal], target: Decimal) -> _Relaxed:
    """The greedy merge by fee-adjusted price: exact without minimums and steps, since each
    venue's cost is convex in quantity; with them, a lower bound on every plan."""
    x = [ZERO] * len(books)
    cost, rem, stop = _fill_forward(books, levels, x, hi, ZERO, target, 0)
    return _Relaxed(target - rem, cost, x, stop)


def _lowered(books, levels, parent: _Relaxed, i: int, hi: list[Decimal], target: Decimal) -> _Relaxed:
    """Parent with venue ``i`` capped at ``hi[i]``: the freed quantity is refilled forward.

    Everything before the parent's stop is taken or clipped, so the walk resumes there.
    """
    x = list(parent.x)
    book = books[i]
    cost = parent.cost - (book.signed_cost(x[i]) - book.signed_cost(hi[i]))
    rem = target - parent.fill + (x[i] - hi[i])
    x[i] = hi[i]
    cost, rem, stop = _fill_forward(books, levels, x, hi, cost, rem, parent.stop)
    return _Relaxed(target - rem, cost, x, stop)


def _raised(books, levels, parent: _Relaxed, i: int, lo: list[Decimal], target: Decimal) -> _Relaxed | None:
    """Parent with venue ``i`` forced to at least ``lo[i]``: the excess over the target is
    given back from the most expensive units taken, walking back from the parent's stop.

    Venue ``i``'s own untaken units all sit at or past the parent's stop, so nothing cheaper
    than the new water level is left out.
    """
    x = list(parent.x)
    book = books[i]
    cost = parent.cost + book.signed_cost(lo[i]) - book.signed_cost(x[i])
    excess = parent.fill + (lo[i] - x[i]) - target
    x[i] = lo[i]
    k = parent.stop
    while excess > 0:
        item = levels.get(k) if k >= 0 else None
        if item is None:
            if k < 0:
                return None  # the forced minimums alone exceed the target
            k -= 1
            continue
        rate, v, j = item
        if v != i:
            floor = books[v].cum_qty[j]
            if lo[v] > floor:
                floor = lo[v]
            give = x[v] - floor
            if give > 0:
                if give > excess:
                    give = excess
                x[v] -= give
                cost -= rate * give
                excess -= give
                if excess == 0:
                    break
        k -= 1
    fill = target if parent.fill + (lo[i] - parent.x[i]) >= target else parent.fill + (lo[i] - parent.x[i])
    return _Relaxed(fill, cost, x, max(k, 0))


def _violation(books: Sequence[SideBook], x: list[Decimal]) -> int | None:
    """First venue whose relaxed quantity it would refuse (minimum first, then step)."""
    for i, q in enumerate(x):
        if q > 0 and q < books[i].min_qty:
            return i
    for i, q in enumerate(x):
        if q > 0 and q % books[i].venue.step_size != 0:
            return i
    return None


def _children(book: SideBook, i: int, q: Decimal, lo: list[Decimal], hi: list[Decimal]):
    """Branch on venue ``i``: skip it or trade at least its minimum; or step down / step up."""
    def with_bound(bounds: list[Decimal], value: Decimal) -> list[Decimal]:
        copy = list(bounds)
        copy[i] = value
        return copy

    if q < book.min_qty:  # semi-continuous: 0 or >= min_qty
        yield "down", lo, with_bound(hi, ZERO)
        yield "up", with_bound(lo, book.min_qty), hi
        return
    step = book.venue.step_size
    down = floor_to_step(q, step)
    if down >= max(lo[i], book.min_qty):
        yield "down", lo, with_bound(hi, down)
    elif lo[i] == 0:
        yield "down", lo, with_bound(hi, ZERO)
    up = down + step
    if up <= hi[i]:
        yield "up", with_bound(lo, max(lo[i], up)), hi


def allocate_sor(books: Sequence[SideBook], qty: Decimal, node_limit: int = DEFAULT_NODE_LIMIT) -> Allocation:
    """The exact depth-aware optimum across all books under every venue's lot rules.

    Branch and bound. A node's bound is the greedy relaxation: all levels of all venues merged
    by fee-adjusted price. A relaxed venue quantity the venue would refuse branches on the
    venue's minimum (skip the venue, or trade at least its minimum) or its step (floor, or one
    step more). A depth-first dive finds a good plan fast; best-first search then proves it
    optimal or improves it. Realistic books (levels on the venue's step, no binding minimum)
    finish at the root. Past ``node_limit`` the best plan found is returned, ``optimal=False``.
    """
    if not books:
        return Allocation({})
    target = floor_to_step(qty, _grid(books))
    n = len(books)
    root_lo, root_hi = [ZERO] * n, [b.max_qty for b in books]
    levels = _MergedLevels(books)
    root = _root(books, levels, root_hi, target)

    # A quick feasible plan (round every venue down to its rules) makes pruning bite early.
    best_x = [_clip_to_rules(b, q) for b, q in zip(books, root.x)]
    best_key = (-sum(best_x, ZERO), sum((b.signed_cost(q) for b, q in zip(books, best_x)), ZERO))
    nodes = 0

    def expand(lo, hi, node):
        """Children of a node that might beat the incumbent, best bound first."""
        nonlocal best_key, best_x
        i = _violation(books, node.x)
        kids = []
        for kind, child_lo, child_hi in _children(books[i], i, node.x[i], lo, hi):
            if kind == "down":
                child = _lowered(books, levels, node, i, child_hi, target)
            else:
                child = _raised(books, levels, node, i, child_lo, target)
            if child is None or child.key >= best_key:
                continue
            if _violation(books, child.x) is None:
                best_key, best_x = child.key, child.x
                continue
            kids.append((child.key, child_lo, child_hi, child))
        kids.sort(key=lambda k: k[0])
        return kids

    if _violation(books, root.x) is None:
        return Allocation({b.name: q for b, q in zip(books, root.x) if q > 0}, optimal=True, nodes=0)

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
        if kids:
            _, lo, hi, node = kids[0]
        else:
            node = None
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
        for child in expand(lo, hi, node):
            counter += 1
            heapq.heappush(frontier, (child[0], counter, child[1], child[2], child[3]))
    return Allocation({b.name: q for b, q in zip(books, best_x) if q > 0}, optimal=optimal and not frontier, nodes=nodes)
