"""The intent journal: the state machine of every intent, durable before any leg is placed.

States (one record per transition, each a full snapshot so a compacted topic keeps the
latest)::

    accepted ──► planned ──► legs submitted ──► legs resolved ──► completed
      (offset      (plan +      (orders may be      (venue reports   (the exact result
      uncommitted)  client       at the venues)      in hand)          and fills to
                    order ids)                                          publish)
                       ▲                                  │
                       └──── next round: the remainder ───┘

*accepted* is the uncommitted input offset itself: nothing happened outside yet, so a crash
there just redelivers the intent. The *planned* record (intent, plan, client order ids) is
acknowledged by the broker **before** a leg is placed; from then on the orders may exist, so
recovery asks the venues by client order id before placing anything. *legs resolved* is
written as part of the next round's *planned* record or of *completed*. *completed* holds
the resolved legs (every trade) and the result's latency; the result and fills are rebuilt
from them by the same deterministic function, so a republish after a crash is byte-identical.
"""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.domain.models import Dec, ExecutionResult, LegStatus, OrderIntent, PlanLeg, RoutePlan
from worker.venues.base import OrderReport, VenueTrade


class IntentState(str, Enum):
    PLANNED = "planned"
    COMPLETED = "completed"


class JournalLeg(BaseModel):
    """A leg as sent, and (once resolved) what the venue reported."""

    model_config = ConfigDict(frozen=True)
    leg: PlanLeg
    client_order_id: str
    status: LegStatus | None = None  # None: submitted, not resolved
    order_id: str | None = None
    filled_qty: Dec = Decimal(0)
    trades: list[VenueTrade] = Field(default_factory=list)
    error: str | None = None
    latency_ms: int = 0

    def report(self) -> OrderReport:
        return OrderReport(self.client_order_id, self.order_id, self.status or LegStatus.UNKNOWN, self.filled_qty,
                           tuple(self.trades), self.error)

    def resolved(self, report: OrderReport, latency_ms: int) -> "JournalLeg":
        return self.model_copy(update=dict(status=report.status, order_id=report.order_id, filled_qty=report.filled_qty,
                                           trades=list(report.trades), error=report.error, latency_ms=latency_ms))


class JournalRound(BaseModel):
    model_config = ConfigDict(frozen=True)
    plan: RoutePlan
    #: One per plan leg, in the plan's order. On the wire a leg may leave out its ``leg``
    #: (it is ``plan.legs[i]``): the record carries each planned leg once.
    legs: list[JournalLeg]
    #: When the round was journaled (epoch ms): no leg of it can reach a venue before, and
    #: recovery waits until any request of it must be dead before calling a leg not placed.
    journaled_ms: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _legs_from_plan(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        legs, plan = data.get("legs"), data.get("plan")
        if not isinstance(legs, list) or not any(isinstance(jl, dict) and "leg" not in jl for jl in legs):
            return data
        planned = plan.get("legs") if isinstance(plan, dict) else getattr(plan, "legs", None)
        if not isinstance(planned, list):
            return data  # validation then names the missing field
        return {**data, "legs": [{**jl, "leg": planned[i]} if isinstance(jl, dict) and "leg" not in jl and i < len(planned) else jl
                                 for i, jl in enumerate(legs)]}

    @property
    def resolved(self) -> bool:
        return all(leg.status is not None for leg in self.legs)


class JournalAmendment(BaseModel):
    """Legs whose state was unknown when the intent completed, as the late-fill sweeper
    found them; applied in order, each one is a new ``version`` of the result."""

    model_config = ConfigDict(frozen=True)
    version: int
    legs: list[JournalLeg]
    published: bool = False  # journaled again once the correction is acknowledged


#: The layout of the journal records this release writes (the ``format`` of each record).
#: 1: every leg whole and the executed result stored (records without ``format``);
#: 2: legs without the planned leg they repeat, the executed result rebuilt from the legs.
JOURNAL_FORMAT = 2


class JournalFormatError(RuntimeError):
    """A journal record written by a newer release. Deliberately not a ``ValueError``: an
    unreadable record is logged and skipped, but skipping one this release cannot read could
    place an intent's orders a second time, so recovery of its partition stops instead
    (retried with backoff, not ready) until a release that reads it takes the partition."""


class JournalEntry(BaseModel):
    """Everything known about one intent; the value of its journal record."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_format(cls, data: Any) -> Any:
        written = data.get("format", 1) if isinstance(data, dict) else 1  # records before the field are format 1
        if isinstance(written, int) and written > JOURNAL_FORMAT:
            raise JournalFormatError(f"journal record of {str(data.get('intent_id'))[:80]!r} has format {written}; "
                                     f"this release reads up to {JOURNAL_FORMAT}: deploy the newer release")
        return data

    intent_id: str
    state: IntentState
    intent: OrderIntent
    received_ms: int
    source_partition: int
    source_offset: int
    rounds: list[JournalRound] = Field(default_factory=list)
    #: A rejection's result. An executed intent's result is not stored (older records hold
    #: it without its ``fills``): it is rebuilt from the legs, deterministically and byte for
    #: byte, with ``latency_ms``; every trade is stored once, in its leg.
    result: ExecutionResult | None = None
    amendments: list[JournalAmendment] = Field(default_factory=list)
    #: The executed result's ``latency_ms`` (completed entries without ``result``).
    latency_ms: int | None = None

    def unknown_legs(self) -> list[JournalLeg]:
        """Legs of a completed intent still of unknown state: each leg as its latest record
        (the last amendment that names it) says."""
        latest = {leg.client_order_id: leg for r in self.rounds for leg in r.legs}
        for amendment in self.amendments:
            for leg in amendment.legs:
                latest[leg.client_order_id] = leg
        return [leg for leg in latest.values() if leg.status is LegStatus.UNKNOWN]


class Journal(Protocol):
    """Where the service records transitions; ``write`` returns once the record is durable."""

    async def write(self, entry: JournalEntry) -> None: ...


class NullJournal:
    """No durability (``sor plan``-style runs and unit tests that do not need it)."""

    async def write(self, entry: JournalEntry) -> None:
        return None
