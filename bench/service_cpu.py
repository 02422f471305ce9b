"""CPU and bytes per intent of the worker's own code, in process, without Kafka.

    .venv/bin/python bench/service_cpu.py 2000             # µs per intent, journal and outcome bytes; µs per quote
    .venv/bin/python bench/service_cpu.py 2000 --profile   # and the top of cProfile
    .venv/bin/python bench/service_cpu.py 2000 --no-reserve  # plans see the books without this worker's reservations

Decode -> ``IntentService.handle`` (routing, paper venues, journal records encoded as ``KafkaJournal``
encodes them) -> the outcome encoded as ``IntentWorker.publish`` does. The intents and books are
``bench/throughput.py``'s (seeded, so two runs see the same plans): the journal bytes of two versions of the
code compare exactly, which the Kafka benchmark cannot do (its re-route rounds depend on timing).
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from throughput import SYMBOLS, VENUES_FILE, market_intent  # noqa: E402
from worker.config import load_venues  # noqa: E402
from worker.domain.models import Side, VenueQuote  # noqa: E402
from worker.execution.executor import Executor  # noqa: E402
from worker.execution.risk import RiskLimits  # noqa: E402
from worker.logging import configure  # noqa: E402
from worker.pipeline.codec import decode, encode, encode_within  # noqa: E402
from worker.pipeline.intake import decode_intent  # noqa: E402
from worker.service.intents import IntentService, Source  # noqa: E402
from worker.routing.book import forget_prepared_books  # noqa: E402
from worker.routing.ranking import venue_route  # noqa: E402
from worker.service.quotes import QuoteCache  # noqa: E402
from worker.sim.market import MarketSimulator  # noqa: E402
from worker.venues.paper import PaperVenue  # noqa: E402


try:  # also runs on older code (before the journal's own encoder), to compare bytes per intent
    from worker.pipeline.codec import EncodedCache
    from worker.pipeline.kafka import encode_entry
except ImportError:
    class EncodedCache:  # type: ignore[no-redef]
        encode = staticmethod(encode)

    def encode_entry(entry, cache) -> bytes:  # type: ignore[misc]
        return encode(entry)


#: The timestamp the pre-built snapshots carry until they are cached (then: the time of the update).
_TS_MARK = 999_999_999_999
_TS_MARK_BYTES = str(_TS_MARK).encode()


class _Record:
    def __init__(self, key: bytes, value: bytes):
        self.key, self.value, self.timestamp = key, value, 0


class _EncodingJournal:
    def __init__(self, cache: EncodedCache):
        self.cache, self.records, self.bytes = cache, 0, 0

    async def write(self, entry) -> None:
        self.records += 1
        self.bytes += len(encode_entry(entry, self.cache))


def quote_path(venues, refreshes: list[list[bytes]]) -> str:
    """CPU per snapshot of what the quote feed does with each: decode (validate every level), then
    prepare both sides for routing (``worker.bootstrap.prewarm``, which imports the whole worker:
    its import alone made every intent here slower). Every worker reads every quote, so this cost does
    not divide among instances: it bounds the snapshots per second of a deployment."""
    raw = [record for batch in refreshes for record in batch]
    by_name = {v.name: v for v in venues}
    forget_prepared_books()
    started = time.process_time()
    quotes = [decode(VenueQuote, record) for record in raw]
    decoded = time.process_time()
    for quote in quotes:
        for side in Side:
            venue_route(side, by_name[quote.venue], quote)
    prepared = time.process_time()
    forget_prepared_books()
    levels = sum(len(q.bids) + len(q.asks) for q in quotes) / len(quotes)
    return (f"quote path: decode {(decoded - started) / len(raw) * 1e6:.0f} us + prepare {(prepared - decoded) / len(raw) * 1e6:.0f} us "
            f"of CPU per snapshot ({levels:.0f} levels, {sum(map(len, raw)) / len(raw):.0f} bytes)")


async def run(n: int) -> None:
    configure("json", "info", open("/dev/null", "w"))  # the worker logs JSON lines; their cost counts
    venues = load_venues(VENUES_FILE)
    quotes = QuoteCache({v.name for v in venues}, max_levels=1_000)
    sims = [MarketSimulator(venues, s, m, seed=i) for i, (s, m) in enumerate(SYMBOLS.items())]
    refreshes = []  # pre-built: the simulator's cost is not the worker's
    for _ in range(80):
        batch = []
        for sim in sims:
            sim.step()
            batch += [encode(sim.snapshot(v, _TS_MARK)) for v in venues]
        refreshes.append(batch)
    cache = EncodedCache()
    journal = _EncodingJournal(cache)
    adapters = {v.name: PaperVenue(v, lambda symbol, name=v.name: quotes.get(name, symbol)) for v in venues}
    # As the worker runs by default (SOR_RESERVE_OWN_LIQUIDITY): each plan sees the books less what
    # the plans before it took, until a newer snapshot releases it.
    reserve = "--no-reserve" not in sys.argv
    service = IntentService(venues, quotes, Executor(adapters, 2_000), RiskLimits(), 60_000, journal=journal,
                            reserve_own_liquidity=reserve)
    rng = random.Random(12)
    out_bytes = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(n):
        if i % 50 == 0:  # ~ the bench's 20 books per 200 ms at 250 intents/s
            # Stamped now, as a venue stamps its snapshots: newer than the legs acknowledged
            # before it, so it releases their reservations, as in the worker.
            stamp = str(time.time_ns() // 1_000_000).encode()
            for raw in refreshes[(i // 50) % len(refreshes)]:
                quotes.update(decode(VenueQuote, raw.replace(_TS_MARK_BYTES, stamp)))
        key, value = market_intent("cpu", i, rng)
        outcome = await service.handle(decode_intent(_Record(key, value)), time.time_ns() // 1_000_000, Source(0, i))
        out_bytes += sum(len(cache.encode(p)) for p in outcome.plans) + sum(len(encode(f)) for f in outcome.fills)
        out_bytes += len(encode_within(outcome.result, 1_048_576)) if outcome.result is not None else 0
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(quote_path(venues, refreshes))  # after the intents: its garbage must not weigh on them
    # CPU time: on a shared machine it does not count the time other processes had the core.
    print(f"{n} intents: {cpu / n * 1e6:.0f} us CPU per intent ({elapsed / n * 1e6:.0f} us wall); journal {journal.bytes / n:.0f} bytes per intent "
          f"({journal.records / n:.2f} records, done markers excluded); outcome topics {out_bytes / n:.0f} bytes per intent")


def main() -> int:
    n = int(next((a for a in sys.argv[1:] if a.isdigit()), "2000"))
    if "--profile" in sys.argv:
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(run(n))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    else:
        asyncio.run(run(n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
