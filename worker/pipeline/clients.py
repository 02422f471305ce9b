"""The one factory of Kafka clients, and the process's shared producer."""

from __future__ import annotations

import asyncio
import logging

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, UnknownError

from worker.config import Settings, kafka_security

log = structlog.get_logger("sor.kafka")


class KafkaClients:
    """The one factory of Kafka clients: every consumer, producer and admin client of every
    process (worker, API, feed, replay, simulators, demo, paper venue) is built here, so the
    security settings (TLS, SASL) and the bootstrap servers apply everywhere."""

    def __init__(self, settings: Settings):
        self.settings = settings

    def _common(self, role: str) -> dict:
        s = self.settings
        client_id = f"{s.client_id}-{role}" if role else s.client_id
        return dict(bootstrap_servers=s.bootstrap_servers, client_id=client_id, **kafka_security(s))

    def consumer(self, *topics: str, role: str = "", group_id: str | None = None, **options) -> AIOKafkaConsumer:
        """A consumer (not started); without ``group_id`` it reads assigned partitions only."""
        options.setdefault("enable_auto_commit", False)
        options.setdefault("fetch_max_wait_ms", self.settings.fetch_max_wait_ms)
        return AIOKafkaConsumer(*topics, group_id=group_id, **self._common(role), **options)

    def admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self._common("admin"))

    async def producer(self, role: str = "", **options) -> AIOKafkaProducer:
        """A started acks=all producer; idempotent unless the broker cannot do it and the
        ``enable_idempotence`` setting allows a fallback ("auto", for Tansu)."""
        mode = self.settings.enable_idempotence
        options.setdefault("max_request_size", self.settings.max_request_bytes)
        options.setdefault("max_batch_size", min(self.settings.producer_batch_bytes, options["max_request_size"]))
        # No linger: a send goes at once when the broker is idle; under load aiokafka batches
        # anyway (one request in flight per broker), and every intent waits on three acks in turn.
        options.setdefault("linger_ms", self.settings.producer_linger_ms)
        common = dict(acks="all", **self._common(role), **options)
        if mode != "false":
            producer = AIOKafkaProducer(enable_idempotence=True, **common)
            sender_log = logging.getLogger("aiokafka.producer.sender")
            level = sender_log.level
            if mode == "auto":
                sender_log.setLevel(logging.CRITICAL)  # our own warning below explains the refusal
            try:
                await producer.start()
                return producer
            except UnknownError:
                await producer.stop()
                if mode == "true":
                    raise
                log.warning("idempotence_unavailable", detail="broker refused InitProducerId (Tansu does); "
                            "producing without idempotence. Set SOR_ENABLE_IDEMPOTENCE=true on real Kafka.")
            finally:
                sender_log.setLevel(level)
        producer = AIOKafkaProducer(**common)
        await producer.start()
        return producer


class Producer:
    """The process's one producer, shared by the journal, the DLQ and the outcome topics.

    Built unstarted by the composition root and started by its exit stack, so every
    collaborator can be handed it (or a fake with the same three coroutines) at build time.
    """

    def __init__(self, clients: KafkaClients):
        self._clients = clients
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = await self._clients.producer()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None, partition: int | None = None,
                   headers: list | None = None) -> asyncio.Future:
        """Queue one record; the returned future resolves when the broker acknowledged it."""
        if self._producer is None:
            raise KafkaError("producer not started")
        return await self._producer.send(topic, value, key=key, partition=partition, headers=headers)

    async def send_and_wait(self, topic: str, value: bytes, **kwargs):
        return await (await self.send(topic, value, **kwargs))

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()
