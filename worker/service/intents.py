"""The intent service: every stage of one intent in data-flow order, with no Kafka in it.

decode (done by the edge) -> pre-trade checks -> route -> journal -> execute legs ->
re-route the remainder -> journal -> outcome. See ``worker.execution.journal`` for the
state machine that makes it crash-safe.
"""

from __future__ import annotations

import decimal
import time
from decimal import Decimal
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import structlog

from worker.domain.models import (
    ExclusionReason,
    ExecutionResult,
    ExecutionStatus,
    FillEvent,
    LegStatus,
    OrderIntent,
    RoutePlan,
    TimeInForce,
    VenueConfig,
    trusted,
)
from worker.execution.breaker import VENUE_FAULTS
from worker.domain.clock import now_ms
from worker.domain.ids import by_name
from worker.execution.executor import Admission, Executor, LegOutcome, amend_result, build_result, rejected_result
from worker.execution.journal import IntentState, Journal, JournalAmendment, JournalEntry, JournalLeg, JournalRound, NullJournal
from worker.execution.risk import RiskLimits, check_intent, check_plan
from worker.observability import Metrics
from worker.service.quotes import QuoteCache
from worker.domain.money import MONEY_CONTEXT, ZERO
from worker.venues.base import OrderReport
from worker.routing.planner import route
from worker.routing.allocators import DEFAULT_NODE_LIMIT

log = structlog.get_logger("sor.service")


@dataclass(frozen=True)
class Outcome:
    """What the edge publishes for one intent: the plans, then the fills, then the result."""

    intent: OrderIntent
    plans: list[RoutePlan]
    result: ExecutionResult | None
    fills: list[FillEvent] = field(default_factory=list)

    @property
    def plan(self) -> RoutePlan | None:
        return self.plans[0] if self.plans else None

    @classmethod
    def from_journal(cls, entry: JournalEntry) -> "Outcome":
        """The outcome of a completed entry, byte-identical to the first publication: the
        fills are rebuilt from the journaled legs by the same deterministic function."""
        plans = [r.plan for r in entry.rounds]
        result = entry.result
        if result is not None and (result.status is ExecutionStatus.REJECTED or not plans):
            return cls(entry.intent, plans, result, [])
        if result is None and (entry.latency_ms is None or not plans):
            return cls(entry.intent, plans, None, [])
        legs = [LegOutcome(jl.leg, jl.client_order_id, jl.report(), jl.latency_ms) for r in entry.rounds for jl in r.legs]
        latency_ms = entry.latency_ms if result is None else result.latency_ms  # older records store the result
        result, fills = build_result(entry.intent, plans, legs, latency_ms)
        published = _trade_keys(legs)
        for amendment in entry.amendments:
            found = [LegOutcome(jl.leg, jl.client_order_id, jl.report(), jl.latency_ms) for jl in amendment.legs]
            result, late = amend_result(entry.intent, plans, result, found, published)
            fills += late
            published |= _trade_keys(found)
        return cls(entry.intent, plans, result, fills)


def _trade_keys(legs: list[LegOutcome]) -> set[tuple[str, str]]:
    """(client order id, trade id) of every trade the legs report: what is published already."""
    return {(o.client_order_id, t.trade_id) for o in legs for t in o.report.trades}


@dataclass(frozen=True)
class Source:
    """Where the intent came from: journal records live in the same partition."""

    partition: int = 0
    offset: int = -1


