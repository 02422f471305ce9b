"""The service's state machine with fakes (no Kafka): journal before orders, recovery by
query before anything new, circuit breakers, deterministic ids."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from hypothesis import given, strategies as st

from tests.support.scenarios import make_intent, make_quote
from worker.domain.ids import client_order_id
from worker.domain.models import CLIENT_ORDER_ID_RE, ExclusionReason, FillEvent, LegStatus, VenueConfig
from worker.execution.breaker import CircuitBreakers
from worker.execution.executor import Executor
from tests.support.fakes import MemoryJournal
from worker.execution.journal import IntentState, JournalEntry, JournalLeg, JournalRound
from worker.execution.risk import RiskLimits
from worker.pipeline.codec import EncodedCache, encode
from worker.pipeline.compaction import JournalRecord
from worker.pipeline.kafka import encode_entry
from worker.service.quotes import QuoteCache
from worker.service.intents import IntentService, Outcome, Source
from worker.routing.planner import route
from worker.venues.base import OrderReport
from worker.venues.http import report_from
from worker.venues.paper import PaperVenue

D = Decimal
NOW = 1_000_000


class RecordingVenue(PaperVenue):
    """The paper venue, recording every call and what the journal held at each place."""

    def __init__(self, venue, quotes, journal, fail=False):
        super().__init__(venue, lambda s, n=venue.name: quotes.get(n, s))
        self.journal, self.fail, self.placed, self.queried = journal, fail, [], []

    async def place(self, order):
        assert any(order.client_order_id in [leg.client_order_id for r in e.rounds for leg in r.legs]
                   for e in self.journal.records if e.state is IntentState.PLANNED), "placed before it was journaled"
        self.placed.append(order.client_order_id)
        if self.fail:
            return OrderReport(order.client_order_id, None, LegStatus.REJECTED, D(0), error="down")
        return await super().place(order)

    async def query(self, coid):
        self.queried.append(coid)
        return await super().query(coid)


def setup(fail=()):
    quotes = QuoteCache()
    venues = [VenueConfig(name="a", taker_fee_bps=D(10)), VenueConfig(name="b", taker_fee_bps=D(10))]
    quotes.update(make_quote("a", asks=[(100, 1), (101, 5)], ts=NOW))
    quotes.update(make_quote("b", asks=[(100.5, 1), (102, 5)], ts=NOW))
    journal = MemoryJournal()
    adapters = {v.name: RecordingVenue(v, quotes, journal, v.name in fail) for v in venues}
    clock = lambda: NOW  # noqa: E731
    executor = Executor(adapters, 1000, clock=clock, breakers=CircuitBreakers(2, 5_000, clock))
    service = IntentService(venues, quotes, executor, RiskLimits(), 2_000, clock=clock, journal=journal)
    return service, adapters, journal, quotes, venues


def test_every_order_is_journaled_before_it_is_placed_and_the_result_after():
    service, adapters, journal, *_ = setup()
    out = asyncio.run(service.handle(make_intent("1.5"), NOW, Source(2, 17)))
    assert out.result.status.value == "filled"
    states = [e.state for e in journal.records]
    assert states == [IntentState.PLANNED, IntentState.COMPLETED]
    final = journal.records[-1]
    assert (final.source_partition, final.source_offset) == (2, 17)
    assert Outcome.from_journal(final) == out  # every fill stored once, in its leg; rebuilt exactly
    assert sorted(adapters["a"].placed + adapters["b"].placed) == sorted(l.client_order_id for l in final.rounds[0].legs)


def test_recovery_asks_the_venue_and_never_places_a_journaled_order_again():
    service, adapters, journal, quotes, venues = setup()
    intent = make_intent("1.5")
    plan = route(intent, quotes.books("BTC/USD"), venues)
    coids = [client_order_id(intent.intent_id, 0, i) for i in range(len(plan.legs))]
    # The crashed worker placed leg 0 and died before leg 1 (or its answer) arrived.
    from worker.venues.base import LegOrder
    leg0 = plan.legs[0]
    adapters[leg0.provider].book.match(LegOrder(coids[0], "BTC/USD", intent.side, leg0.qty, leg0.worst_price))
    quotes.update(make_quote("a", asks=[(101, 5)], ts=NOW + 1))  # the next snapshot shows what leg 0 took
    entry = JournalEntry(intent_id=intent.intent_id, state=IntentState.PLANNED, intent=intent, received_ms=NOW,
                         source_partition=0, source_offset=5,
                         rounds=[JournalRound(plan=plan, legs=[JournalLeg(leg=l, client_order_id=c) for l, c in zip(plan.legs, coids)])])
    out = asyncio.run(service.recover(entry))
    placed = adapters["a"].placed + adapters["b"].placed
    assert coids[0] not in placed, "a journaled order was sent again"
    assert set(coids) <= set(adapters["a"].queried + adapters["b"].queried)
    assert out.result.filled_qty == D("1.5") and out.result.rounds == 2  # leg 1 never arrived: re-routed
    assert all(c.endswith("-1-0") or c.endswith("-1-1") for c in placed)


def test_a_completed_entry_recovers_byte_identical():
    service, _, journal, *_ = setup()
    first = asyncio.run(service.handle(make_intent("1"), NOW))
    again = asyncio.run(service.recover(journal.records[-1]))
    assert again.result.model_dump_json() == first.result.model_dump_json()
    assert [f.model_dump_json() for f in again.fills] == [f.model_dump_json() for f in first.fills]


def test_a_failing_venue_is_rerouted_around_then_its_breaker_opens():
    service, adapters, *_ = setup(fail={"a"})
    out = asyncio.run(service.handle(make_intent("0.5", intent_id="x1"), NOW))
    assert out.result.status.value == "filled" and out.result.rounds == 2
    assert [l.provider for l in out.result.legs] == ["a", "b"]
    assert any(e.venue == "a" and e.reason is ExclusionReason.VENUE_FAILED for e in out.plans[1].excluded)
    asyncio.run(service.handle(make_intent("0.5", intent_id="x2"), NOW))  # second consecutive failure
    out = asyncio.run(service.handle(make_intent("0.5", intent_id="x3"), NOW))
    assert any(e.venue == "a" and e.reason is ExclusionReason.CIRCUIT_OPEN for e in out.plans[0].excluded)


def test_breaker_half_open_probe():
    t = [0]
    b = CircuitBreakers(2, 100, lambda: t[0])
    b.record("v", LegStatus.FAILED)
    assert b.blocked() == set()
    b.record("v", LegStatus.FAILED)
    assert b.blocked() == {"v"} and b.state("v") == "open"
    t[0] = 150
    assert b.state("v") == "half_open" and b.blocked() == set()
    b.on_send("v")
    assert b.blocked() == {"v"}  # one probe at a time
    b.record("v", LegStatus.FILLED)
    assert b.state("v") == "closed" and b.blocked() == set()


def test_expired_intents_are_rejected_never_executed():
    service, adapters, journal, *_ = setup()
    out = asyncio.run(service.handle(make_intent("1", expires_at=NOW - 1), NOW))
    assert out.result.status.value == "rejected" and out.result.reason.startswith("expired")
    assert adapters["a"].placed == adapters["b"].placed == []
    assert [e.state for e in journal.records] == [IntentState.COMPLETED]


@given(st.text(min_size=1, max_size=128).filter(lambda s: s.strip()), st.integers(0, 99), st.integers(0, 999))
def test_client_order_ids_fit_binance(intent_id, round_no, leg_no):
    coid = client_order_id(intent_id, round_no, leg_no)
    assert CLIENT_ORDER_ID_RE.match(coid) and len(coid) <= 36
    assert coid == client_order_id(intent_id, round_no, leg_no)


def test_account_venue_allow_list_from_settings(monkeypatch):
    from worker.bootstrap import build
    from worker.config import Settings

    monkeypatch.setenv("SOR_ACCOUNT_VENUES", '{"acct": ["b"]}')
    app = build(Settings(), [VenueConfig(name="a"), VenueConfig(name="b")], journal=MemoryJournal())
    app.quotes.update(make_quote("a", asks=[(99, 5)], ts=NOW))
    app.quotes.update(make_quote("b", asks=[(100, 5)], ts=NOW))
    app.service.clock = lambda: NOW
    out = asyncio.run(app.service.handle(make_intent("1"), NOW))
    assert [leg.provider for leg in out.plan.legs] == ["b"]  # "a" is cheaper but not allowed for this account
    assert any(e.venue == "a" and e.reason is ExclusionReason.NOT_ALLOWED for e in out.plan.excluded)


def test_failure_rate_is_accepted_as_the_paper_venues_reject_rate():
    assert VenueConfig(name="x", failure_rate=0.25).reject_rate == 0.25


class NullCommissionAssetVenue(RecordingVenue):
    """A Binance-style HTTP venue whose FULL answer carries ``commissionAsset: null``; the
    HTTP adapter's ``report_from`` passes it through unchecked."""

    async def place(self, order):
        return report_from({
            "clientOrderId": order.client_order_id, "orderId": 7, "status": "FILLED", "executedQty": format(order.qty, "f"),
            "fills": [{"price": "100", "qty": format(order.qty, "f"), "commission": "0", "commissionAsset": None, "tradeId": 1}],
        })


def test_an_unchecked_venue_value_never_reaches_the_wire_or_an_unreadable_journal_record():
    """``build_result`` builds fills with ``trusted()`` ("values ... reported by an adapter"
    are assumed checked). A null commission asset is published as ``"commissionAsset":null``
    (the schema says string) and the *completed* journal record does not read back, so after
    a restart recovery skips it and works from the planned record instead. Refusing the odd
    report loudly (an exception) is acceptable; silently publishing it is not."""
    service, _, journal, quotes, venues = setup()
    for v in venues:
        service.executor.adapters[v.name] = NullCommissionAssetVenue(v, quotes, journal)
    try:
        out = asyncio.run(service.handle(make_intent("1.5"), NOW, Source(1, 9)))
    except Exception:
        out = None
    for record in journal.records:
        assert JournalRecord.validate_json(encode_entry(record, EncodedCache())) == record
    for fill in out.fills if out is not None else []:
        FillEvent.model_validate_json(encode(fill))  # what a consumer of the fills topic validates
