"""``sor replay``: re-read a topic range, for ops.

* ``what-if``: route the intents of a range with every algorithm against the books as they
  were at each intent's time (rebuilt from the quotes topic), and compare. **It cannot place
  an order**: this module imports the pure routing core only, never an adapter or the
  executor (``tests/unit/test_replay_is_pure.py`` keeps it that way).
* ``republish``: copy outcome records of a range to a target topic, keys, headers and
  timestamps preserved, for a downstream consumer that lost data.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Collection, Iterable, Mapping

from aiokafka import TopicPartition

from worker.domain.numbers import ascii_digits
from worker.config import Settings
from worker.pipeline.clients import KafkaClients
from worker.domain.errors import InputError
from worker.domain.ids import by_name
from worker.domain.models import Algorithm, RoutePlan, VenueConfig, VenueQuote
from worker.pipeline.codec import encode
from worker.pipeline.intake import decode_intent, decode_quote
from worker.routing.allocators import DEFAULT_NODE_LIMIT
from worker.routing.planner import route


@dataclass(frozen=True)
class Range:
    """Partitions plus an offset or timestamp window (start inclusive, end exclusive)."""

    partitions: list[int] | None = None
    from_offset: int | None = None
    to_offset: int | None = None
    from_time: int | None = None
    to_time: int | None = None


def parse_time(text: str | None) -> int | None:
    """Epoch milliseconds, or an ISO 8601 time (``2026-11-21T10:00:00Z``)."""
    if text is None:
        return None
    if ascii_digits(text):
        return int(text)
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        raise InputError(f"--from-time/--to-time: {text!r} is neither epoch ms nor ISO 8601") from None


class _Progress:
    def __init__(self, total: int, label: str, stream=sys.stderr):
        self.total, self.label, self.stream, self.done, self._last = max(total, 1), label, stream, 0, 0.0

    def step(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self._last > 0.2 or self.done >= self.total:
            self._last = time.monotonic()
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")


def _offset_at(found, end: int) -> int:
    """The offset ``offsets_for_times`` found, or ``end`` when no record is that late: Kafka
    answers ``None`` then, Tansu an offset with timestamp -1."""
    return found.offset if found is not None and found.timestamp >= 0 else end


async def read_range(settings: Settings, topic: str, rng: Range, progress_label: str | None = None) -> list:
    """Every record of ``topic`` in the range, in (partition, offset) order."""
    consumer = KafkaClients(settings).consumer(role="replay")
    await consumer.start()
    try:
        await consumer.topics()
        available = consumer.partitions_for_topic(topic)
        if not available:
            raise InputError(f"--topic: {topic} does not exist")
        parts = sorted(available) if rng.partitions is None else rng.partitions
        unknown = set(parts) - set(available)
        if unknown:
            raise InputError(f"--partition: {sorted(unknown)} not in {topic} (has {sorted(available)})")
        tps = [TopicPartition(topic, p) for p in parts]
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        start = dict(begin)
        stop = dict(end)
        if rng.from_time is not None:
            found = await consumer.offsets_for_times({tp: rng.from_time for tp in tps})
            start = {tp: _offset_at(found[tp], end[tp]) for tp in tps}
        if rng.to_time is not None:
            found = await consumer.offsets_for_times({tp: rng.to_time for tp in tps})
            stop = {tp: _offset_at(found[tp], end[tp]) for tp in tps}
        if rng.from_offset is not None:
            start = {tp: max(begin[tp], rng.from_offset) for tp in tps}
        if rng.to_offset is not None:
            stop = {tp: min(end[tp], rng.to_offset) for tp in tps}
        wanted = {tp: (start[tp], stop[tp]) for tp in tps if start[tp] < stop[tp]}
        progress = _Progress(sum(b - a for a, b in wanted.values()), progress_label) if progress_label else None
        consumer.assign(list(wanted))
        for tp, (a, _) in wanted.items():
            consumer.seek(tp, a)
        out = []
        while wanted:
            batch = await consumer.getmany(*wanted.keys(), timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                if tp not in wanted:
                    continue
                taken = [r for r in records if r.offset < wanted[tp][1]]
                out.extend(taken)
                if progress:
                    progress.step(len(taken))
                if (records and records[-1].offset + 1 >= wanted[tp][1]) or len(taken) < len(records):
                    del wanted[tp]
                    consumer.pause(tp)
        if progress:
            progress.close()
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


@dataclass
class WhatIfSummary:
    intents: int = 0
    invalid: int = 0
    plans: dict[str, int] = field(default_factory=dict)
    vs_sor_bps: dict[str, list[float]] = field(default_factory=dict)
    savings_bps: dict[str, list[float]] = field(default_factory=dict)
    unfilled: dict[str, Decimal] = field(default_factory=dict)

    def table(self) -> str:
        lines = [f"intents replayed: {self.intents} (undecodable, skipped: {self.invalid})", "",
                 "| algorithm | plans | mean cost vs sor (bps) | mean savings vs single venue (bps) | unfilled qty |",
                 "|---|---:|---:|---:|---:|"]
        for alg in self.plans:
            vs = self.vs_sor_bps.get(alg) or []
            sv = self.savings_bps.get(alg) or []
            # "–": nothing to average (no intent where it planned what sor did), never a 0.
            lines.append(f"| {alg} | {self.plans[alg]} | {f'{statistics.fmean(vs):.4f}' if vs else '–'} | "
                         f"{f'{statistics.fmean(sv):.4f}' if sv else '–'} | {self.unfilled.get(alg, Decimal(0))} |")
        lines.append("")
        lines.append("cost vs sor: extra fee-inclusive cost per unit against sor on intents where both filled the same quantity.")
        return "\n".join(lines)


def _books_timeline(quotes: Iterable, max_skew_ms: int | None) -> list[tuple[int, VenueQuote]]:
    """The snapshots by record time, without those the worker refused: undecodable ones, and
    those dated further ahead of their record than the clock skew allowed (they would shadow
    every real snapshot after them)."""
    timeline = []
    for rec in quotes:
        try:
            quote = decode_quote(rec)
        except InputError:
            continue
        if max_skew_ms is not None and rec.timestamp >= 0 and quote.ts - rec.timestamp > max_skew_ms:  # -1: no timestamp
            continue
        timeline.append((rec.timestamp, quote))
    return sorted(timeline, key=lambda x: x[0])


def what_if(intent_records: list, quote_records: list, venues: list[VenueConfig], algorithms: list[Algorithm],
            max_quote_age_ms: int | None, node_limit: int = DEFAULT_NODE_LIMIT,
            max_clock_skew_ms: int | None = 5_000,
            account_venues: Mapping[str, Collection[str]] | None = None) -> tuple[list[RoutePlan], WhatIfSummary]:
    """Route every intent with every algorithm against the books of its time, as the worker
    would have: what its intake accepts, each intent id once, held to its account's venues."""
    summary = WhatIfSummary()
    timeline = _books_timeline(quote_records, max_clock_skew_ms)
    books: dict[str, dict[str, VenueQuote]] = {}
    qi = 0
    plans_out: list[RoutePlan] = []
    seen: set[str] = set()  # the worker executes an intent id once; a resend is a duplicate
    allow = account_venues or {}
    for rec in sorted(intent_records, key=lambda r: (r.timestamp, r.partition, r.offset)):
        while qi < len(timeline) and timeline[qi][0] <= rec.timestamp:
            q = timeline[qi][1]
            current = books.setdefault(q.symbol, {}).get(q.venue)
            if q.replaces(current):
                books[q.symbol][q.venue] = q
            qi += 1
        try:
            intent = decode_intent(rec)  # what the worker accepts: the key too (it dead-letters the rest)
        except InputError:
            summary.invalid += 1
            continue
        if intent.intent_id in seen:
            continue
        seen.add(intent.intent_id)
        intent = intent.within(by_name(allow, intent.account_id))
        summary.intents += 1
        per_alg = {}
        for alg in algorithms:
            plan = route(intent, books.get(intent.symbol, {}), venues, now_ms=rec.timestamp if max_quote_age_ms else None,
                         max_quote_age_ms=max_quote_age_ms, algorithm=alg, node_limit=node_limit)
            per_alg[alg.value] = plan
            plans_out.append(plan)
            summary.plans[alg.value] = summary.plans.get(alg.value, 0) + 1
            summary.unfilled[alg.value] = summary.unfilled.get(alg.value, Decimal(0)) + plan.unfilled_qty
            if plan.savings_vs_single_venue is not None:
                summary.savings_bps.setdefault(alg.value, []).append(float(plan.savings_vs_single_venue))
        base = per_alg.get("sor")
        if base is not None and base.estimated_net:
            for alg, plan in per_alg.items():
                if plan.estimated_net and plan.planned_qty == base.planned_qty:
                    extra = (plan.estimated_net - base.estimated_net) / base.estimated_net * 10_000 * intent.side.sign
                    summary.vs_sor_bps.setdefault(alg, []).append(float(extra))
    return plans_out, summary


