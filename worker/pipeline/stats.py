"""The few in-process counters the worker itself reads (backpressure, the shutdown log).
Everything else is a Prometheus series in ``worker.observability``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    by_status: Counter = field(default_factory=Counter)
    in_flight: int = 0
