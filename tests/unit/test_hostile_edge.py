"""Issue 11 on the Kafka edge, with fakes and no broker: clocks, keys, bounded memory,
capped dead letters, poison quotes, journal compaction, bind addresses."""

from __future__ import annotations

import asyncio
import hashlib
from decimal import Decimal
from pathlib import Path

import orjson
import yaml
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndTimestamp

from tests.support.fakes import FakeConsumer, FakeProducer
from tests.support.scenarios import make_intent, make_quote
from tests.unit.test_edge import NOW, TP, make_edge, results, until
from worker.config import Settings
from worker.domain.errors import InputError
from worker.domain.models import VenueConfig
from worker.observability import Metrics
from worker.pipeline.codec import encode
from worker.pipeline.compaction import JournalCompactor
from worker.pipeline.kafka import DeadLetters, QuoteFeed
from worker.routing.planner import route
from worker.service.dedupe import DONE, DoneMarker
from worker.service.quotes import QuoteCache

D = Decimal
ROOT = Path(__file__).resolve().parents[2]
QTP = TopicPartition("sor.quotes.v1", 0)
DAY = 86_400_000


def dlq(producer) -> list[dict]:
    return [orjson.loads(v) for t, v, _ in producer.sent if t == "sor.dlq.v1"]


def run_edge(feed, *, settle=lambda w, c: c.committed_offsets.get(TP) is not None, **kwargs):
    """Assign, feed records, run until ``settle``, stop; returns (worker, consumer, producer)."""

    async def main():
        worker, consumer, producer, _, _ = make_edge(**kwargs)
        await consumer.assign(TP)
        feed(worker, consumer, producer)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await until(lambda: settle(worker, consumer))
        stop.set()
        await task
        return worker, consumer, producer

    return asyncio.run(main())


# --- clocks ----------------------------------------------------------------------------------

def test_a_quote_dated_beyond_the_clock_skew_is_refused_naming_ts():
    """Reproduction: a quote dated now + 1 day was cached, then shadowed every real snapshot."""
    cache = QuoteCache({"a"}, max_skew_ms=5_000, clock=lambda: NOW)
    try:
        cache.update(make_quote("a", asks=[(1, 1)], ts=NOW + DAY))
    except InputError as exc:
        assert str(exc).startswith("ts: ") and "future" in str(exc)
    else:
        raise AssertionError("a quote from tomorrow was accepted")
    assert cache.update(make_quote("a", asks=[(100, 1)], ts=NOW + 4_000))  # within the skew
    assert cache.update(make_quote("a", asks=[(101, 1)], ts=NOW + 4_500))  # the real feed moves on


def test_a_quote_dated_in_the_future_is_never_fresh_for_the_router():
    venues = [VenueConfig(name="a")]
    plan = route(make_intent("1"), {"a": make_quote("a", asks=[(100, 5)], ts=NOW + DAY)}, venues,
                 now_ms=NOW, max_quote_age_ms=2_000)
    assert plan.legs == [] and plan.excluded[0].reason.value == "stale"


def test_the_feed_dead_letters_a_future_quote_and_keeps_the_real_one():
    async def main():
        producer = FakeProducer()
        cache = QuoteCache({"a"}, max_skew_ms=5_000)
        feed = QuoteFeed(Settings(), cache, DeadLetters(producer, "sor.dlq.v1").send)
        feed.consumer = FakeConsumer()
        feed.consumer.assigned.add(QTP)
        from worker.domain.clock import now_ms

        feed.consumer.feed(QTP, 0, encode(make_quote("a", asks=[(1, 1)], ts=now_ms() + DAY)), key=b"a:BTC/USD")
        feed.consumer.feed(QTP, 1, encode(make_quote("a", asks=[(100, 1)], ts=now_ms())), key=b"a:BTC/USD")
        assert await feed._poll(0) == 2
        [letter] = dlq(producer)
        assert letter["error"].startswith("ts: ") and letter["source_offset"] == 0
        assert cache.get("a", "BTC/USD").asks[0][0] == 100

    asyncio.run(main())


def test_an_intent_without_dates_is_dated_by_its_record_timestamp():
    """Reproduction: such an intent never expired, so a replay after offsets were lost
    executed it again. Now the broker timestamp is its created_at, and the TTL applies."""
    doc = encode(make_intent("0.5", intent_id="old"))
    assert b'"created_at":null' in doc and b'"expires_at":null' in doc
    worker, consumer, producer = run_edge(lambda w, c, p: c.feed(TP, 0, doc, timestamp=NOW - 120_000))
    [result] = results(producer)
    assert result["status"] == "rejected" and result["reason"].startswith("expired: created_at")

    _, _, producer = run_edge(lambda w, c, p: c.feed(TP, 0, encode(make_intent("0.5", intent_id="new")), timestamp=NOW - 1_000))
    assert results(producer)[0]["status"] == "filled"


