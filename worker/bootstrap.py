"""The composition root: the one place that turns settings into wired, started objects.

``build()`` constructs everything (cosmicpython's ``bootstrap``): adapters, quote cache,
executor, service, Kafka clients, producer, journal, quote feed, consumer and the edge.
Every piece can be handed in instead (``adapters=``, ``clients=``, ...), which is how the
tests swap in fakes. ``WorkerApp.run`` starts and closes every component in one
``AsyncExitStack``, in order (Quix Streams' ``app.py``), and a failure of a background task
(the quote feed) stops the worker and surfaces on the main loop.
"""

from __future__ import annotations

import asyncio
import gc
import contextlib
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Awaitable, Callable, Sequence

import structlog
from aiokafka.errors import KafkaError

from worker.config import Settings
from worker.domain.errors import InputError
from worker.domain.clock import now_ms
from worker.domain.ids import by_name
from worker.domain.models import Side, VenueConfig, VenueQuote
from worker.execution.breaker import CircuitBreakers
from worker.execution.executor import Executor
from worker.execution.journal import Journal
from worker.execution.risk import RiskLimits
from worker.observability import Health, Metrics, start_http
from worker.pipeline.codec import EncodedCache
from worker.pipeline.kafka import DeadLetters, KafkaClients, KafkaJournal, Producer, QuoteFeed, ensure_topics, read_partitions
from worker.pipeline.compaction import JournalCompactor, JournalRecord
from worker.pipeline.stats import Stats
from worker.pipeline.worker import IntentWorker, on_heartbeat
from worker.routing.ranking import venue_route
from worker.service.dedupe import JournalIndex
from worker.service.fencing import OwnershipFence
from worker.service.intents import IntentService
from worker.service.quotes import QuoteCache
from worker.venues.base import VenueAdapter
from worker.venues.lifecycle import close_adapters, start_adapters
from worker.venues.paper import PaperVenue

log = structlog.get_logger("sor.bootstrap")


def build_adapter(venue: VenueConfig, quotes: QuoteCache, credentials=None) -> VenueAdapter:
    """The adapter a venue's config names; new exchanges are added here and only here."""
    if venue.adapter == "paper":
        return PaperVenue(venue, lambda symbol, name=venue.name: quotes.get(name, symbol))
    if venue.adapter == "http":
        from worker.venues.http import HttpVenue

        if not venue.url:
            raise InputError(f"venue {venue.name}: adapter 'http' needs a url")
        return HttpVenue(venue, credentials=credentials)
    if venue.adapter == "ccxt":
        from worker.venues.ccxt_venue import CcxtVenue

        if credentials is None:
            raise InputError(f"venue {venue.name}: adapter 'ccxt' trades with API keys: set SOR_VENUE_CREDENTIALS__"
                             f"{venue.name.upper()}__API_KEY and __API_SECRET (or SOR_SECRETS_DIR)")
        return CcxtVenue(venue, credentials=credentials)
    raise ValueError(f"venue {venue.name}: unknown adapter {venue.adapter!r}")


def prewarm(venues: dict[str, VenueConfig], quote: VenueQuote) -> None:
    """Prepare a new snapshot for routing as it arrives (prefix sums, fee-adjusted rates,
    ranking entry), so the first intent after a quote update does not pay for it."""
    # Also when this worker's reservations hold on the book (plans then see a view of it):
    # preparing it is what dead-letters a quote the router cannot use, at arrival.
    venue = venues.get(quote.venue)
    if venue is not None:
        for side in Side:
            venue_route(side, venue, quote)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections on the hot path: what start-up built (modules,
    validators, the loaded books) is frozen out of every collection, and a young collection
    runs per 20,000 allocations instead of 700 (an intent allocates thousands of objects)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)


