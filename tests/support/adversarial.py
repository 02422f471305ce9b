"""Adversarial books for the ``sor`` branch and bound: coprime lot steps, off-step levels.

With steps that share no factor (0.07, 0.11, 0.13, ...), the quantities the venues can
fill together form a lattice whose fine structure only shows up deep in the search, and
levels whose sizes are off the step make every relaxed solution fractional. Minimum
notionals on top make each venue semi-continuous. ``python -m tests.support.adversarial``
counts how many instances end ``optimal: false``.
"""

from __future__ import annotations

import argparse
import random
import time
from decimal import Decimal

from worker.domain.models import OrderIntent, VenueConfig, VenueQuote
from tests.support.scenarios import make_intent, make_quote

D = Decimal

#: Pairwise coprime lot steps (in hundredths).
COPRIME_STEPS = [D("0.07"), D("0.11"), D("0.13"), D("0.17"), D("0.19"), D("0.23"), D("0.29"), D("0.31"),
                 D("0.37"), D("0.41"), D("0.43"), D("0.47"), D("0.53"), D("0.59")]


def adversarial_market(rng: random.Random, side: str = "buy") -> tuple[OrderIntent, list[VenueConfig], dict[str, VenueQuote]]:
    """One instance: 4 to 8 venues on coprime steps, 3 to 12 off-step levels each."""
    n = rng.randint(6, 12)
    steps = rng.sample(COPRIME_STEPS, n)
    venues, quotes = [], {}
    for i, step in enumerate(steps):
        name = f"v{i}"
        venues.append(VenueConfig(
            name=name, taker_fee_bps=D(rng.choice([0, 1, 2, 5, 7.5, 10])), step_size=step,
            min_qty=step * rng.choice([1, 2, 5]), min_notional=D(rng.choice([0, 50, 150, 400, 1000])),
        ))
        price = 100 + rng.uniform(-0.5, 0.5)
        levels = []
        for _ in range(rng.randint(10, 40)):
            price += rng.uniform(0.01, 0.3)
            levels.append((D(f"{price:.2f}"), D(str(round(rng.uniform(0.05, 1.5), 5)))))
        if side == "buy":
            quotes[name] = make_quote(name, asks=levels)
        else:
            quotes[name] = make_quote(name, bids=[(D(f"{200 - float(p):.2f}"), s) for p, s in levels])
    depth = sum(sum(s for _, s in q.asks or q.bids) for q in quotes.values())
    qty = (depth * D(str(round(rng.uniform(0.3, 0.7), 3)))).quantize(D("0.01"))
    return make_intent(qty, side=side), venues, quotes


def instances(n: int, seed: int = 11):
    rng = random.Random(seed)
    return [adversarial_market(rng, "buy" if i % 2 == 0 else "sell") for i in range(n)]


def main() -> None:
    from worker.routing.planner import route

    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=400)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    not_optimal = 0
    t0 = time.perf_counter()
    for intent, venues, quotes in instances(args.instances, args.seed):
        if not route(intent, quotes, venues).optimal:
            not_optimal += 1
    print(f"optimal: false on {not_optimal} of {args.instances} adversarial instances ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
