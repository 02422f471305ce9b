"""Request/reply over Kafka for `sor api`: an intent goes to the intents topic keyed by its
id; the reply is the worker's ``ExecutionResult`` on the executions topic, correlated by
``intent_id``.

Every API replica reads every partition of the executions topic (no consumer group), from
``api_result_lookback_ms`` ago, so a retry after a restart, or one that reaches another
replica, finds the result of the first attempt instead of executing again. It also reads the
intents topic from ``intent_ttl_ms`` ago (an older intent is answered ``expired`` by the
worker), keeping only the intents an API replica minted (by their key's prefix, without
decoding the others): a poll that reaches a replica other than the one that took the order
answers 202 "pending", not 404, and a caller never mistakes a pending order for a lost one.
"""

from __future__ import annotations

import time

import structlog
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from worker.config import Settings
from worker.domain.clock import Clock, now_ms
from worker.domain.models import ExecutionResult, OrderIntent
from worker.pipeline.codec import decode, encode
from worker.pipeline.kafka import KafkaClients, assign_all, drop_reached
from worker.service.results import API_NAMESPACES, ResultBook, Settled

log = structlog.get_logger("sor.api.gateway")

#: ``position = offset * MAX_PARTITIONS + partition``: unique and stable per result record.
MAX_PARTITIONS = 16_384
_API_KEY_PREFIXES = tuple(f"{namespace}-".encode() for namespace in API_NAMESPACES)


class KafkaIntentGateway:
    """Publishes intents (acks=all) and tails the executions topic into a :class:`ResultBook`."""

    def __init__(self, settings: Settings, clients: KafkaClients, book: ResultBook, clock: Clock = now_ms):
        self.settings = settings
        self.clients = clients
        self.book = book
        self.clock = clock
        self.producer = None
        self.consumer = None
        self._caught_up = False

    async def start(self, timeout_s: float = 120.0) -> None:
        """Connect and read the results of the lookback window; :meth:`follow` reads on."""
        self.producer = await self.clients.producer(role="api")
        # A short fetch wait: a caller is waiting on every record of this topic.
        self.consumer = self.clients.consumer(role="api-results")
        await self.consumer.start()
        topics = self.settings.topics
        tps = await assign_all(self.consumer, topics.executions, topics.intents)
        await self._seek_lookback([tp for tp in tps if tp.topic == topics.executions], self.settings.api_result_lookback_ms)
        await self._seek_lookback([tp for tp in tps if tp.topic == topics.intents], self.settings.intent_ttl_ms)
        targets = {tp: off for tp, off in (await self.consumer.end_offsets(tps)).items() if off > 0}
        deadline = time.monotonic() + timeout_s
        while targets and time.monotonic() < deadline:
            await self._poll(500)
            await drop_reached(self.consumer, targets)
        if targets:
            raise TimeoutError(f"executions topic not read within {timeout_s}s: {targets}")
        log.info("results_caught_up", results=len(self.book))
        self._caught_up = True

    async def _seek_lookback(self, tps: list[TopicPartition], lookback_ms: int) -> None:
        since = max(0, self.clock() - lookback_ms)
        try:
            found = await self.consumer.offsets_for_times({tp: since for tp in tps})
        except (KafkaError, ValueError) as exc:  # a broker without time index: read it all
            log.warning("offsets_for_times_unavailable", error=repr(exc))
            await self.consumer.seek_to_beginning(*tps)
            return
        for tp in tps:
            hit = found.get(tp)
            if hit is None:
                await self.consumer.seek_to_end(tp)
            else:
                self.consumer.seek(tp, hit.offset)

    async def _poll(self, timeout_ms: int) -> None:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=5000)
        now = self.clock()
        for tp, records in batch.items():
            if tp.topic == self.settings.topics.intents:
                self._track(records)
                continue
            for rec in records:
                try:
                    result = decode(ExecutionResult, rec.value)
                except Exception as exc:  # the worker's own output, or not: log it, never stop reading
                    log.error("result_unreadable", partition=tp.partition, offset=rec.offset, error=str(exc)[:500])
                    continue
                # The record's timestamp (when the worker published it) is the same for every
                # replica and after a restart: Binance's transactTime and allocation times.
                at = rec.timestamp if isinstance(rec.timestamp, int) and rec.timestamp > 0 else now
                self.book.add(Settled(result, at, rec.offset * MAX_PARTITIONS + tp.partition))

    def _track(self, records) -> None:
        """Intents an API replica published: awaited here too (see the module docstring)."""
        for rec in records:
            if rec.key is None or not rec.key.startswith(_API_KEY_PREFIXES):
                continue
            try:
                self.book.expect(decode(OrderIntent, rec.value))
            except Exception:  # the worker dead-letters it; no result will come for it
                continue

    async def follow(self) -> None:
        """Read results and intents as they come, until cancelled. It raises what a fetch
        raises: the process's supervisor restarts it (and marks the API not ready meanwhile),
        since a reader that died quietly would leave every caller waiting for a result that
        is on the topic."""
        while True:
            await self._poll(200)

    async def publish(self, intent: OrderIntent) -> None:
        """The intent, keyed by its id (its partition, hence its worker, is fixed by the id)."""
        await self.producer.send_and_wait(self.settings.topics.intents, encode(intent), key=intent.intent_id.encode())

    def healthy(self) -> bool:
        """Caught up with the lookback window (a failing :meth:`follow` is the supervisor's to report)."""
        return self._caught_up

    async def stop(self) -> None:
        for client in (self.consumer, self.producer):
            if client is not None:
                try:
                    await client.stop()
                except Exception as exc:  # closing must not hide the original error
                    log.warning("close_failed", error=repr(exc))
