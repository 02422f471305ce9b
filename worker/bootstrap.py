"""The composition root: the one place that turns settings into wired, started objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from worker.config import Settings
from worker.domain.models import VenueConfig
from worker.execution.breaker import CircuitBreakers
from worker.domain.clock import now_ms
from worker.execution.executor import Executor
from worker.execution.risk import RiskLimits
from worker.observability import Metrics
from worker.service.quotes import QuoteCache
from worker.service.intents import IntentService
from worker.pipeline.stats import Stats
from worker.pipeline.worker import IntentWorker
from worker.venues.base import VenueAdapter
from worker.venues.paper import PaperVenue


def build_adapter(venue: VenueConfig, quotes: QuoteCache, credentials=None) -> VenueAdapter:
    """The adapter a venue's config names; new exchanges are added here and only here."""
    if venue.adapter == "paper":
        return PaperVenue(venue, lambda symbol, name=venue.name: quotes.get(name, symbol))
    if venue.adapter == "http":
        from worker.venues.http import HttpVenue

        if not venue.url:
            raise ValueError(f"venue {venue.name}: adapter 'http' needs a url")
        return HttpVenue(venue, credentials=credentials)
    raise ValueError(f"venue {venue.name}: unknown adapter {venue.adapter!r}")


@dataclass
class App:
    settings: Settings
    venues: list[VenueConfig]
    quotes: QuoteCache
    adapters: dict[str, VenueAdapter]
    service: IntentService
    worker: IntentWorker
    stats: Stats
    metrics: Metrics


def build(settings: Settings, venues: Sequence[VenueConfig]) -> App:
    quotes = QuoteCache()
    adapters = {v.name: build_adapter(v, quotes, settings.venue_credentials.get(v.name)) for v in venues}
    breakers = CircuitBreakers(settings.breaker_threshold, settings.breaker_cooldown_ms, now_ms)
    metrics = Metrics()
    executor = Executor(adapters, settings.leg_timeout_ms, breakers=breakers, reconcile_timeout_ms=settings.reconcile_timeout_ms,
                        metrics=metrics)
    limits = RiskLimits(settings.account_max_notional, settings.default_max_notional, settings.intent_ttl_ms)
    allow = {account: frozenset(names) for account, names in settings.account_venues.items()}
    service = IntentService(venues, quotes, executor, limits, settings.max_quote_age_ms, account_venues=allow,
                            max_rounds=settings.max_rounds, execution_deadline_ms=settings.execution_deadline_ms,
                            reserve_own_liquidity=settings.reserve_own_liquidity, metrics=metrics)
    stats = Stats()
    worker = IntentWorker(settings, service, quotes, stats, metrics)
    return App(settings, list(venues), quotes, adapters, service, worker, stats, metrics)


async def serve_paper_venue(settings: Settings, venues: Sequence[VenueConfig], port: int, host: str = "127.0.0.1") -> None:
    """``sor paper-venue``: the quote feed and the paper venues' HTTP API, until cancelled."""
    import asyncio

    from worker.pipeline.kafka import QuoteFeed, ensure_topics
    from worker.venues.paper_server import PaperVenueServer, serve

    quotes = QuoteCache()
    await ensure_topics(settings, [settings.topics.quotes])
    feed = QuoteFeed(settings, quotes, None)
    await feed.start()
    await feed.catch_up()
    feed_task = asyncio.create_task(feed.run())
    runner = await serve(PaperVenueServer(list(venues), quotes.get), port, host)
    try:
        await asyncio.Event().wait()
    finally:
        feed_task.cancel()
        await feed.stop()
        await runner.cleanup()


# --- `sor api` ------------------------------------------------------------------------------


@dataclass
class ApiServer:
    """A running `sor api`: its URL and the objects behind it (for the demo and tests)."""

    url: str
    port: int
    app: object
    quotes: QuoteCache
    gateway: object


async def _ensure_topics_retrying(settings: Settings) -> None:
    """Create the missing topics, retrying while the cluster comes up (as the worker does)."""
    import asyncio
    import time

    from aiokafka.errors import KafkaError

    from worker.pipeline.kafka import ensure_topics

    deadline, delay = time.monotonic() + settings.connect_timeout_s, 0.5
    while True:
        try:
            await ensure_topics(settings)
            return
        except (KafkaError, OSError) as exc:
            if time.monotonic() + delay > deadline:
                raise KafkaError(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def build_api(settings: Settings, venues: Sequence[VenueConfig], quotes: QuoteCache, gateway, ready):
    """The FastAPI app over a quote cache and an intent gateway (real or fake)."""
    from worker.api.app import ApiDeps, create_app
    from worker.api.metrics import ApiMetrics

    metrics = ApiMetrics()
    metrics.watch(quotes, ready)
    return create_app(ApiDeps(settings=settings, venues=list(venues), quotes=quotes, gateway=gateway, ready=ready, metrics=metrics))


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
    from worker.pipeline.kafka import KafkaClients, QuoteFeed
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
        quotes = QuoteCache()
        book = ResultBook(settings.api_result_capacity)
        gateway = KafkaIntentGateway(settings, KafkaClients(settings), book)
        state = {"feed": None}

        def ready() -> bool:
            feed_task = state["feed"]
            return feed_task is not None and not feed_task.done() and gateway.healthy()

        app = build_api(settings, venues, quotes, gateway, ready)
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

            await _ensure_topics_retrying(settings)
            feed = QuoteFeed(settings, quotes, None)
            await feed.start()
            stack.push_async_callback(feed.stop)
            await feed.catch_up()
            await gateway.start()
            stack.push_async_callback(gateway.stop)
            feed_task = state["feed"] = asyncio.create_task(feed.run(), name="api-quote-feed")

            async def stop_feed() -> None:
                feed_task.cancel()
                await asyncio.gather(feed_task, return_exceptions=True)

            stack.push_async_callback(stop_feed)
            # Stopping runs in reverse: the server first (requests in flight still get their
            # results), then the Kafka side; the server's first callback is then a no-op.
            stack.push_async_callback(stop_server)
            log.info("api_started", url=url, books=len(quotes), results=len(book))
            yield ApiServer(url=url, port=actual, app=app, quotes=quotes, gateway=gateway)

    return serving()
