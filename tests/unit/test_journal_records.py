"""Journal records on the wire: compact (each plan and intent encoded once, planned legs not
repeated, no executed result) and read back exactly, older full records included."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson

from tests.support.fakes import MemoryJournal
from tests.unit.test_edge import make_edge
from tests.unit.test_service import NOW, setup
from tests.support.scenarios import make_intent
from worker.config import Settings
from worker.execution.journal import IntentState, JournalEntry, JournalRound
from worker.pipeline.codec import EncodedCache, encode
from worker.pipeline.compaction import JournalRecord
from worker.pipeline.kafka import JOURNAL_ENTRY_FIELDS, JOURNAL_ROUND_FIELDS, encode_entry
from worker.service.intents import Outcome, Source


def _run(qty: str = "1.5") -> tuple[MemoryJournal, Outcome]:
    service, _, journal, *_ = setup()
    out = asyncio.run(service.handle(make_intent(qty), NOW, Source(1, 9)))
    return journal, out


def test_the_encoder_writes_every_field_of_the_journal_models():
    assert set(JOURNAL_ENTRY_FIELDS) == set(JournalEntry.model_fields)
    assert set(JOURNAL_ROUND_FIELDS) == set(JournalRound.model_fields)


def test_every_record_reads_back_equal_and_the_outcome_rebuilds_byte_identical():
    journal, out = _run()
    cache = EncodedCache()
    for entry in journal.records:
        assert JournalRecord.validate_json(encode_entry(entry, cache)) == entry
    final = JournalRecord.validate_json(encode_entry(journal.records[-1], cache))
    again = Outcome.from_journal(final)
    assert encode(again.result) == encode(out.result)
    assert [encode(f) for f in again.fills] == [encode(f) for f in out.fills]
    assert [encode(p) for p in again.plans] == [encode(p) for p in out.plans]


def test_records_are_smaller_than_the_full_snapshot():
    journal, _ = _run()
    final = journal.records[-1]
    assert final.result is None and final.latency_ms is not None  # rebuilt from the legs
    compact = encode_entry(final, EncodedCache())
    assert len(compact) < len(encode(final))
    assert compact.count(b'"worst_price"') == len(final.rounds[0].plan.legs)  # each planned leg once


def test_an_older_full_record_with_the_result_still_recovers_exactly():
    journal, out = _run()
    final = journal.records[-1]
    older = final.model_copy(update={"result": out.result.model_copy(update={"fills": []}), "latency_ms": None})
    read = JournalRecord.validate_json(encode(older))  # the old encoder: every field, legs whole
    again = Outcome.from_journal(read)
    assert encode(again.result) == encode(out.result)
    assert [encode(f) for f in again.fills] == [encode(f) for f in out.fills]


def test_the_cache_encodes_each_object_once_and_never_confuses_two():
    journal, out = _run()
    cache = EncodedCache(capacity=2)
    plan = out.plans[0]
    assert cache.encode(plan) is cache.encode(plan)
    other = plan.model_copy(update={"round": 7})
    assert cache.encode(other) == encode(other) != cache.encode(plan)


def test_records_carry_their_format_and_a_newer_format_stops_recovery_instead_of_being_skipped():
    """A rollback, or an old instance during a rolling deploy, must never skip a record it
    cannot read: it could place that intent's orders again. It refuses the partition."""
    import orjson
    import pytest

    from worker.execution.journal import JOURNAL_FORMAT, JournalFormatError

    journal, _ = _run()
    record = orjson.loads(encode_entry(journal.records[-1], EncodedCache()))
    assert record["format"] == JOURNAL_FORMAT
    legacy = dict(record)
    del legacy["format"]  # format 1: records of the releases before the field
    assert JournalRecord.validate_json(orjson.dumps(legacy)) == journal.records[-1]
    with pytest.raises(JournalFormatError, match="format 3"):
        JournalRecord.validate_json(orjson.dumps({**record, "format": JOURNAL_FORMAT + 1}))


