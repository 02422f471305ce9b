"""`sor worker` end to end over a real Kafka-protocol broker (never a mock of Kafka)."""

from __future__ import annotations

import signal
import time
from decimal import Decimal

import pytest

from tests.integration.conftest import now_ms
from tests.support.kafka_io import WorkerProcess, committed, end_offsets, produce_json, read_json, run
from worker.config import Settings, Topics, load_venues
from worker.domain.models import OrderIntent, VenueQuote
from worker.pipeline.kafka import ensure_topics
from worker.routing.planner import route

pytestmark = pytest.mark.integration
D = Decimal


def make_topics(bootstrap, topics, partitions=3):
    names = {k: getattr(topics, k) for k in Topics.model_fields}
    run(ensure_topics(Settings(bootstrap_servers=bootstrap, topics=Topics(**names), topic_partitions=partitions)))


def quote(venue, symbol="BTC/USD", asks=(), bids=(), ts=None):
    return {"venue": venue, "symbol": symbol, "ts": ts or now_ms(),
            "asks": [[str(p), str(q)] for p, q in asks], "bids": [[str(p), str(q)] for p, q in bids]}


def intent(intent_id, qty, symbol="BTC/USD", side="buy", limit=None, **extra):
    doc = {"intent_id": intent_id, "account_id": "acct-1", "symbol": symbol, "side": side, "qty": str(qty)}
    doc.update({"type": "limit", "limit_price": str(limit)} if limit else {"type": "market"})
    doc.update(extra)
    return doc


def publish_quotes(bootstrap, topics, quotes):
    produce_json(bootstrap, topics.quotes, [(f"{q['venue']}:{q['symbol']}" if isinstance(q, dict) else None, q) for q in quotes])


def publish_intents(bootstrap, topics, intents):
    produce_json(bootstrap, topics.intents, [(i["intent_id"] if isinstance(i, dict) else None, i) for i in intents])


BOOKS = {
    "BTC/USD": [
        quote("binance", asks=[(42155, "0.8"), (42156, "2")], bids=[(42150, "1.2")]),
        quote("kraken", asks=[(42150, "0.5"), (42160, "1")], bids=[(42148, "1")]),
        quote("coinbase", asks=[(42140, "0.3"), (42170, "3")], bids=[(42135, "2")]),
    ],
    "ETH/USD": [
        quote("binance", "ETH/USD", asks=[(2210.5, "10"), (2211, "40")], bids=[(2210, "30")]),
        quote("kraken", "ETH/USD", asks=[(2209.8, "4"), (2212, "50")], bids=[(2209, "30")]),
    ],
    "SOL/USD": [
        quote("coinbase", "SOL/USD", asks=[(101.2, "100")], bids=[(101.1, "500"), (101, "800")]),
        quote("kraken", "SOL/USD", asks=[(101.25, "100")], bids=[(101.15, "300"), (100.9, "900")]),
    ],
}


@pytest.fixture
def worker(bootstrap, topics, venues_file):
    started: list[WorkerProcess] = []

    def start(**env) -> WorkerProcess:
        w = WorkerProcess(bootstrap, venues_file, topics, extra_env={k: str(v) for k, v in env.items()})
        started.append(w)
        return w.started()

    yield start
    for w in started:
        w.kill()


