"""`sor replay` over a real topic range: what-if compares algorithms and places nothing;
republish copies keys, values and headers faithfully."""

from __future__ import annotations

import os
import subprocess

import orjson
import pytest

from tests.integration.test_worker import BOOKS, intent, make_topics, publish_quotes
from tests.support.kafka_io import SOR, produce_json, read_topic, run

pytestmark = pytest.mark.integration


def sor(*args, env=None):
    return subprocess.run([SOR, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=120)


def test_what_if_replay_compares_algorithms_and_places_nothing(bootstrap, topics, venues_file, tmp_path):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    docs = [intent(f"r-{n}", f"{0.1 + n / 10:.1f}", limit=42170) for n in range(20)]
    produce_json(bootstrap, topics.intents, [(d["intent_id"], d) for d in docs] + [(None, b"garbage")])
    out = tmp_path / "plans.jsonl"
    proc = sor("replay", "--mode", "what-if", "--bootstrap-servers", bootstrap, "--venues", str(venues_file),
               "--out", str(out), env={**topics.env, "SOR_MAX_QUOTE_AGE_MS": "600000"})
    assert proc.returncode == 0, proc.stderr
    plans = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert len(plans) == 60 and {p["algorithm"] for p in plans} == {"sor", "split", "best"}
    assert "| sor | 20 |" in proc.stdout and "| split | 20 |" in proc.stdout and "| best | 20 |" in proc.stdout
    assert "intents replayed: 20 (undecodable, skipped: 1)" in proc.stdout
    assert "intents [" in proc.stderr  # the progress bar
    # Nothing was executed: no results, no fills.
    assert run(read_topic(bootstrap, topics.executions, 1, timeout_s=2)) == []
    assert run(read_topic(bootstrap, topics.fills, 1, timeout_s=1)) == []


def test_what_if_on_an_offset_range_of_one_partition(bootstrap, topics, venues_file, tmp_path):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    produce_json(bootstrap, topics.intents, [(f"p-{n}", intent(f"p-{n}", "0.5", limit=42170)) for n in range(12)])
    proc = sor("replay", "--mode", "what-if", "--bootstrap-servers", bootstrap, "--venues", str(venues_file), "--partition", "0",
               "--from-offset", "1", "--algorithms", "sor", env={**topics.env, "SOR_MAX_QUOTE_AGE_MS": "600000"})
    assert proc.returncode == 0, proc.stderr
    records = run(read_topic(bootstrap, topics.intents, 12, timeout_s=5))
    in_p0 = sum(1 for r in records if r.partition == 0)
    assert f"intents replayed: {max(0, in_p0 - 1)}" in proc.stdout


def test_republish_copies_keys_values_and_headers(bootstrap, topics):
    make_topics(bootstrap, topics)
    source, target = topics.executions, topics.name("executions-restore")
    msgs = [(f"k{n}".encode(), orjson.dumps({"event_id": f"result:k{n}", "n": n})) for n in range(8)]

    async def publish_with_headers():
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await p.start()
        try:
            for key, value in msgs:
                await p.send_and_wait(source, value, key=key, headers=[("trace", key + b"-h")])
        finally:
            await p.stop()

    run(publish_with_headers())
    proc = sor("replay", "--mode", "republish", "--bootstrap-servers", bootstrap, "--topic", source, "--to-topic", target)
    assert proc.returncode == 0, proc.stderr
    assert "republished 8 records" in proc.stdout
    copied = run(read_topic(bootstrap, target, 8))
    original = run(read_topic(bootstrap, source, 8))
    assert sorted(((r.key, r.value, tuple(r.headers)) for r in copied), key=str) == sorted(((r.key, r.value, tuple(r.headers)) for r in original), key=str)


def test_replay_rejects_a_bad_range_with_a_clear_error(bootstrap, topics, venues_file):
    make_topics(bootstrap, topics)
    proc = sor("replay", "--mode", "what-if", "--bootstrap-servers", bootstrap, "--venues", str(venues_file), "--partition", "99",
               env=topics.env)
    assert proc.returncode == 2 and "--partition" in proc.stderr and "Traceback" not in proc.stderr
