"""Exact solvers written independently of the router, used only to check it.

``brute_force`` enumerates every quantity each venue accepts; ``milp`` states the problem as
a mixed-integer program for HiGHS (scipy). Neither imports anything from ``worker.routing``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


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
