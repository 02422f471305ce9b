"""RSS over a long run: 200,000 intents and 100,000 snapshots through the intent service,
the quote cache and paper venues, in process (no Kafka), with hostile snapshots mixed in.

    .venv/bin/python bench/bench_flat_memory.py            # the bounded cache (SOR_* defaults)
    .venv/bin/python bench/bench_flat_memory.py --unbounded # the cache as it was: any venue, any depth, any date

Prints RSS at checkpoints and the ratio of the last to the first checkpoint after warm-up
(both measured in this one run). A tenth of the snapshots come from venues that are not
configured, each under a new name and symbol, and a twentieth are dated a day ahead.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import rss_mib  # noqa: E402
from tests.support.scenarios import make_intent  # noqa: E402
from worker import logging as sor_logging  # noqa: E402
from worker.bootstrap import prewarm  # noqa: E402
from worker.domain.clock import now_ms  # noqa: E402
from worker.domain.errors import InputError  # noqa: E402
from worker.domain.models import VenueConfig, VenueQuote  # noqa: E402
from worker.execution.executor import Executor  # noqa: E402
from worker.execution.journal import NullJournal  # noqa: E402
from worker.execution.risk import RiskLimits  # noqa: E402
from worker.service.dedupe import JournalIndex  # noqa: E402
from worker.service.intents import IntentService  # noqa: E402
from worker.service.quotes import QuoteCache  # noqa: E402
from worker.venues.paper import PaperVenue  # noqa: E402

D = Decimal
DAY = 86_400_000


def snapshot(rng: random.Random, venue: str, symbol: str, ts: int, levels: int) -> VenueQuote:
    mid = 42_000 + rng.randrange(-20, 20)
    asks = [(D(mid + 1 + i), D(rng.randrange(1, 50)) / 10) for i in range(levels)]
    bids = [(D(mid - 1 - i), D(rng.randrange(1, 50)) / 10) for i in range(levels)]
    return VenueQuote.model_construct(venue=venue, symbol=symbol, ts=ts, asks=asks, bids=bids)


async def run(intents: int, snapshots: int, unbounded: bool, levels: int, checkpoints: int) -> list[tuple[int, int, float]]:
    rng = random.Random(5)
    venues = [VenueConfig(name=f"v{i}", taker_fee_bps=D(i + 1), step_size=D("0.0001")) for i in range(3)]
    by_name = {v.name: v for v in venues}
    if unbounded:
        cache = QuoteCache()
    else:
        cache = QuoteCache(set(by_name), max_levels=1_000, max_skew_ms=5_000)
    adapters = {v.name: PaperVenue(v, lambda s, n=v.name: cache.get(n, s)) for v in venues}
    service = IntentService(venues, cache, Executor(adapters, 1_000), RiskLimits(), 10**9, journal=NullJournal())
    index = JournalIndex(50_000)  # the worker's dedupe index, at a bench-sized capacity
    per_intent = snapshots / intents
    owed = 0.0
    out = []
    step = intents // checkpoints
    for n in range(intents):
        owed += per_intent
        while owed >= 1:
            owed -= 1
            roll = rng.random()
            name, symbol, ts = rng.choice(venues).name, "BTC/USD", now_ms()
            if roll < 0.10:  # an unconfigured venue, a new pair each time
                name, symbol = f"evil{n}-{rng.random()}", f"E{n}/USD"
            elif roll < 0.15:  # dated a day ahead
                ts += DAY
            quote = snapshot(rng, name, symbol, ts, levels)
            try:
                if cache.update(quote):
                    prewarm(by_name, quote)
            except InputError:
                pass
        intent = make_intent(D("0.01"), intent_id=f"i-{n}")
        index.claim(intent.intent_id, 0, n)
        await service.handle(intent, now_ms())
        index.done(intent.intent_id)
        index.finished_below(0, n + 1)
        if (n + 1) % step == 0:
            gc.collect()
            out.append((n + 1, round((n + 1) * per_intent), rss_mib()))
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--intents", type=int, default=200_000)
    ap.add_argument("--snapshots", type=int, default=100_000)
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--checkpoints", type=int, default=10)
    ap.add_argument("--unbounded", action="store_true", help="the quote cache as it was before issue 11")
    args = ap.parse_args()
    sor_logging.configure("console", "warning")
    started = time.monotonic()
    points = asyncio.run(run(args.intents, args.snapshots, args.unbounded, args.levels, args.checkpoints))
    print(f"## RSS over a long run ({'unbounded cache' if args.unbounded else 'bounded cache'})\n")
    print("| intents | snapshots | RSS MiB |\n|---:|---:|---:|")
    for n, s, rss in points:
        print(f"| {n:,} | {s:,} | {rss:.1f} |")
    warm = points[1]  # after the first tenth: allocator pools, caches and the dedupe index are warm
    ratio = points[-1][2] / warm[2]
    print(f"\nlast / after-warm-up RSS: {ratio:.3f} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
