"""The Kafka edge with fakes, no broker: commit order, duplicates, revocation, fencing, and
"never a false rejection once orders may exist"."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
from aiokafka import TopicPartition

from tests.support.fakes import FakeConsumer, FakeProducer, MemoryJournal
from tests.support.scenarios import make_intent, make_quote
from worker.config import Settings
from worker.domain.models import VenueConfig
from worker.execution.breaker import CircuitBreakers
from worker.execution.executor import Executor
from worker.execution.journal import IntentState
from worker.execution.risk import RiskLimits
from worker.observability import Health
from worker.pipeline.codec import encode
from worker.pipeline.kafka import DeadLetters
from worker.pipeline.worker import IntentWorker
from worker.service.intents import IntentService
from worker.service.quotes import QuoteCache
from worker.venues.paper import PaperVenue

D = Decimal
NOW = 1_000_000
TP = TopicPartition("sor.intents.v1", 0)


class FlakyJournal(MemoryJournal):
    """Fails the ``completed`` write ``failures`` times (a journal outage, an oversize record)."""

    def __init__(self, failures: int = 0):
        super().__init__()
        self.failures = failures

    async def write(self, entry) -> None:
        if entry.state is IntentState.COMPLETED and self.failures > 0:
            self.failures -= 1
            raise RuntimeError("MessageSizeTooLargeError: the journal refused the record")
        await super().write(entry)


class CountingVenue(PaperVenue):
    def __init__(self, venue, quotes):
        super().__init__(venue, lambda s, n=venue.name: quotes.get(n, s))
        self.placed: list[str] = []

    async def place(self, order):
        self.placed.append(order.client_order_id)
        return await super().place(order)


def make_edge(journal=None, settings=None):
    settings = settings or Settings(commit_interval_ms=10, shutdown_timeout_s=2)
    quotes = QuoteCache()
    venues = [VenueConfig(name="a", taker_fee_bps=D(10)), VenueConfig(name="b", taker_fee_bps=D(10))]
    quotes.update(make_quote("a", asks=[(100, 1), (101, 5)], ts=NOW))
    quotes.update(make_quote("b", asks=[(100.5, 1), (102, 5)], ts=NOW))
    journal = journal or MemoryJournal()
    adapters = {v.name: CountingVenue(v, quotes) for v in venues}
    clock = lambda: NOW  # noqa: E731
    executor = Executor(adapters, 1000, clock=clock, breakers=CircuitBreakers(2, 5_000, clock))
    service = IntentService(venues, quotes, executor, RiskLimits(), 2_000, clock=clock, journal=journal)
    consumer, producer = FakeConsumer(), FakeProducer()

    async def read_journal(partitions):
        latest = journal.latest() if isinstance(journal, MemoryJournal) else {}
        return {k: e for k, e in latest.items() if e.source_partition in partitions}

    health = Health()
    health.started = True
    worker = IntentWorker(settings, service, consumer, producer, DeadLetters(producer, settings.topics.dlq), read_journal,
                          health=health)
    worker.subscribe()
    return worker, consumer, producer, adapters, journal


async def until(predicate, timeout_s: float = 5.0) -> None:
    """Wait for a condition the event loop brings about (not a timing assertion)."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")



async def start_with(worker, consumer, *intents) -> tuple[asyncio.Event, asyncio.Task]:
    """Assign TP, feed ``intents`` at offsets 0, 1, ... and start the worker; returns its stop
    event and task."""
    await consumer.assign(TP)
    for offset, intent in enumerate(intents):
        consumer.feed(TP, offset, encode(intent))
    stop = asyncio.Event()
    return stop, asyncio.create_task(worker.run(stop))


async def work_through(worker, consumer, *intents, timeout_s: float = 10) -> None:
    """:func:`start_with`, until every intent is committed; then stop the worker."""
    stop, task = await start_with(worker, consumer, *intents)
    await until(lambda: consumer.committed_offsets.get(TP) == len(intents), timeout_s=timeout_s)
    stop.set()
    await task