class IntentService:
    def __init__(
        self,
        venues: Sequence[VenueConfig],
        quotes: QuoteCache,
        executor: Executor,
        limits: RiskLimits,
        max_quote_age_ms: int,
        account_venues: Mapping[str, frozenset[str]] | None = None,
        clock: Callable[[], int] = now_ms,
        max_rounds: int = 3,
        execution_deadline_ms: int = 10_000,
        reserve_own_liquidity: bool = False,
        journal: Journal | None = None,
        metrics: Metrics | None = None,
        node_limit: int = DEFAULT_NODE_LIMIT,
    ):
        self.venues = list(venues)
        self.node_limit = node_limit
        self.quotes = quotes
        self.executor = executor
        self.limits = limits
        self.max_quote_age_ms = max_quote_age_ms
        self.account_venues = dict(account_venues or {})
        self.clock = clock
        self.max_rounds = max_rounds
        self.execution_deadline_ms = execution_deadline_ms
        self.reserve_own_liquidity = reserve_own_liquidity
        self.journal = journal or NullJournal()
        self.metrics = metrics
        self._in_flight: dict[str, JournalEntry] = {}
        self._unknown: dict[str, JournalEntry] = {}

    def completed(self, intent_id: str) -> JournalEntry | None:
        """The completed entry of an intent with legs still unknown (for the late-fill
        sweeper), once; ``None`` for every other intent."""
        return self._unknown.pop(intent_id, None)

    def _hand_to_sweeper(self, entry: JournalEntry) -> None:
        """A completed entry with legs still unknown: :meth:`completed` gives it to the publisher."""
        if entry.unknown_legs():
            self._unknown[entry.intent_id] = entry

    def forget(self, intent_id: str) -> None:
        """This worker no longer holds the intent (its partition moved on): drop what it kept."""
        self._in_flight.pop(intent_id, None)
        self._unknown.pop(intent_id, None)

    def in_flight(self, intent_id: str) -> JournalEntry | None:
        """The latest journal entry of an intent whose orders may exist (its planned record
        was written, or its write was attempted), until it completes. After a failure, such
        an intent is finished with :meth:`recover`, never rejected."""
        return self._in_flight.get(intent_id)

    async def handle(self, intent: OrderIntent, received_ms: int, source: Source = Source(),
                     admit: Admission | None = None) -> Outcome:
        """Run one valid intent through every stage; never raises for a business outcome.

        If it raises after the planned record (a journal outage, a venue bug), orders may
        exist: :meth:`in_flight` then returns the entry to :meth:`recover` from.
        """
        entry = JournalEntry(intent_id=intent.intent_id, state=IntentState.PLANNED, intent=intent, received_ms=received_ms,
                             source_partition=source.partition, source_offset=source.offset)
        # 1. pre-trade checks
        reason = check_intent(intent, self.clock(), self.limits)
        if reason:
            return await self._reject(entry, reason)
        intent = self._apply_allow_list(intent)

        # 2. route
        plan = self._route(intent, 0, None, {})
        reason = self._unexecutable(intent, plan) or check_plan(intent, plan, self.limits)
        if reason:
            return await self._reject(entry, reason, plan)
        if intent.dry_run:
            return Outcome(intent, [plan], None)

        # 3. journal, then execute the legs in parallel; re-route what did not fill
        entry, legs = await self._run_round(entry, intent, plan, [], admit)
        entry, legs = await self._more_rounds(entry, intent, legs, received_ms + self.execution_deadline_ms, admit)

        # 4. the outcome, journaled before it is published
        return await self._complete(entry, legs, admit)

    async def _more_rounds(self, entry: JournalEntry, intent: OrderIntent, legs: list[LegOutcome], deadline_ms: int,
                           admit: Admission | None):
        """Re-route the remainder with fresh quotes, bounded by rounds, deadline, expiry and the
        account's notional cap (with what the earlier rounds cost)."""
        intent = self._apply_allow_list(intent)  # also for an intent recovered from the journal, which has it as received
        deadline = min(intent.expires_at or 2**63, deadline_ms)
        while len(entry.rounds) < self.max_rounds and self.clock() < deadline:
            remaining = intent.qty - _settled_or_unknown(legs)
            if remaining <= 0 or check_intent(intent, self.clock(), self.limits):
                break
            failed = {o.leg.provider: ExclusionReason.VENUE_FAILED for o in legs if o.report.status in VENUE_FAULTS}
            plan = self._route(intent, len(entry.rounds), remaining, failed)
            if not plan.legs:
                break
            reason = check_plan(intent, plan, self.limits, spent=_spent_notional(legs))
            if reason:
                log.warning("reroute_refused", intent_id=intent.intent_id, round=len(entry.rounds), reason=reason)
                break
            entry, legs = await self._run_round(entry, intent, plan, legs, admit)
        return entry, legs

    async def recover(self, entry: JournalEntry, admit: Admission | None = None) -> Outcome:
        """Finish an intent a crashed worker left in flight: first ask the venues about every
        leg it may have placed (by client order id); only then, if the intent has not expired,
        re-route what is left in a new round (new client order ids); then complete it."""
        if entry.state is IntentState.COMPLETED:
            if self._in_flight.get(entry.intent_id) is entry:  # built, but its record was never acknowledged
                if admit is not None:
                    await admit()  # only the partition's owner writes its journal
                await self.journal.write(entry)
                self._in_flight.pop(entry.intent_id, None)
            self._hand_to_sweeper(entry)
            return Outcome.from_journal(entry)
        legs: list[LegOutcome] = []
        rounds = []
        for rnd in entry.rounds:
            resolved = []
            for jl in rnd.legs:
                if jl.status is None:
                    outcome = await self.executor.recover_leg(jl.leg, jl.client_order_id, rnd.journaled_ms)
                    jl = jl.resolved(outcome.report, outcome.latency_ms)
                    log.info("leg_recovered", intent_id=entry.intent_id, client_order_id=jl.client_order_id, status=jl.status.value)
                resolved.append(jl)
                legs.append(LegOutcome(jl.leg, jl.client_order_id, jl.report(), jl.latency_ms))
            rounds.append(JournalRound(plan=rnd.plan, legs=resolved))
        entry = entry.model_copy(update={"rounds": rounds})
        self._in_flight[entry.intent_id] = entry
        entry, legs = await self._more_rounds(entry, entry.intent, legs, self.clock() + self.execution_deadline_ms, admit)
        return await self._complete(entry, legs, admit)

    async def _run_round(self, entry: JournalEntry, intent: OrderIntent, plan: RoutePlan, legs: list[LegOutcome],
                         admit: Admission | None):
        coids = self.executor.client_order_ids(intent, plan)
        new_round = trusted(JournalRound, plan=plan, legs=[trusted(JournalLeg, leg=leg, client_order_id=c) for leg, c in zip(plan.legs, coids)],
                            journaled_ms=self.clock())
        rounds = self._resolved_rounds(entry, legs) + [new_round]
        entry = entry.model_copy(update={"state": IntentState.PLANNED, "rounds": rounds})
        # Before the first await: concurrent plans see this liquidity taken.
        held = self.quotes.reserve(plan) if self.reserve_own_liquidity else []
        # From the attempt on, the record may exist and so may orders: never a rejection.
        self._in_flight[entry.intent_id] = entry
        try:
            if admit is not None:
                await admit()  # a worker that lost the partition writes nothing more to its journal
            await self.journal.write(entry)  # durable before any order can exist
        except BaseException:
            self.quotes.release(held)  # nothing was placed: the liquidity is free again
            raise
        try:
            outcomes = await self.executor.run_legs(intent, plan, admit)
        except BaseException:
            # Fenced or cancelled mid-round: a leg may be out and fill. Held until a snapshot
            # newer than now (released at once, concurrent plans would take it a second time).
            self.quotes.settle(held, self.clock())
            raise
        # A leg the venue refused or never received took nothing, and the book it planned on may
        # still be there: free at once. The others are held until a newer snapshot, an expired
        # one too (an IOC that found nothing: the snapshot shows liquidity that is gone).
        took_nothing = {o.leg.provider for o in outcomes if o.report.status in _NEVER_MATCHED and o.report.filled_qty == 0}
        self.quotes.release([r for r in held if r.venue in took_nothing])
        self.quotes.settle([r for r in held if r.venue not in took_nothing], self.clock())
        return entry, legs + outcomes

    @staticmethod
    def _resolved_rounds(entry: JournalEntry, legs: list[LegOutcome]) -> list[JournalRound]:
        by_coid = {o.client_order_id: o for o in legs}
        out = []
        for rnd in entry.rounds:
            out.append(trusted(JournalRound, plan=rnd.plan, journaled_ms=rnd.journaled_ms, legs=[
                jl.resolved(by_coid[jl.client_order_id].report, by_coid[jl.client_order_id].latency_ms) if jl.client_order_id in by_coid else jl
                for jl in rnd.legs]))
        return out

    async def _complete(self, entry: JournalEntry, legs: list[LegOutcome], admit: Admission | None = None) -> Outcome:
        plans = [r.plan for r in entry.rounds]
        result, fills = build_result(entry.intent, plans, legs, self.clock() - entry.received_ms)
        # The result itself is not journaled: Outcome.from_journal rebuilds it from the legs.
        entry = entry.model_copy(update={"state": IntentState.COMPLETED, "rounds": self._resolved_rounds(entry, legs),
                                         "latency_ms": result.latency_ms})
        self._in_flight[entry.intent_id] = entry
        if admit is not None:
            await admit()  # only the partition's owner completes the intent: one truth, not two
        await self.journal.write(entry)
        self._in_flight.pop(entry.intent_id, None)
        self._hand_to_sweeper(entry)
        return Outcome(entry.intent, plans, result, fills)

    async def sweep(self, entry: JournalEntry, admit: Admission | None = None) -> tuple[JournalEntry, Outcome | None]:
        """Ask the venues again about the legs of a completed intent whose state is still
        unknown. When any is now known, journal an amendment and return the correction to
        publish: the new fills and the result's next version (``None`` if nothing changed)."""
        found = []
        for jl in entry.unknown_legs():
            try:
                report = await self.executor.adapters[jl.leg.provider].query(jl.client_order_id)
            except Exception as exc:  # still unreachable: ask again on the next sweep
                log.info("sweep_unanswered", intent_id=entry.intent_id, client_order_id=jl.client_order_id, error=repr(exc))
                continue
            if report is not None and report.status is LegStatus.UNKNOWN:  # still working at the venue: ask again
                log.info("sweep_still_working", intent_id=entry.intent_id, client_order_id=jl.client_order_id)
                continue
            if report is None:  # long past any request's life: it never reached the venue
                report = OrderReport(jl.client_order_id, None, LegStatus.NOT_PLACED, ZERO,
                                     error="the venue has no such order (late-fill sweeper)")
            found.append(jl.resolved(report, jl.latency_ms))
        if not found:
            return entry, None
        before = Outcome.from_journal(entry)
        version = before.result.version + 1
        entry = entry.model_copy(update={"amendments": [*entry.amendments, JournalAmendment(version=version, legs=found)]})
        if admit is not None:
            await admit()  # only the partition's owner amends its journal
        await self.journal.write(entry)
        after = Outcome.from_journal(entry)
        log.warning("late_fills", intent_id=entry.intent_id, version=version, new_fills=len(after.fills) - len(before.fills),
                    filled=format(after.result.filled_qty, "f"))
        return entry, Outcome(entry.intent, [], after.result, after.fills[len(before.fills):])

    async def _reject(self, entry: JournalEntry, reason: str, plan: RoutePlan | None = None) -> Outcome:
        log.info("rejected", intent_id=entry.intent_id, reason=reason)
        result = rejected_result(entry.intent, reason, self.clock() - entry.received_ms, plan)
        rounds = [JournalRound(plan=plan, legs=[])] if plan else []
        entry = entry.model_copy(update={"state": IntentState.COMPLETED, "rounds": rounds, "result": result})
        # In flight while written: should the write fail (its record may still be stored), the
        # worker finishes it from this entry, so any copy of the outcome is this one, byte for byte.
        self._in_flight[entry.intent_id] = entry
        await self.journal.write(entry)
        self._in_flight.pop(entry.intent_id, None)
        return Outcome.from_journal(entry)

    def _route(self, intent: OrderIntent, round_no: int, qty, unavailable) -> RoutePlan:
        blocked = {v: ExclusionReason.CIRCUIT_OPEN for v in self.executor.breakers.blocked()}
        started = time.perf_counter()
        plan = route(intent, self.quotes.books(intent.symbol), self.venues, now_ms=self.clock(),
                     max_quote_age_ms=self.max_quote_age_ms, round_no=round_no, qty=qty, unavailable={**blocked, **unavailable},
                     node_limit=self.node_limit)
        if self.metrics is not None:
            self.metrics.routing.observe(time.perf_counter() - started)
        capped = self.quotes.capped(intent.symbol)  # the depth cap: say which books were cut
        return plan.model_copy(update={"book_levels_dropped": capped}) if capped else plan

    def _apply_allow_list(self, intent: OrderIntent) -> OrderIntent:
        return intent.within(by_name(self.account_venues, intent.account_id))

    @staticmethod
    def _unexecutable(intent: OrderIntent, plan: RoutePlan) -> str | None:
        if not plan.legs:
            unroutable = {ExclusionReason.STALE, ExclusionReason.NO_QUOTE, ExclusionReason.NOT_ALLOWED}
            detail = ", ".join(f"{e.venue} {e.reason.value}" for e in plan.excluded)
            if plan.excluded and all(e.reason in unroutable for e in plan.excluded):
                return f"no_fresh_quote: {detail}"
            return f"no_liquidity: {detail or 'no venue can fill'}"
        if intent.time_in_force is TimeInForce.FOK and not plan.covers_total:
            return f"fok_not_coverable: books cover {plan.planned_qty} of {plan.total_qty}"
        return None


