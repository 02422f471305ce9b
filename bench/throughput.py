"""Throughput of ``sor worker`` against a bare Kafka passthrough, in one run on one broker.

    .venv/bin/python bench/throughput.py            # 2,000 intents per leg, ~2-3 min
    .venv/bin/python bench/throughput.py --quick    # 400 intents, ~1 min
    .venv/bin/python bench/throughput.py --profile worker.prof   # leg (a) only, worker under cProfile
    .venv/bin/python bench/throughput.py --drain-only --intents 4000   # leg (a) only, to compare two versions

Legs, all on one embedded Tansu broker, 5 paper venues without latency, 4 symbols, market intents,
quotes re-published every 200 ms by this process:

a. one ``sor worker`` subprocess drains N intents that wait in the topic: intents/s between the
   10th and 90th percentile of the results' arrivals (``sor.executions.v1``, see ``drain_rate``);
   then records and bytes per intent by topic.
b. a bare passthrough subprocess (consume -> orjson parse -> produce the same count and size of
   records per intent as the worker wrote in (a) -> commit) drains the same N intents.
c. intent-to-result p50/p99 at a fixed offered load of half the capacity measured in (a).
d. a second worker joins the same group: intents/s of two instances, and the ratio to one.

The machine is shared, so the figures that mean something are the ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import TopicPartition

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worker.broker import EmbeddedBroker, free_port  # noqa: E402
from worker.config import Settings, load_venues  # noqa: E402
from worker.pipeline.kafka import KafkaClients, assign_all, drop_reached, ensure_topics  # noqa: E402
from worker.sim.market import MarketSimulator  # noqa: E402

VENUES_FILE = ROOT / "examples" / "venues.toml"
# Mids high enough that the simulator's 2-decimal ladders keep distinct levels.
SYMBOLS = {"BTC/USD": 42_000.0, "ETH/USD": 3_000.0, "BTC/EUR": 39_000.0, "ETH/EUR": 2_800.0}
GROUP = "bench-workers"
PASSTHROUGH_IN = "bench.passthrough.intents"
PASSTHROUGH_STEPPED_IN = "bench.passthrough.stepped.in"  # the stepped passthrough's own input
PASSTHROUGH_OUT = "bench.passthrough.out"
#: The worker's journal records acknowledged one after the other before its outcome (the
#: write-ahead record before any order, the completed record before the outcome); the stepped
#: passthrough of ``bench/latency_by_rate.py`` does the same with the first records of the
#: worker's sizes, journal first.
ACKNOWLEDGED_STEPS = 2


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CoresUsed:
    """Cores used by the worker, the embedded broker and this bench over a window: on a shared
    2-core machine, a latency measured while the three together use most of both cores is
    queueing, whatever the worker does."""

    def __init__(self, worker_pid: int, broker_pid: int):
        self.pids = {"worker": worker_pid, "broker": broker_pid}
        self.started = self._now()

    def _now(self) -> tuple[float, float, dict[str, float]]:
        return time.perf_counter(), time.process_time(), {k: cpu_seconds(p) for k, p in self.pids.items()}

    def read(self) -> dict[str, float]:
        """Cores used by each since the window opened (1.0: one core all the time)."""
        (t0, own0, cpu0), (t1, own1, cpu1) = self.started, self._now()
        wall = max(t1 - t0, 1e-9)
        used = {k: (cpu1[k] - cpu0[k]) / wall for k in self.pids}
        used["bench"] = (own1 - own0) / wall
        return used

    @staticmethod
    def describe(used: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.2f}" for k, v in used.items()) + f" (total {sum(used.values()):.2f} of {os.cpu_count()})"


def drain_rate(times: list[float]) -> float:
    """Completions per second between the 10th and the 90th percentile of their times: the
    sustained rate of a drain. First-to-last would count a first wave of hundreds of intents
    finished together (up to ``SOR_MAX_IN_FLIGHT`` are worked on at once) as if it took no time."""
    ordered = sorted(times)
    if len(ordered) < 2:
        raise ValueError("a drain rate needs at least two completions")
    lo, hi = len(ordered) // 10, len(ordered) * 9 // 10
    return (hi - lo) / max(ordered[hi] - ordered[lo], 1e-3)


def market_intent(run: str, n: int, rng: random.Random) -> tuple[bytes, bytes]:
    symbol = rng.choice(list(SYMBOLS))
    qty = round(rng.uniform(0.002, 0.05), 4)  # the simulator's level sizes do not scale with price; books refill every 200 ms
    intent = {"intent_id": f"{run}-{n:06d}", "account_id": f"acct-{n % 9 + 1}", "symbol": symbol,
              "side": rng.choice(["buy", "sell"]), "type": "market", "qty": str(qty), "algorithm": "sor",
              "time_in_force": "IOC", "created_at": time.time_ns() // 1_000_000}
    return intent["intent_id"].encode(), orjson.dumps(intent)


class Bench:
    """The load generator, the quote publisher and the result observer (this process)."""

    def __init__(self, settings: Settings, workdir: Path):
        self.settings = settings
        self.clients = KafkaClients(settings)
        self.workdir = workdir
        self.rng = random.Random(12)
        self.arrivals: dict[bytes, float] = {}   # result key -> monotonic arrival time
        self.inside: dict[bytes, int] = {}       # result key -> the result's latency_ms
        self.statuses: Counter = Counter()
        self.pt_counts: Counter = Counter()      # passthrough: records seen per intent key
        self.pt_done: dict[bytes, float] = {}
        self.pt_per_intent = 0
        self.workers: list[subprocess.Popen] = []

    async def start(self) -> None:
        self.producer = await self.clients.producer(role="bench")
        self.tasks = [asyncio.create_task(self.publish_quotes()),
                      asyncio.create_task(self.observe(self.settings.topics.executions, self.on_result)),
                      asyncio.create_task(self.observe(PASSTHROUGH_OUT, self.on_passthrough))]
        t = self.settings.topics
        self.outcome_topics = [t.plans, t.fills, t.executions, t.journal]

    async def volume(self, run: str) -> dict[str, tuple[int, int]]:
        """Records and key+value bytes of the intents of ``run`` (every outcome record is keyed
        by its intent id) on each outcome topic, read once from the start after the run.

        Not counted by readers that follow the topics during the run: the embedded broker's
        fetches cost more as its in-memory logs grow, and four such readers slowed its
        acknowledgements (and so the worker) more and more as a run went on."""
        prefix = f"{run}-".encode()
        consumer = self.clients.consumer(role="bench-volume", fetch_max_wait_ms=100)
        await consumer.start()
        out = {topic: [0, 0] for topic in self.outcome_topics}
        try:
            tps = await assign_all(consumer, *self.outcome_topics)
            await consumer.seek_to_beginning(*tps)
            targets = {tp: off for tp, off in (await consumer.end_offsets(tps)).items() if off > 0}
            while targets:
                for batch in (await consumer.getmany(timeout_ms=200, max_records=5000)).values():
                    for record in batch:
                        if (record.key or b"").startswith(prefix):
                            seen = out[record.topic]
                            seen[0] += 1
                            seen[1] += len(record.value or b"") + len(record.key or b"")
                await drop_reached(consumer, targets)
        finally:
            await consumer.stop()
        return {topic: (records, size) for topic, (records, size) in out.items()}

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.producer.stop()

    async def publish_quotes(self) -> None:
        venues = load_venues(VENUES_FILE)
        sims = [MarketSimulator(venues, symbol, mid, seed=i) for i, (symbol, mid) in enumerate(SYMBOLS.items())]
        while True:
            for sim in sims:
                sim.step()
                await sim.publish_all(self.producer, self.settings.topics.quotes)
            await asyncio.sleep(0.2)

    async def observe(self, topic: str, handle, fetch_max_wait_ms: int = 5) -> None:
        # A short fetch wait for latencies: the observer must not add its own poll delay to them.
        consumer = self.clients.consumer(topic, role="bench-observer", auto_offset_reset="latest",
                                         fetch_max_wait_ms=fetch_max_wait_ms)
        await consumer.start()
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=100)
                now = time.monotonic()
                for records in batches.values():
                    for record in records:
                        handle(record, now)
        finally:
            await consumer.stop()

    def on_result(self, record, now: float) -> None:
        self.arrivals.setdefault(record.key, now)
        result = orjson.loads(record.value)
        self.statuses[result.get("status")] += 1
        self.inside.setdefault(record.key, result.get("latency_ms"))  # the worker's own: receipt to result

    def on_passthrough(self, record, now: float) -> None:
        self.pt_counts[record.key] += 1
        if self.pt_counts[record.key] == self.pt_per_intent:
            self.pt_done[record.key] = now

    async def send_intents(self, run: str, n: int, topic: str | None = None, rate: float | None = None) -> dict[bytes, float]:
        """Produce n intents (all at once, or paced at ``rate``/s); returns key -> send time."""
        topic = topic or self.settings.topics.intents
        sent, futures = {}, []
        start = time.monotonic()
        for i in range(n):
            if rate:
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            key, value = market_intent(run, i, self.rng)
            sent[key] = time.monotonic()
            futures.append(await self.producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
        return sent

    def check_tasks(self) -> None:
        """A dead quote publisher or observer would silently skew every figure: stop instead."""
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"bench task failed: {task.exception()!r}")

    async def wait_for(self, keys, done: dict, timeout_s: float) -> list[float]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all(k in done for k in keys):
            self.check_tasks()
            await asyncio.sleep(0.05)
        missing = sum(k not in done for k in keys)
        if missing:
            raise RuntimeError(f"{missing} of {len(keys)} intents got no result within {timeout_s:.0f}s")
        return [done[k] for k in keys]

    def spawn_worker(self, name: str, profile: Path | None = None) -> tuple[subprocess.Popen, int]:
        port = free_port()
        prefix = [sys.executable, "-m", "cProfile", "-o", str(profile)] if profile else [sys.executable]
        cmd = [*prefix, "-m", "worker.cli.main", "worker", "--venues", str(VENUES_FILE),
               "--bootstrap-servers", self.settings.bootstrap_servers, "--group-id", GROUP,
               "--max-quote-age-ms", "60000", "--http-port", str(port)]
        env = {**os.environ, "SOR_CLIENT_ID": f"bench-{name}"}
        log = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        self.workers.append(proc)
        return proc, port

    async def wait_ready(self, port: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"worker on :{port} not ready within {timeout_s}s")

    async def drain(self, run: str, n: int, timeout_s: float) -> float:
        """Intents/s of the running worker(s) on n intents put in the topic at once."""
        sent = await self.send_intents(run, n)
        return drain_rate(await self.wait_for(list(sent), self.arrivals, timeout_s))

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.workers.clear()


async def passthrough_child(bootstrap: str, sizes: list[int], n: int, stepped: int = 0) -> None:
    """The bare leg: consume -> orjson parse -> produce len(sizes) records -> commit.

    ``stepped`` > 0: each intent in a task of its own, as the worker works on it: the first
    ``stepped`` records (its journal records) acknowledged one after the other, then the rest
    together, offsets committed every ``commit_interval_ms``. The floor of the Kafka client, the
    event loop and the broker under the worker's crash-safety protocol, without any of its work."""
    settings = Settings(bootstrap_servers=bootstrap, client_id="bench-passthrough")
    clients = KafkaClients(settings)
    producer = await clients.producer(role="out")
    consumer = clients.consumer(PASSTHROUGH_STEPPED_IN if stepped else PASSTHROUGH_IN,
                                group_id=f"bench-passthrough{'-stepped' if stepped else ''}", auto_offset_reset="earliest")
    await consumer.start()
    payloads = [b"x" * size for size in sizes]
    if stepped:
        try:
            await _stepped_passthrough(settings, producer, consumer, payloads, n, stepped)
        finally:
            await consumer.stop()
            await producer.stop()
        return
    seen = 0
    cpu_started = None
    try:
        while seen < n:
            batches = await consumer.getmany(timeout_ms=200, max_records=500)
            futures = []
            if batches and cpu_started is None:
                cpu_started = time.process_time()  # from the first intent, as the worker's is
            for records in batches.values():
                for record in records:
                    intent = orjson.loads(record.value)
                    key = intent["intent_id"].encode()
                    for payload in payloads:
                        futures.append(await producer.send(PASSTHROUGH_OUT, payload, key=key))
                    seen += 1
            await asyncio.gather(*futures)
            if batches:
                await consumer.commit()
        print(f"cpu_s={time.process_time() - cpu_started}", flush=True)
    finally:
        await consumer.stop()
        await producer.stop()