def hang_every_venue(adapters) -> asyncio.Event:
    """Every venue takes orders and never answers; the event is set when the first is sent."""
    hung = asyncio.Event()

    async def never_answers(order):
        hung.set()
        await asyncio.Event().wait()

    for adapter in adapters.values():
        adapter.place = never_answers
    return hung


def results(producer) -> list[dict]:
    return [orjson.loads(v) for t, v, _ in producer.sent if t == "sor.executions.v1"]


def test_offsets_are_committed_only_after_the_outcome_is_acknowledged():
    async def main():
        worker, consumer, producer, _, _ = make_edge()
        await consumer.assign(TP)
        producer.hold = True  # the broker has not acknowledged anything yet
        consumer.feed(TP, 0, encode(make_intent("1.5", intent_id="i-0")))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: "sor.executions.v1" in producer.topics())
        await asyncio.sleep(0.05)  # several commit intervals pass
        assert all(TP not in c for c in consumer.commits)
        producer.release()
        await until(lambda: consumer.committed_offsets.get(TP) == 1)
        stop.set()
        await task
        assert producer.topics()[:1] == ["sor.plans.v1"] and producer.topics()[-1] == "sor.executions.v1"

    asyncio.run(main())


def test_a_duplicate_intent_id_executes_once_and_both_offsets_commit():
    async def main():
        worker, consumer, producer, adapters, _ = make_edge()
        await consumer.assign(TP)
        intent = encode(make_intent("0.5", intent_id="dup"))
        consumer.feed(TP, 0, intent)
        consumer.feed(TP, 1, intent)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: consumer.committed_offsets.get(TP) == 2)
        stop.set()
        await task
        assert len(results(producer)) == 1
        assert sum(len(a.placed) for a in adapters.values()) == 1
        assert worker.metrics.duplicates._value.get() == 1

    asyncio.run(main())


def test_undecodable_input_goes_to_the_dlq_and_commits():
    async def main():
        worker, consumer, producer, _, _ = make_edge()
        await consumer.assign(TP)
        consumer.feed(TP, 0, b'{"intent_id": "x", "qty": "oops"}')
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: consumer.committed_offsets.get(TP) == 1)
        stop.set()
        await task
        assert producer.topics() == ["sor.dlq.v1"]

    asyncio.run(main())


def test_a_filled_intent_is_never_published_as_rejected_when_the_journal_fails():
    """Reproduction (issue 10): the ``completed`` record is refused (oversize, journal outage).
    Before: ``status=rejected, filled_qty=0`` was published and the offset committed. Now the
    intent stays in flight, the worker is not ready, and once the journal takes the record
    the truthful result (filled) is published, then committed."""

    async def main():
        journal = FlakyJournal(failures=3)
        worker, consumer, producer, adapters, _ = make_edge(journal)
        await consumer.assign(TP)
        consumer.feed(TP, 0, encode(make_intent("1.5", intent_id="big")))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: worker.stuck() == 1)
        assert not worker.health.ready()
        assert results(producer) == []
        assert consumer.committed_offsets.get(TP) is None
        await until(lambda: consumer.committed_offsets.get(TP) == 1, timeout_s=10)
        stop.set()
        await task
        [result] = results(producer)
        assert result["status"] == "filled" and D(result["filled_qty"]) == D("1.5")
        assert sum(len(a.placed) for a in adapters.values()) == 2  # each leg placed once, never again
        assert worker.health.ready() and worker.stuck() == 0

    asyncio.run(main())


def test_a_revoked_partition_places_no_order_and_publishes_nothing():
    """The fence: an intent that started before a revocation is refused at its next placement."""

    async def main():
        worker, consumer, producer, adapters, journal = make_edge()
        await consumer.assign(TP)
        admit = worker._admission(TP.partition)
        await consumer.revoke(TP)
        from worker.service.fencing import Fenced

        try:
            await worker.service.handle(make_intent("1.5", intent_id="late"), NOW, admit=admit)
        except Fenced:
            pass
        else:
            raise AssertionError("placed after the partition was revoked")
        assert sum(len(a.placed) for a in adapters.values()) == 0
        assert results(producer) == []
        assert "late" not in journal.latest()  # nor journaled: the new owner takes it from its redelivery

    asyncio.run(main())


