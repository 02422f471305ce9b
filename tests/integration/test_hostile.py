"""Issue 11 over a real broker: 10,000 hostile and valid intents and quotes, interleaved.

Every intents record gets a result or a DLQ record, every bad quote a DLQ record (a quote
of an unconfigured venue is counted instead), nothing is lost, and the worker stays ready.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.error
import urllib.request

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import now_ms
from tests.integration.test_worker import intent, make_topics, quote
from tests.support.kafka_io import WorkerProcess, read_topic, run
from worker.broker import free_port

pytestmark = pytest.mark.integration

DAY = 86_400_000
OVERSIZE = 400_000


def hostile_intents(rng: random.Random, n: int):
    """(key, value, expectation) with expectation "result", "dlq" or "either" (a document
    that may be refused at decoding or rejected with a result, as the domain bounds decide)."""
    out = []
    for i in range(n):
        kind = i % 12
        iid = f"h-{i}"
        if kind == 0:
            out.append((iid.encode(), b"{not json" + bytes(rng.randrange(256) for _ in range(20)), "dlq"))
        elif kind == 1:
            out.append((iid.encode(), orjson.dumps(intent(iid, "1") | {"qty": [1, 2]}), "dlq"))
        elif kind == 2:
            out.append((iid.encode(), orjson.dumps(intent(iid, "1") | {"side": 5, "account_id": None}), "dlq"))
        elif kind == 3:
            out.append((b"not-" + iid.encode(), orjson.dumps(intent(iid, "0.001")), "dlq"))  # key mismatch
        elif kind == 4:
            out.append((None, orjson.dumps(intent(iid, "0.001")), "dlq"))  # no key
        elif kind == 5 and i % 120 == 5:
            out.append((iid.encode(), b'{"intent_id": "' + b"x" * OVERSIZE + b'"', "dlq"))  # ~400 KB, malformed
        elif kind == 5:
            out.append((iid.encode(), b"[" * 5_000, "dlq"))
        elif kind == 6:
            out.append((iid.encode(), orjson.dumps(intent(iid, "1e70")), "either"))
        elif kind == 7:
            out.append((iid.encode(), b'{"intent_id": "%s", "qty": %s}' % (iid.encode(), b"9" * 4_300), "dlq"))
        elif kind == 8:
            out.append((iid.encode(), orjson.dumps(intent(iid, "0.001", created_at=now_ms() - DAY)), "result"))  # expired
        else:
            out.append((iid.encode(), orjson.dumps(intent(iid, "0.001")), "result"))
    return out


def hostile_quotes(rng: random.Random, n: int):
    """(key, value, expectation) with "cached", "dlq" or "dropped" (an unconfigured venue)."""
    out = []
    venues = ["binance", "kraken", "coinbase"]
    for i in range(n):
        kind = i % 10
        v = venues[i % 3]
        if kind == 0:
            out.append((b"x", b"\xff\xfe garbage", "dlq"))
        elif kind == 1:
            out.append((f"{v}:BTC/USD".encode(), orjson.dumps(quote(v, asks=[(42_000, 1)], ts=now_ms() + DAY)), "dlq"))  # future
        elif kind == 2:
            out.append((f"evil{i}:E{i}/USD".encode(), orjson.dumps(quote(f"evil{i}", f"E{i}/USD", asks=[(1, 1)])), "dropped"))
        elif kind == 3:
            out.append((f"{v}:BTC/USD".encode(), orjson.dumps({"venue": v, "symbol": "BTC/USD", "ts": "soon", "asks": "many"}), "dlq"))
        elif kind == 5 and i % 50 == 5:  # a valid snapshot keyed as another book
            out.append((f"{v}:ETH/USD".encode(), orjson.dumps(quote(v, asks=[(42_000, 1)])), "dlq"))
        elif kind == 4 and i % 100 == 4:
            out.append((f"{v}:BTC/USD".encode(), b'{"venue": "' + b"v" * OVERSIZE + b'"}', "dlq"))  # ~400 KB
        else:
            price = 42_000 + rng.randrange(0, 50)
            out.append((f"{v}:BTC/USD".encode(),
                        orjson.dumps(quote(v, asks=[(price, "50"), (price + 5, "100")], bids=[(price - 5, "100")])), "cached"))
    return out


async def publish(bootstrap: str, records: list[tuple[str, bytes | None, bytes]]) -> list:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=2_000_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_ten_thousand_hostile_and_valid_records_lose_nothing_and_the_worker_stays_ready(bootstrap, topics, venues_file):
    make_topics(bootstrap, topics)
    rng = random.Random(11)
    run(publish(bootstrap, [(topics.quotes, k, v) for k, v, _ in hostile_quotes(rng, 30) if _ == "cached"]))
    port = free_port()
    w = WorkerProcess(bootstrap, venues_file, topics, extra_env={"SOR_HTTP_PORT": str(port), "SOR_MAX_IN_FLIGHT": "1000"})
    try:
        w.started()
        assert get(port, "/readyz")[0] == 200
        intents = hostile_intents(rng, 5_000)
        quotes = hostile_quotes(rng, 5_000)
        mixed = [(topics.intents, k, v, e) for k, v, e in intents] + [(topics.quotes, k, v, e) for k, v, e in quotes]
        rng.shuffle(mixed)
        metas = run(publish(bootstrap, [(t, k, v) for t, k, v, _ in mixed]))
        assert len(metas) == 10_000

        want_results = {orjson.loads(v)["intent_id"] for t, k, v, e in mixed if t == topics.intents and e == "result"}
        either = {(m.partition, m.offset): k.decode() for (t, k, v, e), m in zip(mixed, metas) if t == topics.intents and e == "either"}
        dlq_intents = {(m.partition, m.offset) for (t, k, v, e), m in zip(mixed, metas) if t == topics.intents and e == "dlq"}
        dlq_quotes = {(m.partition, m.offset) for (t, k, v, e), m in zip(mixed, metas) if t == topics.quotes and e == "dlq"}
        dropped = sum(1 for t, k, v, e in mixed if t == topics.quotes and e == "dropped")

        # "either" intents may be dead-lettered too, so a count cannot say when the DLQ is
        # complete: read until every expected position is there (or a minute passed).
        expected = {(topics.intents, *pos) for pos in dlq_intents} | {(topics.quotes, *pos) for pos in dlq_quotes}
        deadline = time.monotonic() + 60
        while True:
            letters = [orjson.loads(r.value) for r in run(read_topic(bootstrap, topics.dlq, len(expected), timeout_s=10))]
            seen = {(l["source_topic"], l["source_partition"], l["source_offset"]) for l in letters}
            if expected <= seen or time.monotonic() > deadline:
                break
        results = [orjson.loads(r.value) for r in run(read_topic(bootstrap, topics.executions, len(want_results), timeout_s=60))]
        assert get(port, "/readyz")[0] == 200 and w.proc.poll() is None

        by_topic = {topics.intents: set(), topics.quotes: set()}
        for letter in letters:
            by_topic[letter["source_topic"]].add((letter["source_partition"], letter["source_offset"]))
            assert len(letter["error"]) <= 1_100 and letter["error"].split(":")[0]  # names its field
            assert letter["original_size"] is not None and len(letter["original_value_b64"] or "") <= 22_000
        result_ids = [r["intent_id"] for r in results]
        assert len(result_ids) == len(set(result_ids))  # one result per intent, none twice
        answered_either = {pos for pos, iid in either.items() if pos in by_topic[topics.intents] or iid in set(result_ids)}
        assert answered_either == set(either), "an intent got neither a result nor a DLQ record"
        assert set(result_ids) - {iid for iid in either.values()} == want_results  # every valid intent has a result
        assert by_topic[topics.intents] - set(either) == dlq_intents  # every bad intent is dead-lettered, only those
        assert by_topic[topics.quotes] == dlq_quotes
        expired = [r for r in results if r["intent_id"] in want_results and r["status"] == "rejected"]
        assert all(r["reason"].startswith("expired") for r in expired) and len(expired) >= 400

        metrics = get(port, "/metrics")[1].decode()
        assert f'sor_quotes_dropped_total{{reason="unknown_venue"}} {float(dropped)}' in metrics
        assert 'sor_quotes_dropped_total{reason="future"}' in metrics and "evil" not in metrics
        assert "sor_dead_letter_failures_total{" not in metrics  # every DLQ record was accepted
        assert w.stop() == 0
    finally:
        w.kill()