async def _stepped_passthrough(settings: Settings, producer, consumer, payloads: list[bytes], n: int, stepped: int) -> None:
    tasks: set[asyncio.Task] = set()

    async def one(key: bytes) -> None:
        for payload in payloads[:stepped]:
            await producer.send_and_wait(PASSTHROUGH_OUT, payload, key=key)
        await asyncio.gather(*[await producer.send(PASSTHROUGH_OUT, payload, key=key) for payload in payloads[stepped:]])

    seen, cpu_started, next_commit = 0, None, 0.0
    while not consumer.assignment():  # joined its group: the bench starts sending now
        await consumer.getmany(timeout_ms=100)
    print("ready", flush=True)
    while seen < n or tasks:
        batches = await consumer.getmany(timeout_ms=50, max_records=500)
        if batches and cpu_started is None:
            cpu_started = time.process_time()
        for records in batches.values():
            for record in records:
                task = asyncio.create_task(one(orjson.loads(record.value)["intent_id"].encode()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                seen += 1
        if time.monotonic() >= next_commit:
            await consumer.commit()
            next_commit = time.monotonic() + settings.commit_interval_ms / 1000
    await consumer.commit()
    print(f"cpu_s={time.process_time() - cpu_started}", flush=True)


async def run_bench(args) -> None:
    n = 400 if args.quick else args.intents
    workdir = Path(tempfile.mkdtemp(prefix="sor-bench-"))
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap, client_id="bench")
        t = settings.topics
        await ensure_topics(settings)
        await ensure_topics(settings, [PASSTHROUGH_IN, PASSTHROUGH_OUT])
        bench = Bench(settings, workdir)
        await bench.start()
        try:
            await asyncio.sleep(1.0)  # quotes of every venue and symbol are in the topic
            print(f"# sor worker throughput, {n} market intents, 5 paper venues, 4 symbols (logs in {workdir})", file=sys.stderr)

            # (a) one worker
            profile = Path(args.profile).resolve() if args.profile else None
            worker, port = bench.spawn_worker("worker-1", profile)
            await bench.wait_ready(port)
            await bench.drain("warm", 50, 60)
            cpu = cpu_seconds(worker.pid)
            one = await bench.drain("one", n, 600)
            # CPU per intent: what a shared, noisy machine changes least (the rates move with it).
            worker_cpu_ms = (cpu_seconds(worker.pid) - cpu) / n * 1000
            await asyncio.sleep(1.5)  # the last journal records (done markers) land
            outcome = await bench.volume("one")
            processed = n
            print(f"(a) 1 worker: {one:.0f} intents/s; records, bytes by topic: {outcome}", file=sys.stderr)
            if args.drain_only:
                print(f"drain: {one:.0f} intents/s, worker CPU {worker_cpu_ms:.3f} ms per intent")
                return
            if profile:
                bench.stop_workers()
                print_bytes(outcome, processed)
                print_profile(profile)
                return

            # (c) latency at half capacity
            rate = one / 2
            count = max(100, int(rate * (5 if args.quick else 10)))
            cpu = cpu_seconds(worker.pid)
            cores = CoresUsed(worker.pid, broker.proc.pid)
            sent = await bench.send_intents("lat", count, rate=rate)
            arrivals = await bench.wait_for(list(sent), bench.arrivals, 120)
            paced_cpu_ms = (cpu_seconds(worker.pid) - cpu) / count * 1000
            paced_cores = cores.read()
            latencies = [(a - sent[k]) * 1000 for k, a in zip(sent, arrivals)]
            p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
            inside = [bench.inside[k] for k in sent if bench.inside.get(k) is not None]
            in50, in99 = percentile(inside, 0.5), percentile(inside, 0.99)

            # (d) a second instance joins the group
            _, port2 = bench.spawn_worker("worker-2")
            await bench.wait_ready(port2)
            await asyncio.sleep(4)  # the group rebalances onto both instances
            await bench.drain("warm2", 50, 60)
            two = await bench.drain("two", n, 600)
            print(f"(d) 2 workers: {two:.0f} intents/s", file=sys.stderr)
            bench.stop_workers()
            # (b) passthrough with the same records per intent
            sizes = record_sizes(outcome, processed, first=t.journal)
            bench.pt_per_intent = len(sizes)
            await bench.send_intents("pt", n, PASSTHROUGH_IN)
            child = subprocess.Popen([sys.executable, __file__, "--passthrough-child", broker.bootstrap,
                                      "--sizes", ",".join(map(str, sizes)), "--intents", str(n)], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True)
            keys = [f"pt-{i:06d}".encode() for i in range(n)]
            times = await bench.wait_for(keys, bench.pt_done, 300)
            out, _ = child.communicate(timeout=60)
            pt_cpu_ms = float(out.split("cpu_s=")[1]) / n * 1000
            passthrough = drain_rate(times)
            print(f"(b) passthrough: {passthrough:.0f} intents/s", file=sys.stderr)

        finally:
            bench.stop_workers()
            await bench.stop()

    print(f"\n| measure | value |\n|---|---|")
    print(f"| worker, 1 instance | {one:.0f} intents/s |")
    print(f"| bare passthrough (same records/bytes per intent) | {passthrough:.0f} intents/s |")
    print(f"| ratio worker / passthrough | {one / passthrough:.2f} |")
    print(f"| CPU per intent, draining: worker / passthrough | {worker_cpu_ms:.3f} ms / {pt_cpu_ms:.3f} ms (ratio {pt_cpu_ms / worker_cpu_ms:.2f}) |")
    print(f"| worker CPU per intent at half capacity | {paced_cpu_ms:.3f} ms |")
    print(f"| intent-to-result p50 / p99 at {rate:.0f} intents/s (half capacity) | {p50:.1f} ms / {p99:.1f} ms |")
    print(f"| the same inside the worker (receipt to result) | {in50:.0f} ms / {in99:.0f} ms |")
    print(f"| cores used meanwhile | {CoresUsed.describe(paced_cores)} |")
    print(f"| worker, 2 instances (same group) | {two:.0f} intents/s |")
    print(f"| ratio 2 / 1 instances | {two / one:.2f} |")
    print(f"| outcome statuses | {dict(bench.statuses)} |")
    print_bytes(outcome, processed)


async def start_stepped_passthrough(bootstrap: str, sizes: list[int]) -> subprocess.Popen:
    """A stepped passthrough child (see :func:`passthrough_child`) that has joined its group and
    works on what arrives on ``PASSTHROUGH_STEPPED_IN`` until it is terminated."""
    child = subprocess.Popen([sys.executable, __file__, "--passthrough-child", bootstrap, "--sizes", ",".join(map(str, sizes)),
                              "--intents", str(10**9), "--stepped", str(ACKNOWLEDGED_STEPS)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    while (line := (await asyncio.to_thread(child.stdout.readline)).strip()) != "ready":  # type: ignore[union-attr]
        if not line and child.poll() is not None:
            raise RuntimeError(f"the stepped passthrough exited with {child.returncode}")
    return child


def record_sizes(outcome: dict[str, tuple[int, int]], processed: int, first: str) -> list[int]:
    """The worker's records per intent (count and mean size by topic), ``first``'s first."""
    sizes = []
    for topic in sorted(outcome, key=lambda topic: topic != first):
        records, size = outcome[topic]
        sizes += [size // max(records, 1)] * round(records / processed)
    return sizes


def print_bytes(outcome: dict[str, tuple[int, int]], processed: int) -> None:
    print(f"\n| topic | records / intent | bytes / record | bytes / intent |\n|---|---|---|---|")
    total_r = total_b = 0
    for topic, (records, size) in outcome.items():
        total_r += records
        total_b += size
        print(f"| {topic} | {records / processed:.2f} | {size // max(records, 1)} | {size / processed:.0f} |")
    print(f"| **total** | {total_r / processed:.2f} | {total_b // max(total_r, 1)} | {total_b / processed:.0f} |")


GROUPS = [  # (group, substrings of "file:function"), first match wins
    ("logging (structlog)", ("structlog", "logging/__init__", "worker/logging")),
    ("journal", ("journal",)),
    ("routing", ("worker/routing",)),
    ("executor / paper venue", ("worker/execution", "worker/venues")),
    ("Kafka I/O (aiokafka)", ("aiokafka", "kafka/", "pipeline/kafka", "pipeline/clients")),
    ("pydantic validation / serialization", ("pydantic", "codec", "domain/models")),
    ("asyncio / selectors", ("asyncio", "selectors")),
]


def classify(key: tuple) -> str:
    filename, _, func = key
    where = f"{filename}:{func}"
    for name, needles in GROUPS:
        if any(n in where for n in needles):
            return name
    if "pydantic_core" in where or "validate" in func or "model_dump" in func or "to_json" in func:
        return "pydantic validation / serialization"
    return "other"


def print_profile(path: Path, top: int = 25) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    total = sum(v[2] for v in stats.stats.values())  # tottime summed = profiled CPU
    groups: Counter = Counter()
    for key, (cc, nc, tt, ct, callers) in stats.stats.items():
        groups[classify(key)] += tt
    print(f"\n### Worker profile, self time by group (total {total:.2f} s)\n\n| group | self time s | share |\n|---|---|---|")
    for name, tt in groups.most_common():
        print(f"| {name} | {tt:.2f} | {tt / total:.0%} |")
    for order, index in (("cumulative", 3), ("tottime", 2)):
        rows = sorted(stats.stats.items(), key=lambda kv: kv[1][index], reverse=True)[:top]
        print(f"\n### Top {top} by {order}\n\n| ncalls | tottime s | cumtime s | function | group |\n|---|---|---|---|---|")
        for (filename, line, func), (cc, nc, tt, ct, _) in rows:
            short = filename.split("site-packages/")[-1].replace(str(ROOT) + "/", "")
            print(f"| {nc} | {tt:.2f} | {ct:.2f} | `{short}:{line}({func})` | {classify((filename, line, func))} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--intents", type=int, default=2_000, help="intents per drain leg")
    parser.add_argument("--quick", action="store_true", help="400 intents per leg")
    parser.add_argument("--profile", help="run leg (a) only, with the worker under cProfile writing here")
    parser.add_argument("--drain-only", action="store_true", help="run leg (a) only: intents/s and CPU per intent")
    parser.add_argument("--passthrough-child", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--stepped", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.passthrough_child:
        asyncio.run(passthrough_child(args.passthrough_child, [int(s) for s in args.sizes.split(",")], args.intents,
                                      args.stepped))
        return 0
    asyncio.run(run_bench(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
