"""The layers of ARCHITECTURE.md, enforced: import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    out = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "broken" in out.stdout and ", 0 broken" in out.stdout


def test_only_the_composition_root_builds_kafka_clients():
    """Every consumer, producer and admin client comes from ``KafkaClients``."""
    offenders = []
    for path in (ROOT / "worker").rglob("*.py"):
        if path.name == "clients.py":
            continue
        text = path.read_text()
        for ctor in ("AIOKafkaConsumer(", "AIOKafkaProducer(", "AIOKafkaAdminClient("):
            if ctor in text:
                offenders.append(f"{path.relative_to(ROOT)}: {ctor}")
    assert not offenders, offenders
