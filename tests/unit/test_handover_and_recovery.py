"""Crash safety at the edges of a handover and a recovery (fakes, no broker): offsets are never
committed past what was consumed, recovery keeps the account's venue allow-list and notional
cap, an outcome whose publication failed is published once the broker is back, legs of
unknown state stay swept across restarts and partial corrections, the late-fill sweeper and
every journal write pass the fence, and backpressure never resumes a partition whose journal
is still being read. Each test failed on the code before its fix."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson

from tests.support.fakes import FakeProducer, MemoryJournal
from tests.support.scenarios import make_intent, make_quote
from tests.unit.test_edge import (NOW, TP, CountingVenue, FlakyJournal, LostVenue, hang_every_venue, make_edge, results,
                                  start_with, until, work_through)
from worker.config import Settings
from worker.domain.models import LegStatus, VenueConfig
from worker.execution.journal import IntentState
from worker.execution.risk import RiskLimits
from worker.pipeline.codec import encode
from worker.pipeline.compaction import JournalCompactor
from worker.service.dedupe import DoneMarker
from worker.service.fencing import Fenced
from worker.service.intents import Source
from worker.venues.base import OrderReport

D = Decimal
DAY = 86_400_000


class Crash(Exception):
    """The process dies here."""


def crash_at_first_placement():
    """An admission that lets the planned record be written, then the process dies before
    the first leg is sent (``_run_round`` admits once before the journal write)."""
    calls = []

    async def admit():
        calls.append(1)
        if len(calls) > 1:
            raise Crash

    return admit


def fast_recovery(worker):
    worker.service.executor.grace_ms = 0
    worker.service.executor.leg_timeout_ms = 0


# --- 1. commits past offsets that were never consumed -------------------------------------------

def test_recovery_finishing_first_never_commits_past_offsets_not_yet_redelivered():
    """Offset 0: an intent whose ``completed`` record was written but whose outcome was never
    published (crash between the journal and the broker). Offset 1: an intent left planned.
    On assignment only offset 1 is begun in the tracker (as a recovery task); offset 0 is only
    begun when its record is redelivered. If the recovery of offset 1 finishes before that
    redelivery arrives, the contiguous-prefix rule sees {1: done} and commits offset 2: the
    outcome of offset 0 is then never published by anyone (the next owner sees it below the
    committed offset and takes it for done)."""

    async def main():
        journal = MemoryJournal()
        first, *_ = make_edge(journal)
        zero = make_intent("0.5", intent_id="zero")
        one = make_intent("0.5", intent_id="one")
        await first.service.handle(zero, NOW, Source(0, 0))  # completed, never published
        try:
            await first.service.handle(one, NOW, Source(0, 1), admit=crash_at_first_placement())
        except Crash:
            pass
        assert journal.latest()["zero"].state is IntentState.COMPLETED
        assert journal.latest()["one"].state is IntentState.PLANNED

        worker, consumer, producer, adapters, _ = make_edge(journal)
        fast_recovery(worker)
        await consumer.assign(TP)  # the records of offsets 0 and 1 have not been fetched yet
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: [r["intent_id"] for r in results(producer)] == ["one"])
        await asyncio.sleep(0.1)  # several commit intervals
        committed = consumer.committed_offsets.get(TP)
        stop.set()
        await task
        assert "zero" not in [r["intent_id"] for r in results(producer)]
        assert committed is None or committed <= 0, (
            f"committed offset {committed} while the outcome of offset 0 was never published")

    asyncio.run(main())


# --- 2. the account allow-list is lost when a crashed intent is re-routed ------------------------

def test_recovery_reroutes_only_to_venues_the_account_is_allowed():
    """``handle`` applies the account's venue allow-list to its local ``intent`` but journals
    the intent as received; ``recover`` re-routes ``entry.intent``, so after a crash the
    remainder goes to venues the account may not trade on."""

    async def main():
        worker, consumer, producer, adapters, journal = make_edge()
        fast_recovery(worker)
        service = worker.service
        service.account_venues = {"acct": frozenset({"b"})}  # "a" is cheaper but not allowed
        intent = make_intent("1.5", intent_id="allow")
        try:
            await service.handle(intent, NOW, Source(0, 0), admit=crash_at_first_placement())
        except Crash:
            pass
        entry = journal.latest()["allow"]
        assert {leg.leg.provider for r in entry.rounds for leg in r.legs} == {"b"}
        assert adapters["a"].placed == adapters["b"].placed == []
        out = await service.recover(entry)
        assert out.result.status.value == "filled"
        assert adapters["a"].placed == [], f"recovery placed {adapters['a'].placed} on a venue the account may not use"

    asyncio.run(main())


# --- 3. a failed publication is never retried -----------------------------------------------------

class FailOnceProducer(FakeProducer):
    """The broker refuses the first result (delivery timeout during an outage), then recovers."""

    def __init__(self):
        super().__init__()
        self.failures = 1

    async def send(self, topic, value, *, key=None, partition=None, headers=None):
        if topic == "sor.executions.v1" and self.failures:
            self.failures -= 1
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(RuntimeError("KafkaTimeoutError: batch expired"))
            return fut
        return await super().send(topic, value, key=key, partition=partition, headers=headers)


def test_an_outcome_whose_publication_failed_is_published_once_the_broker_is_back():
    """``guarded`` logs ``not_acknowledged`` and returns: the intent's offset is never
    finished, nothing retries the publication, and the worker stays ready. Until a restart,
    the (filled) intent's result is never published and its partition never commits again."""

    async def main():
        worker, consumer, _, adapters, journal = make_edge()
        producer = FailOnceProducer()
        worker.producer = producer
        stop, task = await start_with(worker, consumer, make_intent("0.5", intent_id="pub"), make_intent("0.5", intent_id="later"))
        await until(lambda: "later" in [r["intent_id"] for r in results(producer)])
        assert journal.latest()["pub"].state is IntentState.COMPLETED  # filled at the venue
        try:
            await until(lambda: "pub" in [r["intent_id"] for r in results(producer)]
                        and consumer.committed_offsets.get(TP) == 2, timeout_s=3)
            ok = True
        except AssertionError:
            ok = False
        ready = worker.health.ready()
        stop.set()
        await task
        assert ok, f"result of 'pub' never published, offset never committed (worker ready: {ready})"

    asyncio.run(main())


