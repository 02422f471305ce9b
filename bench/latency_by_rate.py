"""Intent-to-result latency of one ``sor worker`` at fixed offered loads, one broker, one run.

    .venv/bin/python bench/latency_by_rate.py 50 100 200 300     # intents/s, 4 s each
    .venv/bin/python bench/latency_by_rate.py --floor 100 400       # and the stepped passthrough after each

The same set-up as ``bench/throughput.py`` (its classes): 5 paper venues without latency, 4 symbols, market
intents, quotes re-published every 200 ms. Prints p50/p90/p99 from the send to the result on
``sor.executions.v1`` for each rate. With ``--floor``, each rate is offered next to a stepped
passthrough (``throughput.passthrough_child``): the worker's records and its acknowledged steps
per intent with none of its work, the floor of aiokafka, asyncio and the broker under the same
crash-safety protocol, on the same broker right after the worker's window. A benchmark, not a test: the machine is shared, compare rates of one run.
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


async def main(rates: list[int], seconds: float = 4.0, floor: bool = False) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="sor-latency-"))
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap, client_id="bench")
        await ensure_topics(settings)
        await ensure_topics(settings, [bench.PASSTHROUGH_STEPPED_IN, bench.PASSTHROUGH_OUT])
        b = bench.Bench(settings, workdir)
        await b.start()
        passthrough = None
        try:
            await asyncio.sleep(1.0)  # quotes of every venue and symbol are in the topic
            worker, port = b.spawn_worker("worker-1")
            await b.wait_ready(port)
            await b.drain("warm", 50, 60)
            if floor:
                await asyncio.sleep(1.5)  # the warm intents' last journal records land
                b.pt_per_intent = len(sizes := bench.record_sizes(await b.volume("warm"), 50, first=settings.topics.journal))
                passthrough = await bench.start_stepped_passthrough(broker.bootstrap, sizes)
            for i, rate in enumerate(rates):
                legs = [("worker", worker.pid, settings.topics.intents, b.arrivals)]
                if passthrough is not None:  # right after, on the same broker: its logs grow over a run
                    legs.append(("passthrough", passthrough.pid, bench.PASSTHROUGH_STEPPED_IN, b.pt_done))
                for name, pid, topic, done in legs:
                    cpu = bench.cpu_seconds(pid)
                    cores = bench.CoresUsed(pid, broker.proc.pid)
                    sent = await b.send_intents(f"r{i}x{rate}{name[0]}", int(rate * seconds), topic, rate=rate)
                    arrivals = await b.wait_for(list(sent), done, 120)
                    cpu_ms = (bench.cpu_seconds(pid) - cpu) / len(sent) * 1000
                    used = cores.read()
                    used[name] = used.pop("worker")
                    ms = [(a - sent[k]) * 1000 for k, a in zip(sent, arrivals)]
                    inside = [b.inside[k] for k in sent if b.inside.get(k) is not None]
                    own = (f"inside the worker (receipt to result) p50 {bench.percentile(inside, .5):.0f} ms, "
                           f"p99 {bench.percentile(inside, .99):.0f} ms; " if inside else "")
                    print(f"{rate} intents/s, {name}: p50 {bench.percentile(ms, .5):.1f} ms, p90 {bench.percentile(ms, .9):.1f} ms, "
                          f"p99 {bench.percentile(ms, .99):.1f} ms; {own}"
                          f"CPU {cpu_ms:.2f} ms per intent; cores used: {bench.CoresUsed.describe(used)}", flush=True)
                    await asyncio.sleep(1)
        finally:
            if passthrough is not None:
                passthrough.terminate()
                passthrough.wait(10)
            b.stop_workers()
            await b.stop()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main([int(r) for r in args if r != "--floor"] or [50, 100, 200, 300], floor="--floor" in args))
