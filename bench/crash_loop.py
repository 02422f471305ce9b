"""Kill the worker with SIGKILL at random moments, many times, and print the invariants.

    .venv/bin/python bench/crash_loop.py --intents 2000 --kills 30

Starts its own embedded broker unless --bootstrap-servers is given.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.crash import kill_loop  # noqa: E402
from worker.broker import EmbeddedBroker  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--intents", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--faults", action="store_true", help="also inject venue 5xx, lost responses and timeouts")
    ap.add_argument("--bootstrap-servers")
    args = ap.parse_args()
    faults = None
    if args.faults:
        faults = {"binance": {"lost_response_rate": 0.05, "error_rate": 0.05}, "kraken": {"timeout_rate": 0.03, "timeout_ms": 1500},
                  "coinbase": {"reject_rate": 0.05}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.bootstrap_servers:
            report = kill_loop(args.bootstrap_servers, Path(tmp), args.intents, args.kills, args.seed, faults)
        else:
            with EmbeddedBroker() as broker:
                report = kill_loop(broker.bootstrap, Path(tmp), args.intents, args.kills, args.seed, faults)
    print("\n".join(report.lines()))
    if not report.ok:
        print("FAILED:", report.missing_results[:10], report.divergent_copies[:10], report.duplicate_venue_orders, report.fill_mismatch[:10])
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
