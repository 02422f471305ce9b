"""The late-fill sweeper: downstream settlement never misses a fill.

A leg still of unknown state when its intent completed (the venue stayed unreachable for
longer than ``SOR_RECONCILE_TIMEOUT_MS``) is asked about again, every sweep interval, until
the venue answers. A fill that appears later is journaled as an amendment and published as
a correction: its fill events and the result's next ``version``, same ``intent_id``. The
journal carries the watch list across crashes: a new owner picks it up on assignment.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Awaitable, Callable

import structlog

from worker.domain.clock import Clock, now_ms
from worker.execution.executor import Admission
from worker.execution.journal import IntentState, JournalEntry
from worker.service.fencing import Fenced
from worker.service.intents import IntentService, Outcome

log = structlog.get_logger("sor.sweeper")


#: How many settled intents the sweeper remembers (a redelivery comes within the dedupe window).
SETTLED_REMEMBERED = 100_000


async def _unfenced() -> None:
    """The admission of a sweeper built without a fence (tools, tests)."""


class LateFillSweeper:
    """Watches completed intents with unknown legs, per source partition."""

    def __init__(self, service: IntentService, publish: Callable[[Outcome], Awaitable[None]], interval_s: float,
                 max_age_ms: int, clock: Clock = now_ms, on_abandoned: Callable[[JournalEntry], None] = lambda entry: None,
                 admission: Callable[[int], Admission] | None = None):
        self.service = service
        #: The fence of a partition, taken when an entry is first watched: what this worker
        #: journals and publishes for a partition it no longer owns (or while its lease is
        #: stale) is held or refused, as for every placement.
        self.admission = admission
        self._admits: dict[str, Admission] = {}
        self.publish = publish
        self.interval_s = interval_s
        self.max_age_ms = max_age_ms
        self.clock = clock
        self.on_abandoned = on_abandoned
        self._watched: dict[str, JournalEntry] = {}
        #: Intents this sweeper settled, with their amendments then: an older entry handed in
        #: later (a republication of the record read at assignment) is not swept again.
        self._settled: OrderedDict[str, int] = OrderedDict()

    def watch(self, entry: JournalEntry) -> bool:
        """Take a completed entry on if any of its legs is still unknown (or its last
        correction was journaled but maybe not published); ``True`` if it is watched."""
        if len(entry.amendments) < self._settled.get(entry.intent_id, 0):
            return False  # settled here since that entry was read
        if entry.state is IntentState.COMPLETED and (entry.unknown_legs() or self._unpublished(entry)):
            held = self._watched.get(entry.intent_id)
            # A republication may hand in the entry from before a correction this sweeper
            # journaled since: keep the newer one (amendments only ever grow).
            if held is None or len(entry.amendments) >= len(held.amendments):
                self._watched[entry.intent_id] = entry
            if self.admission is not None and entry.intent_id not in self._admits:
                self._admits[entry.intent_id] = self.admission(entry.source_partition)
            return True
        return False

    def sweeping(self, intent_id: str) -> bool:
        """Whether a leg of ``intent_id`` is still unknown here: its journal entry must stay
        whole (a done marker in its place would end the sweep at the next restart)."""
        entry = self._watched.get(intent_id)
        return entry is not None and bool(entry.unknown_legs())

    def _remember_settled(self, entry: JournalEntry) -> None:
        self._settled[entry.intent_id] = len(entry.amendments)
        self._settled.move_to_end(entry.intent_id)
        if len(self._settled) > SETTLED_REMEMBERED:
            self._settled.popitem(last=False)

    def _drop(self, intent_id: str) -> None:
        self._watched.pop(intent_id, None)
        self._admits.pop(intent_id, None)

    def forget(self, partitions: set[int]) -> None:
        """The partitions moved to another worker: it sweeps them now (from the journal)."""
        for intent_id in [i for i, e in self._watched.items() if e.source_partition in partitions]:
            self._drop(intent_id)

    def __len__(self) -> int:
        return len(self._watched)

    @staticmethod
    def _unpublished(entry: JournalEntry) -> bool:
        return bool(entry.amendments) and not entry.amendments[-1].published

    async def sweep_once(self) -> int:
        """One pass over the watch list; returns how many corrections were published."""
        published = 0
        for intent_id, entry in list(self._watched.items()):
            admit = self._admits.get(intent_id, _unfenced)
            try:
                published += await self._sweep_entry(intent_id, entry, admit)
            except Fenced as exc:  # the partition moved on: its new owner sweeps it from the journal
                log.warning("sweep_fenced", intent_id=intent_id, detail=str(exc))
                if self._admits.get(intent_id, _unfenced) is admit:  # not a watch taken since, on a re-assignment
                    self._drop(intent_id)
            except Exception as exc:  # one entry never blocks the others' late fills
                log.error("sweep_entry_failed", intent_id=intent_id, error=repr(exc)[:300])
                if entry.received_ms + self.max_age_ms < self.clock():
                    self._abandon(intent_id, entry)
        return published

    async def _sweep_entry(self, intent_id: str, entry: JournalEntry, admit: Admission) -> int:
        if self._unpublished(entry):  # a crash between the journal and the broker
            out = Outcome.from_journal(entry)
            await admit()
            await self.publish(Outcome(entry.intent, [], out.result, out.fills))
            entry = await self._mark_published(entry, admit)
        entry, correction = await self.service.sweep(entry, admit)
        if intent_id in self._watched:
            self._watched[intent_id] = entry  # before publishing: whether it is still swept decides its compaction
        if correction is not None:
            await admit()
            await self.publish(correction)
            entry = await self._mark_published(entry, admit)
        if not entry.unknown_legs():
            self._remember_settled(entry)
            self._drop(intent_id)
        elif entry.received_ms + self.max_age_ms < self.clock():
            self._abandon(intent_id, entry)
        elif intent_id in self._watched:
            self._watched[intent_id] = entry
        return 1 if correction is not None else 0

    def _abandon(self, intent_id: str, entry: JournalEntry) -> None:
        log.error("late_fill_sweep_abandoned", intent_id=intent_id, partition=entry.source_partition,
                  detail="venue never answered; reconcile by hand", legs=[leg.client_order_id for leg in entry.unknown_legs()])
        self.on_abandoned(entry)
        self._drop(intent_id)

    async def _mark_published(self, entry: JournalEntry, admit: Admission) -> JournalEntry:
        last = entry.amendments[-1].model_copy(update={"published": True})
        entry = entry.model_copy(update={"amendments": [*entry.amendments[:-1], last]})
        await admit()
        await self.service.journal.write(entry)
        return entry

    async def run(self) -> None:
        """Sweep forever; a failing sweep is logged and retried on the next interval."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep_once()
            except Exception as exc:
                log.error("sweep_failed", error=repr(exc), watched=len(self._watched))
