"""The wall clock, in one place, so every component can be handed a fake."""

from __future__ import annotations

import time
from typing import Callable

#: A clock returns epoch milliseconds.
Clock = Callable[[], int]


def now_ms() -> int:
    """Epoch milliseconds from the system clock."""
    return time.time_ns() // 1_000_000
