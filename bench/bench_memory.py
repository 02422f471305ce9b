"""Memory benchmark: what the worker holds per quote, per intent it remembers, per plan.

    .venv/bin/python bench/bench_memory.py

Measured with tracemalloc (Python allocations), so the figures are stable across runs.
"""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.scenarios import make_intent, random_market  # noqa: E402
from worker.execution.executor import Executor  # noqa: E402
from tests.support.fakes import MemoryJournal  # noqa: E402
from worker.execution.risk import RiskLimits  # noqa: E402
from worker.service.quotes import QuoteCache  # noqa: E402
from worker.service.intents import IntentService  # noqa: E402
from worker.pipeline.worker import DONE, JournalIndex  # noqa: E402
from worker.venues.paper import PaperVenue  # noqa: E402


def measure(build):
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    keep = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, keep


def main() -> None:
    rng = random.Random(3)
    venues, quotes = random_market(rng, 10, 50)

    def cache():
        c = QuoteCache()
        for i in range(100):  # 100 symbols x 10 venues x 50 levels per side (asks here)
            for q in quotes.values():
                c.update(type(q).model_validate_json(q.model_copy(update={"symbol": f"S{i}/USD"}).model_dump_json()))
        return c

    cache_bytes, _ = measure(cache)

    quote_cache = QuoteCache()
    for q in quotes.values():
        quote_cache.update(q.model_copy(update={"symbol": "BTC/USD"}))
    adapters = {v.name: PaperVenue(v, lambda s, n=v.name: quote_cache.get(n, s)) for v in venues}
    journal = MemoryJournal()
    service = IntentService(venues, quote_cache, Executor(adapters, 1000), RiskLimits(), 10**9, journal=journal)
    entries = []
    for n in range(200):
        asyncio.run(service.handle(make_intent(Decimal("0.3"), intent_id=f"m-{n}", limit=None), 0))
        entries.append(journal.records[-1])
        journal.records.clear()

    def full_index():
        idx = JournalIndex(10**6)
        for n in range(20_000):
            e = entries[n % len(entries)]
            idx.put(f"intent-{n:08d}", 0, n, type(e).model_validate_json(e.model_dump_json()))
        return idx

    def marker_index():
        idx = JournalIndex(10**6)
        for n in range(100_000):
            idx.put(f"intent-{n:08d}", 0, n, DONE)
        return idx

    full_bytes, _ = measure(full_index)
    marker_bytes, _ = measure(marker_index)
    print("## Memory (tracemalloc)\n")
    print("| what | bytes |\n|---|---:|")
    print(f"| quote cache: one 10-venue x 50-level book side, per symbol | {cache_bytes / 100:,.0f} |")
    print(f"| journal index: a full completed entry (in flight or awaiting republish) | {full_bytes / 20_000:,.0f} |")
    print(f"| journal index: a done marker (the default capacity is 1,000,000) | {marker_bytes / 100_000:,.0f} |")
    print(f"| at SOR_DEDUPE_CAPACITY=1,000,000 done markers | {marker_bytes / 100_000 * 1e6 / 2**20:,.0f} MiB |")


if __name__ == "__main__":
    main()
