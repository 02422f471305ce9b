"""Executes a plan's legs in parallel through the venue adapters and builds the outcome."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Awaitable, Callable, Mapping

import structlog

from worker.domain.clock import now_ms
from worker.domain.ids import client_order_id, fill_id, result_event_id
from worker.execution.breaker import CircuitBreakers
from worker.observability import Metrics
from worker.domain.models import (
    ExecutionResult,
    ExecutionStatus,
    Fill,
    FillEvent,
    LegResult,
    LegStatus,
    OrderIntent,
    PlanLeg,
    RoutePlan,
    trusted,
)
from worker.domain.money import ZERO
from worker.domain.money import average_price
from worker.execution.tca import transaction_costs
from worker.venues.base import LegOrder, OrderReport, VenueAdapter, VenueError

log = structlog.get_logger("sor.execution")


#: Awaited before every placement; raises to stop this worker from placing (fencing).
Admission = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class LegOutcome:
    leg: PlanLeg
    client_order_id: str
    report: OrderReport
    latency_ms: int


class Executor:
    """Sends every leg at once, each with its own timeout; never blind-retries a leg.

    A timeout or transport error means the order's state is unknown: it is reconciled by
    ``query`` with the same client order id, never by sending it again.
    """

    def __init__(self, adapters: Mapping[str, VenueAdapter], leg_timeout_ms: int, clock: Callable[[], int] = now_ms,
                 breakers: CircuitBreakers | None = None, reconcile_timeout_ms: int = 30_000, metrics: Metrics | None = None,
                 grace_ms: int | None = None):
        self.adapters = adapters
        self.leg_timeout_ms = leg_timeout_ms
        self.leg_timeout_s = leg_timeout_ms / 1000
        self.grace_ms = grace_ms if grace_ms is not None else leg_timeout_ms
        self.clock = clock
        self.breakers = breakers or CircuitBreakers(5, 5_000, clock)
        self.reconcile_timeout_s = reconcile_timeout_ms / 1000
        self.metrics = metrics

    @staticmethod
    def client_order_ids(intent: OrderIntent, plan: RoutePlan) -> list[str]:
        return [client_order_id(intent.intent_id, plan.round, i) for i in range(len(plan.legs))]

    async def run_legs(self, intent: OrderIntent, plan: RoutePlan, admit: Admission | None = None) -> list[LegOutcome]:
        """Place every leg at once; the plan's client order ids must already be journaled.

        ``admit`` is awaited immediately before each placement: it raises when this worker
        may no longer place orders for the intent (see ``worker.service.fencing``).
        """
        coids = self.client_order_ids(intent, plan)
        if len(plan.legs) == 1:  # one leg: no task of its own to run it in parallel with nothing
            outcome = await self._run_leg(intent, coids[0], plan.legs[0], admit)
            # On Python 3.11, wait_for returns the request's answer when this task is cancelled
            # in the same loop step as the answer arrives, and the cancellation is lost. A
            # revocation must still stop the intent here, as gather does for several legs.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            return [outcome]
        return list(await asyncio.gather(*(self._run_leg(intent, coid, leg, admit) for coid, leg in zip(coids, plan.legs))))

    async def recover_leg(self, leg: PlanLeg, coid: str, journaled_ms: int | None = None) -> LegOutcome:
        """A leg journaled as submitted before a crash or a handover: ask the venue, never
        send it again. "Not found" only counts as not placed once any request of that round
        must be dead (journaled + leg timeout + grace): a slow previous owner may still have
        it on the wire."""
        started = time.perf_counter()
        adapter = self.adapters[leg.provider]
        report = await self._reconcile(adapter, coid, "recovered after restart", placed=False)
        settled_ms = (journaled_ms or 0) + self.leg_timeout_ms + self.grace_ms + request_lifetime_ms(adapter)
        if report.status is LegStatus.NOT_PLACED and self.clock() < settled_ms:
            await asyncio.sleep((settled_ms - self.clock()) / 1000)
            report = await self._reconcile(adapter, coid, "recovered after a handover", placed=False)
        return LegOutcome(leg, coid, report, int((time.perf_counter() - started) * 1000))

    async def _run_leg(self, intent: OrderIntent, coid: str, leg: PlanLeg, admit: Admission | None) -> LegOutcome:
        order = LegOrder(coid, intent.symbol, intent.side, leg.qty, leg.worst_price)
        adapter = self.adapters[leg.provider]
        if admit is not None:
            await admit()
        self.breakers.on_send(leg.provider)
        started = time.perf_counter()
        sent = time.monotonic()
        try:
            try:
                # wait_for runs the request in a task of its own: a timeout cancels that task only,
                # and this intent's task (which also holds the fence and the journal writes) never
                # receives a cancellation it has to tell apart from a revocation's.
                report = await asyncio.wait_for(adapter.place(order), self.leg_timeout_s)
                if report.duplicate:
                    # Already placed (a redelivery after a crash): the venue's record is the truth.
                    report = await self._reconcile(adapter, coid, "duplicate client order id", sent=sent)
            except (asyncio.TimeoutError, VenueError) as exc:
                report = await self._reconcile(adapter, coid, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                                               sent=sent)
            except Exception as exc:  # an adapter bug after the request may have left: the venue's record decides
                log.error("adapter_error", venue=leg.provider, client_order_id=coid, error=repr(exc)[:300])
                report = await self._reconcile(adapter, coid, f"adapter error: {type(exc).__name__}: {str(exc)[:200]}", sent=sent)
        except BaseException:
            self.breakers.abandon(leg.provider)  # cancelled (or reconciling failed): no outcome to record
            raise
        latency = int((time.perf_counter() - started) * 1000)
        self.breakers.record(leg.provider, report.status)
        if self.metrics is not None:
            self.metrics.leg_latency.labels(leg.provider).observe(latency / 1000)
            if report.status not in (LegStatus.FILLED,):
                self.metrics.leg_errors.labels(leg.provider, report.status.value).inc()
        # A leg filled as planned is in the fills topic, the journal and the intent's own
        # line (intent_done names every leg's venue and client order id): its line is debug.
        # Anything else is worth an operator's eye.
        (log.debug if report.status is LegStatus.FILLED else log.info)(
            "leg", intent_id=intent.intent_id, venue=leg.provider, client_order_id=coid, status=report.status.value,
            qty=format(leg.qty, "f"), filled=format(report.filled_qty, "f"), latency_ms=latency)
        return LegOutcome(leg, coid, report, latency)

    async def _reconcile(self, adapter: VenueAdapter, coid: str, why: str, placed: bool = True,
                         sent: float | None = None) -> OrderReport:
        """The venue's record of ``coid``, asked with backoff until ``reconcile_timeout_ms``;
        UNKNOWN only if the venue stays unreachable that long (the leg then counts as filled
        for re-routing, so it is never bought twice). "Not found" after a send (at monotonic
        ``sent``) is asked again once the venue can no longer accept that request."""
        error = ""
        deadline = time.monotonic() + self.reconcile_timeout_s
        attempt = 0
        confirmed = not placed  # after a restart the request is long gone; after a timeout it may still be queued
        # A request on the wire may still be accepted until its lifetime has passed (Binance:
        # recvWindow after its timestamp): "not found" before that proves nothing.
        accepted_until = (time.monotonic() if sent is None else sent) + request_lifetime_ms(adapter) / 1000
        while True:
            try:
                found = await asyncio.wait_for(adapter.query(coid), self.leg_timeout_s)
            except Exception as exc:  # unreachable, timed out, or an adapter bug: ask again until the deadline
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
                attempt += 1
                continue
            if found is None and not confirmed:
                confirmed = True
                # A late request must not become an orphan fill: ask again after a grace, and
                # not before the venue would refuse it anyway.
                await asyncio.sleep(max(min(1.0, self.leg_timeout_s / 2), accepted_until - time.monotonic()))
                continue
            if found is None and not placed:
                return OrderReport(coid, None, LegStatus.NOT_PLACED, ZERO, error=f"{why}; the order never reached the venue")
            if found is None:
                return OrderReport(coid, None, LegStatus.FAILED, ZERO, error=f"{why}; the venue has no such order")
            return found
        return OrderReport(coid, None, LegStatus.UNKNOWN, ZERO, error=f"{why}; query failed: {error}")


def request_lifetime_ms(adapter: VenueAdapter) -> int:
    """How long after it was sent the venue may still accept a request (0: not past its connection)."""
    return getattr(adapter, "request_lifetime_ms", 0)


def build_result(
    intent: OrderIntent, plans: list[RoutePlan], outcomes: list[LegOutcome], latency_ms: int
) -> tuple[ExecutionResult, list[FillEvent]]:
    """The final result and its fill events, in a deterministic order.

    Allocations are numbered best price first, then by venue and trade, like the Binance
    SOR FAQ lists them; ``allocId`` counts 0, 1, 2, ... per intent, across all rounds.
    """
    plan = plans[0]
    trades = []
    for o in outcomes:
        for t in o.report.trades:
            trades.append((intent.side.sign * t.price, o.leg.provider, t.trade_id, o.client_order_id, t))
    trades.sort(key=lambda x: (x[0], x[1], x[2]))
    fills: list[Fill] = []
    events: list[FillEvent] = []
    # trusted(): every value below is already a typed, checked Decimal/enum/str computed here
    # or reported by an adapter; validating them again cost a fifth of an intent's CPU.
    for alloc_id, (_, provider, _, coid, t) in enumerate(trades):
        fill = trusted(Fill, price=t.price, qty=t.qty, commission=t.commission, commissionAsset=t.commission_asset,
                       allocId=alloc_id, provider=provider)
        fills.append(fill)
        fid = fill_id(intent.intent_id, alloc_id)
        events.append(trusted(FillEvent, event_id=f"fill:{fid}", fill_id=fid, intent_id=intent.intent_id,
                              account_id=intent.account_id, plan_id=plan.plan_id, symbol=intent.symbol, side=intent.side,
                              client_order_id=coid, fill=fill))
    filled = sum((f.qty for f in fills), ZERO)
    quote_qty = sum((f.price * f.qty for f in fills), ZERO)
    legs = [
        trusted(LegResult,
            provider=o.leg.provider, order_id=o.report.order_id, client_order_id=o.client_order_id, qty=o.leg.qty,
            filled_qty=o.report.filled_qty, price=_vwap(o.report), status=o.report.status, latency_ms=o.latency_ms,
            error=o.report.error,
        )
        for o in outcomes
    ]
    status = _status(filled, intent.qty)
    reasons = [f"{leg.provider}: {leg.status.value}{' (' + leg.error + ')' if leg.error else ''}" for leg in legs if leg.status is not LegStatus.FILLED]
    if filled < intent.qty:
        reasons.append(f"filled {filled} of {intent.qty} in {len(plans)} round(s)")
    result = trusted(ExecutionResult,
        event_id=result_event_id(intent.intent_id), plan_id=plan.plan_id, intent_id=intent.intent_id,
        account_id=intent.account_id, symbol=intent.symbol, side=intent.side, algorithm=plan.algorithm,
        total_qty=intent.qty, filled_qty=filled, vwap=average_price(quote_qty, filled) if filled else None,
        legs=legs, rounds=len(plans), status=status, reason="; ".join(reasons) or None, latency_ms=latency_ms,
        executedQty=filled, cummulativeQuoteQty=quote_qty, fills=fills, fill_count=len(fills),
        tca=transaction_costs(intent, plans, fills, latency_ms),
    )
    return result, events


def amend_result(intent: OrderIntent, plans: list[RoutePlan], prior: ExecutionResult, found: list[LegOutcome],
                 published: set[tuple[str, str]] | frozenset = frozenset()) -> tuple[ExecutionResult, list[FillEvent]]:
    """A correction of ``prior``: legs whose state was unknown are now known (``found``).

    Allocations already published keep their ``allocId``; the late trades are appended in
    the same deterministic order as :func:`build_result` uses. A leg reported unknown may
    already have had trades (an order still working); those, named in ``published`` by
    (client order id, trade id), are not counted again. Returns the amended result (next
    ``version``) and only the new fill events.
    """
    trades = sorted(((intent.side.sign * t.price, o.leg.provider, t.trade_id, o.client_order_id, t) for o in found for t in o.report.trades
                     if (o.client_order_id, t.trade_id) not in published),
                    key=lambda x: (x[0], x[1], x[2]))
    fills = list(prior.fills)
    events: list[FillEvent] = []
    for _, provider, _, coid, t in trades:
        alloc_id = len(fills)
        fill = Fill(price=t.price, qty=t.qty, commission=t.commission, commissionAsset=t.commission_asset, allocId=alloc_id, provider=provider)
        fills.append(fill)
        fid = fill_id(intent.intent_id, alloc_id)
        events.append(FillEvent(event_id=f"fill:{fid}", fill_id=fid, intent_id=intent.intent_id, account_id=intent.account_id,
                                plan_id=plans[0].plan_id, symbol=intent.symbol, side=intent.side, client_order_id=coid, fill=fill))
    by_coid = {o.client_order_id: o for o in found}
    legs = [leg if leg.client_order_id not in by_coid else LegResult(
                provider=leg.provider, order_id=by_coid[leg.client_order_id].report.order_id, client_order_id=leg.client_order_id,
                qty=leg.qty, filled_qty=by_coid[leg.client_order_id].report.filled_qty, price=_vwap(by_coid[leg.client_order_id].report),
                status=by_coid[leg.client_order_id].report.status, latency_ms=leg.latency_ms,
                error=f"late: {by_coid[leg.client_order_id].report.error or 'found by the late-fill sweeper'}")
            for leg in prior.legs]
    filled = sum((f.qty for f in fills), ZERO)
    quote_qty = sum((f.price * f.qty for f in fills), ZERO)
    version = prior.version + 1
    reasons = [f"{leg.provider}: {leg.status.value}{' (' + leg.error + ')' if leg.error else ''}" for leg in legs if leg.status is not LegStatus.FILLED]
    if filled < intent.qty:
        reasons.append(f"filled {filled} of {intent.qty} in {prior.rounds} round(s)")
    result = prior.model_copy(update=dict(
        event_id=result_event_id(intent.intent_id, version), version=version, legs=legs, fills=fills, fill_count=len(fills),
        filled_qty=filled, executedQty=filled, cummulativeQuoteQty=quote_qty, vwap=average_price(quote_qty, filled) if filled else None,
        status=_status(filled, intent.qty), reason="; ".join(reasons) or None,
        tca=transaction_costs(intent, plans, fills, prior.latency_ms)))
    return result, events


def _status(filled: Decimal, qty: Decimal) -> ExecutionStatus:
    if filled == qty:
        return ExecutionStatus.FILLED
    return ExecutionStatus.PARTIAL if filled > 0 else ExecutionStatus.FAILED


def rejected_result(intent: OrderIntent, reason: str, latency_ms: int, plan: RoutePlan | None = None) -> ExecutionResult:
    """The final outcome of a valid intent that was not executed."""
    return ExecutionResult(
        event_id=result_event_id(intent.intent_id), plan_id=plan.plan_id if plan else None, intent_id=intent.intent_id,
        account_id=intent.account_id, symbol=intent.symbol, side=intent.side, algorithm=intent.algorithm,
        total_qty=intent.qty, filled_qty=ZERO, vwap=None, status=ExecutionStatus.REJECTED, reason=reason,
        latency_ms=latency_ms, executedQty=ZERO, cummulativeQuoteQty=ZERO,
    )


def _vwap(report: OrderReport) -> Decimal | None:
    qty = sum((t.qty for t in report.trades), ZERO)
    if not qty:
        return None
    return average_price(sum((t.price * t.qty for t in report.trades), ZERO), qty)