def test_a_plan_encoded_with_its_ranking_cached_is_byte_identical_to_its_own_encoding():
    """The cache splices the ranking entries (encoded once per entry) into the plan's JSON:
    the bytes must be the plan's own, whatever its fields hold (an intent id that looks like
    the key the splice looks for included)."""
    import random

    from tests.support.scenarios import random_market
    from worker.routing.planner import route

    rng = random.Random(5)
    cache = EncodedCache()
    for i in range(30):
        venues, quotes = random_market(rng, rng.randint(1, 6), 8, side="buy" if i % 2 else "sell")
        intent_id = ['x,"excluded":[]', "plain", 'q"uote'][i % 3]
        intent = make_intent(str(round(rng.uniform(0.001, 30), 3)), side="buy" if i % 2 else "sell", intent_id=intent_id,
                             venues=None if i % 5 else [venues[0].name])
        plan = route(intent, quotes, venues)
        assert cache.encode(plan) == encode(plan)
        assert cache.encode(plan) is cache.encode(plan)  # once per plan


def test_a_leg_equal_to_the_planned_one_but_written_differently_is_kept_as_written():
    """A journal round leaves out a leg that is the planned one: the reader puts the plan's back.
    A leg of equal value written differently (0.5 == 0.50000000) must be written out, or it
    would read back as the plan's text."""
    journal, _ = _run()
    entry = journal.records[-1]
    rnd = entry.rounds[0]
    planned = rnd.plan.legs[0]
    longer = planned.qty.quantize(Decimal(1).scaleb(planned.qty.as_tuple().exponent - 3))  # three more zeros
    rewritten = planned.model_copy(update={"qty": longer})
    assert rewritten == planned and encode(rewritten) != encode(planned)
    legs = [rnd.legs[0].model_copy(update={"leg": rewritten}), *rnd.legs[1:]]
    changed = entry.model_copy(update={"rounds": [rnd.model_copy(update={"legs": legs}), *entry.rounds[1:]]})
    back = JournalRecord.validate_json(encode_entry(changed, EncodedCache()))
    assert encode(back.rounds[0].legs[0].leg) == encode(rewritten)


class _Rec:
    def __init__(self, key, value, offset):
        self.key, self.value, self.offset, self.partition = key, value, offset, 0


class _RecoveryConsumer:
    def __init__(self, records):
        self.records, self.read = records, False

    async def start(self): ...
    async def stop(self): ...
    def assign(self, tps): self.tps = tps
    async def seek_to_beginning(self, *tps): ...
    async def end_offsets(self, tps): return {tp: len(self.records) for tp in tps}

    async def getmany(self, timeout_ms=0, max_records=None):
        if self.read:
            return {}
        self.read = True
        return {self.tps[0]: self.records}

    async def position(self, tp): return len(self.records) if self.read else 0


class _Clients:
    def __init__(self, consumer):
        self._consumer = consumer

    def consumer(self, role=None):
        return self._consumer


def test_a_journal_record_of_the_previous_release_still_reads_back():
    """Venue reports are checked where adapters build them, never when a journal record is
    read: a record an earlier release wrote with a trade today's checks refuse (its ccxt
    adapter journaled a price of 0 when the exchange gave neither trades, an average nor a
    price) must still read back, or the assignment's recovery would fail for ever."""
    from worker.pipeline.kafka import read_partitions

    async def main():
        worker, consumer, producer, adapters, journal = make_edge()
        await worker.service.handle(make_intent("0.5", intent_id="old"), NOW, Source(0, 0))
        entry = journal.latest()["old"]
        assert entry.state is IntentState.COMPLETED
        doc = orjson.loads(entry.model_dump_json())
        trade = doc["rounds"][0]["legs"][0]["trades"][0]
        trade["price"] = "0"  # what the previous release's ccxt fallback journaled
        raw = orjson.dumps(doc)
        recovery = _RecoveryConsumer([_Rec(b"old", raw, 0)])
        try:
            out = await read_partitions(Settings(), "sor.journal.v1", [0], JournalEntry, clients=_Clients(recovery))
        except Exception as exc:  # noqa: BLE001
            raise AssertionError(f"journal recovery raised {type(exc).__name__}: {exc}") from None
        assert set(out) <= {b"old"}

    asyncio.run(main())
