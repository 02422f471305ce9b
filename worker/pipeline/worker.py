"""The Kafka edge: decode, call the service, publish, commit. Nothing else lives here.

Checkpoints follow a fixed order (as in Quix Streams): an intent's outcome events are
acknowledged by the broker first, and only then may its offset, and only the contiguous
finished prefix of its partition, be committed.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, defaultdict

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from worker.config import Settings, kafka_security
from worker.domain.errors import InputError
from worker.domain.models import OrderIntent, Side
from worker.routing.ranking import venue_route
from worker.domain.clock import now_ms
from worker.execution.executor import rejected_result
from worker.pipeline.codec import decode, encode
from worker.pipeline.kafka import DeadLetters, KafkaClients, KafkaJournal, QuoteFeed, ensure_topics, read_partitions
from worker.pipeline.offsets import OffsetTracker
from worker.service.quotes import QuoteCache
from worker.execution.journal import IntentState, JournalEntry
from worker.service.intents import IntentService, Outcome, Source
from worker.pipeline.stats import Stats

log = structlog.get_logger("sor.worker")


DONE = "done"  # the index's marker for an intent whose outcome is published


class JournalIndex:
    """Every intent id this worker has taken on, and where it came from (bounded, LRU).

    Filled from the journal when partitions are assigned, so "executed at most once" holds
    across restarts and rebalances. Only intents whose outcome may still need (re)publishing
    keep their full journal entry; the rest shrink to a marker of a few hundred bytes.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[int, int, JournalEntry | str | None]] = OrderedDict()

    def claim(self, intent_id: str, partition: int, offset: int) -> tuple[str, JournalEntry | str | None]:
        """``("new", None)``, ``("redelivery", entry)`` for the message the journal names,
        or ``("duplicate", entry)`` for another message with a known intent id."""
        known = self._entries.get(intent_id)
        if known is None:
            self.put(intent_id, partition, offset, None)
            return "new", None
        if (known[0], known[1]) == (partition, offset):
            return "redelivery", known[2]
        return "duplicate", known[2]

    def get(self, intent_id: str) -> JournalEntry | str | None:
        known = self._entries.get(intent_id)
        return known[2] if known else None

    def put(self, intent_id: str, partition: int, offset: int, entry: JournalEntry | str | None) -> None:
        self._entries[intent_id] = (partition, offset, entry)
        self._entries.move_to_end(intent_id)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def record(self, entry: JournalEntry) -> None:
        self.put(entry.intent_id, entry.source_partition, entry.source_offset, entry)

    def done(self, intent_id: str) -> None:
        """The outcome is acknowledged: keep only the marker."""
        known = self._entries.get(intent_id)
        if known is not None:
            self._entries[intent_id] = (known[0], known[1], DONE)

    def __len__(self) -> int:
        return len(self._entries)