# --- 4. late-fill sweeping lost: unknown legs shrink to done markers -----------------------------

def lost_edge(**kwargs):
    worker, consumer, producer, adapters, journal = make_edge(**kwargs)
    for name in ("a", "b"):
        lost = LostVenue(worker.service.venues[0 if name == "a" else 1], worker.service.quotes)
        worker.service.executor.adapters[name] = lost
        adapters[name] = lost
    worker.service.executor.reconcile_timeout_s = 0.05
    worker.service.max_rounds = 1
    return worker, consumer, producer, adapters, journal


def test_a_leg_unknown_after_a_failed_completed_write_is_still_swept():
    """The ``completed`` write fails once (journal outage), recovery writes it and the result
    is published, but ``recover`` never registers the entry in ``service._unknown``: the
    sweeper is not told about the unknown leg, and its late fill is never published."""

    async def main():
        worker, consumer, producer, adapters, journal = lost_edge(journal=FlakyJournal(failures=1))
        await work_through(worker, consumer, make_intent("1.5", intent_id="flaky"))
        [result] = results(producer)
        assert any(leg["status"] == "unknown" for leg in result["legs"])
        assert journal.latest()["flaky"].unknown_legs()
        assert len(worker.sweeper) == 1, "a leg of unknown state is not watched by the late-fill sweeper"

    asyncio.run(main())


def journal_view(journal: MemoryJournal, producer: FakeProducer) -> dict:
    """The compacted journal topic as a new owner reads it: full entries (``journal``) then
    the compactor's markers, written later to the same keys."""
    latest: dict = {e.intent_id.encode(): e for e in journal.records}
    for topic, value, key in producer.sent:
        if topic == "sor.journal.v1":
            latest[key] = DoneMarker.model_validate_json(value) if value is not None else None
    return {k: v for k, v in latest.items() if v is not None}


async def new_owner(journal, records):
    """Another worker taking the partition over; returns it once assigned."""
    worker, consumer, producer, adapters, _ = make_edge(journal)
    compactor = JournalCompactor(producer, "sor.journal.v1", worker.index, retention_ms=DAY, clock=lambda: NOW)

    async def read_records(partitions):
        return records

    worker.read_journal = lambda partitions: compactor.read(read_records, partitions)
    consumer.committed_offsets[TP] = 1
    await consumer.assign(TP)
    return worker


