"""Prometheus metrics and the health endpoints (``/metrics``, ``/healthz``, ``/readyz``)."""

from __future__ import annotations

import time
from typing import Callable

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from worker.domain.models import ExecutionResult
from worker.execution.tca import venue_shortfall_bps

log = structlog.get_logger("sor.http")

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: Costs and savings in bps: fine around zero (fees and half-spreads are a few bps), coarse in the tails.
_BPS_BUCKETS = (-100, -50, -25, -10, -5, -2.5, -1, 0, 1, 2.5, 5, 10, 15, 25, 50, 100, 250)


class Health:
    """Readiness: started, and no open problem. A problem (a stuck intent, a failing journal
    recovery, a dead feed) is logged once when it opens and turns ``/readyz`` to 503 until
    it is resolved."""

    def __init__(self, condition: Callable[[], bool] | None = None) -> None:
        self.started = False
        self._problems: dict[str, str] = {}
        self._condition = condition  # a live check on top of the problems (the feed: quotes fresh)

    def problem(self, key: str, detail: str) -> None:
        if key not in self._problems:
            log.error("not_ready", problem=key, detail=detail)
        self._problems[key] = detail

    def resolved(self, key: str) -> None:
        if self._problems.pop(key, None) is not None:
            log.info("problem_resolved", problem=key)

    def ready(self) -> bool:
        return self.started and not self._problems and (self._condition is None or self._condition())

    def problems(self) -> dict[str, str]:
        return dict(self._problems)


class Metrics:
    """Every series the worker exports; one registry per process (tests make their own)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.intents = Counter("sor_intents_total", "Intents by final status.", ["status"], registry=r)
        self.routing = Histogram("sor_routing_seconds", "Time to build one plan.", buckets=_LATENCY_BUCKETS, registry=r)
        self.intent_latency = Histogram("sor_intent_to_result_seconds", "From intent received to final result.", buckets=_LATENCY_BUCKETS, registry=r)
        self.leg_latency = Histogram("sor_leg_seconds", "Venue round trip of one leg.", ["venue"], buckets=_LATENCY_BUCKETS, registry=r)
        self.leg_errors = Counter("sor_leg_errors_total", "Legs that did not fill normally, by venue and status.", ["venue", "status"], registry=r)
        self.dead_letters = Counter("sor_dead_letters_total", "Records sent to the DLQ, by source topic.", ["topic"], registry=r)
        self.duplicates = Counter("sor_duplicate_intents_total", "Republished intent ids not executed again.", registry=r)
        # TCA (see worker/execution/tca.py); bps, positive = cost for shortfall and slippage, = saved for savings.
        self.shortfall = Histogram("sor_shortfall_bps", "Implementation shortfall of each venue's fills (net of fees) "
                                   "against the arrival mid, bps, positive = cost.", ["venue", "algorithm"], buckets=_BPS_BUCKETS, registry=r)
        self.intent_shortfall = Histogram("sor_intent_shortfall_bps", "Implementation shortfall of an intent's fills against the "
                                          "arrival mid, bps, positive = cost.", ["algorithm"], buckets=_BPS_BUCKETS, registry=r)
        self.slippage = Histogram("sor_slippage_bps", "Achieved net price against the plan's estimate, bps, positive = cost.",
                                  ["algorithm"], buckets=_BPS_BUCKETS, registry=r)
        self.realized_savings = Histogram("sor_realized_savings_bps", "Realized saving against the worst single venue, bps, "
                                          "positive = saved.", ["algorithm"], buckets=_BPS_BUCKETS, registry=r)
        self.fill_ratio = Histogram("sor_fill_ratio", "Filled / ordered quantity of executed intents.", ["algorithm"],
                                    buckets=(0, 0.25, 0.5, 0.75, 0.9, 0.99, 1), registry=r)

        self.dead_letter_failures = Counter("sor_dead_letter_failures_total",
                                            "Bad records given up on because the DLQ send failed, by source topic.", ["topic"], registry=r)
        # One series per reason (unknown_venue, future), never per venue or symbol.
        self.quotes_dropped = Counter("sor_quotes_dropped_total", "Quotes not cached, by reason.", ["reason"], registry=r)

    def observe_tca(self, result: ExecutionResult) -> None:
        """Record the TCA series of one final result (rejected results carry no TCA: nothing is recorded)."""
        tca = result.tca
        if tca is None:
            return
        algorithm = result.algorithm.value
        self.fill_ratio.labels(algorithm).observe(float(tca.fill_rate))
        for venue, bps in venue_shortfall_bps(result).items():
            self.shortfall.labels(venue, algorithm).observe(float(bps))
        for histogram, value in ((self.intent_shortfall, tca.shortfall_bps), (self.slippage, tca.slippage_bps),
                                 (self.realized_savings, tca.realized_savings_vs_worst_venue_bps)):
            if value is not None:
                histogram.labels(algorithm).observe(float(value))  # Prometheus samples are floats; the event keeps the Decimal

    def watch(self, gauges: Callable[[], dict[str, dict[tuple, float]]]) -> None:
        """Gauges computed at scrape time: ``{name: {label values: value}}``."""
        self.registry.register(_ScrapeTimeGauges(gauges))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _ScrapeTimeGauges:
    SPECS = {
        "sor_quote_age_seconds": ("Age of the latest quote per venue and symbol.", ["venue", "symbol"]),
        "sor_in_flight_intents": ("Intents being worked on.", []),
        "sor_consumer_lag": ("Records behind the end of each assigned intents partition.", ["partition"]),
        "sor_circuit_open": ("1 while a venue's circuit breaker keeps it out.", ["venue"]),
        "sor_ready": ("1 once connected and the quote cache caught up, and no problem is open.", []),
        "sor_stuck_intents": ("Intents whose orders may exist and whose completion keeps failing (retried).", []),
    }

    def __init__(self, source: Callable[[], dict[str, dict[tuple, float]]]):
        self.source = source

    def describe(self):
        return [GaugeMetricFamily(name, doc, labels=labels) for name, (doc, labels) in self.SPECS.items()]

    def collect(self):
        values = self.source()
        for name, (doc, labels) in self.SPECS.items():
            family = GaugeMetricFamily(name, doc, labels=labels)
            for key, value in values.get(name, {}).items():
                family.add_metric(list(key), value)
            yield family


async def start_http(port: int, metrics: Metrics, health: Health, host: str = "127.0.0.1") -> web.AppRunner:
    """Serve the three endpoints; returns the runner (``await runner.cleanup()`` to stop)."""
    started = time.monotonic()

    async def metrics_view(_):
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_):
        return web.json_response({"status": "ok", "uptime_s": round(time.monotonic() - started, 1)})

    async def readyz(_):
        ok = health.ready()
        return web.json_response({"ready": ok, "problems": health.problems()}, status=200 if ok else 503)

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics_view), web.get("/healthz", healthz), web.get("/readyz", readyz)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("http_started", host=host, port=port, endpoints=["/metrics", "/healthz", "/readyz"])
    return runner
