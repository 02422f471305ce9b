"""The intent service: every stage of one intent in data-flow order, with no Kafka in it.

decode (done by the edge) -> pre-trade checks -> route -> execute legs -> outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import structlog

from worker.domain.models import (
    ExclusionReason,
    ExecutionResult,
    FillEvent,
    LegStatus,
    OrderIntent,
    RoutePlan,
    TimeInForce,
    VenueConfig,
)
from worker.execution.executor import Executor, LegOutcome, build_result, now_ms, rejected_result
from worker.routing.book import ZERO
from worker.execution.risk import RiskLimits, check_intent, check_plan
from worker.pipeline.quotes import QuoteCache
from worker.routing.planner import route

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


#: Leg states after which a venue sits out the next rounds of the same intent.
_VENUE_FAULTS = {LegStatus.REJECTED, LegStatus.FAILED, LegStatus.UNKNOWN}


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
    ):
        self.venues = list(venues)
        self.quotes = quotes
        self.executor = executor
        self.limits = limits
        self.max_quote_age_ms = max_quote_age_ms
        self.account_venues = dict(account_venues or {})
        self.clock = clock
        self.max_rounds = max_rounds
        self.execution_deadline_ms = execution_deadline_ms
        self.reserve_own_liquidity = reserve_own_liquidity

    async def handle(self, intent: OrderIntent, received_ms: int) -> Outcome:
        """Run one valid intent through every stage; never raises for a business outcome."""
        # 1. pre-trade checks
        reason = check_intent(intent, self.clock(), self.limits)
        if reason:
            return self._rejected(intent, reason, received_ms)
        intent = self._apply_allow_list(intent)

        # 2. route
        plan = self._route(intent, 0, None, {})
        reason = self._unexecutable(intent, plan) or check_plan(intent, plan, self.limits)
        if reason:
            return self._rejected(intent, reason, received_ms, plan)
        if intent.dry_run:
            return Outcome(intent, [plan], None)

        # 3. execute the legs in parallel; re-route what did not fill, with fresh quotes
        plans, legs = [plan], await self._execute(intent, plan)
        deadline = min(intent.expires_at or 2**63, received_ms + self.execution_deadline_ms)
        while len(plans) < self.max_rounds and self.clock() < deadline:
            remaining = intent.qty - _settled_or_unknown(legs)
            if remaining <= 0:
                break
            failed = {o.leg.provider: ExclusionReason.VENUE_FAILED for o in legs if o.report.status in _VENUE_FAULTS}
            plan = self._route(intent, len(plans), remaining, failed)
            if not plan.legs:
                break
            plans.append(plan)
            legs += await self._execute(intent, plan)

        # 4. the outcome
        result, fills = build_result(intent, plans, legs, self.clock() - received_ms)
        return Outcome(intent, plans, result, fills)

    def _route(self, intent: OrderIntent, round_no: int, qty, unavailable) -> RoutePlan:
        return route(intent, self.quotes.books(intent.symbol), self.venues, now_ms=self.clock(),
                     max_quote_age_ms=self.max_quote_age_ms, round_no=round_no, qty=qty, unavailable=unavailable)

    async def _execute(self, intent: OrderIntent, plan: RoutePlan) -> list[LegOutcome]:
        if self.reserve_own_liquidity:
            self.quotes.reserve(plan)  # before the first await: concurrent plans see it taken
        return await self.executor.run_legs(intent, plan)

    def _apply_allow_list(self, intent: OrderIntent) -> OrderIntent:
        allowed = self.account_venues.get(intent.account_id)
        if allowed is None:
            return intent
        venues = sorted(allowed if intent.venues is None else allowed.intersection(intent.venues))
        return intent.model_copy(update={"venues": venues})

    @staticmethod
    def _unexecutable(intent: OrderIntent, plan: RoutePlan) -> str | None:
        if not plan.legs:
            unroutable = {ExclusionReason.STALE, ExclusionReason.NO_QUOTE}
            if plan.excluded and all(e.reason in unroutable or e.reason is ExclusionReason.NOT_ALLOWED for e in plan.excluded):
                return "no_fresh_quote: " + ", ".join(f"{e.venue} {e.reason.value}" for e in plan.excluded)
            return "no_liquidity: " + (", ".join(f"{e.venue} {e.reason.value}" for e in plan.excluded) or "no venue can fill")
        if intent.time_in_force is TimeInForce.FOK and not plan.covers_total:
            return f"fok_not_coverable: books cover {plan.planned_qty} of {plan.total_qty}"
        return None

    def _rejected(self, intent: OrderIntent, reason: str, received_ms: int, plan: RoutePlan | None = None) -> Outcome:
        log.info("rejected", intent_id=intent.intent_id, reason=reason)
        return Outcome(intent, [plan] if plan else [], rejected_result(intent, reason, self.clock() - received_ms, plan))


def _settled_or_unknown(legs: list[LegOutcome]):
    """Filled quantity, counting a leg of unknown state as fully filled: a re-route must
    never risk buying twice what an unanswered venue may already have done."""
    return sum((o.leg.qty if o.report.status is LegStatus.UNKNOWN else o.report.filled_qty for o in legs), ZERO)