def test_a_republished_outcome_with_an_unknown_leg_keeps_its_full_journal_entry():
    """Crash between the ``completed`` record (a leg unknown) and the publication. The next
    owner watches the entry and republishes it from the journal, but ``publish`` asks
    ``service.completed`` (only filled by ``_complete`` in this process), gets ``None`` and
    compacts the entry to a done marker: one more restart and the leg is never swept."""

    async def main():
        journal = MemoryJournal()
        first, *_ = lost_edge(journal=journal)
        await first.service.handle(make_intent("1.5", intent_id="u"), NOW, Source(0, 0))  # then the crash
        assert journal.latest()["u"].unknown_legs()

        worker, consumer, producer, adapters, _ = lost_edge(journal=journal)
        worker.compactor = JournalCompactor(producer, "sor.journal.v1", worker.index, retention_ms=DAY, clock=lambda: NOW)
        await consumer.assign(TP)
        assert len(worker.sweeper) == 1
        consumer.feed(TP, 0, encode(make_intent("1.5", intent_id="u")))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: consumer.committed_offsets.get(TP) == 1)
        await asyncio.sleep(0.05)
        stop.set()
        await task
        await worker.compactor.close()
        assert [r["intent_id"] for r in results(producer)] == ["u"]

        third = await new_owner(journal, journal_view(journal, producer))
        assert len(third.sweeper) == 1, "the unknown leg is no longer swept after the next restart"

    asyncio.run(main())


def test_a_partial_correction_keeps_the_entry_of_legs_still_unknown():
    """Two legs unknown; the sweeper finds one. Publishing that correction calls
    ``index.done(compact=True)`` (``service.completed`` is ``None`` by then), so the next
    commit replaces the entry, whose other leg is still unknown, with a done marker."""

    async def main():
        worker, consumer, producer, adapters, journal = lost_edge()
        worker.compactor = JournalCompactor(producer, "sor.journal.v1", worker.index, retention_ms=DAY, clock=lambda: NOW)
        await consumer.assign(TP)
        consumer.feed(TP, 0, encode(make_intent("1.5", intent_id="two")))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: consumer.committed_offsets.get(TP) == 1, timeout_s=10)
        assert len(journal.latest()["two"].unknown_legs()) == 2
        adapters["a"].up = True
        assert await worker.sweeper.sweep_once() == 1
        assert len(journal.latest()["two"].unknown_legs()) == 1
        consumer.feed(TP, 1, encode(make_intent("0.1", intent_id="next")))  # the partition commits again
        await until(lambda: consumer.committed_offsets.get(TP) == 2, timeout_s=10)
        await asyncio.sleep(0.05)
        stop.set()
        await task
        await worker.compactor.close()
        markers = [k for t, v, k in producer.sent if t == "sor.journal.v1" and v is not None and b'"done":true' in v]
        assert b"two" not in markers, "the entry with a leg still unknown was compacted to a done marker"

    asyncio.run(main())


# --- 5. writes and publications that skip the fence -----------------------------------------------

def test_a_fenced_worker_does_not_write_the_completed_record_it_failed_to_write_before():
    """``recover`` of a completed entry whose write failed writes it again without passing
    the fence: a worker that lost the partition (or is past its lease after a stall) can
    overwrite the new owner's journal entry for the intent."""

    async def main():
        journal = FlakyJournal(failures=1)
        worker, *_ = make_edge(journal)
        service = worker.service
        try:
            await service.handle(make_intent("0.5", intent_id="f"), NOW, Source(0, 0))
        except RuntimeError:
            pass
        entry = service.in_flight("f")
        assert entry is not None and entry.state is IntentState.COMPLETED
        writes = len(journal.records)

        async def fenced():
            raise Fenced("partition 0 is no longer owned by this worker")

        try:
            await service.recover(entry, fenced)
        except Fenced:
            pass
        assert len(journal.records) == writes, "a fenced worker wrote to the journal"

    asyncio.run(main())


