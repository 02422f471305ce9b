"""How a quantity is split across venue books: ``best``, ``split`` and the exact ``sor``.

Every allocator takes the eligible :class:`SideBook` s in ranking order and returns a
quantity per venue that the venue accepts (on its step, above its minimums, within the
limit-cut depth). None of them does I/O.

``sor`` works in scaled integers (:class:`~worker.routing.book.Lots`): quantities in lots of
``10**-Q`` and signed costs in units of ``10**-(Q + P + 4 + F)``, where ``Q``, ``P`` and ``F``
are the most fraction digits of any size or step, price and fee among the books. Every
number of the search is then an exact Python ``int``; ``Decimal`` appears only at the edges.
"""

from __future__ import annotations

import heapq
import math
from math import gcd
from operator import itemgetter
from dataclasses import dataclass
from decimal import Decimal
from bisect import bisect_left, bisect_right
from typing import Sequence

from worker.domain.models import Side, VenueRoute
from worker.domain.money import ZERO, floor_to_step
from worker.routing.book import Lots, SideBook, SnapshotSetMemo, floor_units, from_units

#: Branch-and-bound nodes before settling for the best plan found (reported as optimal=False).
DEFAULT_NODE_LIMIT = 2_000


@dataclass(frozen=True, slots=True)
class Allocation:
    """Quantity per venue name (only venues that trade), and whether it is proven optimal."""

    qty: dict[str, Decimal]
    optimal: bool = True
    nodes: int = 0  # branch-and-bound nodes expanded: the search effort


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


class _Lattice:
    """The grid every fill lies on: the gcd of the steps (in lots) of venues still allowed to
    trade, memoised per set of venues, since every node asks for it."""

    __slots__ = ("units", "qty", "_memo", "_full")

    def __init__(self, books: Sequence[Lots], qty: int, memo: dict[tuple[bool, ...], int] | None = None,
                 units: list[int] | None = None):
        self.units = [b.step for b in books] if units is None else units
        self.qty = qty
        self._memo = {} if memo is None else memo
        self._full = -1

    def grid(self, allowed: Sequence[bool]) -> int:
        """The gcd of the allowed venues' steps; 0 when none is allowed."""
        key = tuple(allowed)
        g = self._memo.get(key)
        if g is None:
            g = 0
            for unit, ok in zip(self.units, key):
                if ok:
                    g = math.gcd(g, unit)
            self._memo[key] = g
        return g

    def target(self, hi: Sequence[int]) -> int:
        """The most a node can fill: the quantity floored to its lattice (a valid bound, since
        every sum of venue quantities lies on it, and far tighter when a fine-step venue is out)."""
        if 0 not in hi:  # every venue open: the root's lattice
            if self._full < 0:
                g = self.grid([True] * len(hi))
                self._full = self.qty // g * g
            return self._full
        g = self.grid([h > 0 for h in hi])
        return 0 if g == 0 else self.qty // g * g


class _Relaxed:
    """A node's relaxed solution; ``stop`` is the merged index where the walk stopped.

    ``key`` orders nodes lexicographically: fill as much as the books allow, then at the
    lowest signed cost."""

    __slots__ = ("fill", "cost", "x", "stop", "key", "violation", "target")

    def __init__(self, fill: int, cost: int, x: list[int], stop: int):
        self.fill, self.cost, self.x, self.stop = fill, cost, x, stop
        self.key = (-fill, cost)
        self.violation: int | None = None  # the venue to branch on, once checked
        self.target = 0  # the most the node can fill (its lattice), set by the search


class Market:
    """One set of books in the integer units of an allocation, memoised per set of books:
    the worker routes many intents between two snapshots of a symbol.

    ``quoted`` are every venue with a usable quote (the single-venue benchmarks), ``books``
    the eligible ones in ranking order. Quantities are in lots of ``10**-q_digits`` and costs
    in units of ``10**-(q_digits + p_digits + 4 + f_digits)``, exact for every book here.
    """

    __slots__ = ("quoted", "books", "q_digits", "p_digits", "f_digits", "quoted_lots", "lots", "steps", "grids", "_merged")

    def __init__(self, quoted: Sequence[SideBook], books: Sequence[SideBook]):
        self.quoted, self.books = quoted, books  # held: their ids key the memo
        every = [*quoted, *books]
        self.q_digits = q = max(max(b.prep.qty_digits, b.step_digits) for b in every)
        self.p_digits = p = max(b.prep.price_digits for b in every)
        self.f_digits = f = max(b.prep.fee_digits for b in every)
        self.quoted_lots = [b.lots(q, p, f) for b in quoted]
        self.lots = [b.lots(q, p, f) for b in books]
        self.steps = [b.step for b in self.lots]
        self.grids: dict[tuple[bool, ...], int] = {}  # lattice per set of open venues
        self._merged: _MergedLevels | None = None

    @property
    def merged(self) -> "_MergedLevels":
        """Every usable level of every eligible venue in fee-adjusted price order, merged
        lazily and shared by every plan on this market."""
        if self._merged is None:
            self._merged = _MergedLevels(self.lots)
        return self._merged


