"""Races at the Kafka edge a review found (fakes, no broker): an intent fenced while stuck after
a failed planned write runs when redelivered, a stale sweep never drops a re-assigned watch, one
entry the sweeper cannot journal never blocks the others, a rejection whose write timed out is
republished byte for byte. Each test failed on the code before its fix."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
from aiokafka.errors import KafkaError

from tests.support.fakes import MemoryJournal
from tests.support.scenarios import make_intent
from tests.unit.test_edge import TP, LostVenue, edge_with_a_lost_venue, make_edge, results, start_with, until
from worker.config import Settings
from worker.pipeline.codec import encode

D = Decimal


class IndexedJournal(MemoryJournal):
    """The journal as production wires it (``KafkaJournal(..., on_write=index.record)``): the
    dedupe index learns every acknowledged record; ``failing`` refuses every write (an outage)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_write = lambda entry: None
        self.failing = False
        self.attempts = 0

    async def write(self, entry) -> None:
        self.attempts += 1
        if self.failing:
            raise KafkaError("journal partition unavailable")
        await super().write(entry)
        self.on_write(entry)


def indexed_edge(settings=None):
    journal = IndexedJournal()
    worker, consumer, producer, adapters, journal = make_edge(journal=journal, settings=settings)
    journal.on_write = worker.index.record
    return worker, consumer, producer, adapters, journal


def test_an_intent_fenced_while_stuck_after_a_failed_planned_write_is_executed_when_redelivered():
    """worker/pipeline/worker.py:IntentWorker._process (with _after_error and JournalIndex.claim).

    Mechanism: the planned record's write fails (a journal outage), so ``handle`` raises after
    ``_in_flight`` was set and ``_after_error`` retries ``recover`` in ``_until_recovered``. The
    claim in the dedupe index is still ``None`` (no record was ever acknowledged). A revocation
    then fences / cancels the task *inside the ``except Exception`` handler*, so the sibling
    ``except (Fenced, CancelledError): self.index.release(...)`` never runs and the ``None`` claim
    stays. When the group hands the same partition back to this worker (eager rebalance) and the
    record is redelivered, ``claim`` answers "redelivery" with ``None`` and ``_dispatch`` finishes
    the offset as "published already".

    Consequence: the intent is never executed and no result is ever published for it, yet its
    offset is committed: an outcome lost for good (no order was placed: the planned write
    failed before any leg)."""

    async def main():
        settings = Settings(commit_interval_ms=10, shutdown_timeout_s=0.2)
        worker, consumer, producer, adapters, journal = indexed_edge(settings)
        journal.failing = True
        intent = make_intent("1.5", intent_id="outage")
        stop, task = await start_with(worker, consumer, intent)
        await until(lambda: journal.attempts >= 1 and worker.service.in_flight("outage") is not None)
        await asyncio.sleep(0.05)  # _after_error -> _until_recovered -> recover is under way
        assert not any(a.placed for a in adapters.values())
        await consumer.revoke(TP)  # the group rebalances ...
        journal.failing = False  # ... the journal is back ...
        await consumer.assign(TP)  # ... and the same partition comes back to this worker
        consumer.feed(TP, 0, encode(intent))  # redelivered from the committed offset (none yet)
        await until(lambda: consumer.committed_offsets.get(TP) == 1)
        await asyncio.sleep(0.05)
        stop.set()
        await task
        published = [r for r in results(producer) if r["intent_id"] == "outage"]
        assert published, "offset committed, but the intent was never executed and has no result"

    asyncio.run(main())


def test_a_sweep_fenced_by_a_revocation_does_not_drop_the_watch_of_the_reassigned_partition():
    """worker/service/sweeper.py:LateFillSweeper.sweep_once (with IntentWorker.on_revoked/on_assigned).

    Mechanism: a sweep of an intent with a leg of unknown state is awaiting its venue query when
    the partition is revoked (``sweeper.forget`` drops the watch) and assigned back to this
    worker (``on_assigned`` watches the journal's entry again, with a new admission). The venue
    then answers "filled"; the old sweep's admission is stale, so ``admit`` raises ``Fenced`` and
    ``sweep_once`` calls ``_drop(intent_id)``: it removes the *new* watch and admission by id.

    Consequence: the late fill is never journaled nor published as a correction by the owner of
    the partition (until some later rebalance or restart happens to re-read the journal): risk
    and settlement miss a fill that exists at the venue."""

    async def main():
        worker, consumer, producer, lost, journal = edge_with_a_lost_venue()
        stop, task = await start_with(worker, consumer, make_intent("1.5", intent_id="late"))
        await until(lambda: consumer.committed_offsets.get(TP) == 1)
        assert len(worker.sweeper) == 1
        gate = asyncio.Event()
        asked = asyncio.Event()
        plain_query = lost.query

        async def slow_query(coid):
            asked.set()
            await gate.wait()
            return await plain_query(coid)

        lost.query = slow_query
        sweep = asyncio.create_task(worker.sweeper.sweep_once())
        await asyncio.wait_for(asked.wait(), 5)
        await consumer.revoke(TP)
        await consumer.assign(TP)  # the same partition comes back: the entry is watched again
        assert len(worker.sweeper) == 1
        lost.up = True
        gate.set()
        await sweep  # fenced: this pass belonged to the previous ownership
        lost.query = plain_query
        await worker.sweeper.sweep_once()  # the owner's next sweep
        versions = await published_versions(stop, task, producer, "late")
        assert versions == [1, 2], f"the late fill was never published as a correction: {versions}"

    asyncio.run(main())



