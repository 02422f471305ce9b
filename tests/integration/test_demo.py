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
