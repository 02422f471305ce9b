"""Intent-to-result latency of one ``sor worker`` at fixed offered loads, one broker, one run.

    .venv/bin/python bench/latency_by_rate.py 50 100 200 300     # intents/s, 4 s each

The same set-up as ``bench/throughput.py`` (its classes): 5 paper venues without latency, 4 symbols, market
intents, quotes re-published every 200 ms. Prints p50/p90/p99 from the send to the result on
``sor.executions.v1`` for each rate. A benchmark, not a test: the machine is shared, compare rates of one run.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import throughput as bench  # noqa: E402
from worker.broker import EmbeddedBroker  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.pipeline.kafka import ensure_topics  # noqa: E402


async def main(rates: list[int], seconds: float = 4.0) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="sor-latency-"))
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap, client_id="bench")
        await ensure_topics(settings)
        b = bench.Bench(settings, workdir)
        await b.start()
        try:
            await asyncio.sleep(1.0)  # quotes of every venue and symbol are in the topic
            worker, port = b.spawn_worker("worker-1")
            await b.wait_ready(port)
            await b.drain("warm", 50, 60)
            for i, rate in enumerate(rates):
                cpu = bench.cpu_seconds(worker.pid)
                cores = bench.CoresUsed(worker.pid, broker.proc.pid)
                sent = await b.send_intents(f"r{i}x{rate}", int(rate * seconds), rate=rate)
                arrivals = await b.wait_for(list(sent), b.arrivals, 120)
                cpu_ms = (bench.cpu_seconds(worker.pid) - cpu) / len(sent) * 1000
                used = cores.read()
                ms = [(a - sent[k]) * 1000 for k, a in zip(sent, arrivals)]
                inside = [b.inside[k] for k in sent if b.inside.get(k) is not None]
                print(f"{rate} intents/s: p50 {bench.percentile(ms, .5):.1f} ms, p90 {bench.percentile(ms, .9):.1f} ms, "
                      f"p99 {bench.percentile(ms, .99):.1f} ms; inside the worker (receipt to result) "
                      f"p50 {bench.percentile(inside, .5):.0f} ms, p99 {bench.percentile(inside, .99):.0f} ms; "
                      f"worker CPU {cpu_ms:.2f} ms per intent; cores used: {bench.CoresUsed.describe(used)}", flush=True)
                await asyncio.sleep(1)
        finally:
            b.stop_workers()
            await b.stop()


if __name__ == "__main__":
    asyncio.run(main([int(r) for r in sys.argv[1:]] or [50, 100, 200, 300]))
