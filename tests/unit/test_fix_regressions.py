"""What a review of this round's fixes found in them: a settled intent never swept again from an
older entry, a ccxt order still working never settled on a made-up trade, a journal record of an
earlier release still reading back (identifiers are checked at the intake, not in the model),
the feed ready only on acknowledged books, a replayed stale signed URL never charged to its key.
Each test failed on the code before its fix. Fakes only, no broker, no network."""

from __future__ import annotations

import asyncio
from decimal import Decimal as D
from types import SimpleNamespace

import orjson

from tests.support.scenarios import make_intent
from tests.unit.test_edge import make_edge, results, work_through
from tests.unit.test_handover_and_recovery import lost_edge
from worker.domain.models import LegStatus, VenueConfig, VenueQuote


# --- 1. the sweeper's "keep the newer entry" covers only an entry it still watches -------------------

def test_a_stale_entry_handed_in_after_the_sweep_settled_every_leg_is_not_swept_again():
    """worker/service/sweeper.py:LateFillSweeper.watch (fix b392d1f).

    Mechanism: the fix keeps the watched entry when an older one (fewer amendments) is handed
    in, but only while the intent is still in ``_watched``. Once a correction settles the last
    unknown leg, ``_sweep_entry`` drops the intent; a republication that then hands in the
    entry from before the correction (the redelivered record's journal entry, read at
    assignment: the very case b392d1f names) finds nothing held and watches it again.

    Consequence: the next sweep asks the venue about legs already settled, journals a second
    "version 2" over the first and publishes its fills again (same fill ids, a duplicated
    correction downstream)."""

    async def main():
        worker, consumer, producer, adapters, journal = lost_edge()
        await work_through(worker, consumer, make_intent("1.5", intent_id="two"))
        before = journal.latest()["two"]
        assert len(before.unknown_legs()) == 2
        adapters["a"].up = adapters["b"].up = True
        assert await worker.sweeper.sweep_once() == 1  # version 2 settles both legs
        assert not journal.latest()["two"].unknown_legs()
        worker.sweeper.watch(before)  # the republication hands in the entry from before the correction
        await worker.sweeper.sweep_once()
        versions = [orjson.loads(v)["version"] for t, v, _ in producer.sent if t == "sor.executions.v1"]
        assert versions == [1, 2], f"versions published: {versions}"

    asyncio.run(main())


# --- 2. amend_result's "skip published trades" swallows a ccxt order's late fill ---------------------

class _CcxtShaped:
    """A venue whose reports are built by CcxtVenue's own mapping (``_report``) from unified
    ccxt orders, for an exchange without ``fetchOrderTrades`` whose orders carry no trades:
    the IOC order first answers still ``open`` with 0.3 filled, later ``closed`` and filled."""

    request_lifetime_ms = 0

    def __init__(self, name: str):
        from worker.venues.ccxt_venue import CcxtVenue

        self.name = name
        self.ccxt = CcxtVenue(VenueConfig(name=name, adapter="ccxt", exchange="binance", symbols={"BTC/USD": "BTC/USD"}), None)
        self.ccxt.exchange = SimpleNamespace(has={"fetchOrderTrades": False}, markets={})
        self.qty: dict[str, D] = {}

    def _order(self, coid: str, status: str, filled: D) -> dict:
        return {"id": "9001", "clientOrderId": coid, "status": status, "amount": str(self.qty[coid]), "filled": str(filled),
                "average": "100", "price": "100", "trades": [], "fee": None}

    async def place(self, order):
        self.qty[order.client_order_id] = order.qty
        return await self.ccxt._report(self._order(order.client_order_id, "open", D("0.3")), "BTC/USD")

    async def query(self, coid):
        return await self.ccxt._report(self._order(coid, "closed", self.qty[coid]), "BTC/USD")

    async def cancel(self, coid):
        return await self.query(coid)

    async def start(self): ...
    async def close(self): ...


