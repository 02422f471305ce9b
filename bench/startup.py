"""Start-up time with history in the topics: 500,000 quote records and 100,000 journal
records already there (embedded broker), then a worker starts in process.

    .venv/bin/python bench/startup.py                 # as it is now
    .venv/bin/python bench/startup.py --mode before   # read every quote; full journal entries

Reports, in one run: time until ready (the quote cache caught up), time of the journal
recovery on assignment, records read, and the RSS growth over the start-up.

``--mode after`` fills the journal with what it holds once finished intents are compacted
(a done marker per intent: the embedded broker does not compact, so the bench writes the
compacted state directly); ``--mode before`` with the full completed entry per intent, as
the journal held before, and reads the quotes from the beginning.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

from bench.common import rss_mib  # noqa: E402
from tests.support.fakes import MemoryJournal  # noqa: E402
from tests.support.scenarios import make_intent, random_market  # noqa: E402
from worker import logging as sor_logging  # noqa: E402
from worker.bootstrap import build  # noqa: E402
from worker.broker import EmbeddedBroker  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.domain.clock import now_ms  # noqa: E402
from worker.execution.executor import Executor  # noqa: E402
from worker.execution.risk import RiskLimits  # noqa: E402
from worker.pipeline.codec import encode  # noqa: E402
from worker.pipeline.kafka import ensure_topics  # noqa: E402
from worker.service.dedupe import DoneMarker  # noqa: E402
from worker.service.intents import IntentService, Source  # noqa: E402
from worker.service.quotes import QuoteCache  # noqa: E402
from worker.venues.paper import PaperVenue  # noqa: E402

D = Decimal
PARTITIONS = 3


async def completed_entry(venues, quotes):
    """A real completed journal entry of a 3-venue intent (the template of the history)."""
    cache = QuoteCache()
    for q in quotes.values():
        cache.update(q)
    adapters = {v.name: PaperVenue(v, lambda s, n=v.name: cache.get(n, s)) for v in venues}
    journal = MemoryJournal()
    service = IntentService(venues, cache, Executor(adapters, 1_000), RiskLimits(), 10**9, clock=lambda: 1_000, journal=journal)
    await service.handle(make_intent(D("2"), intent_id="template"), 1_000, Source(0, 0))
    return journal.records[-1]


async def fill(bootstrap: str, settings: Settings, n_quotes: int, n_journal: int, mode: str, venues, quotes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=512 * 1024,
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    t = settings.topics
    try:
        names = [v.name for v in venues]
        rng = random.Random(1)
        pending = []
        base = now_ms() - 1_000
        for i in range(n_quotes):
            q = quotes[names[i % len(names)]]
            doc = {"venue": q.venue, "symbol": f"S{i % 20}/USD", "ts": base - (n_quotes - i) // 10,
                   "asks": [[str(p), str(s)] for p, s in q.asks[:5]], "bids": [["41990", str(rng.randrange(1, 9))]]}
            pending.append(await producer.send(t.quotes, orjson.dumps(doc), key=f"{doc['venue']}:{doc['symbol']}".encode()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        template = await completed_entry(venues, quotes)
        for i in range(n_journal):
            iid = f"hist-{i:07d}"
            p, off = i % PARTITIONS, i // PARTITIONS
            if mode == "before":
                value = encode(template.model_copy(update={"intent_id": iid, "source_partition": p, "source_offset": off}))
            else:
                value = encode(DoneMarker(intent_id=iid, source_partition=p, source_offset=off, done_ms=now_ms()))
            pending.append(await producer.send(t.journal, value, key=iid.encode(), partition=p))
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def start_worker(settings: Settings, venues) -> dict:
    app = build(settings, venues)
    stop = asyncio.Event()
    marks: dict = {"rss_before": rss_mib()}
    original = app.worker.on_assigned

    async def on_assigned(assigned):
        t0 = time.monotonic()
        await original(assigned)
        if not assigned:  # the group's first, empty, generation
            return
        marks["journal_s"] = time.monotonic() - t0
        marks["index"] = len(app.worker.index)
        marks["rss_after_journal"] = rss_mib()

    app.worker.on_assigned = on_assigned
    t0 = time.monotonic()
    task = asyncio.create_task(app.run(stop))
    await app.ready.wait()
    marks["ready_s"] = time.monotonic() - t0
    marks["quote_records"] = app.feed.read_at_start
    marks["books"] = len(app.quotes)
    while "journal_s" not in marks:
        await asyncio.sleep(0.05)
    stop.set()
    await task
    return marks


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quotes", type=int, default=500_000)
    ap.add_argument("--journal", type=int, default=100_000)
    ap.add_argument("--mode", choices=["after", "before"], default="after")
    args = ap.parse_args()
    sor_logging.configure("console", "warning")
    venues, quotes = random_market(random.Random(3), 3, 10)
    with EmbeddedBroker() as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap, topic_partitions=PARTITIONS, max_quote_age_ms=600_000,
                            **({"quote_lookback_records": 10**9} if args.mode == "before" else {}))
        asyncio.run(ensure_topics(settings))
        t0 = time.monotonic()
        asyncio.run(fill(broker.bootstrap, settings, args.quotes, args.journal, args.mode, venues, quotes))
        filled_s = time.monotonic() - t0
        marks = asyncio.run(start_worker(settings, venues))
    print(f"## Start-up with history ({args.mode}): {args.quotes:,} quote records, {args.journal:,} journal records "
          f"(filled in {filled_s:.0f} s)\n")
    print("| ready (quotes caught up) | quote records read | journal recovery | books | dedupe index | RSS growth |\n"
          "|---:|---:|---:|---:|---:|---:|")
    print(f"| {marks['ready_s']:.1f} s | {marks['quote_records']:,} | {marks['journal_s']:.1f} s | {marks['books']} | {marks['index']:,} | "
          f"{marks['rss_after_journal'] - marks['rss_before']:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
