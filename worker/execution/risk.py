"""Pre-trade checks, separate from execution (NautilusTrader's RiskEngine split)."""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Mapping

from worker.domain.ids import by_name
from worker.domain.models import OrderIntent, RoutePlan
from worker.domain.money import MONEY_CONTEXT, ZERO


@dataclass(frozen=True)
class RiskLimits:
    """Per-account notional caps; ``default_max_notional`` covers accounts not listed."""

    account_max_notional: Mapping[str, Decimal] = field(default_factory=dict)
    default_max_notional: Decimal | None = None
    intent_ttl_ms: int = 60_000
    #: How far ahead of this worker's clock a ``created_at`` may be when it alone dates the
    #: intent: further, it is a wrong date (a unit slip, microseconds) that would never
    #: expire, so it never trades (an ``expires_at`` expires it whatever ``created_at`` says).
    max_clock_skew_ms: int = 5_000

    def max_notional(self, account_id: str) -> Decimal | None:
        return by_name(self.account_max_notional, account_id, self.default_max_notional)


def check_intent(intent: OrderIntent, now_ms: int, limits: RiskLimits) -> str | None:
    """Why the intent must not trade before routing (expired, over the cap), else ``None``."""
    if intent.expires_at is not None and now_ms > intent.expires_at:
        return f"expired: expires_at {intent.expires_at} is {now_ms - intent.expires_at} ms in the past"
    if intent.expires_at is None and intent.created_at is not None and intent.created_at > now_ms + limits.max_clock_skew_ms:
        return (f"created_at: {intent.created_at} is {intent.created_at - now_ms} ms in the future "
                f"(max clock skew {limits.max_clock_skew_ms} ms; epoch milliseconds expected)")
    if intent.expires_at is None and intent.created_at is not None and now_ms > intent.created_at + limits.intent_ttl_ms:
        return f"expired: created_at {intent.created_at} is older than the {limits.intent_ttl_ms} ms TTL"
    cap = limits.max_notional(intent.account_id)
    if cap is not None and intent.limit_price is not None:
        with decimal.localcontext(MONEY_CONTEXT):  # exact at the input bounds
            notional = intent.qty * intent.limit_price
        if notional > cap:
            return f"risk_limit: notional {notional} exceeds the account's max {cap}"
    return None


def check_plan(intent: OrderIntent, plan: RoutePlan, limits: RiskLimits, spent: Decimal = ZERO) -> str | None:
    """Checks that need the plan: a market order's notional is only known once routed.

    The notional is what the legs may cost: each is an IOC limit order at its worst price,
    which a venue fills in full if its book moved since the snapshot; for a sell, the
    estimate (a sale at better prices than its worst is not more at risk). ``spent``: what
    the intent's earlier rounds cost or may have cost; a re-route of the remainder is held to
    the account's cap with it, whatever the market did since."""
    cap = limits.max_notional(intent.account_id)
    if cap is not None and plan.estimated_vwap is not None:
        with decimal.localcontext(MONEY_CONTEXT):
            estimate = plan.estimated_vwap * plan.planned_qty
            worst = sum((leg.qty * leg.worst_price for leg in plan.legs), ZERO)
            notional = spent + max(estimate, worst)
        if notional > cap:
            already = f" (with {spent} of earlier rounds)" if spent else ""
            return f"risk_limit: notional up to {notional}{already} at the legs' worst prices exceeds the account's max {cap}"
    return None
