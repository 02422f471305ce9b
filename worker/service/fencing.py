"""Fencing between partition owners: a worker that may no longer own a partition places
no order for it.

Two ways to lose a partition without placing a wrong order:

* a rebalance revokes it: its epoch moves on at once, so every intent that started under
  the old epoch is refused at its next placement (:class:`Fenced`), even while the
  revocation still waits for legs already on the wire;
* the process stalls (GC pause, SIGSTOP) past the session timeout and resumes before it
  has noticed that the group moved on: placements need a *lease*, the time since the group
  last confirmed this member (a successful commit or assignment). A stale lease holds every
  placement until the group confirms again, or the partition is revoked.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class Fenced(Exception):
    """This worker no longer owns the intent's partition: stop, publish nothing."""


class OwnershipFence:
    """Per-partition ownership epochs and a group-membership lease."""

    def __init__(self, lease_s: float, clock: Callable[[], float] = time.monotonic):
        self.lease_s = lease_s
        self.clock = clock
        self._epochs: dict[int, int] = {}
        self._owned: set[int] = set()
        self._confirmed_at = float("-inf")
        self._changed = asyncio.Event()

    def assign(self, partitions) -> None:
        for p in partitions:
            self._epochs[p] = self._epochs.get(p, 0) + 1
            self._owned.add(p)
        self.confirm()

    def revoke(self, partitions) -> None:
        for p in partitions:
            self._epochs[p] = self._epochs.get(p, 0) + 1
            self._owned.discard(p)
        self._wake()

    def confirm(self) -> None:
        """The group confirmed this member now (a commit or an assignment succeeded)."""
        self._confirmed_at = self.clock()
        self._wake()

    def token(self, partition: int) -> int:
        """The epoch an intent starts under; pass it back to :meth:`admit`."""
        return self._epochs.get(partition, 0)

    def owns(self, partition: int, token: int) -> bool:
        return partition in self._owned and self._epochs.get(partition) == token

    def lease_fresh(self) -> bool:
        return self.clock() - self._confirmed_at <= self.lease_s

    async def admit(self, partition: int, token: int) -> None:
        """Return when an order for ``partition`` may be placed now; raise :class:`Fenced`
        once the partition moved on. Called immediately before every placement."""
        while True:
            if not self.owns(partition, token):
                raise Fenced(f"partition {partition} is no longer owned by this worker")
            if self.lease_fresh():
                return
            event = self._changed
            try:
                await asyncio.wait_for(event.wait(), 0.1)
            except asyncio.TimeoutError:
                pass

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()
