"""The composition root: the one place that turns settings into wired, started objects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from worker.config import Settings
from worker.domain.errors import InputError
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
    if venue.adapter == "ccxt":
        from worker.venues.ccxt_venue import CcxtVenue

        if credentials is None:
            raise InputError(f"venue {venue.name}: adapter 'ccxt' trades with API keys: set SOR_VENUE_CREDENTIALS__"
                             f"{venue.name.upper()}__API_KEY and __API_SECRET (or SOR_SECRETS_DIR)")
        return CcxtVenue(venue, credentials=credentials)
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


def build(settings: Settings, venues: Sequence[VenueConfig], adapters: dict[str, VenueAdapter] | None = None,
          quotes: QuoteCache | None = None) -> App:
    quotes = QuoteCache() if quotes is None else quotes
    adapters = adapters if adapters is not None else {v.name: build_adapter(v, quotes, settings.venue_credentials.get(v.name)) for v in venues}
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
    runner = await serve(PaperVenueServer(list(venues), quotes.get, settings.venue_credentials), port, host)
    try:
        await asyncio.Event().wait()
    finally:
        feed_task.cancel()
        await feed.stop()
        await runner.cleanup()


async def build_started(settings: Settings, venues: Sequence[VenueConfig]) -> App:
    """:func:`build` with every venue adapter started first, so the lot rules the venues file
    leaves out come from the exchanges (ccxt ``load_markets``). Close the adapters on shutdown
    with :func:`worker.venues.lifecycle.close_adapters`."""
    from worker.venues.lifecycle import start_adapters

    quotes = QuoteCache()
    adapters = {v.name: build_adapter(v, quotes, settings.venue_credentials.get(v.name)) for v in venues}
    effective = await start_adapters(adapters, venues)
    return build(settings, effective, adapters=adapters, quotes=quotes)


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


async def run_feed(feed: Feed, stop) -> None:
    """Poll and publish until ``stop`` is set: metrics and health on ``settings.http_port``."""
    from worker.observability import start_http
    from worker.pipeline.kafka import KafkaClients, ensure_topics
    from worker.pipeline.market_feed import QuotePublisher
    from worker.venues.lifecycle import close_adapters
    from worker.venues.market_data import BookPoller

    s = feed.settings
    await ensure_topics(s, [s.topics.quotes])
    producer = await KafkaClients(s).producer(role="feed")
    publisher = QuotePublisher(producer, s.topics.quotes, fresh_ms=max(s.max_quote_age_ms, 3 * s.feed_interval_ms))
    poller = BookPoller(feed.sources, feed.symbols, publisher.publish, publisher.on_error, s.feed_interval_ms / 1000,
                        s.feed_depth, s.feed_timeout_ms / 1000)
    http = await start_http(s.http_port, publisher.metrics, publisher.ready) if s.http_port is not None else None
    try:
        await poller.run(stop)
    finally:
        if http is not None:
            await http.cleanup()
        await close_adapters(feed.sources)
        await producer.flush()
        await producer.stop()
