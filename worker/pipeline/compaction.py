"""Keeps the journal topic from growing with history, so start-up reads a bounded amount.

* After the worker commits an intents partition, every published intent below the
  committed offset gets a :class:`DoneMarker` record under its key: on the compacted
  journal topic the marker replaces the intent's full entry (~15 KB -> ~150 bytes), and it
  is all dedupe needs after a restart or a rebalance.
* When a partition is assigned, markers older than ``SOR_DEDUPE_RETENTION_MS`` are not
  loaded and are deleted (a tombstone, ``value=None``): by then their intents expired, so a
  redelivery of one is rejected as expired, never executed.

Writes are batched and run off the commit path; a failed write only leaves a larger
record in place (the next assignment reads it as before), so failures are logged, not retried.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Awaitable, Callable, Union

import structlog
from pydantic import Field, TypeAdapter

from worker.domain.clock import now_ms
from worker.execution.journal import JournalEntry
from worker.pipeline.clients import Producer
from worker.pipeline.codec import encode
from worker.service.dedupe import DONE, DoneMarker, JournalIndex

log = structlog.get_logger("sor.compaction")

#: A journal record's value: a marker (tried first: it is tiny) or a full entry.
JournalRecord = TypeAdapter(Annotated[Union[DoneMarker, JournalEntry], Field(union_mode="left_to_right")])

#: Reads the latest record per key of some journal partitions (``read_partitions``).
RecordReader = Callable[[list[int]], Awaitable[dict]]


class JournalCompactor:
    """Shrinks finished journal entries to markers after commit; expires old markers."""

    def __init__(self, producer: Producer, topic: str, index: JournalIndex, retention_ms: int,
                 clock: Callable[[], int] = now_ms):
        self.producer = producer
        self.topic = topic
        self.index = index
        self.retention_ms = retention_ms
        self.clock = clock
        self.written = 0  # markers and tombstones acknowledged (for tests and logs)
        self._tasks: set[asyncio.Task] = set()

    def after_commit(self, committed: dict[int, int]) -> None:
        """``committed``: partition -> the offset just committed. Queues the markers."""
        now = self.clock()
        batch = []
        for partition, offset in committed.items():
            for source_offset, intent_id in self.index.finished_below(partition, offset):
                marker = DoneMarker(intent_id=intent_id, source_partition=partition, source_offset=source_offset, done_ms=now)
                batch.append((partition, intent_id, encode(marker)))
        if batch:
            self._spawn(batch)

    async def read(self, read_records: RecordReader, partitions: list[int]) -> dict:
        """The journal of ``partitions`` for recovery: full entries are returned, markers go
        straight into the dedupe index as done, expired markers are deleted."""
        latest = await read_records(partitions)
        horizon = self.clock() - self.retention_ms
        entries, expired = {}, []
        for key, record in latest.items():
            if isinstance(record, DoneMarker):
                if record.done_ms < horizon:
                    expired.append((record.source_partition, record.intent_id, None))
                else:
                    self.index.put(record.intent_id, record.source_partition, record.source_offset, DONE)
            else:
                entries[key] = record
        if expired:
            self._spawn(expired)
        return entries

    def _spawn(self, batch: list[tuple[int, str, bytes | None]]) -> None:
        task = asyncio.create_task(self._write(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: list[tuple[int, str, bytes | None]]) -> None:
        try:
            sends = [await self.producer.send(self.topic, value, key=intent_id.encode(), partition=partition)
                     for partition, intent_id, value in batch]
            results = await asyncio.gather(*sends, return_exceptions=True)
        except Exception as exc:
            log.warning("journal_compaction_failed", records=len(batch), error=repr(exc))
            return
        failed = [r for r in results if isinstance(r, BaseException)]
        self.written += len(results) - len(failed)
        if failed:
            log.warning("journal_compaction_failed", records=len(failed), error=repr(failed[0]))

    async def close(self) -> None:
        """Wait for the queued writes (the producer flushes them before it stops)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
