"""aiokafka plumbing: topic creation, the producer, the quote feed and the DLQ."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Awaitable, Callable

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from worker.config import Settings
from worker.pipeline.clients import KafkaClients, Producer  # noqa: F401  (Producer: the one process-wide producer)
from worker.domain.errors import InputError
from worker.domain.models import VenueQuote
from worker.pipeline.codec import EncodedCache, encode
from worker.pipeline.intake import decode_quote
from worker.execution.journal import JOURNAL_FORMAT, JournalEntry
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the cache is handed in; the Kafka layer never needs the service at run time
    from worker.service.quotes import QuoteCache

log = structlog.get_logger("sor.kafka")


async def ensure_topics(settings: Settings, names: list[str] | None = None, compacted: tuple[str, ...] = ()) -> None:
    """Create the topics that do not exist yet (all of ``settings.topics`` by default).

    The journal is co-partitioned with the intents topic: it gets the intents topic's
    partition count, whatever ``topic_partitions`` says.
    """
    topics = settings.topics
    names = names or [topics.intents, topics.quotes, topics.plans, topics.executions, topics.fills, topics.dlq, topics.journal]
    # The journal (latest state per intent) and the quotes (latest snapshot per book) are
    # both read as "latest value per key": compaction keeps them from growing with history.
    compacted = compacted or (topics.journal, topics.quotes)
    admin = KafkaClients(settings).admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
        if topics.journal in names and {topics.journal, topics.intents} <= existing:
            await _check_co_partitioned(admin, topics.intents, topics.journal)
        if not missing:
            return
        partitions = {n: settings.topic_partitions for n in missing}
        if topics.journal in missing and topics.intents in existing:
            described = await admin.describe_topics([topics.intents])
            partitions[topics.journal] = len(described[0]["partitions"])
        await admin.create_topics([
            NewTopic(n, partitions[n], settings.topic_replication,
                     topic_configs={"cleanup.policy": "compact"} if n in compacted else {})
            for n in missing
        ])
        log.info("topics_created", topics=missing, partitions=partitions)
    finally:
        await admin.close()


async def _check_co_partitioned(admin, intents: str, journal: str) -> None:
    """Recovery reads journal partition p for intents partition p: a journal with fewer
    partitions than the intents topic would leave intents unrecoverable (and used to stall
    start-up on an offsets request for a partition that does not exist)."""
    described = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics([intents, journal])}
    if described.get(journal, 0) < described.get(intents, 0):
        raise InputError(f"topics.journal: {journal} has {described.get(journal)} partitions but {intents} has "
                         f"{described.get(intents)}; the journal must have at least as many (co-partitioned)")


async def assign_all(consumer: AIOKafkaConsumer, *topics: str, wait_s: float = 5.0) -> list[TopicPartition]:
    """Assign every partition of ``topics`` to ``consumer`` (no group); waits up to ``wait_s``
    for the metadata of a topic created just now."""
    tps: list[TopicPartition] = []
    for topic in topics:
        partitions = consumer.partitions_for_topic(topic)
        for _ in range(int(wait_s / 0.1)):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await consumer.topics()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise KafkaError(f"topic {topic} has no partitions")
        tps += [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    return tps


async def drop_reached(consumer: AIOKafkaConsumer, targets: dict) -> None:
    """Forget the partitions whose position reached their target offset."""
    for tp in list(targets):
        if await consumer.position(tp) >= targets[tp]:
            del targets[tp]


async def read_partitions(settings: Settings, topic: str, partitions: list[int], model, clients: KafkaClients | None = None) -> dict:
    """The latest value per key of some partitions of a topic, read from the start to the
    end offsets seen now (a compacted topic's view)."""
    # ``model``: a pydantic model, or a TypeAdapter (a union of record kinds).
    parse = getattr(model, "model_validate_json", None) or model.validate_json
    consumer = (clients or KafkaClients(settings)).consumer(role="recovery")
    await consumer.start()
    latest: dict = {}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = {tp: off for tp, off in (await consumer.end_offsets(tps)).items() if off > 0}
        while ends:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                for rec in records:
                    if rec.value is None:
                        latest.pop(rec.key, None)
                        continue
                    try:
                        latest[rec.key] = parse(rec.value)
                    except (ValueError, TypeError) as exc:  # pydantic and the exact-number fallback
                        log.error("journal_record_unreadable", partition=rec.partition, offset=rec.offset, error=str(exc)[:500])
            await drop_reached(consumer, ends)
    finally:
        await consumer.stop()
    return latest


#: The fields :func:`encode_entry` writes; a unit test keeps it equal to the models', so a
#: field added to the journal models is never silently left out of the records.
JOURNAL_ENTRY_FIELDS = ("intent_id", "state", "intent", "received_ms", "source_partition", "source_offset", "rounds",
                        "result", "amendments", "latency_ms")
JOURNAL_ROUND_FIELDS = ("plan", "legs", "journaled_ms")
_LEG = {"leg"}


def encode_entry(entry: JournalEntry, cache: EncodedCache) -> bytes:
    """A journal record: the JSON of ``entry``, with its intent and plans encoded once
    (``cache``) and each round's legs without the planned leg they repeat (``plan.legs[i]``;
    :class:`~worker.execution.journal.JournalRound` puts it back when it reads the record)."""
    rounds = []
    for rnd in entry.rounds:
        legs = []
        for i, jl in enumerate(rnd.legs):
            # The very planned leg, or one that encodes the same: equal values may be written
            # differently (0.500 == 0.50000000), and the reader puts back the plan's own.
            planned = i < len(rnd.plan.legs) and (jl.leg is rnd.plan.legs[i] or encode(jl.leg) == encode(rnd.plan.legs[i]))
            legs.append(orjson.Fragment(jl.__pydantic_serializer__.to_json(jl, exclude=_LEG) if planned else encode(jl)))
        rounds.append({"plan": orjson.Fragment(cache.encode(rnd.plan)), "legs": legs, "journaled_ms": rnd.journaled_ms})
    return orjson.dumps({
        "format": JOURNAL_FORMAT, "intent_id": entry.intent_id, "state": entry.state.value, "intent": orjson.Fragment(cache.encode(entry.intent)),
        "received_ms": entry.received_ms, "source_partition": entry.source_partition, "source_offset": entry.source_offset,
        "rounds": rounds, "result": orjson.Fragment(encode(entry.result)) if entry.result is not None else None,
        "amendments": [orjson.Fragment(encode(a)) for a in entry.amendments], "latency_ms": entry.latency_ms,
    })


class RecordTooLarge(KafkaError):
    """A record over ``SOR_MAX_REQUEST_BYTES``: refused here with its size, before the broker."""


class KafkaJournal:
    """The journal on Kafka: each record goes to the intent's own partition number and is
    acknowledged (acks=all) before ``write`` returns."""

    def __init__(self, producer: Producer, topic: str, on_write: Callable[..., None] = lambda entry: None,
                 max_bytes: int | None = None, cache: EncodedCache | None = None):
        self.producer = producer
        self.topic = topic
        self.on_write = on_write
        self.max_bytes = max_bytes
        self.cache = cache if cache is not None else EncodedCache()  # shared with the outcome publisher

    async def write(self, entry) -> None:
        value = encode_entry(entry, self.cache)
        if self.max_bytes is not None and len(value) > self.max_bytes:
            # Never silently dropped: the intent stays in flight (retried, not ready, alerted).
            raise RecordTooLarge(f"journal record of {entry.intent_id} is {len(value)} bytes, over SOR_MAX_REQUEST_BYTES={self.max_bytes}")
        await self.producer.send_and_wait(self.topic, value, key=entry.intent_id.encode(), partition=entry.source_partition)
        self.on_write(entry)


def dlq_record(source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, error: str,
               max_value_bytes: int = 16_384, max_error_chars: int = 1_000) -> bytes:
    """The DLQ envelope: where the record came from, the readable error, and the original
    bytes (base64, and as text when they are UTF-8): whole when small, else a prefix of
    ``max_value_bytes`` plus the size and sha256 of the whole, so that an oversize input
    never makes a DLQ record the producer refuses."""
    from worker.domain.models import DeadLetter
    from worker.pipeline.codec import encode

    prefix = text = None
    if value is not None:
        prefix = value[:max_value_bytes]
        try:
            text = prefix.decode()
        except UnicodeDecodeError:  # not UTF-8, or the cut split a character: base64 only
            pass
    if len(error) > max_error_chars:
        error = f"{error[:max_error_chars]}... ({len(error)} chars)"
    return encode(DeadLetter(
        error=error, source_topic=source_topic, source_partition=partition, source_offset=offset,
        original_key=key[:256].decode(errors="replace") if key is not None else None,
        original_value_b64=base64.b64encode(prefix).decode() if prefix is not None else None,
        original_value=text, failed_at=time.time_ns() // 1_000_000,
        original_size=len(value) if value is not None else None,
        original_sha256=hashlib.sha256(value).hexdigest() if value is not None else None,
        original_truncated=value is not None and len(value) > max_value_bytes,
    ))


class DeadLetters:
    """Publishes undecodable input to the DLQ and waits for the broker's acknowledgement.

    A DLQ send that fails anyway is logged and counted (``on_failed``) and the record is
    given up: one poison record must never stop its partition from committing."""

    def __init__(self, producer: Producer, topic: str, on_dead: Callable[[str], None] = lambda topic: None, *,
                 max_value_bytes: int = 16_384, max_error_chars: int = 1_000,
                 on_failed: Callable[[str], None] = lambda topic: None):
        self.producer = producer
        self.topic = topic
        self.on_dead = on_dead
        self.on_failed = on_failed
        self.max_value_bytes = max_value_bytes
        self.max_error_chars = max_error_chars

    async def send(self, source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, error: str) -> None:
        short = error if len(error) <= 500 else f"{error[:500]}..."
        log.warning("dead_letter", source_topic=source_topic, partition=partition, offset=offset, error=short)
        headers = [("sor.error", error.encode()[:4096]), ("sor.source", f"{source_topic}/{partition}/{offset}".encode())]
        # Keyed by the source coordinates: every quote reader dead-letters a bad quote, and a
        # restart re-reads history, so copies share one key that consumers (and compaction)
        # de-duplicate on.
        coords = f"{source_topic}:{partition}:{offset}".encode()
        try:
            record = dlq_record(source_topic, partition, offset, key, value, error, self.max_value_bytes, self.max_error_chars)
            await self.producer.send_and_wait(self.topic, record, key=coords, headers=headers)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("dead_letter_failed", source_topic=source_topic, partition=partition, offset=offset,
                      size=len(value) if value is not None else 0, error=repr(exc)[:500])
            self.on_failed(source_topic)
            return
        self.on_dead(source_topic)


class QuoteFeed:
    """Reads every partition of the quotes topic with no consumer group, so every worker
    holds the whole cache; ``catch_up`` returns once the end offsets seen at start are read."""

    def __init__(self, settings: Settings, cache: QuoteCache, dead: Callable[..., Awaitable[None]] | None,
                 on_update: Callable[[VenueQuote], None] | None = None, clients: KafkaClients | None = None):
        self.settings = settings
        self.cache = cache
        self.dead = dead
        self.on_update = on_update
        self.clients = clients or KafkaClients(settings)
        self.consumer: AIOKafkaConsumer | None = None  # aiokafka needs a running loop: built in start()
        self.read_at_start = 0  # records read by catch_up
        self.refused = 0  # quotes refused without a DLQ to send them to (logged)

    async def start(self) -> None:
        self.consumer = self.clients.consumer(role="quotes")
        await self.consumer.start()
        topic = self.settings.topics.quotes
        tps = await assign_all(self.consumer, topic)
        starts = await self.start_offsets(tps)
        for tp, offset in starts.items():
            self.consumer.seek(tp, offset)
        self._targets = {tp: off for tp, off in (await self.consumer.end_offsets(tps)).items() if off > starts[tp]}

    async def start_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Where to start each partition so that start-up does not grow with history: the
        latest ``quote_lookback_records`` records, and nothing older than a routable quote
        (``max_quote_age_ms`` + ``max_clock_skew_ms``) when the broker answers timestamp
        look-ups. The topic is compacted (latest snapshot per book), and
        an older snapshot would be stale anyway."""
        s = self.settings
        begins = await self.consumer.beginning_offsets(tps)
        ends = await self.consumer.end_offsets(tps)
        starts = {tp: max(begins[tp], ends[tp] - s.quote_lookback_records) for tp in tps}
        oldest_useful = time.time_ns() // 1_000_000 - s.max_quote_age_ms - s.max_clock_skew_ms
        try:
            found = await self.consumer.offsets_for_times({tp: oldest_useful for tp in tps})
        except KafkaError as exc:  # a broker without timestamp look-ups: the record bound alone
            log.info("quote_lookback_by_records", reason=repr(exc))
            found = {}
        for tp, at in found.items():
            if at is not None and at.timestamp >= oldest_useful:
                starts[tp] = max(starts[tp], min(at.offset, ends[tp]))
        log.info("quote_feed_start", skipped=sum(starts[tp] - begins[tp] for tp in tps),
                 to_read=sum(ends[tp] - starts[tp] for tp in tps))
        return starts

    async def catch_up(self, timeout_s: float = 120.0) -> int:
        """Load the latest quote per ``venue:symbol``; returns how many records were read."""
        read = 0
        deadline = time.monotonic() + timeout_s
        while self._targets and time.monotonic() < deadline:
            read += await self._poll(500)
            await drop_reached(self.consumer, self._targets)
        if self._targets:
            raise TimeoutError(f"quote cache did not catch up within {timeout_s}s: {self._targets}")
        self.read_at_start = read
        log.info("quotes_caught_up", records=read, books=len(self.cache))
        return read

    async def _poll(self, timeout_ms: int) -> int:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        for tp, records in batch.items():
            for rec in records:
                n += 1
                try:
                    self.cache.update(decode_quote(rec), self.on_update)
                except InputError as exc:
                    error = str(exc)
                except Exception as exc:  # a poison quote never kills the feed
                    error = f"(value): unusable quote: {type(exc).__name__}: {str(exc)[:200]}"
                else:
                    continue
                if self.dead is not None:
                    await self.dead(tp.topic, tp.partition, rec.offset, rec.key, rec.value, error)
                else:  # a reader without a DLQ (sor api, sor paper-venue): never a silent drop
                    self.refused += 1
                    if self.refused & (self.refused - 1) == 0:  # the 1st, 2nd, 4th, 8th...: bounded on a flood
                        log.warning("quote_refused", partition=tp.partition, offset=rec.offset, error=error[:300],
                                    refused=self.refused)
        return n

    async def run(self) -> None:
        while True:
            await self._poll(200)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
