"""The crash harness: a real broker, the paper-venue process, and a worker killed with
SIGKILL at random moments while intents are in flight; then the four invariants.

Used by ``tests/integration/test_faults.py`` and, for longer runs, ``bench/crash_loop.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import random
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from aiokafka import AIOKafkaProducer

from tests.support.kafka_io import ROOT, SOR, TopicSet, WorkerProcess, produce_json, run, read_topic
from worker.broker import free_port, wait_for_port
from worker.config import Settings, Topics
from worker.pipeline.kafka import ensure_topics

VENUES = [("binance", 10, "0.00001"), ("kraken", 26, "0.00000001"), ("coinbase", 40, "0.00000001")]


#: ccxt's binance class against the paper venue: spot markets only (no margin or currency
#: endpoints), and no client-side throttling (the paper venue has no rate limit).
CCXT_TABLE = ('adapter = "ccxt"\nexchange = "binance"\nsymbols = { "BTC/USD" = "BTC/USD" }\nrate_limit_ms = 1\n'
              'options = { fetchCurrencies = false, fetchMargins = false, fetchMarkets = { types = ["spot"] } }\n')
#: The same API keys for the paper venue (which checks signatures) and the worker (which signs).
CCXT_ENV = {"SOR_VENUE_CREDENTIALS": json.dumps({name: {"api_key": f"{name}-key", "api_secret": f"{name}-secret"} for name, _, _ in VENUES})}


def venues_toml(port: int, adapter: str = "http", lot_rules: bool = True, **faults) -> str:
    """The crash harness's venues; ``adapter = "ccxt"`` puts ccxt's binance class in front of
    every paper venue. Without ``lot_rules`` the file leaves them to the exchange."""
    out = []
    for name, fee, step in VENUES:
        knobs = "".join(f"{k} = {v}\n" for k, v in {"latency_ms": 30, **faults.get(name, {})}.items())
        table = CCXT_TABLE if adapter == "ccxt" else f'adapter = "{adapter}"\n'
        rules = f'step_size = "{step}"\n' if lot_rules else ""
        out.append(f'[[venues]]\nname = "{name}"\ntaker_fee_bps = "{fee}"\n{rules}{table}'
                   f'url = "http://127.0.0.1:{port}/{name}"\n{knobs}')
    return "\n".join(out)


class PaperVenueProcess:
    def __init__(self, bootstrap: str, venues_file: Path, topics: TopicSet, port: int, env: dict | None = None):
        self.port = port
        env = {**os.environ, **topics.env, "SOR_LOG_LEVEL": "warning", **(env or {})}
        self.proc = subprocess.Popen([SOR, "paper-venue", "--port", str(port), "--venues", str(venues_file), "--bootstrap-servers", bootstrap],
                                     env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, 60)

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class FeedProcess:
    """``sor feed`` as a subprocess: polls the paper venues through ccxt into the quotes topic."""

    def __init__(self, bootstrap: str, venues_file: Path, topics: TopicSet, env: dict | None = None, interval_ms: int = 100):
        self.http_port = free_port()
        env = {**os.environ, **topics.env, **(env or {})}
        self.proc = subprocess.Popen([SOR, "feed", "--venues", str(venues_file), "--bootstrap-servers", bootstrap,
                                      "--interval-ms", str(interval_ms), "--http-port", str(self.http_port)],
                                     env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(r.decode(errors="replace").rstrip() for r in self.proc.stdout),
                                        daemon=True)
        self._reader.start()
        wait_for_port(self.http_port, 60)

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)
        self._reader.join(2)
        return self.proc.returncode


def book(venue: str, mid: float, ts: int) -> dict:
    asks = [[f"{mid * (1 + (j + 1) / 1e4):.2f}", "50"] for j in range(20)]
    bids = [[f"{mid * (1 - (j + 1) / 1e4):.2f}", "50"] for j in range(20)]
    return {"venue": venue, "symbol": "BTC/USD", "ts": ts, "asks": asks, "bids": bids}


@dataclass
class CrashReport:
    intents: int
    kills: int
    results: int = 0
    missing_results: list = field(default_factory=list)
    result_copies: int = 0
    divergent_copies: list = field(default_factory=list)
    duplicate_venue_orders: dict = field(default_factory=dict)
    ledger_fills: int = 0
    published_fills: int = 0
    fill_mismatch: list = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    leg_errors: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    faults: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.missing_results or self.divergent_copies or self.duplicate_venue_orders or self.fill_mismatch)

    def lines(self) -> list[str]:
        return [
            f"intents                      {self.intents}",
            f"SIGKILLs of the worker       {self.kills}",
            f"intents with a final result  {self.results}   (missing: {len(self.missing_results)})",
            f"outcome records read         {self.result_copies}   (copies that differ: {len(self.divergent_copies)})",
            f"duplicate venue orders       {len(self.duplicate_venue_orders)}",
            f"venue ledger fills           {self.ledger_fills}",
            f"fills on sor.fills.v1        {self.published_fills}   (mismatches: {len(self.fill_mismatch)})",
            f"final statuses               {dict(self.statuses)}",
            f"leg outcomes (not filled)    {dict(self.leg_errors.most_common(6))}",
            f"venue faults injected        {self.faults}",
            f"wall time                    {self.seconds:.1f} s",
        ]


class Harness:
    """Broker given; starts the paper venue, publishes books, runs and kills workers."""

    def __init__(self, bootstrap: str, workdir: Path, faults: dict | None = None, worker_env: dict | None = None, partitions: int = 3,
                 adapter: str = "http", feed: bool = False, worker_lot_rules: bool = True):
        """``adapter = "ccxt"``: the worker trades through ccxt's binance class. ``feed``: the
        books go to a topic of their own that only the paper venue reads, and ``sor feed``
        publishes what the paper venue shows (through ccxt) to the worker's quotes topic.
        Without ``worker_lot_rules`` the worker's venues file leaves them to the exchange."""
        self.bootstrap = bootstrap
        self.topics = TopicSet()
        self.workdir = workdir
        self.books_topic = self.topics.name("books") if feed else self.topics.quotes
        names = {k: getattr(self.topics, k) for k in Topics.model_fields}
        run(ensure_topics(Settings(bootstrap_servers=bootstrap, topics=Topics(**names), topic_partitions=partitions),
                          [*names.values(), self.books_topic]))
        now = time.time_ns() // 1_000_000
        produce_json(bootstrap, self.books_topic, [(f"{v}:BTC/USD", book(v, 42_000 + 3 * i, now)) for i, (v, _, _) in enumerate(VENUES)])
        self.port = free_port()
        paper_file = workdir / "paper-venues.toml"
        paper_file.write_text(venues_toml(self.port, adapter, **(faults or {})))
        self.venues_file = workdir / "venues.toml"
        self.venues_file.write_text(venues_toml(self.port, adapter, lot_rules=worker_lot_rules, **(faults or {})))
        keys = CCXT_ENV if adapter == "ccxt" else {}
        self.venue = PaperVenueProcess(bootstrap, paper_file, self.topics, self.port,
                                       env={**keys, "SOR_TOPICS__QUOTES": self.books_topic})
        self.feed = FeedProcess(bootstrap, self.venues_file, self.topics, env=keys) if feed else None
        self.worker_env = {"SOR_SESSION_TIMEOUT_MS": "6000", "SOR_HEARTBEAT_INTERVAL_MS": "1000", "SOR_LEG_TIMEOUT_MS": "1500",
                           "SOR_MAX_QUOTE_AGE_MS": "3600000", "SOR_TOPIC_PARTITIONS": str(partitions), **keys, **(worker_env or {})}
        self.workers: list[WorkerProcess] = []
        self.intent_ids: list[str] = []
        self._stop_books = threading.Event()
        self._books = threading.Thread(target=self._refresh_books, daemon=True)
        self._books.start()

    def _refresh_books(self, every_s: float = 0.3) -> None:
        """A live market: fresh snapshots, so consumed liquidity comes back as it would."""
        async def loop():
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap)
            await producer.start()
            try:
                while not self._stop_books.is_set():
                    now = time.time_ns() // 1_000_000
                    for i, (v, _, _) in enumerate(VENUES):
                        await producer.send(self.books_topic, json.dumps(book(v, 42_000 + 3 * i, now)).encode(), key=f"{v}:BTC/USD".encode())
                    await producer.flush()
                    await asyncio.sleep(every_s)
            finally:
                await producer.stop()
        asyncio.run(loop())

    def start_worker(self, wait: bool = True) -> WorkerProcess:
        w = WorkerProcess(self.bootstrap, self.venues_file, self.topics, extra_env=self.worker_env)
        self.workers.append(w)
        return w.started() if wait else w

    def publish_intents(self, n: int, seed: int = 1) -> None:
        rng = random.Random(seed)
        docs = []
        for i in range(n):
            side = rng.choice(["buy", "sell"])
            qty = f"{rng.uniform(0.01, 3):.4f}"
            limit = f"{42_000 * (1.003 if side == 'buy' else 0.997):.2f}"
            intent_id = f"crash-{seed}-{i:05d}"
            self.intent_ids.append(intent_id)
            docs.append((intent_id, {"intent_id": intent_id, "account_id": "acct", "symbol": "BTC/USD", "side": side,
                                     "type": "limit", "qty": qty, "limit_price": limit}))
        produce_json(self.bootstrap, self.topics.intents, docs)

    def wait_for_results(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        want = set(self.intent_ids)
        while time.monotonic() < deadline:
            got = {json.loads(r.value)["intent_id"] for r in run(read_topic(self.bootstrap, self.topics.executions, len(want), 5, 0))}
            if want <= got:
                return
            time.sleep(1)

    def check(self, kills: int, started: float) -> CrashReport:
        rep = CrashReport(intents=len(self.intent_ids), kills=kills)
        results = run(read_topic(self.bootstrap, self.topics.executions, len(self.intent_ids), 20))
        fills = run(read_topic(self.bootstrap, self.topics.fills, 1, 10))
        plans = run(read_topic(self.bootstrap, self.topics.plans, 1, 10))
        rep.result_copies = len(results)
        copies: dict[tuple, set] = defaultdict(set)
        final = {}
        for r in results:
            doc = json.loads(r.value)
            copies[("result", doc["event_id"])].add(r.value)
            final[doc["intent_id"]] = doc
        for r in fills:
            copies[("fill", json.loads(r.value)["fill_id"])].add(r.value)
        for r in plans:
            copies[("plan", json.loads(r.value)["plan_id"])].add(r.value)
        rep.divergent_copies = [k for k, v in copies.items() if len(v) > 1]
        rep.results = len(final)
        rep.missing_results = sorted(set(self.intent_ids) - set(final))
        rep.statuses = Counter(d["status"] for d in final.values())
        rep.leg_errors = Counter(f"{leg['status']}: {(leg.get('error') or '')[:70]}" for d in final.values() for leg in d["legs"]
                                 if leg["status"] != "filled")
        stats = self.venue.get("/_paper/stats")
        rep.duplicate_venue_orders = stats["duplicate_attempts"]
        rep.faults = stats["faults"]
        ledger = Counter()
        for name, _, _ in VENUES:
            for order in self.venue.get(f"/_paper/orders/{name}"):
                for f in order["fills"]:
                    ledger[(order["clientOrderId"], Decimal(f["price"]), Decimal(f["qty"]))] += 1
        published = Counter()
        seen = set()
        for r in fills:
            doc = json.loads(r.value)
            if doc["fill_id"] in seen:
                continue
            seen.add(doc["fill_id"])
            published[(doc["client_order_id"], Decimal(doc["fill"]["price"]), Decimal(doc["fill"]["qty"]))] += 1
        rep.ledger_fills = sum(ledger.values())
        rep.published_fills = sum(published.values())
        rep.fill_mismatch = sorted(map(str, (ledger - published) + (published - ledger)))[:20]
        rep.seconds = time.monotonic() - started
        return rep

    def close(self) -> None:
        self._stop_books.set()
        self._books.join(5)
        for w in self.workers:
            w.kill()
        if self.feed is not None:
            self.feed.stop()
        self.venue.stop()


def kill_loop(bootstrap: str, workdir: Path, intents: int = 500, kills: int = 10, seed: int = 7, faults: dict | None = None,
              drain_timeout_s: float = 240, adapter: str = "http") -> CrashReport:
    """Publish ``intents``, SIGKILL the worker ``kills`` times at random moments, let it finish."""
    rng = random.Random(seed)
    started = time.monotonic()
    h = Harness(bootstrap, workdir, faults=faults, adapter=adapter)
    try:
        worker = h.start_worker()
        h.publish_intents(intents, seed)
        for _ in range(kills):
            time.sleep(rng.uniform(0.2, 2.5))
            worker.proc.send_signal(signal.SIGKILL)
            worker.proc.wait()
            worker = h.start_worker(wait=rng.random() < 0.7)  # sometimes kill it again while it recovers
        worker.started()
        h.wait_for_results(drain_timeout_s)
        assert worker.stop() == 0
        return h.check(kills, started)
    finally:
        h.close()