#: Leg states in which the order never reached the venue's matching: refused, failed, not placed.
_NEVER_MATCHED = frozenset({LegStatus.REJECTED, LegStatus.FAILED, LegStatus.NOT_PLACED})


def _spent_notional(legs: list[LegOutcome]) -> Decimal:
    """What the legs so far cost or may have cost: their trades; the whole planned leg when the
    venue has not said (it may have filled); a fill reported without its trades (a query
    answer) at the leg's dearer of its worst and its estimated price."""
    with decimal.localcontext(MONEY_CONTEXT):
        total = ZERO
        for o in legs:
            if o.report.status is LegStatus.UNKNOWN:  # it may fill in full, at up to its worst price
                total += o.leg.qty * max(o.leg.worst_price, o.leg.estimated_price)
            elif o.report.trades:
                total += sum((t.price * t.qty for t in o.report.trades), ZERO)
            else:
                total += o.report.filled_qty * max(o.leg.worst_price, o.leg.estimated_price)
        return total


def _settled_or_unknown(legs: list[LegOutcome]):
    """Filled quantity, counting a leg of unknown state as fully filled: a re-route must
    never risk buying twice what an unanswered venue may already have done."""
    return sum((o.leg.qty if o.report.status is LegStatus.UNKNOWN else o.report.filled_qty for o in legs), ZERO)