async def published_versions(stop, task, producer, intent_id: str) -> list[int]:
    """Stop the worker; the result versions it published for ``intent_id``."""
    stop.set()
    await task
    return [r["version"] for r in results(producer) if r["intent_id"] == intent_id]

class RefusingJournal(MemoryJournal):
    """Refuses, for good, every amendment of the intents in ``refuse`` (a record that grew
    over ``SOR_MAX_REQUEST_BYTES`` with its amendment: ``KafkaJournal`` raises RecordTooLarge)."""

    def __init__(self, refuse: set[str]) -> None:
        super().__init__()
        self.refuse = refuse

    async def write(self, entry) -> None:
        from worker.pipeline.kafka import RecordTooLarge

        if entry.intent_id in self.refuse and entry.amendments:
            raise RecordTooLarge(f"journal record of {entry.intent_id} is over SOR_MAX_REQUEST_BYTES")
        await super().write(entry)


def test_one_entry_the_sweeper_cannot_journal_never_blocks_the_late_fills_of_the_others():
    """worker/service/sweeper.py:LateFillSweeper.sweep_once (and run).

    Mechanism: ``sweep_once`` walks the watch list in insertion order and catches only
    ``Fenced`` per entry. Any other exception of one entry (its amendment refused for good by
    the journal, a correction the broker refuses, a bug in rebuilding its outcome) leaves
    ``sweep_once``; ``run`` logs ``sweep_failed`` and the next pass starts again with the same
    entry, which fails again. Every intent watched after it is never swept, and the failing
    entry itself never reaches the ``SOR_SWEEP_MAX_AGE_MS`` abandonment check.

    Consequence: one poisoned entry stops late-fill corrections for every other intent of the
    worker for the life of the process: fills that exist at the venues are never published
    (lost outcomes for risk and settlement); README promises one bad entry never blocks others."""

    async def main():
        journal = RefusingJournal(refuse={"poisoned"})
        worker, consumer, producer, adapters, journal = make_edge(journal=journal)
        lost = LostVenue(worker.service.venues[0], worker.service.quotes)
        worker.service.executor.adapters["a"] = lost
        worker.service.executor.reconcile_timeout_s = 0.05
        worker.service.max_rounds = 1
        stop, task = await start_with(worker, consumer, make_intent("1.5", intent_id="poisoned"))
        await until(lambda: consumer.committed_offsets.get(TP) == 1)
        consumer.feed(TP, 1, encode(make_intent("1.5", intent_id="healthy")))  # watched after it
        await until(lambda: consumer.committed_offsets.get(TP) == 2)
        assert list(worker.sweeper._watched) == ["poisoned", "healthy"]
        lost.up = True
        for _ in range(3):  # three passes of LateFillSweeper.run
            try:
                await worker.sweeper.sweep_once()
            except Exception:
                pass  # run() logs sweep_failed and sleeps until the next pass
        versions = await published_versions(stop, task, producer, "healthy")
        assert versions == [1, 2], f"the healthy intent's late fill was never published: {versions}"

    asyncio.run(main())


class TimedOutJournal(MemoryJournal):
    """The broker stores the first write, but its acknowledgement never arrives in time: the
    producer raises (a request timeout), as aiokafka does when the response is lost."""

    def __init__(self) -> None:
        super().__init__()
        self.timeouts = 1

    async def write(self, entry) -> None:
        from aiokafka.errors import KafkaTimeoutError

        await super().write(entry)  # durable at the broker ...
        if self.timeouts:
            self.timeouts -= 1
            raise KafkaTimeoutError("no acknowledgement within request_timeout_ms")  # ... but not acknowledged


def test_a_rejection_whose_journal_write_timed_out_is_republished_with_the_same_bytes():
    """worker/pipeline/worker.py:IntentWorker._after_error (with IntentService._reject).

    Mechanism: a pre-trade rejection is journaled as a ``completed`` entry by ``_reject``
    before ``_in_flight`` is set. When that write raises although the broker stored the record
    (a lost acknowledgement), ``_after_error`` finds no in-flight entry and publishes a
    *different* rejection, ``internal_error: KafkaTimeoutError(...)``, under the same event id
    ``result:<intent_id>``. After a crash before the commit, the next owner republishes the
    journal's rejection (its real reason) under that id.

    Consequence: two copies of one outcome with different bytes and different reasons (the
    crash harness's invariant 2, README "Outcome events carry stable ids ... identical
    bytes"): consumers that dedupe by event id keep whichever copy came first."""

    async def main():
        journal = TimedOutJournal()
        intent = make_intent("1.5", intent_id="no-book", symbol="ETH/USD")  # no quote: rejected before any plan runs
        first, consumer, producer, _, _ = make_edge(journal=journal)
        stop, task = await start_with(first, consumer, intent)
        await until(lambda: results(producer))
        stop.set()
        await task  # the process dies before its commit reaches the group (here: never looked at)
        successor, consumer2, producer2, _, _ = make_edge(journal=journal)
        stop2, task2 = await start_with(successor, consumer2, intent)  # the record is redelivered
        await until(lambda: consumer2.committed_offsets.get(TP) == 1)
        stop2.set()
        await task2
        copies = {v for t, v, _ in producer.sent + producer2.sent if t == "sor.executions.v1"}
        reasons = sorted(orjson.loads(v)["reason"] for v in copies)
        assert {orjson.loads(v)["event_id"] for v in copies} == {"result:no-book"}
        assert len(copies) == 1, f"one event id, {len(copies)} different copies: {reasons}"

    asyncio.run(main())
