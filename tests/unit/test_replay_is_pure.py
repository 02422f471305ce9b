"""Replay must never place an order: structurally, it cannot reach a venue."""

import subprocess
import sys


def test_replay_imports_no_adapter_and_no_executor():
    code = ("import sys, worker.replay, worker.cli.replay; "
            "bad = [m for m in sys.modules if m.startswith(('worker.venues', 'worker.execution.executor', 'worker.service', 'worker.bootstrap', 'worker.pipeline.worker'))]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, f"replay pulls in order-placing code: {proc.stdout} {proc.stderr}"