def test_a_stale_lease_holds_placements_until_the_group_confirms():
    """A worker that stalled past its lease (SIGSTOP, GC pause) places nothing until a commit
    or an assignment confirms it is still a member."""

    async def main():
        worker, consumer, producer, adapters, _ = make_edge()
        await consumer.assign(TP)
        clock = [0.0]
        worker.fence.clock = lambda: clock[0]
        worker.fence.confirm()
        clock[0] = 100.0  # the process was stopped for 100 s
        admit = worker._admission(TP.partition)
        handled = asyncio.create_task(worker.service.handle(make_intent("0.5", intent_id="s"), NOW, admit=admit))
        await asyncio.sleep(0.3)
        assert not handled.done() and sum(len(a.placed) for a in adapters.values()) == 0
        worker.fence.confirm()  # a commit succeeded: still the owner
        out = await handled
        assert out.result.status.value == "filled"

    asyncio.run(main())


def test_recovery_on_assignment_finishes_unfinished_intents_once():
    """A planned record left by a crashed owner is reconciled on assignment; the redelivered
    message of that intent does not start it a second time."""

    async def main():
        journal = MemoryJournal()
        first, *_ = make_edge(journal)
        intent = make_intent("1.5", intent_id="crashed")
        from worker.service.intents import Source

        # simulate the crash: the planned record is written, the legs never placed
        class Crash(Exception):
            pass

        async def crash():
            raise Crash

        try:
            await first.service.handle(intent, NOW, Source(0, 0), admit=crash)
        except Crash:
            pass
        worker, consumer, producer, adapters, _ = make_edge(journal)
        worker.service.executor.grace_ms = 0
        worker.service.executor.leg_timeout_ms = 0
        consumer.feed(TP, 0, encode(intent))
        await consumer.assign(TP)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: consumer.committed_offsets.get(TP) == 1, timeout_s=10)
        stop.set()
        await task
        [result] = results(producer)
        assert result["status"] == "filled"
        assert sum(len(a.placed) for a in adapters.values()) == 2  # re-routed once, in a new round

    asyncio.run(main())


def test_an_intent_with_2100_trades_keeps_every_record_under_the_size_limit():
    """Reproduction (issue 10): 3 venues x 700 levels, a market buy that takes every level.
    Before: the ``completed`` record (trades stored three times) was over 1 MiB, refused by
    the producer, and the filled intent was published as rejected."""
    from worker.pipeline.kafka import KafkaJournal

    async def main():
        settings = Settings(commit_interval_ms=10, shutdown_timeout_s=2)
        journal_producer = FakeProducer()
        journal = KafkaJournal(journal_producer, settings.topics.journal, max_bytes=settings.max_request_bytes)
        worker, consumer, producer, adapters, _ = make_edge(journal, settings)
        levels = [(100 + i * D("0.01"), D("0.01")) for i in range(700)]
        for name in ("a", "b"):
            worker.service.quotes.update(make_quote(name, asks=levels, ts=NOW + 1))
        worker.service.venues.append(VenueConfig(name="c", taker_fee_bps=D(10)))
        adapters["c"] = CountingVenue(worker.service.venues[-1], worker.service.quotes)
        worker.service.executor.adapters["c"] = adapters["c"]
        worker.service.quotes.update(make_quote("c", asks=levels, ts=NOW + 1))
        await work_through(worker, consumer, make_intent("21", intent_id="deep"), timeout_s=60)
        [result] = results(producer)
        assert result["status"] == "filled" and result["fill_count"] == 2100
        fills = [v for t, v, _ in producer.sent if t == "sor.fills.v1"]
        assert len(fills) == 2100
        limit = settings.max_request_bytes
        assert max(len(v) for _, v, _ in journal_producer.sent) < limit
        assert max(len(v) for _, v, _ in producer.sent) < limit
        return result

    asyncio.run(main())


