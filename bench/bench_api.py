"""`sor api` benchmark: the route endpoints' requests/s and p99, and a smart order's HTTP
round trip against the worker's own intent-to-result latency (measured in the same run).

    .venv/bin/python bench/bench_api.py [--seconds 5] [--concurrency 32] [--orders 100]

Starts the embedded broker, `sor worker` and `sor api` as subprocesses (as an operator runs
them) and prints a Markdown table for docs/README-api.md. Absolute numbers depend on the
machine; the ratio is what to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from tests.integration.conftest import VENUES_TOML  # noqa: E402
from tests.integration.test_worker import make_topics, publish_quotes, quote  # noqa: E402
from tests.support.kafka_io import SOR, TopicSet, WorkerProcess  # noqa: E402
from worker.api.security import sign  # noqa: E402
from worker.broker import EmbeddedBroker, free_port  # noqa: E402
from worker.domain.clock import now_ms  # noqa: E402

KEY, SECRET = "bench-key", "bench-secret"
# Deep books: a hundred orders never exhaust a level, so every order fills in one round.
BOOKS = [quote("binance", asks=[(42155, "100000")], bids=[(42150, "100000")]),
         quote("kraken", asks=[(42160, "100000")], bids=[(42145, "100000")]),
         quote("coinbase", asks=[(42150, "100000")], bids=[(42148, "100000")])]


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def load(url: str, seconds: float, concurrency: int) -> tuple[float, float, float, int]:
    """Closed-loop load: ``concurrency`` clients, each sending as soon as its answer came."""
    samples: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            async with session.get(url) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            samples.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return len(samples) / elapsed, statistics.median(samples) * 1e3, pct(samples, 0.99) * 1e3, errors


async def orders(base: str, n: int) -> tuple[list[float], list[float]]:
    """``n`` sequential smart orders: HTTP round trips and the worker's reported latencies (ms)."""
    http, worker = [], []
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            body = json.dumps({"symbol": "BTC/USD", "side": "buy" if i % 2 == 0 else "sell", "qty": "0.01",
                               "idempotency_key": f"bench-{os.getpid()}-{i}"})
            query = urlencode({"timestamp": now_ms()})
            query += f"&signature={sign(SECRET, query + body)}"
            t0 = time.perf_counter()
            async with session.post(f"{base}/v1/smart-order?{query}", data=body,
                                    headers={"X-MBX-APIKEY": KEY, "Content-Type": "application/json"}) as r:
                doc = await r.json()
            elapsed = (time.perf_counter() - t0) * 1e3
            if r.status != 200 or doc.get("status") != "filled":
                raise SystemExit(f"order {i}: {r.status} {doc}")
            http.append(elapsed)
            worker.append(float(doc["latency"].removesuffix("ms")))
    return http, worker


def wait_ready(url: str, proc: subprocess.Popen, log, timeout_s: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    log.seek(0)
    raise SystemExit(f"sor api not ready: {log.read()[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--orders", type=int, default=100)
    args = parser.parse_args()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bootstrap = broker.bootstrap
        topics = TopicSet()
        venues = Path(tmp) / "venues.toml"
        venues.write_text(VENUES_TOML)
        make_topics(bootstrap, topics)
        publish_quotes(bootstrap, topics, BOOKS)
        worker = WorkerProcess(bootstrap, venues, topics)
        port = free_port()
        env = {**os.environ, **topics.env, "SOR_MAX_QUOTE_AGE_MS": "600000",
               "SOR_LOG_LEVEL": "warning", "SOR_API_KEYS": json.dumps({KEY: {"secret": SECRET, "account_id": "bench"}}),
               "SOR_API_RATE_LIMIT_PER_S": "1000000", "SOR_API_RATE_LIMIT_BURST": "1000000"}
        api_log = open(Path(tmp) / "api.log", "w+")
        api = subprocess.Popen([SOR, "api", "--bootstrap-servers", bootstrap, "--venues", str(venues), "--port", str(port)],
                               env=env, stdout=api_log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", api, api_log)
            worker.started()
            base = f"http://127.0.0.1:{port}"
            rank = asyncio.run(load(f"{base}/v1/route/BTC/USD", args.seconds, args.concurrency))
            split = asyncio.run(load(f"{base}/v1/route/BTC/USD/split?qty=10", args.seconds, args.concurrency))
            asyncio.run(orders(base, 10))  # warm-up: connections, first plans
            http, own = asyncio.run(orders(base, args.orders))
        finally:
            api.terminate()
            api.wait(30)
            worker.stop()
    print(f"| measure (one run, {os.cpu_count()} CPUs, {args.concurrency} concurrent clients, {args.seconds:g} s) | requests/s | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    print(f"| GET /v1/route/BTC/USD (ranking) | {rank[0]:.0f} | {rank[1]:.2f} | {rank[2]:.2f} |")
    print(f"| GET /v1/route/BTC/USD/split?qty=10 | {split[0]:.0f} | {split[1]:.2f} | {split[2]:.2f} |")
    print()
    print(f"| smart order, {args.orders} sequential | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    print(f"| worker: intent to result (its `latency`) | {statistics.median(own):.1f} | {pct(own, 0.99):.1f} |")
    print(f"| API: HTTP request to response | {statistics.median(http):.1f} | {pct(http, 0.99):.1f} |")
    print(f"| ratio API / worker (p50) | {statistics.median(http) / max(statistics.median(own), 0.001):.1f}x | |")
    print(f"| API overhead (p50 difference) | {statistics.median(http) - statistics.median(own):.1f} | |")
    if rank[3] or split[3]:
        print(f"\nnon-200 answers: ranking {rank[3]}, split {split[3]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