def test_the_sweeper_publishes_nothing_while_the_lease_is_stale():
    """A worker resumes after a stall past its session timeout: its lease is stale, so the
    fence holds every placement, journal write and publication. The late-fill sweeper
    passes no fence: it journals an amendment and publishes a correction for a partition
    another worker may own by now."""

    async def main():
        worker, consumer, producer, adapters, journal = lost_edge()
        await work_through(worker, consumer, make_intent("1.5", intent_id="stall"))
        sent, writes = len(producer.sent), len(journal.records)
        clock = [0.0]
        worker.fence.clock = lambda: clock[0]
        worker.fence.confirm()
        clock[0] = 100.0  # the process was stopped for 100 s
        adapters["a"].up = True
        try:
            await asyncio.wait_for(worker.sweeper.sweep_once(), 0.5)
        except asyncio.TimeoutError:
            pass  # held by the fence: what is expected
        assert len(producer.sent) == sent and len(journal.records) == writes, (
            "the sweeper journaled and published with a stale lease")

    asyncio.run(main())


# --- 6. the notional cap is checked on round 0 only -----------------------------------------------

class RejectAndMove(CountingVenue):
    """Rejects the order, and the market moves: the other venue's book is 10x higher."""

    async def place(self, order):
        self.placed.append(order.client_order_id)
        self.quotes_ref.update(make_quote("b", asks=[(1000, 5)], ts=NOW + 1))
        return OrderReport(order.client_order_id, None, LegStatus.REJECTED, D(0), error="insufficient balance")


def test_a_reroute_never_exceeds_the_accounts_notional_cap():
    """``check_plan`` runs on the first plan only; ``_more_rounds`` re-routes the remainder
    at any price, so a market intent accepted at ~100 notional trades 1,000 under a 160 cap."""

    async def main():
        worker, consumer, producer, adapters, journal = make_edge()
        service = worker.service
        service.limits = RiskLimits(default_max_notional=D(160))
        a = RejectAndMove(service.venues[0], service.quotes)
        a.quotes_ref = service.quotes
        service.executor.adapters["a"] = a
        out = await service.handle(make_intent("1", intent_id="cap"), NOW, Source(0, 0))
        assert out.plans[0].estimated_vwap * out.plans[0].planned_qty <= 160  # accepted under the cap
        notional = out.result.cummulativeQuoteQty
        assert notional <= 160, f"traded notional {notional} over the account's cap of 160"

    asyncio.run(main())


# --- 7. backpressure resumes a partition whose journal is still being recovered ------------------

def test_backpressure_never_resumes_a_partition_before_its_journal_is_recovered():
    """Under load (paused by backpressure) a rebalance assigns partition 1: the listener pauses
    it and reads its journal. Meanwhile the in-flight intents finish and ``_backpressure``
    resumes ``consumer.assignment()``, partition 1 included: its records are consumed and
    executed as new before its journal was read (an intent a crashed owner left planned
    runs again from round 0)."""
    from aiokafka import TopicPartition

    TP1 = TopicPartition("sor.intents.v1", 1)

    async def main():
        settings = Settings(commit_interval_ms=10, shutdown_timeout_s=2, max_in_flight=2)
        worker, consumer, producer, adapters, journal = make_edge(settings=settings)
        gate, journal_read = asyncio.Event(), asyncio.Event()
        for adapter in adapters.values():
            place = adapter.place

            async def held(order, place=place):
                await gate.wait()
                return await place(order)

            adapter.place = held
        stop, task = await start_with(worker, consumer, make_intent("0.2", intent_id="h1"), make_intent("0.2", intent_id="h2"))
        await until(lambda: worker._paused and worker.stats.in_flight == 2)

        reads = []

        async def slow_read(partitions):
            reads.append(partitions)
            await journal_read.wait()
            return {}

        worker.read_journal = slow_read
        consumer.feed(TP1, 0, encode(make_intent("0.5", intent_id="crashed")))
        assigning = asyncio.create_task(consumer.assign(TP1))
        await until(lambda: reads == [[1]])
        gate.set()  # the in-flight intents finish: backpressure lifts
        await until(lambda: not worker._paused)
        await asyncio.sleep(0.3)
        started = "crashed" in worker.active or worker.index.get("crashed") is not None or \
            "crashed" in [r["intent_id"] for r in results(producer)]
        journal_read.set()
        await assigning
        stop.set()
        await task
        assert not started, "an intent of partition 1 started before its journal was read"

    asyncio.run(main())