def test_a_record_key_other_than_the_intent_id_is_dead_lettered_naming_key():
    """Dedupe and partitioning rely on key == intent_id: a mismatch would let a duplicate
    land on another partition and execute twice."""
    def feed(w, c, p):
        c.feed(TP, 0, encode(make_intent("0.5", intent_id="k-1")), key=b"something-else")
        c.feed(TP, 1, encode(make_intent("0.5", intent_id="k-2")), key=None)

    worker, consumer, producer = run_edge(feed, settle=lambda w, c: c.committed_offsets.get(TP) == 2)
    letters = dlq(producer)
    assert [x["error"].split(":")[0] for x in letters] == ["key", "key"]
    assert "something-else" in letters[0]["error"] and "no key" in letters[1]["error"]
    assert results(producer) == []


# --- memory ----------------------------------------------------------------------------------

def test_unknown_venues_are_dropped_with_one_counter_series():
    """Reproduction: 20,000 unknown venue/symbol pairs were all cached, each a metrics series."""
    metrics = Metrics()
    cache = QuoteCache({"a", "b"}, on_drop=lambda reason: metrics.quotes_dropped.labels(reason).inc())
    for n in range(20_000):
        assert not cache.update(make_quote(f"evil{n}", asks=[(1, 1)]).model_copy(update={"symbol": f"X{n}/USD"}))
    assert len(cache) == 0
    text = metrics.render().decode()
    assert 'sor_quotes_dropped_total{reason="unknown_venue"} 20000.0' in text
    assert "evil" not in text


def test_levels_beyond_the_cap_are_dropped_and_the_plan_says_so():
    from worker.execution.executor import Executor
    from worker.execution.risk import RiskLimits
    from worker.service.intents import IntentService

    cache = QuoteCache({"a"}, max_levels=3)
    cache.update(make_quote("a", asks=[(100 + i, 1) for i in range(10)], bids=[(99, 1)], ts=NOW))
    assert len(cache.get("a", "BTC/USD").asks) == 3 and cache.capped("BTC/USD") == {"a": 7}
    service = IntentService([VenueConfig(name="a")], cache, Executor({}, 1000), RiskLimits(), 2_000, clock=lambda: NOW)
    out = asyncio.run(service.handle(make_intent("5", intent_id="deep", dry_run=True), NOW))
    plan = out.plan
    assert plan.book_levels_dropped == {"a": 7} and plan.planned_qty == 3
    assert b'"book_levels_dropped":{"a":7}' in encode(plan)
    cache.update(make_quote("a", asks=[(100, 1)], ts=NOW + 1))  # a shallow book: no note
    assert cache.capped("BTC/USD") == {}


# --- oversize and poison ---------------------------------------------------------------------

def test_an_oversize_bad_intent_gets_a_small_dlq_record_with_its_hash():
    """Reproduction: a ~400 KB malformed intent made a 1.33 MB DLQ record the producer
    refused; the offset then never finished and the partition stopped committing."""
    huge = b'{"intent_id": "' + b"x" * 400_000 + b'", "qty": 1'
    worker, consumer, producer = run_edge(lambda w, c, p: c.feed(TP, 0, huge, key=b"x"))
    [(topic, value, _)] = producer.sent
    assert len(value) < 40_000
    letter = orjson.loads(value)
    assert letter["original_size"] == len(huge) and letter["original_truncated"] is True
    assert letter["original_sha256"] == hashlib.sha256(huge).hexdigest()
    assert huge.startswith(letter["original_value"].encode()) and len(letter["error"]) < 1_100
    assert consumer.committed_offsets[TP] == 1


class RefusingProducer(FakeProducer):
    """The DLQ refuses every record (oversize, authorization, a broker outage)."""

    async def send(self, topic, value, **kwargs):
        if topic == "sor.dlq.v1":
            raise RuntimeError("MessageSizeTooLargeError")
        return await super().send(topic, value, **kwargs)


