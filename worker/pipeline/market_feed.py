"""``sor feed``'s Kafka side: publish polled order books as ``VenueQuote`` records.

Records are keyed ``venue:symbol`` (so a compacted quotes topic keeps the latest book per
key and every book stays in order on one partition) and stamped with the exchange's time.
A snapshot identical to the last one published for its key is not published again: a
re-sent copy would only reset the workers' own-liquidity reservations.
"""

from __future__ import annotations

import time
from typing import Callable

import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from worker.domain.models import VenueQuote
from worker.pipeline.codec import encode

log = structlog.get_logger("sor.feed")

_POLL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class FeedMetrics:
    """The feed's series: poll latency, errors and published quotes per venue, and the age
    of the latest quote per venue and symbol (computed at scrape time)."""

    def __init__(self, quote_ts: Callable[[], dict[tuple[str, str], int]], ready: Callable[[], bool],
                 registry: CollectorRegistry | None = None, clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.poll_latency = Histogram("sor_feed_poll_seconds", "One order-book request, by venue.", ["venue"],
                                      buckets=_POLL_BUCKETS, registry=r)
        self.errors = Counter("sor_feed_errors_total", "Failed polls and publishes, by venue and kind.", ["venue", "kind"], registry=r)
        self.quotes = Counter("sor_feed_quotes_total", "Quotes published, by venue.", ["venue"], registry=r)
        self.registry.register(_FeedGauges(quote_ts, ready, clock))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _FeedGauges:
    def __init__(self, quote_ts, ready, clock):
        self.quote_ts, self.ready, self.clock = quote_ts, ready, clock

    def describe(self):
        return [GaugeMetricFamily("sor_feed_quote_age_seconds", "Age of the latest published quote (exchange time).",
                                  labels=["venue", "symbol"]),
                GaugeMetricFamily("sor_feed_ready", "1 once quotes are being published.")]

    def collect(self):
        age = GaugeMetricFamily("sor_feed_quote_age_seconds", "Age of the latest published quote (exchange time).",
                                labels=["venue", "symbol"])
        now = self.clock()
        for (venue, symbol), ts in sorted(self.quote_ts().items()):
            age.add_metric([venue, symbol], max(0, now - ts) / 1000)
        yield age
        ready = GaugeMetricFamily("sor_feed_ready", "1 once quotes are being published.")
        ready.add_metric([], float(self.ready()))
        yield ready


class QuotePublisher:
    """Publishes each new snapshot to the quotes topic; counts what it does per venue."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, fresh_ms: int,
                 clock: Callable[[], int] = lambda: time.time_ns() // 1_000_000):
        self.producer = producer
        self.topic = topic
        self.fresh_ms = fresh_ms
        self.clock = clock
        self.last: dict[tuple[str, str], VenueQuote] = {}
        self._acked: dict[tuple[str, str], VenueQuote] = {}  # the latest snapshot the broker acknowledged
        self._published_at: int | None = None
        self.metrics = FeedMetrics(lambda: {k: q.ts for k, q in self.last.items()}, self.ready, clock=clock)

    def ready(self) -> bool:
        """Ready while quotes are being published: the latest publish is at most ``fresh_ms`` old."""
        return self._published_at is not None and self.clock() - self._published_at <= self.fresh_ms

    async def publish(self, quote: VenueQuote, poll_seconds: float) -> None:
        self.metrics.poll_latency.labels(quote.venue).observe(poll_seconds)
        key = (quote.venue, quote.symbol)
        previous = self.last.get(key)
        if previous is not None and (previous.ts, previous.bids, previous.asks) == (quote.ts, quote.bids, quote.asks):
            if self._acked.get(key) is previous:
                self._published_at = self.clock()  # unchanged, on the topic, and still what the venue shows
            return
        if previous is not None and quote.ts < previous.ts:
            self.metrics.errors.labels(quote.venue, "out_of_order").inc()
            return  # an older snapshot never follows a newer one onto the topic
        try:
            delivery = await self.producer.send(self.topic, encode(quote), key=quote.key.encode())
        except Exception as exc:  # noqa: BLE001 - the broker's trouble: count it, the next poll tries again
            log.warning("feed_publish_failed", venue=quote.venue, symbol=quote.symbol, error=str(exc)[:300])
            self.on_error(quote.venue, quote.symbol, exc, 0.0, kind="publish")
            return
        # Held as the latest at once (a newer poll must not wait for the broker), but counted as
        # published, and kept as what the topic holds, only once the broker acknowledges it.
        self.last[key] = quote
        delivery.add_done_callback(lambda f, q=quote: self._delivered(f, q))

    def _delivered(self, future, quote: VenueQuote) -> None:
        if future.cancelled() or future.exception() is not None:
            # Not on the topic: forget it, so that the next poll of the same book sends it again.
            key = (quote.venue, quote.symbol)
            if self.last.get(key) is quote:
                del self.last[key]
            error = future.exception() if not future.cancelled() else RuntimeError("delivery cancelled")
            self.on_error(quote.venue, quote.symbol, error, 0.0, kind="publish")
            return
        self._acked[(quote.venue, quote.symbol)] = quote
        self._published_at = self.clock()
        self.metrics.quotes.labels(quote.venue).inc()

    def on_error(self, venue: str, symbol: str, exc: BaseException, poll_seconds: float, kind: str = "poll") -> None:
        if kind == "poll":
            self.metrics.poll_latency.labels(venue).observe(poll_seconds)
            kind = "timeout" if isinstance(exc, TimeoutError) else "error"
        self.metrics.errors.labels(venue, kind).inc()
