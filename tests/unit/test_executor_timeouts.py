"""A leg's timeout and a cancellation from outside, on the one-leg path (the leg runs in the
intent's own task) and the several-leg path (a task per leg): a timeout asks the venue, never
sends again; a cancellation (a revoked partition, a stop) is never mistaken for a timeout."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.support.scenarios import make_intent, make_quote
from worker.domain.models import LegStatus, VenueConfig
from worker.execution.executor import Executor
from worker.routing.planner import route
from worker.venues.base import OrderReport

D = Decimal


class HangingVenue:
    """Takes the order (it is filled at the venue) but never answers the request in time."""

    def __init__(self) -> None:
        self.placed: list[str] = []
        self.queried: list[str] = []
        self.cancelled = 0

    async def place(self, order):
        self.placed.append(order.client_order_id)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise

    async def query(self, client_order_id):
        self.queried.append(client_order_id)
        return OrderReport(client_order_id, "venue-1", LegStatus.FILLED, D("0.5"))


def plan_on(venues: list[str], qty: str):
    configs = [VenueConfig(name=n) for n in venues]
    books = {n: make_quote(n, asks=[(100, 1)]) for n in venues}
    intent = make_intent(qty)
    return intent, route(intent, books, configs)


@pytest.mark.parametrize("venues, qty", [(["a"], "0.5"), (["a", "b"], "1.5")])
def test_a_leg_past_its_timeout_is_asked_about_never_sent_again(venues, qty):
    intent, plan = plan_on(venues, qty)
    assert len(plan.legs) == len(venues)
    adapters = {n: HangingVenue() for n in venues}
    outcomes = asyncio.run(Executor(adapters, leg_timeout_ms=50).run_legs(intent, plan))
    for outcome in outcomes:
        venue = adapters[outcome.leg.provider]
        assert outcome.report.status is LegStatus.FILLED  # the venue's own record
        assert venue.placed == [outcome.client_order_id] and venue.queried == [outcome.client_order_id]
        assert venue.cancelled == 1  # the hanging request was given up, not left running


@pytest.mark.parametrize("venues, qty", [(["a"], "0.5"), (["a", "b"], "1.5")])
def test_a_cancellation_from_outside_is_not_taken_for_a_timeout(venues, qty):
    intent, plan = plan_on(venues, qty)
    adapters = {n: HangingVenue() for n in venues}

    async def cancel_while_placing():
        task = asyncio.create_task(Executor(adapters, leg_timeout_ms=60_000).run_legs(intent, plan))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_while_placing())
    assert all(v.queried == [] and v.cancelled == 1 for v in adapters.values())  # no reconciliation ran


class AnswersAsItIsRevoked:
    """Fills the order; the owner's cancellation (a revoked partition) lands in the same
    loop iteration as the venue's answer."""

    def __init__(self) -> None:
        self.owner: asyncio.Task | None = None

    async def place(self, order):
        await asyncio.sleep(0.01)
        self.owner.cancel()
        return OrderReport(order.client_order_id, "v-1", LegStatus.FILLED, order.qty)

    async def query(self, client_order_id):
        return None


@pytest.mark.parametrize("venues, qty", [(["a"], "0.5"), (["a", "b"], "1.5")])
def test_a_cancellation_that_arrives_with_the_venues_answer_is_not_lost(venues, qty):
    """The one-leg path awaits ``wait_for`` in the intent's own task. On Python 3.11,
    ``wait_for`` returns the inner result when the outer task is cancelled after the inner
    one finished, dropping the cancellation: ``run_legs`` returns normally. The gather path
    (several legs) re-raises it, because gather's own future remembers the cancel."""
    configs = [VenueConfig(name=n) for n in venues]
    intent = make_intent(qty)
    plan = route(intent, {n: make_quote(n, asks=[(100, 1)]) for n in venues}, configs)
    assert len(plan.legs) == len(venues)
    adapters = {n: AnswersAsItIsRevoked() for n in venues}

    async def main():
        task = asyncio.create_task(Executor(adapters, leg_timeout_ms=5_000).run_legs(intent, plan))
        for venue in adapters.values():
            venue.owner = task
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


class SlowWireVenue:
    """A request that is stuck on the wire: the venue accepts it ``arrives_after_s`` after it was
    sent, still within the time it accepts a signed request (Binance: ``recvWindow``)."""

    request_lifetime_ms = 600

    def __init__(self, arrives_after_s: float) -> None:
        self.arrives_after_s = arrives_after_s
        self.sent_at: float | None = None

    async def place(self, order):
        self.sent_at = asyncio.get_running_loop().time()
        await asyncio.sleep(3600)

    async def query(self, client_order_id):
        if asyncio.get_running_loop().time() - self.sent_at < self.arrives_after_s:
            return None  # not there yet
        from worker.venues.base import VenueTrade

        return OrderReport(client_order_id, "venue-1", LegStatus.FILLED, D("0.5"), (VenueTrade(D(100), D("0.5"), D(0), "USD", "t1"),))


def test_a_leg_is_not_declared_unplaced_while_the_venue_may_still_accept_its_request():
    """executor.py `_reconcile`: "not found" was confirmed once, half a leg timeout later (25 ms
    here), and the leg ended FAILED, so its quantity was re-routed. The venue accepts a signed
    request until its ``recvWindow`` has passed (5 s by default on Binance, 10 s in ccxt): a
    request still on the wire then fills there too, and the account buys twice. "Not found"
    now counts only once the adapter's ``request_lifetime_ms`` since the send has passed."""
    intent, plan = plan_on(["a"], "0.5")
    venue = SlowWireVenue(arrives_after_s=0.3)
    [outcome] = asyncio.run(Executor({"a": venue}, leg_timeout_ms=50).run_legs(intent, plan))
    assert outcome.report.status is LegStatus.FILLED, (outcome.report.status, outcome.report.error)