def test_a_failed_dlq_send_is_logged_counted_and_the_offset_commits():
    failed = []

    def feed(w, c, p):
        w.dead = DeadLetters(RefusingProducer(), "sor.dlq.v1", on_failed=failed.append)
        c.feed(TP, 0, b"garbage")
        c.feed(TP, 1, encode(make_intent("0.5", intent_id="after")))

    worker, consumer, producer = run_edge(feed, settle=lambda w, c: c.committed_offsets.get(TP) == 2)
    assert failed == ["sor.intents.v1"]
    assert results(producer)[0]["intent_id"] == "after"


def poisoned_feed() -> tuple[QuoteFeed, FakeProducer, QuoteCache]:
    """A quote feed with a DLQ whose preparation (prewarm) fails on a level size of 13."""
    producer = FakeProducer()
    cache = QuoteCache({"a"})

    def prewarm(quote):
        if quote.asks[0][1] == 13:
            raise ArithmeticError("DivisionImpossible")

    feed = QuoteFeed(Settings(), cache, DeadLetters(producer, "sor.dlq.v1").send, on_update=prewarm)
    feed.consumer = FakeConsumer()
    feed.consumer.assigned.add(QTP)
    return feed, producer, cache


def test_a_poison_quote_never_kills_the_feed():
    async def main():
        feed, producer, cache = poisoned_feed()
        for offset, value in enumerate([b"{", b"[" * 5_000, encode(make_quote("a", asks=[(1, 13)], ts=5)),
                                        encode(make_quote("a", asks=[(2, 1)], ts=6))]):
            feed.consumer.feed(QTP, offset, value, key=b"a:BTC/USD")
        assert await feed._poll(0) == 4
        assert [x["source_offset"] for x in dlq(producer)] == [0, 1, 2]
        assert cache.get("a", "BTC/USD").ts == 6

    asyncio.run(main())


# --- start-up that does not grow with history --------------------------------------------------

def test_finished_intents_shrink_to_done_markers_after_commit_and_still_dedupe():
    """Reproduction: every assignment loaded every journal entry ever written (~15 KB each)."""
    state = {}

    def feed(w, c, p):
        w.compactor = JournalCompactor(p, "sor.journal.v1", w.index, retention_ms=DAY, clock=lambda: NOW)
        state["compactor"] = w.compactor
        for n in range(3):
            c.feed(TP, n, encode(make_intent("0.5", intent_id=f"m-{n}")))

    worker, consumer, producer = run_edge(feed, settle=lambda w, c: state["compactor"].written == 3)
    markers = [(k, DoneMarker.model_validate_json(v)) for t, v, k in producer.sent if t == "sor.journal.v1"]
    assert sorted(k for k, _ in markers) == [b"m-0", b"m-1", b"m-2"]
    assert all(len(encode(m)) < 200 and m.source_offset < 3 for _, m in markers)

    # A new owner reads markers (not full entries): they only feed dedupe, and a redelivery
    # of a finished intent (committed offsets lost) is not executed again.
    async def reassign():
        new, consumer2, producer2, adapters, _ = make_edge()
        compactor = JournalCompactor(producer2, "sor.journal.v1", new.index, retention_ms=DAY, clock=lambda: NOW)

        async def read_records(partitions):
            return {k: m for k, m in markers}

        new.read_journal = lambda partitions: compactor.read(read_records, partitions)
        await consumer2.assign(TP)
        assert new.index.get("m-1") == DONE
        consumer2.feed(TP, 1, encode(make_intent("0.5", intent_id="m-1")))
        stop = asyncio.Event()
        task = asyncio.create_task(new.run(stop))
        await until(lambda: consumer2.committed_offsets.get(TP) == 2)
        stop.set()
        await task
        assert results(producer2) == [] and sum(len(a.placed) for a in adapters.values()) == 0

    asyncio.run(reassign())


def test_markers_older_than_the_retention_are_tombstoned_not_loaded():
    async def main():
        producer = FakeProducer()
        worker, *_ = make_edge()
        compactor = JournalCompactor(producer, "sor.journal.v1", worker.index, retention_ms=DAY, clock=lambda: NOW + 2 * DAY)
        old = DoneMarker(intent_id="old", source_partition=0, source_offset=0, done_ms=NOW)
        young = DoneMarker(intent_id="young", source_partition=0, source_offset=1, done_ms=NOW + DAY + 1)

        async def read_records(partitions):
            return {b"old": old, b"young": young}

        assert await compactor.read(read_records, [0]) == {}
        await compactor.close()
        assert worker.index.get("old") is None and worker.index.get("young") == DONE
        assert producer.sent == [("sor.journal.v1", None, b"old")]

    asyncio.run(main())


