"""Crash and fault tests: never place an order twice, never lose an outcome.

Each asserts the four invariants: every intent has a final result; all copies of an
outcome are identical; no client order id reached the venue twice; the venue ledger's
fills equal the fills published on sor.fills.v1.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.support.crash import Harness, kill_loop

pytestmark = pytest.mark.integration


def assert_invariants(report, intents):
    assert report.results == intents, f"missing results: {report.missing_results[:10]}"
    assert not report.divergent_copies, f"copies differ: {report.divergent_copies[:10]}"
    assert not report.duplicate_venue_orders, f"client order ids sent twice: {report.duplicate_venue_orders}"
    assert not report.fill_mismatch, f"ledger vs sor.fills.v1: {report.fill_mismatch}"
    assert report.ledger_fills == report.published_fills


def test_sigkill_the_worker_ten_times_with_500_intents_in_flight(bootstrap, tmp_path):
    report = kill_loop(bootstrap, tmp_path, intents=500, kills=10, seed=11)
    print("\n".join(report.lines()))
    assert_invariants(report, 500)
    assert report.statuses["filled"] > 250  # recovery re-routes what never reached a venue


def test_a_rebalance_in_the_middle_of_execution(bootstrap, tmp_path):
    started = time.monotonic()
    h = Harness(bootstrap, tmp_path, worker_env={"SOR_TOPIC_PARTITIONS": "3"})
    try:
        first = h.start_worker()
        h.publish_intents(300, seed=21)
        time.sleep(0.5)
        second = h.start_worker()  # joins: partitions move while intents are in flight
        second.wait_for('"partitions_assigned"')
        h.publish_intents(100, seed=22)
        time.sleep(1.0)
        assert second.stop() == 0  # leaves: they move back
        h.wait_for_results(180)
        assert first.stop() == 0
        report = h.check(0, started)
    finally:
        h.close()
    print("\n".join(report.lines()))
    assert_invariants(report, 400)


def test_the_broker_paused_for_seconds_then_resumed(bootstrap, broker, tmp_path):
    if broker is None:
        pytest.skip("needs the embedded broker's process")
    started = time.monotonic()
    h = Harness(bootstrap, tmp_path)
    try:
        worker = h.start_worker()
        h.publish_intents(300, seed=31)
        time.sleep(0.3)
        broker.proc.send_signal(signal.SIGSTOP)
        time.sleep(5)
        broker.proc.send_signal(signal.SIGCONT)
        h.wait_for_results(180)
        assert worker.stop() == 0
        report = h.check(0, started)
    finally:
        broker.proc.send_signal(signal.SIGCONT)
        h.close()
    print("\n".join(report.lines()))
    assert_invariants(report, 300)


def test_venue_timeouts_rejects_and_5xx_injected_and_real(bootstrap, tmp_path):
    started = time.monotonic()
    faults = {"binance": {"lost_response_rate": 0.1, "error_rate": 0.1}, "kraken": {"timeout_rate": 0.05, "timeout_ms": 1500},
              "coinbase": {"reject_rate": 0.2}}
    h = Harness(bootstrap, tmp_path, faults=faults, worker_env={"SOR_BREAKER_THRESHOLD": "3", "SOR_BREAKER_COOLDOWN_MS": "1000"})
    try:
        worker = h.start_worker()
        h.publish_intents(200, seed=41)
        time.sleep(1.0)
        h.venue.proc.send_signal(signal.SIGSTOP)  # a real outage: every venue stops answering
        time.sleep(3)
        h.venue.proc.send_signal(signal.SIGCONT)
        h.publish_intents(100, seed=42)
        h.wait_for_results(180)
        assert worker.stop() == 0
        report = h.check(0, started)
    finally:
        h.venue.proc.send_signal(signal.SIGCONT)
        h.close()
    print("\n".join(report.lines()))
    assert_invariants(report, 300)
    assert report.faults.get("lost_response", 0) > 0 and report.faults.get("error", 0) > 0
    assert any(line.get("event") == "circuit_open" for line in worker.log)
    assert report.statuses["filled"] > 0