def test_a_result_too_big_for_one_record_lists_a_prefix_of_its_fills():
    from worker.pipeline.codec import encode_within
    from worker.service.intents import Outcome

    worker, *_ = make_edge()
    out: Outcome = asyncio.run(worker.service.handle(make_intent("1.5", intent_id="x"), NOW))
    whole = encode(out.result)
    cut = orjson.loads(encode_within(out.result, len(whole) + 4096 - 10))
    assert cut["fills_complete"] is False and cut["fill_count"] == len(out.result.fills) > len(cut["fills"])
    assert cut["fills"] == orjson.loads(whole)["fills"][:len(cut["fills"])]
    assert encode_within(out.result, 1_048_576) == whole


def test_the_heartbeat_hook_exists_in_the_pinned_aiokafka():
    """The fence's lease is refreshed by every successful heartbeat (a private aiokafka hook)."""
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    from worker.pipeline.worker import on_heartbeat

    assert hasattr(GroupCoordinator, "_do_heartbeat")

    class Coordinator:
        async def _do_heartbeat(self):
            return True

    class Consumer:
        _coordinator = Coordinator()

    seen = []
    assert on_heartbeat(Consumer(), lambda: seen.append(1))
    assert asyncio.run(Consumer._coordinator._do_heartbeat()) and seen == [1]
    assert not on_heartbeat(object(), lambda: None)


class LostVenue(CountingVenue):
    """Fills the order but loses the answer, then stays unreachable until ``up``."""

    def __init__(self, venue, quotes):
        super().__init__(venue, quotes)
        self.up = False

    async def place(self, order):
        from worker.venues.base import VenueError

        await super().place(order)
        raise VenueError("connection reset", unknown=True)

    async def query(self, coid):
        from worker.venues.base import VenueError

        if not self.up:
            raise VenueError("unreachable", unknown=True)
        return await super().query(coid)


def edge_with_a_lost_venue():
    """:func:`make_edge` whose venue "a" fills but loses its answers (a :class:`LostVenue`,
    returned in place of the adapters), reconciled briefly, one round per intent."""
    worker, consumer, producer, adapters, journal = make_edge()
    lost = LostVenue(worker.service.venues[0], worker.service.quotes)
    worker.service.executor.adapters["a"] = lost
    worker.service.executor.reconcile_timeout_s = 0.05
    worker.service.max_rounds = 1
    return worker, consumer, producer, lost, journal


def test_a_late_fill_is_published_as_a_correction_with_a_new_version():
    """Reproduction (issue 10): a leg still unknown after the reconcile timeout used to stay
    unknown for ever, and a fill that appeared later at the venue was never published."""

    async def main():
        worker, consumer, producer, lost, journal = edge_with_a_lost_venue()
        await consumer.assign(TP)
        consumer.feed(TP, 0, encode(make_intent("1.5", intent_id="late")))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: consumer.committed_offsets.get(TP) == 1, timeout_s=10)
        [first] = results(producer)
        assert first["version"] == 1 and any(leg["status"] == "unknown" for leg in first["legs"])
        assert len(worker.sweeper) == 1
        assert await worker.sweeper.sweep_once() == 0  # still unreachable: nothing changes, still watched
        lost.up = True
        assert await worker.sweeper.sweep_once() == 1
        stop.set()
        await task
        first_fill_ids = {orjson.loads(v)["fill_id"] for t, v, _ in producer.sent if t == "sor.fills.v1"}
        final = results(producer)[-1]
        assert final["version"] == 2 and final["intent_id"] == "late" and final["event_id"] != first["event_id"]
        assert final["status"] == "filled" and D(final["filled_qty"]) == D("1.5")
        assert len(first_fill_ids) == final["fill_count"] == len(final["fills"])  # every allocation published once
        assert len(worker.sweeper) == 0
        from worker.service.intents import Outcome

        rebuilt = Outcome.from_journal(journal.latest()["late"])
        assert orjson.loads(encode(rebuilt.result)) == final

    asyncio.run(main())


