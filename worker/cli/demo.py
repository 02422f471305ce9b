"""``sor demo``: the whole system on one machine, with a live progress line and a summary.

Embedded broker (Tansu) -> market-data simulator -> OMS simulator -> the worker with paper
venues -> outcome topics, read back by the summary.
"""

from __future__ import annotations

import asyncio
import secrets
import contextlib
import statistics
import sys
import time
from collections import Counter, defaultdict

import orjson

OUT = sys.stdout
#: The demo's API key for the Binance-style order endpoints (local demo only).
DEMO_API_KEY, DEMO_API_SECRET = "demo-key", "demo-secret"


def _say(text: str) -> None:
    print(text, file=OUT, flush=True)


class Collector:
    """Reads the outcome topics back, exactly as a downstream consumer would."""

    def __init__(self, clients, topics):
        self.topics = topics
        self.consumer = clients.consumer(topics.executions, topics.plans, topics.dlq, topics.fills, role="demo-collector",
                                         auto_offset_reset="earliest")
        self.results: dict[str, dict] = {}
        self.result_copies = 0
        self.plans: dict[str, dict] = {}
        self.dead = 0
        self.fills = 0

    async def run(self) -> None:
        await self.consumer.start()
        try:
            while True:
                batch = await self.consumer.getmany(timeout_ms=200)
                for tp, records in batch.items():
                    for r in records:
                        if tp.topic == self.topics.dlq:
                            self.dead += 1
                        elif tp.topic == self.topics.fills:
                            self.fills += 1
                        elif tp.topic == self.topics.plans:
                            plan = orjson.loads(r.value)
                            self.plans[plan["intent_id"]] = plan
                        else:
                            res = orjson.loads(r.value)
                            self.result_copies += 1
                            self.results[res["intent_id"]] = res
        finally:
            await self.consumer.stop()


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def summary(collector: Collector, sent: int, duplicates: int, garbage: int, elapsed: float) -> str:
    results = collector.results
    statuses = Counter(r["status"] for r in results.values())
    reasons = Counter(r["reason"].split(":")[0] for r in results.values() if r["status"] == "rejected" and r.get("reason"))
    latencies = [r["latency_ms"] for r in results.values() if r["status"] != "rejected"]
    leg_errors = Counter(f"{leg['status']}{' ' + leg['error'] if leg.get('error') else ''}" for r in results.values()
                         if r["status"] == "failed" for leg in r["legs"])
    by_alg: dict[str, list[float]] = defaultdict(list)
    for intent_id, res in results.items():
        plan = collector.plans.get(intent_id)
        if res["status"] in ("filled", "partial") and plan and plan.get("savings_vs_single_venue") is not None:
            by_alg[plan["algorithm"]].append(float(plan["savings_vs_single_venue"]))
    all_savings = [s for v in by_alg.values() for s in v]
    lines = [
        "",
        "== sor demo: summary " + "=" * 44,
        f"{'intents sent':<40}{sent:>10}   (+{duplicates} duplicates, +{garbage} garbage)",
        f"{'final results':<40}{len(results):>10}   ({collector.result_copies} records)",
    ]
    for status in ("filled", "partial", "failed", "rejected"):
        extra = ""
        if status == "rejected" and reasons:
            extra = "   (" + ", ".join(f"{k} {v}" for k, v in reasons.most_common()) + ")"
        if status == "failed" and leg_errors:
            extra = "   (legs: " + ", ".join(f"{k} {v}" for k, v in leg_errors.most_common(4)) + ")"
        lines.append(f"{'  ' + status:<40}{statuses.get(status, 0):>10}{extra}")
    lines += [
        f"{'fills published':<40}{collector.fills:>10}",
        f"{'dead letters (sor.dlq.v1)':<40}{collector.dead:>10}",
        f"{'mean savings vs single venue (bps)':<40}{statistics.fmean(all_savings) if all_savings else float('nan'):>10.2f}",
    ]
    for alg in ("sor", "split", "best"):
        if by_alg.get(alg):
            lines.append(f"{'  ' + alg + f' ({len(by_alg[alg])} executed)':<40}{statistics.fmean(by_alg[alg]):>10.2f}")
    lines += [
        f"{'intent-to-result latency p50 (ms)':<40}{_pct(latencies, 50):>10.0f}",
        f"{'intent-to-result latency p99 (ms)':<40}{_pct(latencies, 99):>10.0f}",
        f"{'wall time (s)':<40}{elapsed:>10.1f}",
        "=" * 65,
    ]
    return "\n".join(lines)