async def connect(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Create missing topics, retrying while the cluster comes up (compose, rollouts)."""
    deadline = time.monotonic() + settings.connect_timeout_s
    delay = 0.5
    while True:
        try:
            await ensure_topics(settings)
            return
        except (KafkaError, OSError) as exc:
            if time.monotonic() + delay > deadline or (stop is not None and stop.is_set()):
                raise KafkaError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from None
            log.warning("kafka_unreachable", bootstrap=settings.bootstrap_servers, retry_in_s=delay, error=str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def quote_cache(settings: Settings, venues: Sequence[VenueConfig], on_drop: Callable[[str], None] = lambda reason: None) -> QuoteCache:
    """The quote cache of every process that reads the quotes topic: the configured venues
    only (bounded memory and metrics), each side depth-capped, future-dated snapshots refused."""
    return QuoteCache({v.name for v in venues}, max_levels=settings.max_book_levels, max_skew_ms=settings.max_clock_skew_ms,
                      on_drop=on_drop)


#: A background task that ran this long before failing had recovered: longer than the
#: longest backoff (10 s) with room to spare.
RECOVERED_AFTER_S = 30.0


class Supervisor:
    """Background tasks of a process. A task that fails is restarted with backoff while the
    process is marked not ready (logged once with the cause); one that keeps failing for
    ``give_up_s`` stops the process, and its error is raised on the main loop once the
    process has drained (exit non-zero: the orchestrator restarts it)."""

    def __init__(self, stop: asyncio.Event, health: Health, give_up_s: float = 60.0):
        self.stop = stop
        self.health = health
        self.give_up_s = give_up_s
        self.tasks: list[asyncio.Task] = []
        self.failure: BaseException | None = None

    def spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work()`` until it is cancelled; ``work`` is a factory, so it can restart."""
        task = asyncio.create_task(self._keep_running(name, work), name=name)
        task.add_done_callback(partial(self._ended, name))
        self.tasks.append(task)

    async def _keep_running(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        delay, failing_since = 0.5, None
        while True:
            started = time.monotonic()
            try:
                await work()
                raise RuntimeError(f"{name} ended unexpectedly")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if time.monotonic() - started > min(RECOVERED_AFTER_S, self.give_up_s):
                    # It ran well for longer than any backoff: this failure starts a new episode.
                    # (Measured from the first failure, rare blips minutes apart would add up to
                    # give_up_s and stop a process that was healthy nearly all the time.)
                    failing_since, delay = None, 0.5
                failing_since = failing_since or started
                self.health.problem(name, repr(exc))
                if time.monotonic() - failing_since > self.give_up_s:
                    raise
                log.warning("background_task_restarting", task=name, error=repr(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                self.health.resolved(name)

    def _ended(self, name: str, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception() or RuntimeError(f"{name} ended unexpectedly")
        log.error("background_task_failed", task=name, error=repr(exc))
        self.health.problem(name, repr(exc))
        if self.failure is None:
            self.failure = exc
        self.stop.set()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure


@dataclass
class WorkerApp:
    """Every wired component of ``sor worker``; :meth:`run` starts and closes them in order."""

    settings: Settings
    venues: list[VenueConfig]
    clients: KafkaClients
    quotes: QuoteCache
    adapters: dict[str, VenueAdapter]
    producer: Producer
    feed: QuoteFeed
    service: IntentService
    worker: IntentWorker
    stats: Stats
    metrics: Metrics
    health: Health
    venue_rules: dict[str, VenueConfig]
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, stop: asyncio.Event) -> None:
        """Start everything, consume until ``stop``, drain, close everything in reverse."""
        s = self.settings
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.ready.clear)
            if s.http_port is not None:
                try:
                    runner = await start_http(s.http_port, self.metrics, self.health, s.http_host)
                    stack.push_async_callback(runner.cleanup)
                except OSError as exc:  # a busy port must not stop order flow
                    log.error("http_unavailable", port=s.http_port, error=str(exc))
            await connect(s, stop)
            await self.producer.start()
            stack.push_async_callback(self.producer.stop)
            if self.worker.compactor is not None:  # its queued writes go out before the producer stops
                stack.push_async_callback(self.worker.compactor.close)
            # All at once; a venue that learns its lot rules at start (ccxt's load_markets)
            # hands them over before any book is prepared or any intent routed.
            self.use_venues(await start_adapters(self.adapters, self.venues))
            stack.push_async_callback(close_adapters, self.adapters)
            await self.feed.start()
            stack.push_async_callback(self.feed.stop)
            await self.feed.catch_up()  # every book is loaded before the first intent
            tune_gc()
            supervisor = Supervisor(stop, self.health)
            stack.push_async_callback(supervisor.close)
            supervisor.spawn("quote-feed", self.feed.run)
            supervisor.spawn("late-fill-sweeper", self.worker.sweeper.run)
            # aiokafka builds its clients on the running loop: the consumer is made here.
            self.worker.consumer = self.clients.consumer(
                group_id=s.group_id, auto_offset_reset="earliest", session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=s.heartbeat_interval_ms)
            self.worker.subscribe()
            await self.worker.consumer.start()
            if not on_heartbeat(self.worker.consumer, self.worker.fence.confirm):
                log.warning("fence_lease_disabled", detail="aiokafka heartbeat hook not found; stalls are fenced by revocation only")
                self.worker.fence.lease_s = float("inf")
            stack.push_async_callback(self.worker.consumer.stop)
            self.health.started = True
            self.ready.set()
            log.info("ready", books=len(self.quotes))
            await self.worker.run(stop)
            supervisor.raise_failure()

    def use_venues(self, venues: list[VenueConfig]) -> None:
        """The venues as the router must see them (rules filled in by the exchanges)."""
        self.venues[:] = venues
        self.service.venues[:] = venues
        self.venue_rules.clear()  # the prewarm's view, shared with the quote feed
        self.venue_rules.update({v.name: v for v in venues})

    def gauges(self) -> dict:
        """Scrape-time gauges: quote ages, in-flight, lag per partition, breakers, readiness."""
        now = now_ms()
        ages = {(q.venue, q.symbol): max(0.0, (now - q.ts) / 1000) for q in self.quotes.all()}
        lag = {(str(p),): float(n) for p, n in self.worker.lag().items()} if self.ready.is_set() else {}
        blocked = self.service.executor.breakers.blocked()
        circuit = {(v.name,): float(v.name in blocked) for v in self.venues}
        return {"sor_quote_age_seconds": ages, "sor_in_flight_intents": {(): self.stats.in_flight},
                "sor_consumer_lag": lag, "sor_circuit_open": circuit, "sor_ready": {(): float(self.health.ready())},
                "sor_stuck_intents": {(): float(self.worker.stuck())}}


def build(settings: Settings, venues: Sequence[VenueConfig], *, clients: KafkaClients | None = None,
          adapters: dict[str, VenueAdapter] | None = None, journal: Journal | None = None,
          metrics: Metrics | None = None) -> WorkerApp:
    """Wire ``sor worker``; nothing is started or connected until ``WorkerApp.run``."""
    s = settings
    venues = list(venues)
    clients = clients or KafkaClients(s)
    metrics = metrics or Metrics()
    health = Health()
    quotes = quote_cache(s, venues, on_drop=lambda reason: metrics.quotes_dropped.labels(reason).inc())
    if adapters is None:
        adapters = {v.name: build_adapter(v, quotes, by_name(s.venue_credentials, v.name)) for v in venues}
    breakers = CircuitBreakers(s.breaker_threshold, s.breaker_cooldown_ms, now_ms)
    executor = Executor(adapters, s.leg_timeout_ms, breakers=breakers, reconcile_timeout_ms=s.reconcile_timeout_ms, metrics=metrics)
    limits = RiskLimits(s.account_max_notional, s.default_max_notional, s.intent_ttl_ms, s.max_clock_skew_ms)
    allow = {account: frozenset(names) for account, names in s.account_venues.items()}
    index = JournalIndex(s.dedupe_capacity)
    producer = Producer(clients)
    encoded = EncodedCache()  # each plan and intent encoded once: journal records and the plans topic
    journal = journal or KafkaJournal(producer, s.topics.journal, index.record, max_bytes=s.max_request_bytes, cache=encoded)
    service = IntentService(venues, quotes, executor, limits, s.max_quote_age_ms, account_venues=allow,
                            max_rounds=s.max_rounds, execution_deadline_ms=s.execution_deadline_ms,
                            reserve_own_liquidity=s.reserve_own_liquidity, journal=journal, metrics=metrics,
                            node_limit=s.routing_node_limit)
    stats = Stats()
    dead = DeadLetters(producer, s.topics.dlq, lambda topic="": metrics.dead_letters.labels(topic).inc(),
                       max_value_bytes=s.dlq_max_value_bytes, max_error_chars=s.dlq_max_error_chars,
                       on_failed=lambda topic="": metrics.dead_letter_failures.labels(topic).inc())
    venue_rules = {v.name: v for v in venues}
    feed = QuoteFeed(s, quotes, dead.send, on_update=partial(prewarm, venue_rules), clients=clients)
    compactor = JournalCompactor(producer, s.topics.journal, index, s.dedupe_retention_ms)
    read_records = partial(read_partitions, s, s.topics.journal, model=JournalRecord, clients=clients)
    read_journal = partial(compactor.read, read_records)
    worker = IntentWorker(s, service, None, producer, dead, read_journal, index=index,
                          fence=OwnershipFence(lease_s=0.6 * s.session_timeout_ms / 1000), health=health, stats=stats, metrics=metrics,
                          compactor=compactor, encoded=encoded)
    app = WorkerApp(s, venues, clients, quotes, adapters, producer, feed, service, worker, stats, metrics, health, venue_rules)
    metrics.watch(app.gauges)
    return app


async def serve_paper_venue(settings: Settings, venues: Sequence[VenueConfig], port: int, host: str | None = None) -> None:
    """``sor paper-venue``: the quote feed and the paper venues' HTTP API, until cancelled;
    it listens on ``host`` or ``settings.paper_venue_host`` (loopback by default)."""
    host = host or settings.paper_venue_host
    from worker.venues.paper_server import PaperVenueServer, serve

    clients = KafkaClients(settings)
    quotes = quote_cache(settings, venues)
    health = Health()
    await ensure_topics(settings, [settings.topics.quotes])
    feed = QuoteFeed(settings, quotes, None, clients=clients)
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        await feed.start()
        stack.push_async_callback(feed.stop)
        await feed.catch_up()
        supervisor = Supervisor(stop, health)
        stack.push_async_callback(supervisor.close)
        supervisor.spawn("quote-feed", feed.run)
        runner = await serve(PaperVenueServer(list(venues), quotes.get, settings.venue_credentials), port, host)
        stack.push_async_callback(runner.cleanup)
        await stop.wait()
        supervisor.raise_failure()


# --- `sor api` ------------------------------------------------------------------------------


@dataclass
class ApiServer:
    """A running `sor api`: its URL and the objects behind it (for the demo and tests)."""

    url: str
    port: int
    app: object
    quotes: QuoteCache
    gateway: object
    supervisor: Supervisor | None = None

    async def until_stopped_or_failed(self, stop: asyncio.Event) -> None:
        """Wait for ``stop``; a background task that kept failing (the quote feed) ends the
        wait too and is raised here, so the process exits non-zero and is restarted."""
        if self.supervisor is None:
            await stop.wait()
            return
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(self.supervisor.stop.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        self.supervisor.raise_failure()


def build_api(settings: Settings, venues: Sequence[VenueConfig], quotes: QuoteCache, gateway, ready):
    """The FastAPI app over a quote cache and an intent gateway (real or fake)."""
    from worker.api.app import ApiDeps, create_app
    from worker.api.metrics import ApiMetrics

    metrics = ApiMetrics()
    metrics.watch(quotes, ready)
    return create_app(ApiDeps(settings=settings, venues=list(venues), quotes=quotes, gateway=gateway, ready=ready, metrics=metrics))


async def load_trading_rules(settings: Settings, venues: Sequence[VenueConfig]) -> list[VenueConfig]:
    """The venues as a process that routes but never trades (``sor api``'s previews and
    ``exchangeInfo``) must see them: a ccxt venue's lot rules come from the exchange's public
    markets (``load_markets``, no API keys), exactly as the worker's do when it starts, so a
    preview never splits on rules the worker would not use. A venue that cannot load fails."""
    from worker.venues.ccxt_venue import CcxtVenue

    public = {v.name: CcxtVenue(v, None, timeout_s=settings.feed_timeout_ms / 1000) for v in venues if v.adapter == "ccxt"}
    if not public:
        return list(venues)
    try:
        return await start_adapters(public, venues)
    finally:
        await close_adapters(public)


def serve_api(settings: Settings, venues: Sequence[VenueConfig], port: int | None = None, host: str | None = None):
    """``sor api`` as an async context manager: the HTTP server listens at once (``/healthz``
    answers, ``/readyz`` says 503), then the quote feed and the result tail catch up, then it
    yields an :class:`ApiServer`; leaving the block stops everything in reverse order.

    ``port`` 0 picks a free port (``ApiServer.port`` tells which).
    """
    import asyncio
    import contextlib

    import structlog
    import uvicorn

    from worker.pipeline.gateway import KafkaIntentGateway
    from worker.service.results import ResultBook

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):  # the CLI owns the signals
            yield

    @contextlib.asynccontextmanager
    async def serving():
        log = structlog.get_logger("sor.api")
        bind_host = host or settings.api_host
        bind_port = settings.api_port if port is None else port
        quotes = quote_cache(settings, venues)  # as the worker's: a future-dated snapshot never shadows real ones
        book = ResultBook(settings.api_result_capacity)
        clients = KafkaClients(settings)
        gateway = KafkaIntentGateway(settings, clients, book)
        health = Health()

        def ready() -> bool:
            return health.ready() and gateway.healthy()

        app = build_api(settings, await load_trading_rules(settings, venues), quotes, gateway, ready)
        async with contextlib.AsyncExitStack() as stack:
            server = _Server(uvicorn.Config(app, host=bind_host, port=bind_port, log_config=None, access_log=False,
                                            lifespan="off", timeout_graceful_shutdown=int(settings.shutdown_timeout_s)))
            server_task = asyncio.create_task(server.serve(), name="api-http")

            async def stop_server() -> None:
                server.should_exit = True
                await asyncio.gather(server_task, return_exceptions=True)

            stack.push_async_callback(stop_server)
            while not server.started:
                if server_task.done():
                    server_task.result()
                    raise OSError(f"sor api: could not listen on {bind_host}:{bind_port}")
                await asyncio.sleep(0.01)
            actual = server.servers[0].sockets[0].getsockname()[1]
            url = f"http://{bind_host}:{actual}"
            log.info("api_listening", url=url)

            await connect(settings)
            feed = QuoteFeed(settings, quotes, None, clients=clients)
            await feed.start()
            stack.push_async_callback(feed.stop)
            await feed.catch_up()
            await gateway.start()
            stack.push_async_callback(gateway.stop)
            supervisor = Supervisor(asyncio.Event(), health)
            stack.push_async_callback(supervisor.close)
            supervisor.spawn("quote-feed", feed.run)
            supervisor.spawn("api-results", gateway.follow)
            health.started = True
            # Stopping runs in reverse: the server first (requests in flight still get their
            # results), then the Kafka side; the server's first callback is then a no-op.
            stack.push_async_callback(stop_server)
            log.info("api_started", url=url, books=len(quotes), results=len(book))
            yield ApiServer(url=url, port=actual, app=app, quotes=quotes, gateway=gateway, supervisor=supervisor)

    return serving()


# --- `sor feed` -----------------------------------------------------------------------------


@dataclass
class Feed:
    """``sor feed``, wired: the ccxt venues it polls, the poller and the publisher's settings."""

    settings: Settings
    sources: dict[str, VenueAdapter]
    symbols: dict[str, list[str]]


def build_feed(settings: Settings, venues: Sequence[VenueConfig]) -> Feed:
    """The market-data feed over every ``adapter = "ccxt"`` venue and its ``symbols``."""
    from worker.venues.ccxt_venue import CcxtVenue

    chosen = [v for v in venues if v.adapter == "ccxt"]
    if not chosen:
        raise InputError("no venue with adapter = \"ccxt\" in the venues file: nothing for the feed to poll")
    timeout_s = settings.feed_timeout_ms / 1000
    # Public order books only: the feed holds no API keys, whatever the settings carry.
    sources = {v.name: CcxtVenue(v, None, timeout_s=timeout_s) for v in chosen}
    return Feed(settings, sources, {v.name: list(v.symbols) for v in chosen})


async def run_feed(feed: Feed, stop: asyncio.Event) -> None:
    """Poll and publish until ``stop`` is set: metrics and health on ``settings.http_port``
    (ready while quotes are being published)."""
    from worker.pipeline.market_feed import QuotePublisher
    from worker.venues.market_data import BookPoller

    s = feed.settings
    async with contextlib.AsyncExitStack() as stack:
        await ensure_topics(s, [s.topics.quotes])
        producer = await KafkaClients(s).producer(role="feed")
        stack.push_async_callback(producer.stop)
        stack.push_async_callback(producer.flush)  # runs first: what was polled goes out
        publisher = QuotePublisher(producer, s.topics.quotes, fresh_ms=max(s.max_quote_age_ms, 3 * s.feed_interval_ms))
        if s.http_port is not None:
            health = Health(condition=publisher.ready)
            health.started = True
            runner = await start_http(s.http_port, publisher.metrics, health, s.http_host)
            stack.push_async_callback(runner.cleanup)
        stack.push_async_callback(close_adapters, feed.sources)
        poller = BookPoller(feed.sources, feed.symbols, publisher.publish, publisher.on_error, s.feed_interval_ms / 1000,
                            s.feed_depth, s.feed_timeout_ms / 1000)
        await poller.run(stop)