def test_a_failing_background_task_is_restarted_then_stops_the_process():
    """A dead quote feed used to leave the worker 'ready' while it rejected every intent."""
    from worker.bootstrap import Supervisor

    async def main():
        stop, health = asyncio.Event(), Health()
        health.started = True
        runs = []

        async def feed():
            runs.append(1)
            raise ConnectionError("broker gone")

        sup = Supervisor(stop, health, give_up_s=0.3)
        sup.spawn("quote-feed", feed)
        await until(lambda: not health.ready())
        await asyncio.wait_for(stop.wait(), 10)
        assert len(runs) >= 2 and isinstance(sup.failure, ConnectionError)
        assert not health.ready() and "quote-feed" in health.problems()
        await sup.close()

    asyncio.run(main())


def test_an_intent_fenced_before_its_journal_record_runs_when_redelivered():
    """A rebalance that gives the same partition back: the fenced intent had no journal
    record yet, so its redelivery must start it again (not be taken for a duplicate)."""

    async def main():
        worker, consumer, producer, adapters, _ = make_edge()
        await consumer.assign(TP)
        admit = worker._admission(TP.partition)
        intent = make_intent("0.5", intent_id="again")
        worker.index.claim("again", TP.partition, 0)
        await consumer.revoke(TP)
        from worker.service.fencing import Fenced
        from worker.service.intents import Source

        try:
            await worker._process(intent, NOW, Source(0, 0), admit)
        except Fenced:
            pass
        await consumer.assign(TP)
        consumer.feed(TP, 0, encode(intent))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: consumer.committed_offsets.get(TP) == 1)
        stop.set()
        await task
        assert [r["intent_id"] for r in results(producer)] == ["again"]

    asyncio.run(main())


def test_a_stop_waits_one_shutdown_timeout_then_fences_and_cancels_what_is_left():
    """A leg that never answers: the stop lets it run for one shutdown timeout, then fences
    the partition and cancels the intent (the next owner recovers it from the journal). Its
    offset stays uncommitted, and the revocation that follows has nothing left to wait for
    (a stop used to take two shutdown timeouts)."""

    async def main():
        worker, consumer, producer, adapters, journal = make_edge(settings=Settings(commit_interval_ms=10, shutdown_timeout_s=0.2))
        hung = hang_every_venue(adapters)
        await consumer.assign(TP)
        consumer.feed(TP, 0, encode(make_intent("0.5", intent_id="hung")))
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(hung.is_set)
        stop.set()
        await task
        assert not any(t for ts in worker.tasks.values() for t in ts if not t.done())
        assert TP.partition not in worker.fence._owned  # fenced: nothing more is placed for it
        assert consumer.committed_offsets.get(TP) is None
        assert journal.latest()["hung"].state.value != "completed"  # in flight: recovered by the next owner

    asyncio.run(main())


def test_a_journal_record_of_a_newer_release_holds_the_partition_instead_of_being_skipped():
    """Rolled back, or an old instance in a rolling deploy: a record this release cannot read
    must not be skipped (its intent could execute again). The partition stays paused and the
    worker not ready, retried until a release that reads it takes over (here: the read works)."""
    from worker.execution.journal import JournalFormatError

    async def main():
        worker, consumer, producer, adapters, _ = make_edge()
        reads = []

        async def newer_then_readable(partitions):
            reads.append(partitions)
            if len(reads) < 3:
                raise JournalFormatError("journal record of 'x' has format 3; this release reads up to 2")
            return {}

        worker.read_journal = newer_then_readable
        consumer.feed(TP, 0, encode(make_intent("1", intent_id="held")))
        assigning = asyncio.create_task(consumer.assign(TP))
        await until(lambda: len(reads) >= 1)
        assert TP in consumer.paused and not worker.health.ready()
        assert "format 3" in worker.health.problems()["assignment"]
        await assigning
        assert TP not in consumer.paused and worker.health.ready()
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: consumer.committed_offsets.get(TP) == 1, timeout_s=10)
        stop.set()
        await task
        assert [r["status"] for r in results(producer)] == ["filled"]
        assert sum(len(a.placed) for a in adapters.values()) >= 1

    asyncio.run(main())
