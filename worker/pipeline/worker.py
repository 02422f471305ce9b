"""The Kafka edge of the intents: decode, call the service, publish, commit.

Checkpoints follow a fixed order (as in Quix Streams): an intent's outcome events are
acknowledged by the broker first, and only then may its offset, and only the contiguous
finished prefix of its partition, be committed.

Every collaborator (consumer, producer, service, journal reader, dead letters, fence) is
handed in by ``worker.bootstrap``; the unit tests hand in fakes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Awaitable, Callable, Protocol

import structlog
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from worker.config import Settings
from worker.domain.clock import now_ms
from worker.domain.errors import InputError
from worker.domain.models import OrderIntent
from worker.execution.executor import rejected_result
from worker.execution.journal import IntentState, JournalEntry
from worker.observability import Health, Metrics
from worker.pipeline.codec import EncodedCache, encode, encode_within
from worker.pipeline.compaction import JournalCompactor
from worker.pipeline.intake import decode_intent
from worker.pipeline.kafka import DeadLetters, Producer
from worker.pipeline.offsets import OffsetTracker
from worker.pipeline.stats import Stats
from worker.service.dedupe import DONE, JournalIndex
from worker.service.fencing import Fenced, OwnershipFence
from worker.service.intents import IntentService, Outcome, Source
from worker.service.sweeper import LateFillSweeper

log = structlog.get_logger("sor.worker")

#: Reads the latest journal entry per intent of some journal partitions.
JournalReader = Callable[[list[int]], Awaitable[dict]]


class GroupConsumer(Protocol):
    """The part of ``AIOKafkaConsumer`` the edge uses (a fake implements the same)."""

    def subscribe(self, topics: list[str], listener: ConsumerRebalanceListener) -> None: ...
    async def getmany(self, *partitions, timeout_ms: int = 0, max_records: int | None = None) -> dict: ...
    async def commit(self, offsets: dict | None = None) -> None: ...
    async def committed(self, tp: TopicPartition) -> int | None: ...
    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...
    def highwater(self, tp: TopicPartition) -> int | None: ...


class IntentWorker:
    """Consumes intents in a consumer group and publishes plans, fills and results."""

    def __init__(self, settings: Settings, service: IntentService, consumer: GroupConsumer | None, producer: Producer,
                 dead_letters: DeadLetters, read_journal: JournalReader, *, index: JournalIndex | None = None,
                 fence: OwnershipFence | None = None, health: Health | None = None, stats: Stats | None = None,
                 metrics: Metrics | None = None, sweeper: LateFillSweeper | None = None,
                 compactor: JournalCompactor | None = None, encoded: EncodedCache | None = None):
        self.settings = settings
        self.service = service
        self.consumer = consumer
        self.producer = producer
        self.dead = dead_letters
        self.read_journal = read_journal
        # "is None", not "or": an empty index is falsy (it has a length), and must still be shared.
        self.index = index if index is not None else JournalIndex(settings.dedupe_capacity)
        # A stalled worker may only place orders within this lease of the group's last word.
        self.fence = fence or OwnershipFence(lease_s=0.6 * settings.session_timeout_ms / 1000)
        self.health = health or Health()
        self.stats = stats or Stats()
        self.metrics = metrics or Metrics()
        self.compactor = compactor  # shrinks committed intents' journal entries to markers
        self.encoded = encoded if encoded is not None else EncodedCache()  # plans the journal encoded already
        self.tracker = OffsetTracker()
        self.active: set[str] = set()  # intents being worked on in this process
        self.tasks: dict[TopicPartition, set[asyncio.Task]] = defaultdict(set)
        self._uncommitted: dict[TopicPartition, int] = {}
        self._paused = False
        self._positions: dict[TopicPartition, int] = {}  # next offset to consume, for the lag gauge
        self._stuck: set[str] = set()  # intents whose orders may exist and that keep failing
        self.sweeper = sweeper or LateFillSweeper(service, self.publish, settings.sweep_interval_ms / 1000, settings.sweep_max_age_ms,
                                                  admission=self._admission)
        self._recovering: set[TopicPartition] = set()  # assigned, journal not read yet: never resumed before

    def subscribe(self) -> None:
        """Join the group on the intents topic; call before the consumer starts."""
        self.consumer.subscribe([self.settings.topics.intents], listener=_Rebalance(self))

    def lag(self) -> dict[int, int]:
        """Records behind the end of each assigned partition (scrape-time gauge)."""
        out = {}
        for tp in self.consumer.assignment() if self.consumer is not None else ():
            high = self.consumer.highwater(tp)
            pos = self._positions.get(tp)
            if high is not None and pos is not None:
                out[tp.partition] = max(0, high - pos)
        return out

    # --- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then drain in-flight intents, commit, and return."""
        log.info("worker_started", group=self.settings.group_id, intents=self.settings.topics.intents)
        try:
            await self._consume(stop)
        finally:
            await self._drain()
            log.info("worker_stopped", **dict(self.stats.by_status.items()))

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
            # Bounded once: the revocation when the consumer leaves the group finds nothing
            # left to wait for, so a stop takes one shutdown timeout, not two.
            await self._finish_or_cancel(pending, {tp.partition for tp in self.tasks}, "shutdown_with_intents_in_flight")
        # 3. flush outputs
        await self.producer.flush()
        # 4. then commit inputs
        await self._commit()

    # --- one record ------------------------------------------------------------------------

    def _dispatch(self, tp: TopicPartition, record) -> None:
        try:
            intent = decode_intent(record)  # also: key == intent_id, created_at from the broker
        except InputError as exc:
            self.tracker.begin(tp, record.offset)
            self._spawn(tp, record.offset, self.dead.send(tp.topic, tp.partition, record.offset, record.key, record.value, str(exc)))
            return
        kind, entry = self.index.claim(intent.intent_id, tp.partition, record.offset)
        if kind == "redelivery" and intent.intent_id in self.active:
            return  # its recovery task (started on assignment) holds this very offset and finishes it
        self.tracker.begin(tp, record.offset)
        if kind == "duplicate":
            self.metrics.duplicates.inc()
            log.info("duplicate_intent", intent_id=intent.intent_id, partition=tp.partition, offset=record.offset)
            self.tracker.finish(tp, record.offset)
        elif kind == "redelivery" and isinstance(entry, JournalEntry):
            self._spawn(tp, record.offset, self._resume(entry, self._admission(tp.partition)))
        elif kind == "redelivery":
            self.tracker.finish(tp, record.offset)  # published already, or in flight in this process
        else:
            admit = self._admission(tp.partition)
            self._spawn(tp, record.offset, self._process(intent, now_ms(), Source(tp.partition, record.offset), admit))

    def _admission(self, partition: int):
        """The fence check for an intent that starts now on ``partition``."""
        token = self.fence.token(partition)
        return lambda: self.fence.admit(partition, token)

    def _spawn(self, tp: TopicPartition, offset: int, work) -> None:
        self.stats.in_flight += 1

        async def guarded() -> None:
            try:
                await work
            except Fenced as exc:  # the partition moved on: its new owner finishes the intent
                log.warning("fenced", partition=tp.partition, offset=offset, detail=str(exc))
                return
            except Exception as exc:  # publishing failed: leave the offset uncommitted for redelivery
                log.error("not_acknowledged", partition=tp.partition, offset=offset, error=repr(exc))
                return
            finally:
                self.stats.in_flight -= 1
            self.tracker.finish(tp, offset)

        task = asyncio.create_task(guarded())
        self.tasks[tp].add(task)
        task.add_done_callback(self.tasks[tp].discard)

    async def _resume(self, entry: JournalEntry, admit) -> None:
        """A message the journal already knows: finish it if needed, and make sure its
        outcome is published (again, byte-identical, if a crash may have lost it)."""
        with structlog.contextvars.bound_contextvars(intent_id=entry.intent_id), self._holding(entry.intent_id):
            self.active.add(entry.intent_id)
            try:
                outcome = await self._until_recovered(entry, admit)
                await self._until_published(outcome, admit)
            finally:
                self.active.discard(entry.intent_id)
            log.info("outcome_republished", state=entry.state.value)

    @contextlib.contextmanager
    def _holding(self, intent_id: str):
        """While this worker works on an intent: if the partition moves on (fenced, or the task
        cancelled by a revocation or a stop), the service forgets what it kept of the intent,
        since its new owner finishes it from the journal."""
        try:
            yield
        except (Fenced, asyncio.CancelledError):
            self.service.forget(intent_id)
            # A claim with no journal entry (stopped before its planned record, or after a failed
            # write) is dropped: its redelivery, here or at the new owner, starts it anew.
            self.index.release(intent_id)
            raise

    async def _process(self, intent: OrderIntent, received_ms: int, source: Source, admit) -> None:
        with structlog.contextvars.bound_contextvars(intent_id=intent.intent_id), self._holding(intent.intent_id):
            self.active.add(intent.intent_id)
            try:
                try:
                    outcome = await self.service.handle(intent, received_ms, source, admit)
                except (Fenced, asyncio.CancelledError):
                    raise  # _holding forgets it
                except Exception as exc:
                    outcome = await self._after_error(intent, received_ms, exc, admit)
            finally:
                self.active.discard(intent.intent_id)
            await self._until_published(outcome, admit)
            if outcome.result is not None:
                status = outcome.result.status.value
                self.stats.by_status[status] += 1
                self.metrics.intents.labels(status).inc()
                self.metrics.intent_latency.observe(outcome.result.latency_ms / 1000)
                self.metrics.observe_tca(outcome.result)
                log.info("intent_done", status=status, filled=format(outcome.result.filled_qty, "f"),
                         latency_ms=outcome.result.latency_ms,
                         orders=[f"{leg.provider}:{leg.client_order_id}" for leg in outcome.result.legs])

    async def _after_error(self, intent: OrderIntent, received_ms: int, exc: Exception, admit) -> Outcome:
        """Once orders may exist (a planned record was written or attempted), the intent is
        finished truthfully from the journal, however long that takes; never rejected.
        Before that, nothing happened outside: a rejection naming the error is the truth."""
        entry = self.service.in_flight(intent.intent_id)
        if entry is None:
            log.exception("intent_failed", error=repr(exc))
            return Outcome(intent, [], rejected_result(intent, f"internal_error: {exc!r}", now_ms() - received_ms))
        log.error("intent_failed_in_flight", error=repr(exc), state=entry.state.value)
        return await self._until_recovered(entry, admit)

    async def _until_recovered(self, entry: JournalEntry, admit) -> Outcome:
        """``service.recover`` with backoff until it succeeds. While an intent is stuck the
        worker is not ready, an error is logged and ``sor_stuck_intents`` counts it; its
        offset stays uncommitted, so nothing after it in the partition is committed either."""
        delay = 0.2
        key = f"intent:{entry.intent_id}"
        try:
            while True:
                try:
                    return await self.service.recover(entry, admit)
                except Fenced:
                    raise
                except Exception as exc:
                    entry = self.service.in_flight(entry.intent_id) or entry
                    self._stuck_on(key, f"stuck in flight: {exc!r}")
                    log.error("recovery_failed", intent_id=entry.intent_id, error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        finally:  # recovered, fenced or cancelled: this worker no longer holds it
            self._unstuck(key)

    async def _until_published(self, outcome: Outcome, admit) -> None:
        """Publish the outcome, with backoff until the broker acknowledges it (an outage): the
        intent is done at the venues, and its outcome must reach risk and settlement. While it
        fails the worker is not ready and the intent counts as stuck; its offset stays
        uncommitted. The fence is passed before every attempt: the partition may have moved."""
        delay = 0.2
        key = f"publish:{outcome.intent.intent_id}"
        try:
            while True:
                await admit()
                try:
                    await self.publish(outcome)
                    return
                except Exception as exc:
                    self._stuck_on(key, f"outcome not acknowledged: {exc!r}")
                    log.error("publish_failed", intent_id=outcome.intent.intent_id, error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                # At most 5 s: the fence is asked again before each attempt, so a revocation is
                # seen within one backoff, well inside SOR_SHUTDOWN_TIMEOUT_S.
                delay = min(delay * 2, 5.0)
        finally:  # published, fenced or cancelled: this worker no longer holds it
            self._unstuck(key)

    def _stuck_on(self, key: str, why: str) -> None:
        if key not in self._stuck:
            self._stuck.add(key)
            self.health.problem(key, why)

    def _unstuck(self, key: str) -> None:
        if key in self._stuck:
            self._stuck.discard(key)
            self.health.resolved(key)

    def stuck(self) -> int:
        return len(self._stuck)

    async def publish(self, outcome: Outcome) -> None:
        """Plan, then fills, then the result; returns once the broker acknowledged all."""
        t = self.settings.topics
        key = outcome.intent.intent_id.encode()
        sends = []
        for plan in outcome.plans:
            sends.append(await self.producer.send(t.plans, self.encoded.encode(plan), key=key))
        for fill in outcome.fills:
            sends.append(await self.producer.send(t.fills, encode(fill), key=key))
        if outcome.result is not None:
            sends.append(await self.producer.send(t.executions, encode_within(outcome.result, self.settings.max_request_bytes), key=key))
        await asyncio.gather(*sends)
        entry = self.service.completed(outcome.intent.intent_id)
        if entry is not None:
            self.sweeper.watch(entry)  # a leg still unknown: keep asking the venue
        # An entry still swept stays whole in the journal: a done marker in its place would
        # end the sweep at the next restart. The correction that settles its last leg compacts it.
        self.index.done(outcome.intent.intent_id, compact=not self.sweeper.sweeping(outcome.intent.intent_id))

    # --- offsets, backpressure, rebalances ---------------------------------------------------

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        self._uncommitted.update(self.tracker.committable())
        offsets = {}
        for tp, off in self._uncommitted.items():
            consumed = self._positions.get(tp)
            if (only is None or tp in only) and consumed is not None:
                # Never past what was consumed, nor past an offset still in flight: a recovery
                # may finish an offset whose earlier records (completed intents whose outcome a
                # crash may have lost) were not redelivered yet, or are being republished now.
                pending = self.tracker.lowest_pending(tp)
                offsets[tp] = min(off, consumed, off if pending is None else pending)
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            log.warning("commit_failed", error=repr(exc), offsets={f"{tp.partition}": o for tp, o in offsets.items()})
            return
        self.fence.confirm()  # the group accepted a commit of this generation just now
        for tp, off in offsets.items():
            if self._uncommitted.get(tp) == off:
                del self._uncommitted[tp]
        if self.compactor is not None:
            self.compactor.after_commit({tp.partition: off for tp, off in offsets.items()})

    def _backpressure(self) -> None:
        limit = self.settings.max_in_flight
        if not self._paused and self.stats.in_flight >= limit:
            self.consumer.pause(*self.consumer.assignment())
            self._paused = True
            log.info("backpressure_paused", in_flight=self.stats.in_flight, max_in_flight=limit)
        elif self._paused and self.stats.in_flight <= limit // 2:
            self.consumer.resume(*(set(self.consumer.assignment()) - self._recovering))
            self._paused = False
            log.info("backpressure_resumed", in_flight=self.stats.in_flight)

    async def _finish_or_cancel(self, pending: list[asyncio.Task], partitions: set[int], event: str) -> None:
        """Let ``pending`` finish within the shutdown timeout; then fence their partitions
        (nothing more is placed) and cancel the rest: the next owner recovers them from the
        journal."""
        _, late = await asyncio.wait(pending, timeout=self.settings.shutdown_timeout_s)
        if late:
            self.fence.revoke(partitions)
            for task in late:
                task.cancel()
            log.warning(event, cancelled=len(late))
            await asyncio.wait(late)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Stop placing for the revoked partitions at once, let legs already on the wire
        finish (bounded), cancel the rest, and commit what finished before they move."""
        partitions = {tp.partition for tp in revoked}
        self.fence.revoke(partitions)
        pending = [t for tp in revoked for t in self.tasks.get(tp, ())]
        if pending:
            await self._finish_or_cancel(pending, partitions, "revoked_with_intents_in_flight")
        await self._commit(only=set(revoked))
        self.tracker.forget(revoked)
        self.sweeper.forget({tp.partition for tp in revoked})
        self.index.forget_finished(tp.partition for tp in revoked)
        for tp in revoked:
            self._uncommitted.pop(tp, None)
            self._positions.pop(tp, None)
        log.info("partitions_revoked", partitions=sorted(tp.partition for tp in revoked))

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Rebuild in-flight state from the journal before consuming anything new.

        Intents at or after the committed offset may be unfinished (reconciled with the
        venues now, by client order id) or finished without their outcome published (it is
        republished when their message is redelivered). One bad entry never blocks the
        others: each is recovered on its own, with retries, as an in-flight task.
        """
        self.fence.assign(tp.partition for tp in assigned)
        if not assigned:
            return
        started = time.monotonic()
        entries = await self.read_journal(sorted(tp.partition for tp in assigned))
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
            else:
                self.sweeper.watch(entry)
        by_partition = {tp.partition: tp for tp in assigned}
        for entry in unfinished:
            tp = by_partition[entry.source_partition]
            self.active.add(entry.intent_id)  # until its task runs: a redelivery must not start it twice
            self.tracker.begin(tp, entry.source_offset)  # its offset stays uncommitted until published
            self._spawn(tp, entry.source_offset, self._resume(entry, self._admission(tp.partition)))
        log.info("journal_recovered", partitions=sorted(tp.partition for tp in assigned), intents=len(entries),
                 reconciling=len(unfinished), seconds=round(time.monotonic() - started, 3))


def on_heartbeat(consumer, confirmed: Callable[[], None]) -> bool:
    """Call ``confirmed`` after every successful group heartbeat: the fence's lease.

    aiokafka has no public hook for this; the coordinator's ``_do_heartbeat`` is wrapped
    (aiokafka is pinned below 0.15, and a unit test checks the attribute). Returns False
    when the attribute is missing, and the caller then turns the lease off.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    beat = getattr(coordinator, "_do_heartbeat", None)
    if beat is None:
        return False

    async def beat_and_confirm():
        ok = await beat()
        if ok:
            confirmed()
        return ok

    coordinator._do_heartbeat = beat_and_confirm
    return True


class _Rebalance(ConsumerRebalanceListener):
    """aiokafka swallows exceptions of listeners: a failure here is logged, turns the worker
    not ready, and the partitions' recovery is retried with backoff, never left paused."""

    def __init__(self, worker: IntentWorker):
        self.worker = worker

    async def on_partitions_revoked(self, revoked):
        try:
            await self.worker.on_revoked(set(revoked))
        except Exception as exc:
            log.exception("revocation_failed", error=repr(exc))

    async def on_partitions_assigned(self, assigned):
        # aiokafka may fetch for a new assignment before this callback returns: hold the
        # partitions until the journal is recovered, or a redelivery could race recovery.
        w = self.worker
        w.consumer.pause(*assigned)
        w._recovering |= set(assigned)
        delay = 0.5
        while True:
            try:
                await w.on_assigned(set(assigned))
                break
            except Exception as exc:
                w.health.problem("assignment", f"journal recovery failed: {exc!r}")
                log.error("assignment_recovery_failed", error=repr(exc), retry_in_s=delay,
                          partitions=sorted(tp.partition for tp in assigned))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        w.health.resolved("assignment")
        w._recovering -= set(assigned)
        if not w._paused:
            w.consumer.resume(*assigned)
        log.info("partitions_assigned", partitions=sorted(tp.partition for tp in assigned))
