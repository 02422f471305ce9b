"""Per-venue circuit breakers: a venue that keeps failing sits out until a probe succeeds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import structlog

from worker.domain.models import LegStatus

log = structlog.get_logger("sor.breaker")

#: Leg outcomes that count against a venue (a plain IOC expiry is the market, not the venue,
#: and ``not_placed`` is our crash): they feed its breaker and bench it for the next rounds.
VENUE_FAULTS = frozenset({LegStatus.FAILED, LegStatus.UNKNOWN, LegStatus.REJECTED})


@dataclass
class _Venue:
    failures: int = 0
    opened_at: int | None = None
    probing: bool = False


class CircuitBreakers:
    """Closed → (``threshold`` consecutive failures) → open → (after ``cooldown_ms``)
    half-open: one leg may probe; success closes, failure re-opens."""

    def __init__(self, threshold: int, cooldown_ms: int, clock: Callable[[], int]):
        self.threshold = threshold
        self.cooldown_ms = cooldown_ms
        self.clock = clock
        self._venues: dict[str, _Venue] = {}

    def blocked(self) -> set[str]:
        """Venues the router must not use now (open, or half-open with a probe in flight)."""
        now = self.clock()
        out = set()
        for name, v in self._venues.items():
            if v.opened_at is None:
                continue
            if now - v.opened_at < self.cooldown_ms or v.probing:
                out.add(name)
        return out

    def on_send(self, venue: str) -> None:
        v = self._venues.setdefault(venue, _Venue())
        if v.opened_at is not None:
            v.probing = True  # this leg is the half-open probe

    def record(self, venue: str, status: LegStatus) -> None:
        v = self._venues.setdefault(venue, _Venue())
        if status in VENUE_FAULTS:
            v.failures += 1
            if v.opened_at is not None or v.failures >= self.threshold:
                if v.opened_at is None or v.probing:
                    log.warning("circuit_open", venue=venue, failures=v.failures, cooldown_ms=self.cooldown_ms)
                v.opened_at = self.clock()
        else:
            if v.opened_at is not None:
                log.info("circuit_closed", venue=venue)
            v.failures = 0
            v.opened_at = None
        v.probing = False

    def abandon(self, venue: str) -> None:
        """A leg sent to ``venue`` ended without an outcome (its intent was cancelled): it
        counts neither way, but a probe it was must not hold the venue half-open for ever."""
        v = self._venues.get(venue)
        if v is not None:
            v.probing = False

    def state(self, venue: str) -> str:
        v = self._venues.get(venue)
        if v is None or v.opened_at is None:
            return "closed"
        return "half_open" if self.clock() - v.opened_at >= self.cooldown_ms else "open"