def test_a_ccxt_leg_found_filled_later_adds_its_late_quantity_to_the_result():
    """worker/execution/executor.py:amend_result with worker/service/intents.py:Outcome.from_journal
    (fix 57ef805, "a correction never counts a published trade again"), against
    worker/venues/ccxt_venue.py:CcxtVenue._parsed_report.

    Mechanism: a trade already published is recognised by (client order id, trade id) only.
    The ccxt adapter's fallback for an order without trade detail is ONE synthetic trade
    ``f"{order id}-avg"`` for the whole filled quantity so far: the same trade id with a
    different quantity each time the order is read. The leg's first report (``open``, 0.3
    filled) publishes "9001-avg" qty 0.3; the sweeper's later report (``closed``, 1 filled)
    carries "9001-avg" qty 1, which ``amend_result`` now skips as already published.

    Consequence: the correction's fills and ``filled_qty`` miss the 0.7 bought late (the
    result says 0.8 of 1.5 filled while 1.5 were bought; its own leg says filled 1): settlement
    and the account's position are short of what the venue executed."""

    async def main():
        worker, consumer, producer, adapters, journal = make_edge()
        shaped = _CcxtShaped("a")
        worker.service.executor.adapters["a"] = shaped
        worker.service.max_rounds = 1
        await work_through(worker, consumer, make_intent("1.5", intent_id="late"))
        # Since the fix, the order still working with no trade detail is unknown, reconciled by
        # query to its final state; a correction follows if it was still working then.
        await worker.sweeper.sweep_once()
        last = results(producer)[-1]
        fills = [orjson.loads(v) for t, v, _ in producer.sent if t == "sor.fills.v1"]
        assert sum(D(f["fill"]["qty"]) for f in fills) == D("1.5")  # every unit published once
        leg_a = next(leg for leg in last["legs"] if leg["provider"] == "a")
        assert leg_a["status"] == "filled"
        assert D(last["filled_qty"]) == D("1.5"), (
            f"venue a filled {leg_a['filled_qty']} and b 0.5, the correction says filled {last['filled_qty']}")

    asyncio.run(main())


# --- 3. the identifier check, put in the model, makes older journal records unreadable ---------------

def test_a_journal_record_the_previous_release_wrote_for_an_invisible_character_account_reads_back():
    """worker/domain/models.py:Identifier/_visible (fix fe4fc26), read by
    worker/pipeline/kafka.py:read_partitions through JournalEntry.intent.

    Mechanism: the refusal of invisible characters is an AfterValidator of the ``Identifier``
    type, and ``OrderIntent`` (its ``intent_id`` too, now) is also the type of the journal
    entry's ``intent``. A record the previous release journaled for an intent it accepted
    (the fix's own case: an account id with a zero-width space) no longer validates;
    ``read_partitions`` logs it as unreadable and skips it. (base.checked() states the rule
    the fix broke: "Only here, not in the classes: a journal record written before these
    checks must still read back.")

    Consequence: after the upgrade, a new owner never sees that intent's journal entry: an
    intent left in flight is never reconciled with the venues (its redelivered record is now
    dead-lettered), and a completed one with an unknown leg is never swept: fills that exist
    at the venues are never published."""
    from tests.unit.test_journal_records import _Clients, _Rec, _RecoveryConsumer
    from worker.config import Settings
    from worker.execution.journal import JournalEntry
    from worker.pipeline.kafka import read_partitions
    from worker.service.intents import Source

    async def main():
        worker, *_, journal = make_edge()
        await worker.service.handle(make_intent("0.5", intent_id="old"), 1_000_000, Source(0, 0))
        doc = orjson.loads(journal.latest()["old"].model_dump_json())
        doc["intent"]["account_id"] = "acct\u200b"  # what the previous release accepted and journaled
        raw = orjson.dumps(doc)
        recovery = _RecoveryConsumer([_Rec(b"old", raw, 0)])
        return await read_partitions(Settings(), "sor.journal.v1", [0], JournalEntry, clients=_Clients(recovery))

    read = asyncio.run(main())
    assert b"old" in read, "the journal entry of an intent the previous release accepted was skipped at recovery"


