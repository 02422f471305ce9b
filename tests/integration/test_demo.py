"""The README's first command: `sor demo` runs end to end on an embedded broker."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
SOR = str(Path(sys.executable).with_name("sor"))


def test_sor_demo_runs_and_prints_the_summary(tmp_path):
    proc = subprocess.run([SOR, "demo", "--intents", "60", "--rate", "40", "--http-port", "0", "--api-port", "0", "--report-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = proc.stdout
    assert "== sor demo: summary" in out
    for label in ("final results", "filled", "dead letters (sor.dlq.v1)", "mean savings vs single venue (bps)",
                  "intent-to-result latency p50 (ms)", "intent-to-result latency p99 (ms)"):
        assert label in out, label
    assert "have no final result" not in out
    assert "best-execution report: " in out
    assert "[demo] HTTP API on http://" in out


def test_sor_demo_on_the_ccxt_path_needs_no_network(tmp_path):
    """`sor demo --ccxt`: ccxt's own binance class trades with and reads books from the local
    paper venues (signed requests, lot rules from exchangeInfo); every intent gets a result."""
    proc = subprocess.run([SOR, "demo", "--ccxt", "--intents", "30", "--rate", "20", "--http-port", "0", "--api-port", "0",
                           "--report-dir", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[demo] ccxt path: paper venues (Binance API, signed)" in proc.stdout
    assert "== sor demo: summary" in proc.stdout
    assert "have no final result" not in proc.stdout


def test_a_second_demo_on_the_same_broker_counts_only_its_own_intents(bootstrap, tmp_path):
    """demo.py: intent ids were oms-000001... in every run, and every result on the topic was
    counted. A second `sor demo --bootstrap-servers` on the same broker showed the first run's
    results as its own ("sent 1/50 | results 50": the worker deduplicated the reused ids and
    executed nothing), and an order placed through the demo's API made "-1 intents have no
    final result", exit 1. Each run now has its own id prefix and counts only what it sent."""
    def demo():
        return subprocess.run([SOR, "demo", "--bootstrap-servers", bootstrap, "--intents", "30", "--rate", "60",
                               "--http-port", "0", "--api-port", "0", "--report-dir", str(tmp_path)],
                              capture_output=True, text=True, timeout=300)

    first, second = demo(), demo()
    for proc in (first, second):
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        assert "have no final result" not in proc.stdout
    import re

    progress = [tuple(map(int, m.groups())) for m in re.finditer(r"sent\s+(\d+)/\d+ \| results\s+(\d+)", second.stdout)]
    assert progress and all(results <= sent for sent, results in progress), progress  # never the first run's results


def test_sor_demo_refuses_a_number_of_intents_below_one(tmp_path):
    proc = subprocess.run([SOR, "demo", "--intents", "-5", "--report-dir", str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "--intents" in proc.stderr, proc.stderr
    assert not (tmp_path / "sor-report.html").exists()
