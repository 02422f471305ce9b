"""Which intents this worker has taken on: the dedupe index behind "executed at most once"."""

from __future__ import annotations

from collections import OrderedDict, defaultdict
from typing import Literal

from pydantic import BaseModel, ConfigDict

from worker.execution.journal import JournalEntry

DONE = "done"  # the index's marker for an intent whose outcome is published


class DoneMarker(BaseModel):
    """The journal record that replaces a finished intent's full entry once its input offset
    is committed: all that dedupe needs (~150 bytes instead of ~15 KB), so the journal read
    on assignment stays small. Dropped (tombstoned) after ``SOR_DEDUPE_RETENTION_MS``."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    done: Literal[True] = True
    intent_id: str
    source_partition: int
    source_offset: int
    done_ms: int


class JournalIndex:
    """Every intent id this worker has taken on, and where it came from (bounded, LRU).

    Filled from the journal when partitions are assigned, so "executed at most once" holds
    across restarts and rebalances. Only intents whose outcome may still need (re)publishing
    keep their full journal entry; the rest shrink to a marker of a few hundred bytes.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._entries: OrderedDict[str, tuple[int, int, JournalEntry | str | None]] = OrderedDict()
        # partition -> [(offset, intent id)] published, whose journal entry is still full size
        self._finished: dict[int, list[tuple[int, str]]] = defaultdict(list)

    def claim(self, intent_id: str, partition: int, offset: int) -> tuple[str, JournalEntry | str | None]:
        """``("new", None)``, ``("redelivery", entry)`` for the message the journal names,
        or ``("duplicate", entry)`` for another message with a known intent id."""
        known = self._entries.get(intent_id)
        if known is None:
            self.put(intent_id, partition, offset, None)
            return "new", None
        if (known[0], known[1]) == (partition, offset):
            return "redelivery", known[2]
        return "duplicate", known[2]

    def get(self, intent_id: str) -> JournalEntry | str | None:
        known = self._entries.get(intent_id)
        return known[2] if known else None

    def put(self, intent_id: str, partition: int, offset: int, entry: JournalEntry | str | None) -> None:
        self._entries[intent_id] = (partition, offset, entry)
        self._entries.move_to_end(intent_id)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def record(self, entry: JournalEntry) -> None:
        self.put(entry.intent_id, entry.source_partition, entry.source_offset, entry)

    def done(self, intent_id: str, compact: bool = True) -> None:
        """The outcome is acknowledged: keep only the marker (and, with ``compact``, let the
        journal entry shrink to one once the input offset is committed)."""
        known = self._entries.get(intent_id)
        if known is not None:
            self._entries[intent_id] = (known[0], known[1], DONE)
            if compact:
                self._finished[known[0]].append((known[1], intent_id))

    def finished_below(self, partition: int, committed: int) -> list[tuple[int, str]]:
        """Take the published intents of ``partition`` whose input offset is below the
        committed offset ``committed``: their journal entry can shrink to a marker."""
        pending = self._finished.get(partition)
        if not pending:
            return []
        below = [item for item in pending if item[0] < committed]
        if below:
            self._finished[partition] = [item for item in pending if item[0] >= committed]
        return below

    def forget_finished(self, partitions) -> None:
        """A revoked partition's new owner compacts its journal entries."""
        for p in partitions:
            self._finished.pop(p, None)

    def release(self, intent_id: str) -> None:
        """Forget a claim whose intent stopped before its first journal record (fenced or
        cancelled on a revocation): its redelivery, here or at the new owner, starts it anew."""
        known = self._entries.get(intent_id)
        if known is not None and known[2] is None:
            del self._entries[intent_id]

    def __len__(self) -> int:
        return len(self._entries)
