"""aiokafka plumbing: topic creation, the producer, the quote feed and the DLQ."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Awaitable, Callable

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError

from worker.config import Settings
from worker.pipeline.clients import KafkaClients, Producer  # noqa: F401  (Producer: the one process-wide producer)
from worker.domain.errors import InputError
from worker.domain.models import VenueQuote
from worker.pipeline.codec import decode
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
    compacted = compacted or (topics.journal,)
    admin = KafkaClients(settings).admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in names if n not in existing]
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


async def drop_reached(consumer: AIOKafkaConsumer, targets: dict) -> None:
    """Forget the partitions whose position reached their target offset."""
    for tp in list(targets):
        if await consumer.position(tp) >= targets[tp]:
            del targets[tp]


async def read_partitions(settings: Settings, topic: str, partitions: list[int], model, clients: KafkaClients | None = None) -> dict:
    """The latest value per key of some partitions of a topic, read from the start to the
    end offsets seen now (a compacted topic's view)."""
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
                        latest[rec.key] = model.model_validate_json(rec.value)
                    except ValueError as exc:
                        log.error("journal_record_unreadable", partition=rec.partition, offset=rec.offset, error=str(exc)[:500])
            await drop_reached(consumer, ends)
    finally:
        await consumer.stop()
    return latest


class RecordTooLarge(KafkaError):
    """A record over ``SOR_MAX_REQUEST_BYTES``: refused here with its size, before the broker."""


class KafkaJournal:
    """The journal on Kafka: each record goes to the intent's own partition number and is
    acknowledged (acks=all) before ``write`` returns."""

    def __init__(self, producer: Producer, topic: str, on_write: Callable[..., None] = lambda entry: None,
                 max_bytes: int | None = None):
        self.producer = producer
        self.topic = topic
        self.on_write = on_write
        self.max_bytes = max_bytes

    async def write(self, entry) -> None:
        from worker.pipeline.codec import encode

        value = encode(entry)
        if self.max_bytes is not None and len(value) > self.max_bytes:
            # Never silently dropped: the intent stays in flight (retried, not ready, alerted).
            raise RecordTooLarge(f"journal record of {entry.intent_id} is {len(value)} bytes, over SOR_MAX_REQUEST_BYTES={self.max_bytes}")
        await self.producer.send_and_wait(self.topic, value, key=entry.intent_id.encode(), partition=entry.source_partition)
        self.on_write(entry)


def dlq_record(source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, error: str) -> bytes:
    """The DLQ envelope: the original bytes (base64, and as text when they are UTF-8), where
    they came from, and the readable error."""
    from worker.domain.models import DeadLetter
    from worker.pipeline.codec import encode

    text = None
    if value is not None:
        try:
            text = value.decode()
        except UnicodeDecodeError:
            pass
    return encode(DeadLetter(
        error=error, source_topic=source_topic, source_partition=partition, source_offset=offset,
        original_key=key.decode(errors="replace") if key is not None else None,
        original_value_b64=base64.b64encode(value).decode() if value is not None else None,
        original_value=text, failed_at=time.time_ns() // 1_000_000,
    ))


class DeadLetters:
    """Publishes undecodable input to the DLQ and waits for the broker's acknowledgement."""

    def __init__(self, producer: Producer, topic: str, on_dead: Callable[[str], None] = lambda topic: None):
        self.producer = producer
        self.topic = topic
        self.on_dead = on_dead

    async def send(self, source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, error: str) -> None:
        log.warning("dead_letter", source_topic=source_topic, partition=partition, offset=offset, error=error)
        headers = [("sor.error", error.encode()[:4096]), ("sor.source", f"{source_topic}/{partition}/{offset}".encode())]
        # Keyed by the source coordinates: every quote reader dead-letters a bad quote, and a
        # restart re-reads history, so copies share one key that consumers (and compaction)
        # de-duplicate on.
        coords = f"{source_topic}:{partition}:{offset}".encode()
        await self.producer.send_and_wait(self.topic, dlq_record(source_topic, partition, offset, key, value, error), key=coords, headers=headers)
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

    async def start(self) -> None:
        self.consumer = self.clients.consumer(role="quotes")
        await self.consumer.start()
        topic = self.settings.topics.quotes
        partitions = self.consumer.partitions_for_topic(topic)
        for _ in range(50):
            if partitions:
                break
            await asyncio.sleep(0.1)
            await self.consumer.topics()
            partitions = self.consumer.partitions_for_topic(topic)
        if not partitions:
            raise KafkaError(f"topic {topic} has no partitions")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._targets = {tp: off for tp, off in (await self.consumer.end_offsets(tps)).items() if off > 0}

    async def catch_up(self, timeout_s: float = 120.0) -> int:
        """Load the latest quote per ``venue:symbol``; returns how many records were read."""
        read = 0
        deadline = time.monotonic() + timeout_s
        while self._targets and time.monotonic() < deadline:
            read += await self._poll(500)
            await drop_reached(self.consumer, self._targets)
        if self._targets:
            raise TimeoutError(f"quote cache did not catch up within {timeout_s}s: {self._targets}")
        log.info("quotes_caught_up", records=read, books=len(self.cache))
        return read

    async def _poll(self, timeout_ms: int) -> int:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        n = 0
        for tp, records in batch.items():
            for rec in records:
                n += 1
                try:
                    quote = decode(VenueQuote, rec.value)
                except InputError as exc:
                    if self.dead is not None:
                        await self.dead(tp.topic, tp.partition, rec.offset, rec.key, rec.value, str(exc))
                    continue
                if self.cache.update(quote) and self.on_update is not None:
                    self.on_update(quote)
        return n

    async def run(self) -> None:
        while True:
            await self._poll(200)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
