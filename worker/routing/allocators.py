"""How a quantity is split across venue books: ``best``, ``split`` and the exact ``sor``.

Every allocator takes the eligible :class:`SideBook` s in ranking order and returns a
quantity per venue that the venue accepts (on its step, above its minimums, within the
limit-cut depth). None of them does I/O.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Sequence

from worker.domain.models import Side, VenueRoute
from worker.routing.book import ZERO, SideBook, floor_to_step

#: Branch-and-bound nodes before settling for the best plan found (reported as optimal=False).
DEFAULT_NODE_LIMIT = 20_000


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
    fill: Decimal
    cost: Decimal
    x: list[Decimal]

    @property
    def key(self) -> tuple[Decimal, Decimal]:
        # Lexicographic: fill as much as the books allow, then at the lowest signed cost.
        return (-self.fill, self.cost)


def _relax(books: Sequence[SideBook], lo: list[Decimal], hi: list[Decimal], target: Decimal) -> _Relaxed | None:
    """The continuous relaxation of a node: forced minimums first, then the cheapest levels.

    Without minimums and steps this greedy merge by fee-adjusted price is the exact optimum
    (each venue's cost is convex in quantity); with them it is a lower bound.
    """
    fill = sum(lo, ZERO)
    if fill > target:
        return None
    x = list(lo)
    cost = sum((books[i].signed_cost(q) for i, q in enumerate(lo) if q > 0), ZERO)
    heap = []
    for i, book in enumerate(books):
        if hi[i] > x[i]:
            j = book.level_at(x[i])
            if j < book.usable:
                heap.append((book.rates[j], i, j))
    heapq.heapify(heap)
    rem = target - fill
    while rem > 0 and heap:
        rate, i, j = heap[0]
        book = books[i]
        take = min(min(book.cum_qty[j + 1], hi[i]) - x[i], rem)
        x[i] += take
        cost += rate * take
        rem -= take
        if x[i] < hi[i] and j + 1 < book.usable:
            heapq.heapreplace(heap, (book.rates[j + 1], i, j + 1))
        else:
            heapq.heappop(heap)
    return _Relaxed(target - rem, cost, x)


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
        yield lo, with_bound(hi, ZERO)
        yield with_bound(lo, book.min_qty), hi
        return
    step = book.venue.step_size
    down = floor_to_step(q, step)
    if down >= max(lo[i], book.min_qty):
        yield lo, with_bound(hi, down)
    elif lo[i] == 0:
        yield lo, with_bound(hi, ZERO)
    up = down + step
    if up <= hi[i]:
        yield with_bound(lo, max(lo[i], up)), hi


def allocate_sor(books: Sequence[SideBook], qty: Decimal, node_limit: int = DEFAULT_NODE_LIMIT) -> Allocation:
    """The exact depth-aware optimum across all books under every venue's lot rules.

    Best-first branch and bound. A node's bound is the greedy relaxation: all levels of all
    venues merged by fee-adjusted price. A relaxed venue quantity the venue would refuse
    branches on the venue's minimum (skip the venue, or trade at least its minimum) or its
    step (floor, or one step more). The first node whose relaxation breaks no rule is optimal.
    Realistic books (levels on the venue's step, no binding minimum) finish at the root.
    """
    if not books:
        return Allocation({})
    target = floor_to_step(qty, _grid(books))
    n = len(books)
    root = _relax(books, [ZERO] * n, [b.max_qty for b in books], target)
    assert root is not None

    # A quick feasible plan (round every venue down to its rules) makes pruning bite early.
    rounded = [_clip_to_rules(b, q) for b, q in zip(books, root.x)]
    best_x = rounded
    best_key = (-sum(rounded, ZERO), sum((b.signed_cost(q) for b, q in zip(books, rounded)), ZERO))

    counter = 0
    frontier = [(root.key, counter, [ZERO] * n, [b.max_qty for b in books], root)]
    nodes = 0
    optimal = True
    while frontier:
        key, _, lo, hi, node = heapq.heappop(frontier)
        if key >= best_key:
            break  # best-first: no open node can beat the incumbent
        i = _violation(books, node.x)
        if i is None:
            best_key, best_x = key, node.x
            break
        nodes += 1
        if nodes > node_limit:
            optimal = False
            break
        for child_lo, child_hi in _children(books[i], i, node.x[i], lo, hi):
            child = _relax(books, child_lo, child_hi, target)
            if child is None or child.key >= best_key:
                continue
            if _violation(books, child.x) is None:
                best_key, best_x = child.key, child.x
                continue
            counter += 1
            heapq.heappush(frontier, (child.key, counter, child_lo, child_hi, child))
    return Allocation({b.name: q for b, q in zip(books, best_x) if q > 0}, optimal=optimal, nodes=nodes)
