"""Transaction cost analysis: what an execution achieved against the snapshot it routed on.

Pure: it reads the intent, the plans of its rounds and the fills, nothing else (no clock,
no I/O), so a result's TCA can be recomputed from the journal or the topics at any time.

Sign conventions (see :class:`~worker.domain.models.Tca`): a *cost* in bps is positive when
the execution cost money, for buys and sells alike; a *saving* in bps is positive when the
execution beat its reference, like the plan's ``savings_vs_single_venue``.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Sequence

from worker.domain.models import ExecutionResult, Fill, OrderIntent, RoutePlan, Side, Tca, base_asset, quote_asset, trusted
from worker.domain.money import BPS, BPS_QUANTUM, MONEY_CONTEXT, ZERO, average_price

#: Sums of price x qty x fee products must not round before the final quantize.
_CONTEXT = MONEY_CONTEXT
#: fill_rate is a ratio; 6 places resolve one part in a million of the intent's quantity.
FILL_RATE_QUANTUM = Decimal("0.000001")


def cost_bps(side: Side, price: Decimal, reference: Decimal) -> Decimal:
    """What ``price`` cost against ``reference``, in bps of ``reference``: positive = worse
    (paid more on a buy, received less on a sell)."""
    # "+ 0" turns a rounded-away -0.0000 into 0.0000 on the wire.
    return (side.sign * (price - reference) / reference * BPS).quantize(BPS_QUANTUM) + 0


def fees_in_quote(fills: Sequence[Fill], symbol: str) -> Decimal | None:
    """Total commission in the quote asset; a base-asset commission is valued at its fill
    price. ``None`` when a commission is in a third asset (no price for it in the fills)."""
    base, quote = base_asset(symbol), quote_asset(symbol)
    total = ZERO
    for f in fills:
        if f.commissionAsset == quote:
            total += f.commission
        elif f.commissionAsset == base:
            total += f.commission * f.price
        elif f.commission != 0:
            return None
    return total


def _achieved(side: Side, symbol: str, fills: Sequence[Fill]) -> tuple[Decimal, Decimal | None, Decimal | None, Decimal | None]:
    """(filled qty, vwap, fees in the quote asset, fee-inclusive net vwap) of ``fills``."""
    filled = sum((f.qty for f in fills), ZERO)
    quote_qty = sum((f.price * f.qty for f in fills), ZERO)
    fees = fees_in_quote(fills, symbol)
    vwap = average_price(quote_qty, filled) if filled else None
    net = average_price(quote_qty + side.sign * fees, filled) if filled and fees is not None else None
    return filled, vwap, fees, net


def venue_shortfall_bps(result: ExecutionResult) -> dict[str, Decimal]:
    """Implementation shortfall of each venue's fills (net of that venue's fees) against the
    result's arrival mid, in bps, positive = cost; venues whose fees cannot be valued are left out."""
    if result.tca is None or not result.tca.arrival_mid:
        return {}
    by_venue: dict[str, list[Fill]] = {}
    for f in result.fills:
        by_venue.setdefault(f.provider, []).append(f)
    out = {}
    with decimal.localcontext(_CONTEXT):
        for venue, fills in by_venue.items():
            net = _achieved(result.side, result.symbol, fills)[3]
            if net is not None:
                out[venue] = cost_bps(result.side, net, result.tca.arrival_mid)
    return out


def transaction_costs(intent: OrderIntent, plans: Sequence[RoutePlan], fills: Sequence[Fill], time_to_fill_ms: int) -> Tca:
    """The TCA of one executed intent.

    ``plans`` are its rounds, first first: the arrival prices, the estimate and the
    single-venue references all come from the first round (the decision the router made);
    ``fills`` are the allocations of every round. ``time_to_fill_ms`` is the time from the
    intent's receipt to the last leg's report.
    """
    with decimal.localcontext(_CONTEXT):
        return _transaction_costs(intent, plans[0], fills, time_to_fill_ms)


def _transaction_costs(intent: OrderIntent, plan: RoutePlan, fills: Sequence[Fill], time_to_fill_ms: int) -> Tca:
    side = intent.side
    bids = [r.bid_price for r in plan.routes if r.bid_price is not None]
    asks = [r.ask_price for r in plan.routes if r.ask_price is not None]
    bid = max(bids) if bids else None
    ask = min(asks) if asks else None
    mid = average_price(bid + ask, Decimal(2)) if bid is not None and ask is not None else None

    filled, vwap, fees, net = _achieved(side, intent.symbol, fills)

    def cost(reference: Decimal | None) -> Decimal | None:
        return cost_bps(side, net, reference) if net is not None and reference else None

    def saving(reference: Decimal | None) -> Decimal | None:
        # The single-venue references are priced for the planned quantity: a fill of another
        # quantity (a partial fill takes the top of the books) is not comparable with them.
        if filled != plan.planned_qty:
            return None
        spent = cost(reference)
        return None if spent is None else -spent

    return trusted(Tca,
        arrival_ts=plan.quotes_as_of,
        arrival_bid=bid,
        arrival_ask=ask,
        arrival_mid=mid,
        fill_rate=(filled / intent.qty).quantize(FILL_RATE_QUANTUM),
        vwap=vwap,
        fees=fees,
        net_vwap=net,
        shortfall_bps=cost(mid),
        estimated_net=plan.estimated_net,
        slippage_bps=cost(plan.estimated_net),
        estimated_savings_vs_worst_venue_bps=plan.savings_vs_single_venue,
        estimated_savings_vs_best_venue_bps=plan.savings_vs_best_single_venue_bps,
        realized_savings_vs_worst_venue_bps=saving(plan.worst_single_venue_net),
        realized_savings_vs_best_venue_bps=saving(plan.best_single_venue_net),
        time_to_fill_ms=time_to_fill_ms if filled else None,
    )