# --- 4. the feed is ready on a delivery the broker never acknowledged --------------------------------

def test_the_feed_is_not_ready_while_no_delivery_was_acknowledged():
    """worker/pipeline/market_feed.py:QuotePublisher.publish (fix 5a0ca12, "ready only on
    acknowledged ones").

    Mechanism: ``_delivered`` stamps ``_published_at`` only on an acknowledgement, but the
    "unchanged book" branch of ``publish`` stamps it whenever the polled book equals
    ``last``, and ``last`` is set as soon as the send is queued, before any acknowledgement.

    Consequence: with the broker not acknowledging (an outage; aiokafka holds the batch until
    its delivery timeout), a quiet book keeps sor feed's /readyz at 200 on every poll although
    nothing reached the quotes topic; the workers route on stale books or exclude the venue
    while the feed reports itself healthy."""
    from worker.pipeline.market_feed import QuotePublisher

    async def scenario():
        loop = asyncio.get_running_loop()
        deliveries = []

        class Producer:
            async def send(self, topic, value, key=None):
                future = loop.create_future()  # never acknowledged
                deliveries.append(future)
                return future

        publisher = QuotePublisher(Producer(), "sor.quotes.v1", fresh_ms=1_000, clock=lambda: 1_000)
        book = VenueQuote(venue="kraken", symbol="BTC/USD", ts=900, bids=[(D(100), D(1))], asks=[(D(101), D(1))])
        await publisher.publish(book, 0.01)
        assert not publisher.ready()
        await publisher.publish(book, 0.01)  # the next poll: the venue still shows this book
        return publisher.ready()

    assert asyncio.run(scenario()) is False, "ready although the broker acknowledged nothing"


# --- 5. a replayed signed request still drains its owner's rate limit -------------------------------

def test_replayed_stale_signed_requests_do_not_drain_the_keys_rate_limit():
    """worker/api/security.py:GuardMiddleware._charged (fix 0ebd955, "a key's rate limit is
    charged only for requests signed with it").

    Mechanism: ``_charged`` checks the signature only, not the timestamp/recvWindow that make a
    signed request valid once and briefly. A signed request copied from a proxy or access log
    (the query string carries its signature, the header its key: the very leak the fix names)
    can be replayed for ever: ``authenticate`` refuses it (-1021, outside the recvWindow), but
    the middleware has already charged it to the key's bucket.

    Consequence: anyone who saw one signed URL, hours ago, keeps the owner's orders answered
    429 for as long as they replay it; the fix only covers a request with a garbage signature."""
    from fastapi.testclient import TestClient

    from tests.unit.test_api import KEY, SECRET, VENUES, InProcessGateway, signed
    from worker.api.app import ApiDeps, create_app
    from worker.config import Settings
    from worker.domain.clock import now_ms
    from worker.service.quotes import QuoteCache

    settings = Settings(api_keys={KEY: {"secret": SECRET, "account_id": "acct-1"}}, api_rate_limit_per_s=0.001,
                        api_rate_limit_burst=3)
    app = create_app(ApiDeps(settings=settings, venues=VENUES, quotes=QuoteCache(), gateway=InProcessGateway(None)))
    headers = {"X-MBX-APIKEY": KEY}
    logged = signed({"symbol": "BTCUSDT"}, ts=now_ms() - 3_600_000)  # signed an hour ago, read from a log
    with TestClient(app, client=("203.0.113.9", 40000)) as attacker, TestClient(app, client=("198.51.100.7", 40001)) as owner:
        replays = [attacker.get(f"/api/v3/myAllocations?{logged}", headers=headers) for _ in range(3)]
        assert [r.status_code for r in replays] == [400, 400, 400], [r.text for r in replays]
        assert {r.json()["code"] for r in replays} == {-1021}
        mine = owner.get(f"/api/v3/myAllocations?{signed({'symbol': 'BTCUSDT'})}", headers=headers)
        assert mine.status_code == 200, (mine.status_code, mine.text)