#: With ``--ccxt`` the simulator and the paper venue use a books topic of their own: the worker
#: then sees only the books that went through ccxt and ``sor feed``.
PAPER_BOOKS_TOPIC = "sor.paper-books.v1"


def ccxt_venues(port: int) -> list:
    """The demo venues as a live venues file writes them (examples/venues-ccxt.toml): ccxt's
    own ``binance`` class in front of each local paper venue. No lot rules: they come from the
    paper venue's exchangeInfo (``load_markets``). Fees stay explicit."""
    from worker.domain.models import VenueConfig
    from worker.sim.venues import DEMO_VENUES

    options = {"fetchCurrencies": False, "fetchMargins": False, "fetchMarkets": {"types": ["spot"]}}
    return [VenueConfig(name=v.name, taker_fee_bps=v.taker_fee_bps, maker_fee_bps=v.maker_fee_bps, adapter="ccxt",
                        exchange="binance", url=f"http://127.0.0.1:{port}/{v.name}", symbols={"BTC/USD": "BTC/USD"},
                        rate_limit_ms=1, options=options)
            for v in DEMO_VENUES]


async def start_ccxt_path(settings, stack: contextlib.AsyncExitStack):
    """``sor paper-venue`` (Binance-style HTTP, signed) and ``sor feed`` in this process, on
    ``stack``. Returns the worker's settings (paper API keys) and its ccxt venues."""
    import aiohttp

    from worker.bootstrap import build_feed, run_feed, serve_paper_venue
    from worker.broker import free_port
    from worker.config import VenueCredentials
    from worker.sim.venues import DEMO_VENUES

    port = free_port()
    keys = {v.name: VenueCredentials(api_key=f"demo-{v.name}", api_secret="demo-paper-secret") for v in DEMO_VENUES}
    settings = settings.model_copy(update={"venue_credentials": keys, "feed_interval_ms": 100})
    books = settings.model_copy(update={"topics": settings.topics.model_copy(update={"quotes": PAPER_BOOKS_TOPIC}),
                                        "client_id": "sor-demo-paper-venue"})
    venue_task = asyncio.create_task(serve_paper_venue(books, DEMO_VENUES, port, "127.0.0.1"), name="paper-venue")
    stack.push_async_callback(_cancel, venue_task)
    async with aiohttp.ClientSession() as http:  # up when it answers ping, as a client sees it
        for _ in range(300):
            if venue_task.done():
                venue_task.result()
            try:
                async with http.get(f"http://127.0.0.1:{port}/{DEMO_VENUES[0].name}/api/v3/ping") as resp:
                    if resp.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    venues = ccxt_venues(port)
    stop_feed = asyncio.Event()
    feed_task = asyncio.create_task(run_feed(build_feed(settings.model_copy(update={"http_port": None}), venues), stop_feed))

    async def stop_the_feed() -> None:
        stop_feed.set()
        await asyncio.gather(feed_task, return_exceptions=True)

    stack.push_async_callback(stop_the_feed)
    _say(f"[demo] ccxt path: paper venues (Binance API, signed) on http://127.0.0.1:{port}/<venue>; "
         f"books {PAPER_BOOKS_TOPIC} -> sor feed (ccxt binance) -> {settings.topics.quotes}; orders through ccxt")
    return settings, venues