def test_commit_never_passes_a_republication_in_flight_after_recovery_finished_first():
    """The recovery of offset 1 finishes before anything is consumed; then offsets 0 and 1 are
    redelivered in one batch while offset 0 (a completed intent whose outcome a crash lost) is
    being republished: nothing may be committed past it until its outcome is acknowledged."""

    async def main():
        journal = MemoryJournal()
        first, *_ = make_edge(journal)
        await first.service.handle(make_intent("0.5", intent_id="zero"), NOW, Source(0, 0))  # outcome never published
        try:
            await first.service.handle(make_intent("0.5", intent_id="one"), NOW, Source(0, 1), admit=crash_at_first_placement())
        except Crash:
            pass

        worker, consumer, producer, adapters, _ = make_edge(journal)
        fast_recovery(worker)
        await consumer.assign(TP)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: [r["intent_id"] for r in results(producer)] == ["one"])
        await asyncio.sleep(0.05)  # several commit intervals: nothing consumed, nothing committed
        producer.hold = True  # the republication of "zero" is not acknowledged yet
        consumer.feed(TP, 0, encode(make_intent("0.5", intent_id="zero")))
        consumer.feed(TP, 1, encode(make_intent("0.5", intent_id="one")))
        await until(lambda: "zero" in [r["intent_id"] for r in results(producer)])
        await asyncio.sleep(0.05)
        committed = consumer.committed_offsets.get(TP)
        producer.hold = False
        producer.release()
        stop.set()
        await task
        assert committed is None or committed <= 0, (
            f"committed offset {committed} while the republication of offset 0 was not acknowledged")

    asyncio.run(main())


class DownProducer(FakeProducer):
    """The broker refuses every result (an outage)."""

    async def send(self, topic, value, *, key=None, partition=None, headers=None):
        if topic == "sor.executions.v1":
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(RuntimeError("KafkaTimeoutError: batch expired"))
            return fut
        return await super().send(topic, value, key=key, partition=partition, headers=headers)


def test_a_publication_retry_fenced_by_a_revocation_does_not_leave_the_worker_not_ready():
    """worker.py `_until_published`: the `publish:<id>` key is added to `_stuck` and to the
    health problems on the first failure; when the partition is revoked, `admit()` raises
    Fenced (or the task is cancelled) and the key is never removed: the worker reports a
    stuck intent and /readyz 503 for ever, for an intent it no longer owns."""

    async def main():
        settings = Settings(commit_interval_ms=10, shutdown_timeout_s=2)
        worker, consumer, _, adapters, journal = make_edge(settings=settings)
        worker.producer = DownProducer()
        await consumer.assign(TP)
        consumer.feed(TP, 0, encode(make_intent("0.5", intent_id="out")))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: worker.stuck() == 1)
        await consumer.revoke(TP)  # the new owner republishes it from the journal
        await until(lambda: not any(worker.tasks.values()))
        stuck, ready, problems = worker.stuck(), worker.health.ready(), worker.health.problems()
        stop.set()
        await task
        assert stuck == 0 and ready, f"after the revocation: stuck={stuck}, problems={problems}"

    asyncio.run(main())


# --- 9. what a worker keeps of intents it no longer owns -----------------------------------------

def test_an_intent_fenced_mid_flight_leaves_nothing_behind_in_the_service():
    """service.py `_in_flight`: the entry of an intent whose planned record was written stays
    there when the partition is revoked (the task is cancelled or fenced, and nothing pops
    it). Each handover left one entry per intent in flight, for the life of the process."""

    async def main():
        settings = Settings(commit_interval_ms=10, shutdown_timeout_s=0.2)
        worker, consumer, _, adapters, journal = make_edge(settings=settings)
        hung = hang_every_venue(adapters)
        stop, task = await start_with(worker, consumer, make_intent("0.5", intent_id="moved"))
        await until(hung.is_set)
        await consumer.revoke(TP)  # the new owner recovers it from the journal
        await until(lambda: not any(worker.tasks.values()))
        kept = worker.service.in_flight("moved")
        stop.set()
        await task
        assert journal.latest()["moved"].state is IntentState.PLANNED
        assert kept is None, "the service still holds the entry of an intent another worker now owns"

    asyncio.run(main())


