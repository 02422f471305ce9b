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