def test_end_to_end_plans_fills_and_results_match_the_routing_core(bootstrap, topics, venues_file, worker):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, [q for qs in BOOKS.values() for q in qs])
    w = worker()
    intents = [intent("e2e-btc", "2.5", limit=42165), intent("e2e-eth", "20", "ETH/USD", limit=2211),
               intent("e2e-sol", "600", "SOL/USD", side="sell", limit=100.95)]
    publish_intents(bootstrap, topics, intents)

    results = {r["intent_id"]: r for r in read_json(bootstrap, topics.executions, 3)}
    plans = {p["intent_id"]: p for p in read_json(bootstrap, topics.plans, 3)}
    fills = read_json(bootstrap, topics.fills, 1)
    assert set(results) == {"e2e-btc", "e2e-eth", "e2e-sol"}

    venues = load_venues(venues_file)
    for doc in intents:
        i = OrderIntent.model_validate(doc)
        books = {q["venue"]: VenueQuote.model_validate(q) for q in BOOKS[i.symbol]}
        expected = route(i, books, venues)
        plan, result = plans[i.intent_id], results[i.intent_id]
        assert [(leg["provider"], D(leg["qty"])) for leg in plan["legs"]] == [(leg.provider, leg.qty) for leg in expected.legs]
        assert D(plan["estimated_vwap"]) == expected.estimated_vwap
        # The paper venue fills the plan exactly against the same book.
        assert result["status"] == "filled" and D(result["filled_qty"]) == i.qty
        assert D(result["vwap"]) == expected.estimated_vwap
        assert result["workingFloor"] == "SOR" and result["usedSor"] is True
        assert D(result["executedQty"]) == i.qty
        own = [f for f in fills if f["intent_id"] == i.intent_id]
        assert [f["fill"]["allocId"] for f in own] == list(range(len(own)))
        assert sorted(f["fill_id"] for f in own) == sorted(f"{i.intent_id}:{n}" for n in range(len(own)))
        for f in own:
            assert f["fill"]["matchType"] == "ONE_PARTY_TRADE_REPORT" and f["fill"]["tradeId"] == -1
            assert isinstance(f["fill"]["price"], str) and isinstance(f["fill"]["qty"], str)
        assert sum(D(f["fill"]["qty"]) for f in own) == i.qty
        assert sum(D(f["fill"]["price"]) * D(f["fill"]["qty"]) for f in own) == D(result["cummulativeQuoteQty"])
        assert [f["fill"] for f in own] == result["fills"]
    assert w.stop() == 0


