"""The embedded broker alone: produce acknowledgements over a run, with and without readers.

    .venv/bin/python bench/broker_acks.py            # 300 intents/s of worker-shaped records, 24 s

No worker code: each "intent" writes what the worker writes (two acknowledged journal records,
then a plan, a fill and a result), paced at a fixed rate, on one embedded Tansu broker. It
prints the acknowledgement p50/p99 of the first journal record per 3-second window, once with no
reader and once with readers following the outcome topics (one with a 5 ms fetch wait, as a
latency observer; three with 500 ms).

Why it exists: Tansu keeps its logs in memory and its fetches cost more as they grow, so on a
long run every reader of a growing topic slows every acknowledgement down, whatever the worker
does. The worker's intent-to-result latency on this broker must be read next to this figure.
A benchmark, not a test: the machine is shared; compare the two legs of one run.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.broker import EmbeddedBroker  # noqa: E402
from worker.config import Settings  # noqa: E402
from worker.pipeline.kafka import KafkaClients, ensure_topics  # noqa: E402

WINDOW_S = 3


async def leg(rate: int, seconds: int, readers: bool) -> list[tuple[float, float, float]]:
    """(window start s, p50 ms, p99 ms) of the first journal record's acknowledgement."""
    with EmbeddedBroker() as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap, client_id="bench-acks")
        await ensure_topics(settings)
        clients = KafkaClients(settings)
        producer = await clients.producer(role="acks")
        t = settings.topics
        acks: list[tuple[float, float]] = []

        async def intent(i: int) -> None:
            key, partition = f"k{i}".encode(), i % 6
            sent = time.perf_counter()
            await producer.send_and_wait(t.journal, b"j" * 2500, key=key, partition=partition)
            acks.append((sent, time.perf_counter() - sent))
            await producer.send_and_wait(t.journal, b"j" * 2600, key=key, partition=partition)
            outcome = [await producer.send(t.plans, b"p" * 1900, key=key), await producer.send(t.fills, b"f" * 400, key=key),
                       await producer.send(t.executions, b"e" * 1400, key=key)]
            await asyncio.gather(*outcome)

        async def follow(topic: str, wait_ms: int) -> None:
            consumer = clients.consumer(topic, role="bench-reader", auto_offset_reset="latest", fetch_max_wait_ms=wait_ms)
            await consumer.start()
            try:
                while True:
                    await consumer.getmany(timeout_ms=100)
            finally:
                await consumer.stop()

        followers = []
        if readers:
            followers = [asyncio.create_task(follow(t.executions, 5))]
            followers += [asyncio.create_task(follow(topic, 500)) for topic in (t.plans, t.fills, t.journal)]
            await asyncio.sleep(2)
        tasks, start = [], time.perf_counter()
        for i in range(rate * seconds):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(intent(i)))
        await asyncio.gather(*tasks)
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await producer.stop()
    out = []
    for w in range(0, seconds, WINDOW_S):
        window = sorted(d for s, d in acks if start + w <= s < start + w + WINDOW_S)
        if window:
            out.append((w, window[len(window) // 2] * 1000, window[int(len(window) * 0.99)] * 1000))
    return out


def main() -> int:
    rate, seconds = 300, 24
    print(f"# journal acknowledgements on the embedded broker, {rate} intents/s, p50 / p99 ms per {WINDOW_S} s window\n")
    print("| window | no reader | 4 readers of the outcome topics |\n|---|---:|---:|")
    alone = asyncio.run(leg(rate, seconds, readers=False))
    read = asyncio.run(leg(rate, seconds, readers=True))
    for (w, a50, a99), (_, r50, r99) in zip(alone, read):
        print(f"| {w}-{w + WINDOW_S} s | {a50:.2f} / {a99:.2f} | {r50:.2f} / {r99:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
