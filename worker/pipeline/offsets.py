"""Which input offsets may be committed: only the contiguous done prefix of a partition."""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Iterable


class OffsetTracker:
    """Records offsets as they start and finish; an offset is committable once it and every
    earlier offset of its partition are finished (Quix Streams' checkpoint rule)."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, OrderedDict[int, bool]] = {}

    def begin(self, tp: Hashable, offset: int) -> None:
        pending = self._parts.setdefault(tp, OrderedDict())
        out_of_order = bool(pending) and offset < next(reversed(pending))
        pending[offset] = False
        if out_of_order:  # recovery starts offsets before the redelivered ones: keep them ascending
            self._parts[tp] = OrderedDict(sorted(pending.items()))

    def finish(self, tp: Hashable, offset: int) -> None:
        pending = self._parts.get(tp)
        if pending is not None and offset in pending:
            pending[offset] = True

    def committable(self) -> dict[Hashable, int]:
        """Next offset to commit per partition (last contiguous finished offset + 1)."""
        out = {}
        for tp, pending in self._parts.items():
            last = None
            while pending:
                offset, done = next(iter(pending.items()))
                if not done:
                    break
                pending.popitem(last=False)
                last = offset
            if last is not None:
                out[tp] = last + 1
        return out

    def lowest_pending(self, tp: Hashable) -> int | None:
        """The first offset of ``tp`` begun and not finished (after :meth:`committable`, the
        first one it still holds)."""
        for offset, done in (self._parts.get(tp) or {}).items():
            if not done:
                return offset
        return None

    def in_flight(self, tps: Iterable[Hashable] | None = None) -> int:
        parts = self._parts if tps is None else {tp: self._parts.get(tp, {}) for tp in tps}
        return sum(sum(1 for done in p.values() if not done) for p in parts.values())

    def forget(self, tps: Iterable[Hashable]) -> None:
        for tp in tps:
            self._parts.pop(tp, None)