def test_bad_input_lands_in_the_dlq_and_the_worker_keeps_going(bootstrap, topics, worker):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"] + [b"{not a quote", quote("binance", asks=[("-1", "1")])])
    w = worker()
    garbage = [b"not json at all", {"intent_id": "bad-1", "account_id": "a", "symbol": "BTC/USD", "side": "hold", "qty": "1", "type": "market"},
               {"intent_id": "bad-2", "account_id": "a", "symbol": "BTC/USD", "side": "buy", "qty": "abc", "type": "market"},
               {"intent_id": "bad-3", "account_id": "a", "symbol": "BTC/USD", "side": "buy", "qty": "1"}, b"[1, 2, 3]"]
    publish_intents(bootstrap, topics, garbage + [intent("after-garbage", "0.1", limit=42200)])

    results = read_json(bootstrap, topics.executions, 1)
    assert [r["intent_id"] for r in results] == ["after-garbage"]
    dead = read_json(bootstrap, topics.dlq, 7)
    assert len(dead) == 7
    by_source = {}
    for d in dead:
        by_source.setdefault(d["source_topic"], []).append(d)
        assert isinstance(d["source_partition"], int) and isinstance(d["source_offset"], int)
    assert len(by_source[topics.quotes]) == 2 and len(by_source[topics.intents]) == 5
    errors = " | ".join(d["error"] for d in dead)
    for field in ("side", "qty", "limit_price", "asks[0][0]", "not valid JSON", "expected a JSON object"):
        assert field in errors, field
    originals = {d["original_value"] for d in dead}
    assert "not json at all" in originals and "[1, 2, 3]" in originals

    assert w.stop() == 0
    ends = run(end_offsets(bootstrap, topics.intents))
    commits = run(committed(bootstrap, topics.env["SOR_GROUP_ID"], topics.intents))
    assert {p: o for p, o in ends.items() if o} == {p: commits[p] for p, o in ends.items() if o}


def test_a_republished_intent_executes_once(bootstrap, topics, worker):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    w = worker()
    doc = intent("dup-1", "0.4", limit=42200)
    publish_intents(bootstrap, topics, [doc, doc, doc])
    publish_intents(bootstrap, topics, [intent("dup-marker", "0.1", limit=42200)])
    results = read_json(bootstrap, topics.executions, 2, timeout_s=20)
    assert sorted(r["intent_id"] for r in results) == ["dup-1", "dup-marker"]
    fills = [f for f in read_json(bootstrap, topics.fills, 1) if f["intent_id"] == "dup-1"]
    assert len({f["fill_id"] for f in fills}) == len(fills)
    assert sum(D(f["fill"]["qty"]) for f in fills) == D("0.4")
    assert len([line for line in w.log if line.get("event") == "duplicate_intent"]) == 2
    assert w.stop() == 0


def test_valid_intents_that_must_not_trade_are_rejected_with_a_reason(bootstrap, topics, worker):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    worker(SOR_DEFAULT_MAX_NOTIONAL="1000000")
    publish_intents(bootstrap, topics, [
        intent("rej-expired", "0.1", limit=42200, expires_at=now_ms() - 5_000),
        intent("rej-fok", "10", limit=42200, time_in_force="FOK"),
        intent("rej-risk", "30", limit=42200),
        intent("rej-limit", "1", limit=40000),
        intent("rej-noquote", "1", "DOGE/USD", limit=1),
    ])
    results = {r["intent_id"]: r for r in read_json(bootstrap, topics.executions, 5)}
    assert {k: r["status"] for k, r in results.items()} == dict.fromkeys(results, "rejected") and len(results) == 5
    assert results["rej-expired"]["reason"].startswith("expired")
    assert results["rej-fok"]["reason"].startswith("fok_not_coverable")
    assert results["rej-risk"]["reason"].startswith("risk_limit")
    assert results["rej-limit"]["reason"].startswith("no_liquidity")
    assert results["rej-noquote"]["reason"].startswith("no_fresh_quote")
    for r in results.values():
        assert r["filled_qty"] == "0" and r["fills"] == [] and r["workingFloor"] == "SOR"


def test_stale_quotes_are_excluded_from_routing(bootstrap, topics, worker):
    make_topics(bootstrap, topics)
    old = now_ms() - 60_000
    publish_quotes(bootstrap, topics, [
        quote("binance", asks=[(42000, "5")], ts=old),  # cheapest, but a minute old
        quote("kraken", asks=[(42150, "5")]),
        quote("coinbase", "ETH/USD", asks=[(2200, "5")], ts=old),
    ])
    worker(SOR_MAX_QUOTE_AGE_MS="20000")
    publish_intents(bootstrap, topics, [intent("stale-1", "1", limit=42200), intent("stale-2", "1", "ETH/USD", limit=2300)])
    plans = {p["intent_id"]: p for p in read_json(bootstrap, topics.plans, 2)}
    results = {r["intent_id"]: r for r in read_json(bootstrap, topics.executions, 2)}
    assert [leg["provider"] for leg in plans["stale-1"]["legs"]] == ["kraken"]
    assert {"venue": "binance", "reason": "stale"}.items() <= next(e for e in plans["stale-1"]["excluded"] if e["venue"] == "binance").items()
    assert results["stale-1"]["status"] == "filled"
    assert results["stale-2"]["status"] == "rejected" and results["stale-2"]["reason"].startswith("no_fresh_quote")


def test_sigterm_finishes_in_flight_intents_commits_and_exits_zero(bootstrap, topics, tmp_path):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    slow = tmp_path / "slow.toml"
    slow.write_text('[[venues]]\nname = "binance"\nlatency_ms = 1500\n\n[[venues]]\nname = "kraken"\nlatency_ms = 1500\n')
    w = WorkerProcess(bootstrap, slow, topics).started()
    try:
        publish_intents(bootstrap, topics, [intent(f"term-{n}", "0.01", limit=42200) for n in range(12)])
        time.sleep(0.6)  # consumed, legs in flight (the venues answer after ~1.5 s)
        assert w.stop(signal.SIGTERM) == 0
    finally:
        w.kill()
    assert any(line.get("event") == "draining" for line in w.log)
    results = read_json(bootstrap, topics.executions, 12, timeout_s=10)
    assert sorted(r["intent_id"] for r in results) == sorted(f"term-{n}" for n in range(12)), "\n".join(l for l in w.lines if "partitions" in l or "draining" in l or "started" in l or "recovered" in l)
    ends = run(end_offsets(bootstrap, topics.intents))
    commits = run(committed(bootstrap, topics.env["SOR_GROUP_ID"], topics.intents))
    assert all(commits[p] == o for p, o in ends.items() if o)


def test_two_workers_in_one_group_share_the_partitions(bootstrap, topics, worker):
    make_topics(bootstrap, topics, partitions=4)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    a = worker(SOR_TOPIC_PARTITIONS="4")
    b = worker(SOR_TOPIC_PARTITIONS="4")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        last = [next((line["partitions"] for line in reversed(w.log) if line.get("event") == "partitions_assigned"), []) for w in (a, b)]
        if all(last) and not set(last[0]) & set(last[1]):
            break
        time.sleep(0.2)
    assert all(last), f"both workers own partitions: {last}"
    ids = [f"grp-{n}" for n in range(40)]
    publish_intents(bootstrap, topics, [intent(i, "0.01", limit=42200) for i in ids])
    results = read_json(bootstrap, topics.executions, 40)
    assert sorted(r["intent_id"] for r in results) == sorted(ids)  # each exactly once
    done = [{line["intent_id"] for line in w.log if line.get("event") == "intent_done"} for w in (a, b)]
    assert done[0] and done[1] and not done[0] & done[1]
    assert a.stop() == 0 and b.stop() == 0


def test_backpressure_pauses_partitions_at_max_in_flight(bootstrap, topics, tmp_path):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    slow = tmp_path / "slow.toml"
    slow.write_text('[[venues]]\nname = "kraken"\nlatency_ms = 300\n')
    w = WorkerProcess(bootstrap, slow, topics, extra_env={"SOR_MAX_IN_FLIGHT": "4"}).started()
    try:
        publish_intents(bootstrap, topics, [intent(f"bp-{n}", "0.01", limit=42200) for n in range(30)])
        results = read_json(bootstrap, topics.executions, 30, timeout_s=60)
        assert sorted(r["intent_id"] for r in results) == sorted(f"bp-{n}" for n in range(30))
        assert w.stop() == 0
    finally:
        w.kill()
    paused = [line for line in w.log if line.get("event") == "backpressure_paused"]
    assert paused and all(line["in_flight"] <= 4 for line in paused)
    assert any(line.get("event") == "backpressure_resumed" for line in w.log)


def test_metrics_and_readiness_of_a_running_worker(bootstrap, topics, worker):
    import urllib.request

    from worker.broker import free_port

    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    port = free_port()
    w = worker(SOR_HTTP_PORT=port)

    def get(path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    assert get("/healthz")[0] == 200
    assert get("/readyz")[0] == 200  # started = caught up and in the group
    publish_intents(bootstrap, topics, [intent(f"m-{n}", "0.01", limit=42200) for n in range(5)] + [b"junk"])
    read_json(bootstrap, topics.executions, 5)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status, text = get("/metrics")
        if 'sor_intents_total{status="filled"} 5.0' in text:
            break
        time.sleep(0.2)
    assert 'sor_intents_total{status="filled"} 5.0' in text
    assert "sor_dead_letters_total" in text and "sor_consumer_lag" in text and "sor_quote_age_seconds" in text
    assert "sor_ready 1.0" in text
    assert w.stop() == 0


def test_a_journal_with_fewer_partitions_than_the_intents_stops_start_up_with_a_clear_error(bootstrap, topics, venues_file):
    """The issue's 6-partition reproduction: topics created by hand, the journal not
    co-partitioned. Start-up used to sit on an offsets request for a journal partition that
    does not exist; now it exits 2 naming the setting."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topics.intents, 6, 1), NewTopic(topics.quotes, 6, 1), NewTopic(topics.journal, 1, 1)])
        finally:
            await admin.close()

    run(create())
    w = WorkerProcess(bootstrap, venues_file, topics)
    try:
        assert w.proc.wait(60) == 2
    finally:
        w.kill()
    assert any("topics.journal:" in line and "co-partitioned" in line for line in w.lines), "\n".join(w.lines[-10:])


def test_a_worker_idle_longer_than_its_lease_still_executes_the_next_intent(bootstrap, topics, worker):
    """The fence's lease (0.6 x session timeout) is renewed by group heartbeats, not only by
    commits: a worker with nothing to do for several leases must not hold its next intent."""
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, [{**q, "ts": now_ms()} for q in BOOKS["BTC/USD"]])
    w = worker()
    publish_intents(bootstrap, topics, [intent("idle-1", "0.1", limit=42200)])
    assert read_json(bootstrap, topics.executions, 1, timeout_s=20)[0]["status"] == "filled"
    time.sleep(3 * 0.6 * 6)  # three leases of the default 6 s session timeout, without a record to process
    publish_intents(bootstrap, topics, [intent("idle-2", "0.1", limit=42200)])
    results = {r["intent_id"]: r for r in read_json(bootstrap, topics.executions, 2, timeout_s=20)}
    assert results["idle-2"]["status"] == "filled"
    assert not [line for line in w.log if line.get("event") in ("fenced", "fence_lease_disabled")]
    assert w.stop() == 0