async def run_what_if(settings: Settings, venues: list[VenueConfig], rng: Range, algorithms: list[Algorithm],
                      out: Path | None, to_topic: str | None, stream=sys.stdout) -> WhatIfSummary:
    intents = await read_range(settings, settings.topics.intents, rng, "intents")
    end_time = max((r.timestamp for r in intents), default=0)
    quotes = await read_range(settings, settings.topics.quotes, Range(to_time=end_time + 1), "quotes ")
    plans, summary = what_if(intents, quotes, venues, algorithms, settings.max_quote_age_ms,
                             settings.routing_node_limit, max_clock_skew_ms=settings.max_clock_skew_ms,
                             account_venues=settings.account_venues)
    if out is not None:
        with out.open("wb") as fh:
            for plan in plans:
                fh.write(encode(plan) + b"\n")
    if to_topic:
        producer = await KafkaClients(settings).producer(role="replay")
        try:
            for plan in plans:
                await producer.send(to_topic, encode(plan), key=plan.intent_id.encode(), headers=[("sor.replay.algorithm", plan.algorithm.value.encode())])
            await producer.flush()
        finally:
            await producer.stop()
    stream.write(summary.table() + "\n")
    return summary


async def run_republish(settings: Settings, topic: str, rng: Range, to_topic: str, stream=sys.stdout) -> int:
    """Copy a range to ``to_topic``: same key, value, headers and timestamp, in order."""
    records = await read_range(settings, topic, rng, "records")
    producer = await KafkaClients(settings).producer(role="replay")
    try:
        for rec in records:
            await producer.send(to_topic, rec.value, key=rec.key, headers=list(rec.headers or ()), timestamp_ms=rec.timestamp)
        await producer.flush()
    finally:
        await producer.stop()
    by_part: dict[int, list[int]] = {}
    for rec in records:
        by_part.setdefault(rec.partition, []).append(rec.offset)
    stream.write(f"republished {len(records)} records from {topic} to {to_topic}\n")
    for p, offs in sorted(by_part.items()):
        stream.write(f"  partition {p}: offsets {offs[0]}..{offs[-1]} ({len(offs)})\n")
    return len(records)

