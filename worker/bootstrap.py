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
