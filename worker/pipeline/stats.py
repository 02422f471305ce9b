"""In-process counters the demo summary and the metrics endpoint read."""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class Stats:
    by_status: Counter = field(default_factory=Counter)
    dead_letters: int = 0
    duplicates: int = 0
    in_flight: int = 0
    latencies_ms: deque = field(default_factory=lambda: deque(maxlen=100_000))
    savings_bps: deque = field(default_factory=lambda: deque(maxlen=100_000))

    def record_result(self, status: str, latency_ms: int, savings: Decimal | None) -> None:
        self.by_status[status] += 1
        self.latencies_ms.append(latency_ms)
        if savings is not None:
            self.savings_bps.append(float(savings))

    @property
    def finished(self) -> int:
        return sum(self.by_status.values())
