"""The ccxt path over the real broker: ``sor paper-venue`` + ``sor feed`` + ``sor worker`` with
``adapter = "ccxt"`` venues, i.e. ccxt's own binance class in front of every paper venue.

The same four invariants as the http path's crash suite (tests/integration/test_faults.py):
every intent has a final result, copies are identical, no client order id reached a venue
twice, and the venues' ledger fills equal the fills published on sor.fills.v1.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.test_faults import assert_invariants
from tests.support.crash import Harness, kill_loop
from tests.support.kafka_io import read_json

pytestmark = pytest.mark.integration


def test_feed_and_worker_through_ccxt_with_lot_rules_from_the_exchange(bootstrap, tmp_path):
    started = time.monotonic()
    h = Harness(bootstrap, tmp_path, adapter="ccxt", feed=True, worker_lot_rules=False)
    try:
        quotes = read_json(bootstrap, h.topics.quotes, 3, 60)
        assert {(q["venue"], q["symbol"]) for q in quotes} >= {("binance", "BTC/USD"), ("kraken", "BTC/USD"), ("coinbase", "BTC/USD")}
        status, metrics = h.feed.get("/metrics")
        assert status == 200 and b'sor_feed_quote_age_seconds{symbol="BTC/USD",venue="binance"}' in metrics
        assert b'sor_feed_poll_seconds_count{venue="kraken"}' in metrics
        assert h.feed.get("/readyz")[0] == 200 and h.feed.get("/healthz")[0] == 200

        worker = h.start_worker()
        rules = {line["venue"]: line for line in worker.log if line.get("event") == "ccxt_venue_started"}
        # The worker's venues file has no lot rules: these are the paper venues' exchangeInfo filters.
        assert rules["binance"]["step_size"] == "0.00001" and rules["kraken"]["step_size"] in ("1E-8", "0.00000001")
        h.publish_intents(80, seed=61)
        h.wait_for_results(120)
        assert worker.stop() == 0
        report = h.check(0, started)
        feed_exit = h.feed.stop()
    finally:
        h.close()
    print("\n".join(report.lines()))
    assert_invariants(report, 80)
    assert report.statuses["filled"] > 40 and report.ledger_fills > 0
    assert feed_exit == 0


def test_lost_responses_and_5xx_are_reconciled_through_ccxt(bootstrap, tmp_path):
    started = time.monotonic()
    faults = {"binance": {"lost_response_rate": 0.2, "error_rate": 0.1}, "kraken": {"timeout_rate": 0.05, "timeout_ms": 1500},
              "coinbase": {"reject_rate": 0.2}}
    h = Harness(bootstrap, tmp_path, faults=faults, adapter="ccxt",
                worker_env={"SOR_BREAKER_THRESHOLD": "3", "SOR_BREAKER_COOLDOWN_MS": "1000"})
    try:
        worker = h.start_worker()
        h.publish_intents(150, seed=71)
        h.wait_for_results(120)
        assert worker.stop() == 0
        report = h.check(0, started)
    finally:
        h.close()
    print("\n".join(report.lines()))
    assert_invariants(report, 150)
    assert report.faults.get("lost_response", 0) > 0 and report.faults.get("error", 0) > 0
    assert report.statuses["filled"] > 0


def test_sigkill_the_ccxt_worker_with_intents_in_flight(bootstrap, tmp_path):
    report = kill_loop(bootstrap, tmp_path, intents=150, kills=4, seed=81, adapter="ccxt",
                       faults={"binance": {"lost_response_rate": 0.05}}, drain_timeout_s=120)
    print("\n".join(report.lines()))
    assert_invariants(report, 150)
    assert report.statuses["filled"] > 75


def test_the_worker_refuses_to_start_on_a_venue_it_cannot_load(bootstrap, tmp_path):
    h = Harness(bootstrap, tmp_path, adapter="ccxt", worker_env={"SOR_VENUE_CREDENTIALS": json.dumps({})})
    try:
        worker = h.start_worker(wait=False)
        assert worker.proc.wait(60) == 2
        worker._reader.join(5)
        assert any("trades with API keys" in line for line in worker.lines)
    finally:
        h.close()
