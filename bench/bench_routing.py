"""Routing benchmark: plans per second and cost against the exact optimum.

    .venv/bin/python bench/bench_routing.py [--plans 2000] [--instances 40] [--adversarial 400]

Prints a Markdown table for the README. Timings are wall-clock on whatever machine runs
it; the ratios between algorithms, measured in the same run, are what to compare.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.adversarial import instances as adversarial_instances  # noqa: E402
from tests.support.oracles import _legacy_MEMO, legacy_route, milp_optimum  # noqa: E402
from tests.support.scenarios import make_intent, oracle_venues, random_market  # noqa: E402
from worker.domain.models import Algorithm, Side  # noqa: E402
from worker.routing.allocators import DEFAULT_NODE_LIMIT  # noqa: E402
from worker.routing.planner import forget_prepared_books, route  # noqa: E402
from worker.routing.ranking import venue_route  # noqa: E402


def prewarm(venues, quotes) -> None:
    """What the worker does as each snapshot arrives (``worker.bootstrap.prewarm``)."""
    for venue in venues:
        for side in Side:
            venue_route(side, venue, quotes[venue.name])


def signed_cost(plan) -> Decimal:
    s = plan.side.sign
    return sum((leg.estimated_notional + leg.estimated_fee * s) for leg in plan.legs) * s


def throughput(n_plans: int, seed: int) -> dict[str, tuple[float, float, float]]:
    rng = random.Random(seed)
    cases = []
    for i in range(50):
        # One symbol per market: the router keeps what it derived from the latest snapshot of
        # each venue and symbol, as the worker holds 50 symbols' latest books.
        side, symbol = "buy" if i % 2 == 0 else "sell", f"S{i}/USD"
        venues, quotes = random_market(rng, 10, 50, side=side, symbol=symbol)
        cases.append((make_intent(Decimal(str(round(rng.uniform(0.5, 20), 4))), side=side, symbol=symbol), venues, quotes))
        prewarm(venues, quotes)
    runs = [(a.value, a, False) for a in Algorithm] + [("sor, cold books", Algorithm.SOR, True)]
    # The all-Decimal router this one replaced (kept as a test oracle), timed plan by plan in
    # alternation with the new one, so that both see the same machine load.
    after, before = {}, {}
    for label, algorithm, cold in runs:
        samples: dict[object, list[float]] = {route: [], legacy_route: []}
        for k in range(n_plans):
            intent, venues, quotes = cases[k % len(cases)]
            for router in (route, legacy_route):
                if cold:
                    forget_prepared_books()  # every book prepared again, as for the first intent after a quote update
                    _legacy_MEMO.clear()
                t0 = time.perf_counter()
                router(intent, quotes, venues, algorithm=algorithm)
                samples[router].append(time.perf_counter() - t0)
        after[label] = _summary(samples[route])
        before[f"{label}, Decimal router (before)"] = _summary(samples[legacy_route])
    return after | before


def _summary(samples: list[float]) -> tuple[float, float, float]:
    samples.sort()
    return 1 / statistics.fmean(samples), samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6


def quality(n: int, seed: int, aligned: bool) -> dict[str, tuple[float, float, float]]:
    """Cost above the exact MILP optimum in bps, over instances where each fills the optimum qty."""
    rng = random.Random(seed)
    gaps: dict[str, list[float]] = {a.value: [] for a in Algorithm}
    short: dict[str, int] = {a.value: 0 for a in Algorithm}
    for i in range(n):
        side = "buy" if i % 2 == 0 else "sell"
        venues, quotes = random_market(rng, 6, 10, side=side, aligned=aligned)
        intent = make_intent(Decimal(str(round(rng.uniform(0.2, 5), 5))), side=side)
        fill, best = milp_optimum(oracle_venues(intent, venues, quotes), intent.qty, side == "buy")
        for algorithm in Algorithm:
            plan = route(intent, quotes, venues, algorithm=algorithm)
            if abs(float(plan.planned_qty) - fill) > 1e-6:  # HiGHS works to a 1e-6 feasibility tolerance
                short[algorithm.value] += 1  # filled less than possible: not comparable in bps
                continue
            gaps[algorithm.value].append((float(signed_cost(plan)) - best) / abs(best) * 1e4)
    return {a: (statistics.fmean(g) if g else float("nan"), max(g) if g else float("nan"), short[a]) for a, g in gaps.items()}


def worst_case(n: int, seed: int) -> dict[str, tuple[int, float]]:
    """Adversarial books (coprime lot steps): plans not proven optimal within the node budget."""
    out = {}
    for label, router in (("sor", route), ("sor, Decimal router (before)", legacy_route)):
        t0 = time.perf_counter()
        misses = sum(not router(i, q, v).optimal for i, v, q in adversarial_instances(n, seed))
        out[label] = (misses, (time.perf_counter() - t0) / n * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", type=int, default=2000)
    ap.add_argument("--instances", type=int, default=40)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--adversarial", type=int, default=400)
    args = ap.parse_args()
    print(f"## Routing: 10 venues x 50 levels, {args.plans} plans per algorithm\n")
    print("Orders of 0.5 to 20 BTC on 50 rotating markets (one symbol each); books are prepared once per snapshot as it")
    print("arrives (warm), except in the cold row, which prepares all 10 books again for every plan.\n")
    print("| algorithm | plans/s | p50 µs | p99 µs |\n|---|---:|---:|---:|")
    for name, (rate, p50, p99) in throughput(args.plans, args.seed).items():
        print(f"| {name} | {rate:,.0f} | {p50:,.0f} | {p99:,.0f} |")
    print(f"\n## Worst case: {args.adversarial} adversarial instances (coprime lot steps), node budget {DEFAULT_NODE_LIMIT:,}\n")
    print("| router | `optimal: false` | mean ms per plan |\n|---|---:|---:|")
    for name, (misses, ms) in worst_case(args.adversarial, 11).items():
        print(f"| {name} | {misses} | {ms:,.1f} |")
    for aligned in (True, False):
        label = "levels on the venue's step" if aligned else "levels off the step (worst case for lots)"
        print(f"\n## Cost above the exact MILP optimum, 6 venues x 10 levels, {args.instances} instances, {label}\n")
        print("| algorithm | mean bps | max bps | instances filling less than optimum |\n|---|---:|---:|---:|")
        for name, (mean, worst, short) in quality(args.instances, args.seed, aligned).items():
            print(f"| {name} | {mean:.4f} | {worst:.4f} | {short} |")


if __name__ == "__main__":
    main()