async def _cancel(task: asyncio.Task) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def run(args) -> int:
    from worker import logging as sor_logging
    from worker.bootstrap import build
    from worker.broker import EmbeddedBroker
    from worker.config import Settings
    from worker.pipeline.kafka import ensure_topics
    from worker.sim.market import MarketSimulator
    from worker.sim.oms import OmsSimulator
    from worker.bootstrap import serve_api
    from worker.sim.venues import DEMO_VENUES

    sor_logging.configure("console", "warning")
    broker = None
    bootstrap = args.bootstrap_servers
    if not bootstrap:
        broker = EmbeddedBroker().start()
        bootstrap = broker.bootstrap
        _say(f"[demo] embedded broker (Tansu) on {bootstrap}")
    started = time.monotonic()
    exits = None
    backends = contextlib.AsyncExitStack()  # the ccxt path's paper venue and feed: closed after the worker
    try:
        settings = Settings(bootstrap_servers=bootstrap, group_id="sor-demo", client_id="sor-demo", log_format="console",
                            log_level="warning", http_port=getattr(args, "http_port", None),
                            api_keys={DEMO_API_KEY: {"secret": DEMO_API_SECRET, "account_id": "acct-demo"}})
        exits = contextlib.AsyncExitStack()
        await ensure_topics(settings)
        venues, books_topic = DEMO_VENUES, settings.topics.quotes
        if getattr(args, "ccxt", False):
            books_topic = PAPER_BOOKS_TOPIC
            settings, venues = await start_ccxt_path(settings, backends)
        app = build(settings, venues)
        producer = await app.clients.producer(role="demo-sim")
        market = MarketSimulator(DEMO_VENUES, seed=args.seed)
        await market.publish_all(producer, books_topic)
        market_task = asyncio.create_task(market.run(producer, books_topic))
        _say(f"[demo] market data: {', '.join(v.name for v in DEMO_VENUES)} publishing BTC/USD books every 100 ms")

        stop = asyncio.Event()
        worker_task = asyncio.create_task(app.run(stop))
        ready = asyncio.create_task(app.ready.wait())
        await asyncio.wait([ready, worker_task], timeout=60, return_when=asyncio.FIRST_COMPLETED)
        if worker_task.done():
            worker_task.result()  # surfaces the start-up error
        _say("[demo] worker ready: quote cache caught up, consumer group joined"
             + (f"; metrics on http://127.0.0.1:{args.http_port}/metrics" if args.http_port else ""))

        api_port = getattr(args, "api_port", None)
        if api_port is not None:
            try:
                api = await exits.enter_async_context(serve_api(settings, app.venues, port=api_port))
                _say(f"[demo] HTTP API on {api.url} (OpenAPI {api.url}/docs; try: curl {api.url}/v1/route/BTC/USD; "
                     f"Binance-style orders signed with key {DEMO_API_KEY!r}, secret {DEMO_API_SECRET!r})")
            except OSError as exc:
                _say(f"[demo] HTTP API not started: {exc}")

        collector = Collector(app.clients, settings.topics)
        collector_task = asyncio.create_task(collector.run())
        # A prefix of this run: a broker reused from an earlier run (or orders placed through the
        # API meanwhile) must not count as this run's results.
        oms = OmsSimulator(seed=args.seed, prefix=f"oms-{secrets.token_hex(3)}")
        sent = dup = junk = 0
        sent_ids: set[str] = set()
        last_print = 0.0

        def mine() -> dict[str, dict]:
            return {k: v for k, v in collector.results.items() if k in sent_ids}

        def progress() -> None:
            results = mine()
            st = Counter(r["status"] for r in results.values())
            others = len(collector.results) - len(results)
            _say(f"[{time.monotonic() - started:6.1f}s] sent {sent:>4}/{args.intents} | results {len(results):>4} "
                 f"(filled {st['filled']}, partial {st['partial']}, failed {st['failed']}, rejected {st['rejected']}) "
                 f"| dlq {collector.dead} | in flight {app.stats.in_flight}" + (f" | other orders {others}" if others else ""))

        for n in range(args.intents):
            for msg in oms.next_messages(n, market.mid):
                await producer.send(settings.topics.intents, msg.value, key=msg.key)
                sent += msg.kind == "intent"
                if msg.kind == "intent":
                    sent_ids.add(msg.key.decode())
                dup += msg.kind == "duplicate"
                junk += msg.kind == "garbage"
            await asyncio.sleep(1 / args.rate)
            if time.monotonic() - last_print > 1:
                progress()
                last_print = time.monotonic()
        await producer.flush()
        deadline = time.monotonic() + 60
        while (len(mine()) < sent or collector.dead < junk) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if time.monotonic() - last_print > 1:
                progress()
                last_print = time.monotonic()
        progress()
        await exits.aclose()
        stop.set()
        await worker_task
        for task in (market_task, collector_task):
            task.cancel()
        await asyncio.gather(market_task, collector_task, return_exceptions=True)
        await producer.stop()
        collector.results = mine()  # the summary and the report are of this run's intents
        _say(summary(collector, sent, dup, junk, time.monotonic() - started))
        from pathlib import Path

        from worker.report import write_report

        report = write_report(collector.results, collector.plans, Path(getattr(args, "report_dir", None) or "."))
        _say(f"[demo] best-execution report: {report.resolve()} (and {report.with_suffix('.csv').name})")
        missing = sent - len(collector.results)
        if missing:
            _say(f"[demo] {missing} intents have no final result")
            return 1
        return 0
    finally:
        if exits is not None:
            await exits.aclose()
        await backends.aclose()
        if broker:
            broker.stop()


def main(args) -> int:
    if not args.rate > 0:
        print(f"sor demo: error: --rate: must be > 0 intents per second (got {args.rate})", file=sys.stderr)
        return 2
    if args.intents < 1:
        print(f"sor demo: error: --intents: must be at least 1 (got {args.intents})", file=sys.stderr)
        return 2
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