class OffsetsConsumer:
    def __init__(self, begin, end, by_time):
        self.begin, self.end, self.by_time = begin, end, by_time

    async def beginning_offsets(self, tps):
        return {tp: self.begin for tp in tps}

    async def end_offsets(self, tps):
        return {tp: self.end for tp in tps}

    async def offsets_for_times(self, query):
        return {tp: self.by_time for tp in query}


def test_the_quote_feed_starts_from_a_bounded_lookback_not_the_beginning():
    """Reproduction: start-up re-read the whole quotes topic under a 120 s deadline."""
    async def start(consumer, **settings):
        feed = QuoteFeed(Settings(**settings), QuoteCache(), None)
        feed.consumer = consumer
        return (await feed.start_offsets([QTP]))[QTP]

    # a broker without timestamp look-ups (Tansu answers offset 0): the record bound
    assert asyncio.run(start(OffsetsConsumer(0, 900_000, OffsetAndTimestamp(0, 2**62)), quote_lookback_records=20_000)) == 880_000
    # a broker that answers: nothing older than a routable quote
    from worker.domain.clock import now_ms

    assert asyncio.run(start(OffsetsConsumer(0, 900_000, OffsetAndTimestamp(899_000, now_ms())))) == 899_000
    assert asyncio.run(start(OffsetsConsumer(0, 900_000, None))) == 880_000
    assert asyncio.run(start(OffsetsConsumer(0, 5_000, None))) == 0


# --- exposure --------------------------------------------------------------------------------

def test_bind_addresses_default_to_loopback_and_compose_and_k8s_open_them():
    assert Settings().http_host == "127.0.0.1" and Settings().paper_venue_host == "127.0.0.1"
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    assert services["worker"]["environment"]["SOR_HTTP_HOST"] == "0.0.0.0"
    assert services["paper-venue"]["environment"]["SOR_PAPER_VENUE_HOST"] == "0.0.0.0"
    assert services["paper-venue"]["environment"]["SOR_BOOTSTRAP_SERVERS"] == "kafka:9092"
    literals = yaml.safe_load((ROOT / "deploy/base/kustomization.yaml").read_text())["configMapGenerator"][1]["literals"]
    assert {"SOR_HTTP_HOST=0.0.0.0", "SOR_PAPER_VENUE_HOST=0.0.0.0"} <= set(literals)


def test_the_quotes_topic_is_created_compacted_everywhere():
    init = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["topics"]["command"][0]
    loop = next(line for line in init.splitlines() if line.strip().startswith("for t in"))
    assert "sor.quotes.v1" not in loop  # created by the compacted create only
    assert "--topic sor.quotes.v1" in init and init.count("cleanup.policy=compact") == 2
    topics = {d["spec"]["topicName"]: d["spec"].get("config", {}) for d in yaml.safe_load_all((ROOT / "deploy/base/topics.yaml").read_text())}
    assert topics["sor.quotes.v1"]["cleanup.policy"] == "compact" and topics["sor.journal.v1"]["cleanup.policy"] == "compact"
    import inspect

    from worker.pipeline import kafka

    assert "(topics.journal, topics.quotes)" in inspect.getsource(kafka.ensure_topics)


def test_build_shares_one_dedupe_index_between_journal_worker_and_compactor():
    """Reproduction: ``index or JournalIndex(...)`` replaced the (empty, so falsy) shared
    index with a new one: journal writes and loaded markers never reached the worker's."""
    from worker.bootstrap import build

    app = build(Settings(), [VenueConfig(name="a")])
    assert app.worker.index is app.worker.compactor.index
    assert app.service.journal.on_write.__self__ is app.worker.index
    assert app.quotes.venues == {"a"}


def test_a_plan_serializes_byte_identically_after_a_round_trip():
    """Reproduction: with a defaulted field left out, ``trusted`` put the defaults first, so
    a plan republished from the journal differed byte-wise from the original."""
    from worker.domain.models import RoutePlan

    plan = route(make_intent("1"), {"a": make_quote("a", asks=[(100, 5)])}, [VenueConfig(name="a")])
    assert encode(RoutePlan.model_validate_json(encode(plan))) == encode(plan)


def test_models_built_without_validation_never_share_a_mutable_default():
    """``trusted`` copies one template per model: a default made by a factory (a list, a dict)
    must still be a new one for each object, as validation makes it."""
    from worker.domain.models import VenueQuote, trusted

    first, second = (trusted(VenueQuote, venue="a", symbol="BTC/USD", ts=1) for _ in range(2))
    assert first.bids == [] and first.bids is not second.bids and first.asks is not second.asks