def test_an_intent_with_an_unknown_leg_fenced_before_its_publication_leaves_nothing_behind():
    """service.py `_unknown`: a completed entry with a leg still unknown waits there for the
    publisher to hand it to the sweeper. When the publication is fenced (the partition moved
    while the broker was down), the publisher never asks, and the entry stays for ever."""

    async def main():
        settings = Settings(commit_interval_ms=10, shutdown_timeout_s=2)
        worker, consumer, _, adapters, journal = make_edge(settings=settings)
        worker.service.executor.adapters["a"] = LostVenue(worker.service.venues[0], worker.service.quotes)
        worker.service.executor.reconcile_timeout_s = 0.05
        worker.service.max_rounds = 1
        worker.producer = DownProducer()
        stop, task = await start_with(worker, consumer, make_intent("1.5", intent_id="unknown"))
        await until(lambda: worker.stuck() == 1)  # completed and journaled; its outcome not acknowledged
        assert journal.latest()["unknown"].unknown_legs()
        await consumer.revoke(TP)
        await until(lambda: not any(worker.tasks.values()))
        left = worker.service.completed("unknown")
        stop.set()
        await task
        assert left is None, "the service still holds a completed entry of an intent another worker now owns"

    asyncio.run(main())


def test_watching_an_older_entry_never_replaces_a_newer_correction():
    """sweeper.py `watch`: the entry handed in replaced the one watched, whatever their ages. A
    republication of the intent's outcome (its record redelivered while the sweeper had already
    journaled a correction) handed in the entry from before the correction: the sweeper then
    asked again about the leg it had settled, journaled a second "version 2" over the first,
    and published its fills again."""

    async def main():
        worker, consumer, producer, adapters, journal = lost_edge()
        await work_through(worker, consumer, make_intent("1.5", intent_id="two"))
        before = journal.latest()["two"]
        assert len(before.unknown_legs()) == 2
        adapters["a"].up = True
        assert await worker.sweeper.sweep_once() == 1  # version 2: the leg at "a" filled
        assert len(journal.latest()["two"].unknown_legs()) == 1
        worker.sweeper.watch(before)  # the entry as it was before the correction
        adapters["b"].up = True
        await worker.sweeper.sweep_once()
        versions = [orjson.loads(v)["version"] for t, v, _ in producer.sent if t == "sor.executions.v1"]
        assert versions == [1, 2, 3], versions

    asyncio.run(main())


def test_a_market_intent_is_held_to_its_cap_at_the_legs_worst_prices():
    """risk.py `check_plan`: a market intent's notional was the plan's estimate (its VWAP x qty),
    but each leg is an IOC limit order at the leg's worst price, and the venue fills it at any
    price up to that: a book that moved between the snapshot and the order fills the whole leg
    at its worst price. Here 1.5 is estimated at 200 (1 @ 100, 0.5 @ 200) and may cost 300,
    against a cap of 250. A buy is now held to the cap at its legs' worst prices."""
    from worker.execution.executor import Executor
    from worker.service.intents import IntentService
    from worker.service.quotes import QuoteCache
    from worker.venues.paper import PaperVenue

    quotes = QuoteCache()
    venue = VenueConfig(name="a")
    quotes.update(make_quote("a", asks=[(100, 1), (200, 1)], ts=NOW))
    executor = Executor({"a": PaperVenue(venue, lambda s: quotes.get("a", s))}, 1000, clock=lambda: NOW)
    service = IntentService([venue], quotes, executor, RiskLimits(default_max_notional=D(250)), 2_000, clock=lambda: NOW)
    out = asyncio.run(service.handle(make_intent("1.5", intent_id="deep"), NOW))
    assert out.result.status.value == "rejected" and "risk_limit" in out.result.reason, out.result.reason


def test_a_leg_of_unknown_state_counts_against_the_cap_at_its_worst_price():
    """intents.py `_spent_notional`: a leg whose state is unknown counted at its estimated
    notional, though it may have filled in full at up to its worst price; a re-route of the
    remainder could then take the account past its cap by the difference."""
    from worker.execution.executor import LegOutcome
    from worker.routing.planner import route
    from worker.service.intents import _spent_notional

    plan = route(make_intent("1.5"), {"a": make_quote("a", asks=[(100, 1), (200, 1)])}, [VenueConfig(name="a")])
    [leg] = plan.legs
    assert leg.worst_price == 200 and leg.estimated_notional == 200
    unknown = LegOutcome(leg, "c-1", OrderReport("c-1", None, LegStatus.UNKNOWN, D(0)), 5)
    assert _spent_notional([unknown]) == D(300)