#: Entries between two marks of what the venues hold at the root (see _MergedLevels.root):
#: the root replays up to this many entries after the nearest mark, at every plan, so a mark
#: (a list per venue) every few entries pays for itself.
_MARK = 4


class _MergedLevels:
    """Every usable level of every venue in fee-adjusted price order, merged lazily.

    Entries are ``(rate, venue, level, lots before the level, lots up to its end)``: ties go
    to the better-ranked venue, then the better level. All branch-and-bound nodes share this
    order (bounds only clip venues); most walks stop after a handful of levels, so most of the
    merge is never done. ``fill[k]`` and ``cost[k]`` are what the entries before ``k`` hold at
    the root's bounds (every venue up to its depth within the limit, on its step), so the
    root's relaxation is a bisection instead of a walk.
    """

    __slots__ = ("_books", "_heap", "seen", "fill", "cost", "top", "_held", "_marks")

    def __init__(self, books: Sequence[Lots]):
        self._books = books
        self.top = [b.max_qty for b in books]  # the root's upper bounds (never mutated: children copy)
        self._heap = [(b.rates[0], i, 0) for i, b in enumerate(books) if b.usable > 0]
        heapq.heapify(self._heap)
        self.seen: list[tuple[int, int, int, int, int]] = []
        self.fill: list[int] = [0]
        self.cost: list[int] = [0]
        self._held = [0] * len(books)  # per venue, what the entries merged so far hold at the root
        self._marks = [self._held[:]]  # _marks[m]: _held before entry m * _MARK

    def get(self, k: int) -> tuple[int, int, int, int, int] | None:
        """The ``k``-th entry, merging up to it; ``None`` past the last level."""
        seen, heap = self.seen, self._heap
        while k >= len(seen):
            if not heap:
                return None
            self._next()
        return seen[k]

    def _next(self) -> None:
        heap = self._heap
        rate, i, j = heap[0]
        book = self._books[i]
        cum = book.cum
        before, after = cum[j], cum[j + 1]
        self.seen.append((rate, i, j, before, after))
        top = book.max_qty  # the root's bound
        up_to = after if after < top else top
        held = up_to - (before if before < top else top)
        self.fill.append(self.fill[-1] + held)
        self.cost.append(self.cost[-1] + rate * held)
        self._held[i] = up_to
        if len(self.seen) % _MARK == 0:
            self._marks.append(self._held[:])
        j += 1
        if j < book.usable:
            heapq.heapreplace(heap, (book.rates[j], i, j))
        else:
            heapq.heappop(heap)

    def root(self, target: int) -> "_Relaxed":
        """The relaxation at the root's bounds: what :func:`_rebalance` gives walking from
        the top, found by bisection on the prefix sums."""
        books, fill = self._books, self.fill
        while fill[-1] < target and self._heap:
            self._next()
        if fill[-1] < target:  # every level taken: each venue holds its whole depth
            return _Relaxed(fill[-1], self.cost[-1], [b.max_qty for b in books], len(self.seen))
        k = bisect_left(fill, target) - 1  # the entry where the walk stops, part taken
        seen, top = self.seen, self.top
        # What every venue holds before entry k: the nearest mark, then the entries after it.
        start = k - k % _MARK
        x = self._marks[start // _MARK][:]
        for t in range(start, k):
            _, i, _, _, after = seen[t]
            x[i] = after if after < top[i] else top[i]
        rate, s = seen[k][0], seen[k][1]
        rem = target - fill[k]
        x[s] += rem
        return _Relaxed(target, self.cost[k] + rate * rem, x, k)


#: Markets of the latest snapshots: a handful per symbol and side (limit depths, venue filters).
_MARKETS = SnapshotSetMemo(per_group=16)


def market(quoted: Sequence[SideBook], books: Sequence[SideBook]) -> Market:
    """The memoised :class:`Market` of ``books`` (eligible, ranked) among ``quoted``."""
    key = (tuple(map(id, quoted)), tuple(map(id, books)))  # the market holds them: their ids stay theirs
    hit = _MARKETS.get(key)
    if hit is None:
        first = (quoted or books)[0].prep
        hit = _MARKETS.put(first.quote.symbol, first.side is Side.BUY, key, Market(quoted, books))
    return hit


def _rebalance(books: Sequence[Lots], levels: _MergedLevels, x: list[int], lo: Sequence[int], hi: Sequence[int],
               cost: int, fill: int, target: int, k: int, pinned: int = -1) -> _Relaxed | None:
    """Bring a node's relaxed solution to ``target`` from the merged index ``k`` of its parent.

    Below target: take the cheapest open capacity forward (everything before ``k`` is taken
    or clipped). Above it: give back the most expensive units taken, walking backward
    (never below a venue's lower bound, never from ``pinned``). Both keep the relaxation
    exactly optimal, since each venue's cost is convex in quantity.
    """
    seen = levels.seen
    if fill < target:
        rem = target - fill
        while True:
            try:
                rate, i, _, _, cap = seen[k]
            except IndexError:
                if levels.get(k) is None:
                    break
                rate, i, _, _, cap = seen[k]
            h = hi[i]
            if cap > h:
                cap = h
            take = cap - x[i]
            if take > 0:
                if take >= rem:
                    x[i] += rem
                    cost += rate * rem
                    rem = 0
                    break
                x[i] = cap
                cost += rate * take
                rem -= take
            k += 1
        return _Relaxed(target - rem, cost, x, k)
    excess = fill - target
    k = min(k, len(seen) - 1)
    while excess > 0 and k >= 0:
        rate, v, _, floor, _ = seen[k]
        if v != pinned:
            if lo[v] > floor:
                floor = lo[v]
            give = x[v] - floor
            if give > 0:
                if give >= excess:
                    x[v] -= excess
                    cost -= rate * excess
                    excess = 0
                    break
                x[v] = floor
                cost -= rate * give
                excess -= give
        k -= 1
    if excess > 0:
        return None  # forced minimums alone exceed the target
    return _Relaxed(target, cost, x, max(k, 0))


def _violation(books: Sequence[Lots], x: list[int]) -> int | None:
    """The venue to branch on: the first whose relaxed quantity is below its minimum, else the
    coarsest-step venue off its step (the first of equals).

    Branching on the coarsest step first settles the decisions that move the most quantity,
    and the finer venues' remainders then follow from them: on coprime lot steps this halves
    the tree against taking the first venue off its step.
    """
    step_violation = None
    coarsest = 0
    i = 0
    for q in x:
        if q:
            book = books[i]
            if q < book.min_qty:
                return i
            if book.step > coarsest and q % book.step:
                step_violation, coarsest = i, book.step
        i += 1
    return step_violation


def _fine_idle(steps: Sequence[int], x: list[int], lo: list[int], hi: list[int]) -> list[int]:
    """Idle venues that alone make the lattice finer than the trading venues' steps.

    A remainder finer than every trading venue's step can only go to one of them; branching
    on them first (skip them all, or trade one) ends the step-by-step shuffling of such a
    remainder between coarse venues.
    """
    # One pass over the venues, at every node: the idle ones, and the gcd of the trading
    # ones' steps (their lattice; a handful of small gcds cost less than building a memo key).
    idle = []
    trading = 0
    for j, q in enumerate(x):
        if hi[j] > 0:
            if q > 0:
                trading = gcd(trading, steps[j])
            elif lo[j] == 0:
                idle.append(j)
    if not idle or trading == 0:
        return []
    return [j for j in idle if steps[j] % trading]


def _with(bounds: list[int], i: int, value: int) -> list[int]:
    out = bounds[:]
    out[i] = value
    return out


def _branches(books: Sequence[Lots], lattice: _Lattice, node: _Relaxed, lo: list[int], hi: list[int]):
    """(lo, hi, pinned venue or -1, venues whose bounds changed) of each child; together the
    children cover every integer plan of the node."""
    x = node.x
    i = node.violation
    if i is None:
        i = node.violation = _violation(books, x)
    book = books[i]
    if x[i] < book.min_qty:  # semi-continuous: 0 or >= min_qty
        yield lo, _with(hi, i, 0), -1, (i,)
        yield _with(lo, i, book.min_qty), hi, i, (i,)
        return
    fine = _fine_idle(lattice.units, x, lo, hi)
    if fine:
        none = hi[:]
        for j in fine:
            none[j] = 0
        yield lo, none, -1, tuple(fine)
        for j in fine:
            yield _with(lo, j, books[j].min_qty), hi, j, (j,)
        return
    step = book.step
    down = x[i] // step * step
    if down >= max(lo[i], book.min_qty):
        yield lo, _with(hi, i, down), -1, (i,)
    elif lo[i] == 0:
        yield lo, _with(hi, i, 0), -1, (i,)
    up = down + step
    if up <= hi[i]:
        yield _with(lo, i, max(lo[i], up)), hi, i, (i,)


def _signed_cost(book: Lots, qty: int) -> int:
    """:meth:`Lots.signed_cost` as a function: the search calls it at every node."""
    if qty <= 0:
        return 0
    cum = book.cum
    j = bisect_left(cum, qty) - 1
    return book.costs[j] + (qty - cum[j]) * book.rates[j]


def _cost_change(book: Lots, was: int, qty: int) -> int:
    """``_signed_cost(book, qty) - _signed_cost(book, was)``: a child moves one venue by a
    step or to a bound, most often within the level ``was`` is on, where the change is the
    level's rate times the move (one bisection instead of two)."""
    if was <= 0:
        return _signed_cost(book, qty)
    cum = book.cum
    j = bisect_left(cum, was) - 1  # cum[j] < was <= cum[j + 1]: no venue holds more than its depth
    if cum[j] < qty <= cum[j + 1]:
        return (qty - was) * book.rates[j]
    return _signed_cost(book, qty) - (book.costs[j] + (was - cum[j]) * book.rates[j])


def _cost_of(books: Sequence[Lots], x: Sequence[int]) -> int:
    """Fee-inclusive signed cost of the plan ``x``."""
    total = 0
    for b, q in zip(books, x):
        if q > 0:
            cum = b.cum
            j = bisect_left(cum, q) - 1
            total += b.costs[j] + (q - cum[j]) * b.rates[j]
    return total


def _repair(books: Sequence[Lots], x: list[int], lo: list[int], hi: list[int], target: int) -> list[int]:
    """A feasible plan near a relaxed one: every venue rounded down to its rules, then the
    remainder placed in whole steps on the venues with the cheapest next unit."""
    y = []
    rem = target
    for b, q, low in zip(books, x, lo):
        if not q:  # idle: most venues, at most nodes
            y.append(0)
            continue
        r = q - q % b.step
        if r and r < b.min_qty:
            r = low if low > 0 else 0
        y.append(r)
        rem -= r
    if rem <= 0:
        return y
    order = []
    i = 0
    for b, q, h in zip(books, y, hi):
        # A venue that cannot take a whole step of the remainder now never will (the remainder
        # only shrinks): leave it out of the order rather than skip it below.
        room = h - q if h - q < rem else rem
        room -= room % b.step
        if room > 0 and (q or room >= b.min_qty):
            cum = b.cum  # Lots.level_at, inlined
            level = bisect_right(cum, q) - 1 if q < cum[-1] else len(b.rates)
            order.append((b.rates[level] if level < b.usable else b.rates[-1], i))
        i += 1
    order.sort()
    for _, i in order:
        b = books[i]
        step = b.step
        add = hi[i] - y[i]
        if add > rem:
            add = rem
        add -= add % step
        if add <= 0 or (y[i] == 0 and add < b.min_qty):
            continue
        y[i] += add
        rem -= add
        if rem == 0:
            break
    return y


def _clipped(book: Lots, qty: int) -> int:
    """Round down to the step, cap at depth, and drop an order the venue would refuse."""
    qty = min(qty // book.step * book.step, book.max_qty)
    return qty if qty >= book.min_qty else 0


def allocate_sor(books: Sequence[SideBook], qty: Decimal, node_limit: int = DEFAULT_NODE_LIMIT,
                 quoted: Sequence[SideBook] | None = None) -> Allocation:
    """The exact depth-aware optimum across all books under every venue's lot rules.

    Branch and bound. A node's bound is the greedy relaxation (all levels of all venues
    merged by fee-adjusted price) with the fill capped at the node's lattice. A relaxed
    quantity a venue would refuse branches on the venue's minimum (skip it, or trade at least
    its minimum), on idle fine-step venues, or on its step (floor, or one step more). A
    depth-first dive finds a good plan fast; best-first search then proves it optimal or
    improves it. Realistic books finish at the root. Past ``node_limit`` the best plan found
    is returned with ``optimal=False``. ``quoted`` (default: ``books``) only shares the
    memoised integer view with the planner's benchmarks.
    """
    if not books:
        return Allocation({})
    mk = market(books if quoted is None else quoted, books)
    x, optimal, nodes = solve_lots(mk.lots, floor_units(qty, mk.q_digits), node_limit, mk.merged, mk.grids, mk.steps)
    q = mk.q_digits
    return Allocation({b.name: from_units(v, q) for b, v in zip(books, x) if v > 0}, optimal=optimal, nodes=nodes)


def solve_lots(books: Sequence[Lots], qty: int, node_limit: int = DEFAULT_NODE_LIMIT,
               merged: _MergedLevels | None = None,
               grids: dict[tuple[bool, ...], int] | None = None,
               steps: list[int] | None = None) -> tuple[list[int], bool, int]:
    """The branch and bound of :func:`allocate_sor` in lots: (lots per book, proven optimal,
    nodes expanded). ``merged``, ``grids`` and ``steps`` are the memoised merge, lattices and
    steps of ``books``."""
    n = len(books)
    levels = _MergedLevels(books) if merged is None else merged
    lattice = _Lattice(books, qty, grids, steps)
    root_lo, root_hi = [0] * n, levels.top
    target = lattice.target(root_hi)
    root = levels.root(target) if target > 0 else _rebalance(books, levels, [0] * n, root_lo, root_hi, 0, 0, target, 0)
    root.violation = _violation(books, root.x)
    root.target = target
    if root.violation is None:
        return root.x, True, 0

    # A quick feasible plan (round every venue down to its rules) makes pruning bite early.
    best_x = []
    for b, q in zip(books, root.x):  # _clipped, inlined
        if not q:
            best_x.append(0)
            continue
        q -= q % b.step
        if q > b.max_qty:
            q = b.max_qty
        best_x.append(q if q >= b.min_qty else 0)
    # The incumbent's key is (best_fill, best_cost), compared like the nodes' keys; its cost
    # is only computed when a comparison ties on the fill (most incumbents fill less).
    best_fill = -sum(best_x)
    best_cost: int | None = None
    nodes = 0

    def better(key: tuple[int, int]) -> bool:
        """``key < (best_fill, best_cost)``."""
        nonlocal best_cost
        if key[0] != best_fill:
            return key[0] < best_fill
        if best_cost is None:
            best_cost = _cost_of(books, best_x)
        return key[1] < best_cost

    def offer(candidate: list[int]) -> None:
        nonlocal best_fill, best_cost, best_x
        fill = -sum(candidate)
        if fill > best_fill:
            return  # fills less than the incumbent: its cost does not matter
        if fill < best_fill:
            best_fill, best_cost, best_x = fill, None, candidate
        else:
            cost = _cost_of(books, candidate)
            if better((fill, cost)):
                best_cost, best_x = cost, candidate

    def expand(lo, hi, node):
        """Open children that might beat the incumbent, best bound first."""
        nonlocal best_fill, best_cost, best_x
        if -best_fill < node.fill:  # the incumbent does not fill what this node could yet
            offer(_repair(books, node.x, lo, hi, node.target))
        kids = []
        for c_lo, c_hi, pinned, changed in _branches(books, lattice, node, lo, hi):
            # The child's relaxation, derived from its parent's instead of walked from the top.
            x = node.x[:]
            cost, fill = node.cost, node.fill
            for i in changed:
                q = was = x[i]
                if q < c_lo[i]:
                    q = c_lo[i]
                elif q > c_hi[i]:
                    q = c_hi[i]
                if q != was:
                    cost += _cost_change(books[i], was, q)
                    fill += q - was
                    x[i] = q
            # The lattice follows which venues are open: unchanged unless a bound closed one.
            target = node.target
            if c_hi is not hi:
                for i in changed:
                    if not c_hi[i] and hi[i]:
                        target = lattice.target(c_hi)
                        break
            child = _rebalance(books, levels, x, c_lo, c_hi, cost, fill, target, node.stop, pinned)
            if child is None:
                continue
            child.target = target
            key = child.key
            if key[0] > best_fill or (key[0] == best_fill and not better(key)):
                continue
            child.violation = _violation(books, child.x)
            if child.violation is None:
                (best_fill, best_cost), best_x = child.key, child.x
                continue
            kids.append((child.key, c_lo, c_hi, child))
        kids.sort(key=itemgetter(0))
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
        if not better(key):
            frontier.clear()  # best-first: no open node can beat the incumbent
            break
        nodes += 1
        if nodes > node_limit:
            optimal = False
            break
        for key, c_lo, c_hi, child in expand(lo, hi, node):
            counter += 1
            heapq.heappush(frontier, (key, counter, c_lo, c_hi, child))
    return best_x, optimal and not frontier, nodes