class IntentWorker:
    """Consumes intents in a consumer group and publishes plans, fills and results."""

    def __init__(self, settings: Settings, service: IntentService, quotes: QuoteCache, stats: Stats | None = None, metrics=None):
        self.settings = settings
        self.service = service
        self.quotes = quotes
        self.stats = stats or Stats()
        self.tracker = OffsetTracker()
        self.index = JournalIndex(settings.dedupe_capacity)
        self.active: set[str] = set()  # intents being worked on in this process
        self.tasks: dict[TopicPartition, set[asyncio.Task]] = defaultdict(set)
        self.ready = asyncio.Event()
        self._uncommitted: dict[TopicPartition, int] = {}
        self._paused = False
        self.metrics = metrics
        self.consumer = None
        self._positions: dict[TopicPartition, int] = {}  # next offset to consume, for the lag gauge
        self._venues = {v.name: v for v in service.venues}
        if metrics is not None:
            metrics.watch(self._gauges)

    def _gauges(self) -> dict:
        """Scrape-time gauges: quote ages, in-flight, lag per partition, breakers, readiness."""
        now = now_ms()
        ages = {(q.venue, q.symbol): max(0.0, (now - q.ts) / 1000) for q in self.quotes.all()}
        lag = {}
        if self.consumer is not None and self.ready.is_set():
            for tp in self.consumer.assignment():
                high = self.consumer.highwater(tp)
                pos = self._positions.get(tp)
                if high is not None and pos is not None:
                    lag[(str(tp.partition),)] = max(0, high - pos)
        breakers = self.service.executor.breakers
        circuit = {(v.name,): float(v.name in breakers.blocked()) for v in self.service.venues}
        return {"sor_quote_age_seconds": ages, "sor_in_flight_intents": {(): self.stats.in_flight},
                "sor_consumer_lag": lag, "sor_circuit_open": circuit, "sor_ready": {(): float(self.ready.is_set())}}

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then drain in-flight intents, commit, and return."""
        s = self.settings
        http = await self._start_http()
        consumer = feed = feed_task = None
        self.producer = None
        try:
            await self._connect(stop)
            self.producer = await KafkaClients(s).producer()
            self.dead = DeadLetters(self.producer, s.topics.dlq, self._count_dead)
            self.service.journal = KafkaJournal(self.producer, s.topics.journal, self.index.record)
            feed = QuoteFeed(s, self.quotes, self.dead.send, on_update=self._prewarm)
            consumer = self.consumer = AIOKafkaConsumer(
                bootstrap_servers=s.bootstrap_servers, client_id=s.client_id, group_id=s.group_id,
                enable_auto_commit=False, auto_offset_reset="earliest", session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=s.heartbeat_interval_ms, **kafka_security(s),
            )
            await feed.start()
            await feed.catch_up()  # every book is loaded before the first intent
            feed_task = asyncio.create_task(feed.run(), name="quote-feed")
            consumer.subscribe([s.topics.intents], listener=_Rebalance(self))
            await consumer.start()
            self.ready.set()
            log.info("worker_started", group=s.group_id, intents=s.topics.intents, books=len(self.quotes))
            await self._consume(stop)
            await self._drain()
        finally:
            self.ready.clear()
            if feed_task:
                feed_task.cancel()
            closers = [c.stop for c in (consumer, feed, self.producer) if c is not None] + ([http.cleanup] if http else [])
            for closer in closers:
                try:
                    await closer()
                except Exception as exc:  # a close failure must not hide the original error
                    log.warning("close_failed", error=repr(exc))
            log.info("worker_stopped", **{k: v for k, v in self.stats.by_status.items()})

    def _prewarm(self, quote) -> None:
        """Prepare a new snapshot for routing as it arrives (prefix sums, fee-adjusted rates,
        ranking entry), so the first intent after a quote update does not pay for it."""
        venue = self._venues.get(quote.venue)
        if venue is not None:
            for side in Side:
                venue_route(side, venue, quote)

    async def _start_http(self):
        if self.settings.http_port is None or self.metrics is None:
            return None
        from worker.observability import start_http

        try:
            return await start_http(self.settings.http_port, self.metrics, self.ready.is_set)
        except OSError as exc:  # a busy port must not stop order flow
            log.error("http_unavailable", port=self.settings.http_port, error=str(exc))
            return None

    async def _connect(self, stop: asyncio.Event) -> None:
        """Create missing topics, retrying while the cluster comes up (compose, rollouts)."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        delay = 0.5
        while True:
            try:
                await ensure_topics(self.settings)
                return
            except (KafkaError, OSError) as exc:
                if time.monotonic() + delay > deadline or stop.is_set():
                    raise KafkaError(f"cannot reach Kafka at {self.settings.bootstrap_servers}: {exc}") from None
                log.warning("kafka_unreachable", bootstrap=self.settings.bootstrap_servers, retry_in_s=delay, error=str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _consume(self, stop: asyncio.Event) -> None:
        next_commit = 0.0
        while not stop.is_set():
            room = max(1, self.settings.max_in_flight - self.stats.in_flight)
            batch = await self.consumer.getmany(timeout_ms=100, max_records=room)
            for tp, records in batch.items():
                for record in records:
                    self._dispatch(tp, record)
                if records:
                    self._positions[tp] = records[-1].offset + 1
            self._backpressure()
            if time.monotonic() >= next_commit:
                await self._commit()
                next_commit = time.monotonic() + self.settings.commit_interval_ms / 1000

    async def _drain(self) -> None:
        """Graceful stop, in numbered steps."""
        # 1. stop fetching
        self.consumer.pause(*self.consumer.assignment())
        # 2. finish in-flight intents (they publish as they finish)
        pending = [t for ts in self.tasks.values() for t in ts]
        if pending:
            log.info("draining", in_flight=len(pending))
            await asyncio.wait(pending, timeout=self.settings.shutdown_timeout_s)
        # 3. flush outputs
        await self.producer.flush()
        # 4. then commit inputs
        await self._commit()

    # --- one record ------------------------------------------------------------------------

    def _dispatch(self, tp: TopicPartition, record) -> None:
        self.tracker.begin(tp, record.offset)
        try:
            intent = decode(OrderIntent, record.value)
        except InputError as exc:
            self._spawn(tp, record.offset, self.dead.send(tp.topic, tp.partition, record.offset, record.key, record.value, str(exc)))
            return
        kind, entry = self.index.claim(intent.intent_id, tp.partition, record.offset)
        if kind == "duplicate":
            if self.metrics is not None:
                self.metrics.duplicates.inc()
            log.info("duplicate_intent", intent_id=intent.intent_id, partition=tp.partition, offset=record.offset)
            self.tracker.finish(tp, record.offset)
        elif kind == "redelivery" and isinstance(entry, JournalEntry):
            self._spawn(tp, record.offset, self._resume(entry))
        elif kind == "redelivery":
            self.tracker.finish(tp, record.offset)  # published already, or in flight in this process
        else:
            self._spawn(tp, record.offset, self._process(intent, now_ms(), Source(tp.partition, record.offset)))

    def _spawn(self, tp: TopicPartition, offset: int, work) -> None:
        self.stats.in_flight += 1

        async def guarded() -> None:
            try:
                await work
            except Exception as exc:  # publishing failed: leave the offset uncommitted for redelivery
                log.error("not_acknowledged", partition=tp.partition, offset=offset, error=repr(exc))
                return
            finally:
                self.stats.in_flight -= 1
            self.tracker.finish(tp, offset)

        task = asyncio.create_task(guarded())
        self.tasks[tp].add(task)
        task.add_done_callback(self.tasks[tp].discard)

    async def _resume(self, entry: JournalEntry) -> None:
        """A message the journal already knows: finish it if needed, and make sure its
        outcome is published (again, byte-identical, if a crash may have lost it)."""
        with structlog.contextvars.bound_contextvars(intent_id=entry.intent_id):
            outcome = await self.service.recover(entry)
            await self.publish(outcome)
            log.info("outcome_republished", state=entry.state.value)

    async def _process(self, intent: OrderIntent, received_ms: int, source: Source) -> None:
        with structlog.contextvars.bound_contextvars(intent_id=intent.intent_id):
            self.active.add(intent.intent_id)
            try:
                outcome = await self.service.handle(intent, received_ms, source)
            except Exception as exc:  # a bug must still end in a final result, never a silent drop
                log.exception("intent_failed", error=repr(exc))
                outcome = await self._after_internal_error(intent, received_ms, exc)
            finally:
                self.active.discard(intent.intent_id)
            await self.publish(outcome)
            if outcome.result is not None:
                self.stats.by_status[outcome.result.status.value] += 1
                if self.metrics is not None:
                    self.metrics.intents.labels(outcome.result.status.value).inc()
                    self.metrics.intent_latency.observe(outcome.result.latency_ms / 1000)
                log.info("intent_done", status=outcome.result.status.value, filled=format(outcome.result.filled_qty, "f"),
                         latency_ms=outcome.result.latency_ms)

    async def _after_internal_error(self, intent: OrderIntent, received_ms: int, exc: Exception) -> Outcome:
        """If orders may exist (a planned record), finish from the journal, asking the venues;
        otherwise, or if that fails too, a rejected result naming the error."""
        entry = self.index.get(intent.intent_id)
        if isinstance(entry, JournalEntry) and entry.state is IntentState.PLANNED:
            try:
                return await self.service.recover(entry)
            except Exception as again:
                log.exception("recovery_failed", error=repr(again))
        return Outcome(intent, [], rejected_result(intent, f"internal_error: {exc!r}", now_ms() - received_ms))

    async def publish(self, outcome: Outcome) -> None:
        """Plan, then fills, then the result; returns once the broker acknowledged all."""
        t = self.settings.topics
        key = outcome.intent.intent_id.encode()
        sends = []
        for plan in outcome.plans:
            sends.append(await self.producer.send(t.plans, encode(plan), key=key))
        for fill in outcome.fills:
            sends.append(await self.producer.send(t.fills, encode(fill), key=key))
        if outcome.result is not None:
            sends.append(await self.producer.send(t.executions, encode(outcome.result), key=key))
        await asyncio.gather(*sends)
        self.index.done(outcome.intent.intent_id)

    # --- offsets, backpressure, rebalances ---------------------------------------------------

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        self._uncommitted.update(self.tracker.committable())
        offsets = {tp: off for tp, off in self._uncommitted.items() if only is None or tp in only}
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("commit_failed", error=repr(exc), offsets={f"{tp.partition}": o for tp, o in offsets.items()})
            return
        for tp in offsets:
            self._uncommitted.pop(tp, None)

    def _backpressure(self) -> None:
        limit = self.settings.max_in_flight
        if not self._paused and self.stats.in_flight >= limit:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
            log.info("backpressure_paused", in_flight=self.stats.in_flight, max_in_flight=limit)
        elif self._paused and self.stats.in_flight <= limit // 2:
            self.consumer.resume(*self.consumer.assignment())
            self._paused = False
            log.info("backpressure_resumed", in_flight=self.stats.in_flight)

    def _count_dead(self, topic: str = "") -> None:
        if self.metrics is not None:
            self.metrics.dead_letters.labels(topic).inc()

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish and commit what this instance started before the partitions move."""
        pending = [t for tp in revoked for t in self.tasks.get(tp, ())]
        if pending:
            await asyncio.wait(pending, timeout=self.settings.shutdown_timeout_s)
        await self._commit(only=set(revoked))
        self.tracker.forget(revoked)
        for tp in revoked:
            self._uncommitted.pop(tp, None)
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))


    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Rebuild in-flight state from the journal before consuming anything new.

        Intents at or after the committed offset may be unfinished (reconciled with the
        venues now, by client order id) or finished without their outcome published (it is
        republished when their message is redelivered).
        """
        if not assigned:
            return
        journal = self.settings.topics.journal
        started = time.monotonic()
        entries = await read_partitions(self.settings, journal, sorted(tp.partition for tp in assigned), JournalEntry)
        committed = {tp.partition: (await self.consumer.committed(tp)) or 0 for tp in assigned}
        unfinished = []
        for entry in entries.values():
            if entry.intent_id in self.active:
                continue  # in flight in this process: its own task finishes it
            pending = entry.source_offset >= committed.get(entry.source_partition, 0)
            # Below the committed offset the outcome was acknowledged: a marker is enough.
            self.index.put(entry.intent_id, entry.source_partition, entry.source_offset, entry if pending else DONE)
            if pending and entry.state is not IntentState.COMPLETED:
                unfinished.append(entry)
        for entry in unfinished:
            with structlog.contextvars.bound_contextvars(intent_id=entry.intent_id):
                outcome = await self.service.recover(entry)
                await self.publish(outcome)
        log.info("journal_recovered", partitions=sorted(tp.partition for tp in assigned), intents=len(entries),
                 reconciled=len(unfinished), seconds=round(time.monotonic() - started, 3))


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: IntentWorker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked):
        await self.worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned):
        # aiokafka may fetch for a new assignment before this callback returns: hold the
        # partitions until the journal is recovered, or a redelivery could race recovery.
        self.worker.consumer.pause(*assigned)
        await self.worker.on_assigned(set(assigned))
        if not self.worker._paused:
            self.worker.consumer.resume(*assigned)
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
