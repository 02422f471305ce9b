"""Prometheus series of `sor api` (its own registry; the worker's are in ``worker.observability``)."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from worker.domain.clock import now_ms
from worker.observability import _LATENCY_BUCKETS
from worker.service.quotes import QuoteCache


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("sor_api_requests_total", "HTTP requests by route template and status.", ["route", "status"], registry=r)
        self.latency = Histogram("sor_api_request_seconds", "HTTP request handling time by route template.", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.order_latency = Histogram("sor_api_order_to_result_seconds", "Intent published to its result read back.",
                                       buckets=_LATENCY_BUCKETS, registry=r)
        self.orders = Counter("sor_api_orders_total", "Order requests by outcome (result status, pending, replayed, ...).",
                              ["outcome"], registry=r)
        self.ready = Gauge("sor_ready", "1 once connected and the quote cache and results caught up.", registry=r)

    def watch(self, quotes: QuoteCache, ready: Callable[[], bool]) -> None:
        """Scrape-time gauges: readiness and the age of every cached quote."""
        self.ready.set_function(lambda: float(ready()))
        self.registry.register(_QuoteAges(quotes))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QuoteAges:
    def __init__(self, quotes: QuoteCache):
        self.quotes = quotes

    def describe(self):
        return [GaugeMetricFamily("sor_quote_age_seconds", "Age of the latest quote per venue and symbol.", labels=["venue", "symbol"])]

    def collect(self):
        family = GaugeMetricFamily("sor_quote_age_seconds", "Age of the latest quote per venue and symbol.", labels=["venue", "symbol"])
        now = now_ms()
        for q in self.quotes.all():
            family.add_metric([q.venue, q.symbol], max(0.0, (now - q.ts) / 1000))
        yield family
