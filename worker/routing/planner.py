"""``route(intent, books, venues) -> RoutePlan``: the pure heart of the router.

No clock, no randomness, no I/O: the same inputs always give the same plan (``plan_id``
included), which is what makes replays and crash recovery reproducible.
"""

from __future__ import annotations

import decimal
from decimal import Decimal
from typing import Mapping, Sequence

from worker.domain.models import (
    Algorithm,
    Exclusion,
    ExclusionReason,
    OrderIntent,
    PlanLeg,
    RoutePlan,
    Side,
    VenueConfig,
    VenueQuote,
    VenueRoute,
    trusted,
)
from worker.routing.allocators import Allocation, allocate_best, allocate_sor, allocate_split
from worker.domain.money import BPS, ZERO, average_price
from worker.routing.book import SideBook
from worker.routing.ranking import BPS_QUANTUM, rank, venue_route

#: Enough digits that sums of price x qty x fee products never round.
_CONTEXT = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_EVEN)


def plan_id_for(intent_id: str, round_no: int = 0) -> str:
    """Deterministic: a re-plan of the same intent and round has the same id."""
    return f"plan:{intent_id}:{round_no}"


def _eligible_books(
    intent: OrderIntent,
    books: Mapping[str, VenueQuote],
    venues: Sequence[VenueConfig],
    now_ms: int | None,
    max_quote_age_ms: int | None,
    unavailable: Mapping[str, ExclusionReason],
) -> tuple[list[SideBook], list[VenueRoute], list[Exclusion], list[SideBook]]:
    allowed = set(intent.venues) if intent.venues is not None else None
    side, limit = intent.side, intent.limit_price
    eligible: list[SideBook] = []
    quoted: list[SideBook] = []  # every venue with a usable quote: the single-venue benchmarks
    routes: list[VenueRoute] = []
    excluded: list[Exclusion] = []
    for venue in venues:
        name = venue.name
        if allowed is not None and name not in allowed:
            excluded.append(Exclusion(venue=name, reason=ExclusionReason.NOT_ALLOWED, detail="not in the intent's venues"))
            continue
        if name in unavailable:
            excluded.append(Exclusion(venue=name, reason=unavailable[name]))
            continue
        quote = books.get(name)
        if quote is None or quote.symbol != intent.symbol:
            excluded.append(Exclusion(venue=name, reason=ExclusionReason.NO_QUOTE, detail=f"no book for {intent.symbol}"))
            continue
        # A quote dated in the future is as untrustworthy as an old one: |age| is what counts.
        if now_ms is not None and max_quote_age_ms is not None and abs(now_ms - quote.ts) > max_quote_age_ms:
            excluded.append(
                Exclusion(venue=name, reason=ExclusionReason.STALE, detail=f"quote is {now_ms - quote.ts} ms old (max {max_quote_age_ms})")
            )
            continue
        entry = venue_route(side, venue, quote)
        if entry is None:
            excluded.append(Exclusion(venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT, detail=f"no {'asks' if side is Side.BUY else 'bids'}"))
            continue
        routes.append(entry)
        book = SideBook.build(venue, quote, side, limit)
        quoted.append(book)
        if book.max_qty == 0:
            excluded.append(Exclusion(venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT, detail=f"no level within limit {limit}"))
        elif book.min_qty > book.max_qty:
            excluded.append(
                Exclusion(
                    venue=name,
                    reason=ExclusionReason.BELOW_MINIMUM,
                    detail=f"depth {book.max_qty} within limit is below min_qty {venue.min_qty} / min_notional {venue.min_notional}",
                )
            )
        else:
            eligible.append(book)
    return eligible, routes, excluded, quoted


def _savings_bps(side: Side, reference: Decimal, net: Decimal) -> Decimal:
    return (side.sign * (reference - net) / reference * BPS).quantize(BPS_QUANTUM)


def allocate(algorithm: Algorithm, ranked: Sequence[SideBook], routes: Sequence[VenueRoute], side: Side, qty: Decimal) -> Allocation:
    """Dispatch to the allocator the intent asked for."""
    if algorithm is Algorithm.BEST:
        return allocate_best(ranked, qty)
    if algorithm is Algorithm.SPLIT:
        return allocate_split(ranked, routes, side, qty)
    return allocate_sor(ranked, qty)


def route(
    intent: OrderIntent,
    books: Mapping[str, VenueQuote],
    venues: Sequence[VenueConfig],
    *,
    now_ms: int | None = None,
    max_quote_age_ms: int | None = None,
    round_no: int = 0,
    qty: Decimal | None = None,
    unavailable: Mapping[str, ExclusionReason] | None = None,
    algorithm: Algorithm | None = None,
) -> RoutePlan:
    """Build the split plan of ``intent`` over the venues' books.

    ``books`` maps venue name to its latest quote for the intent's symbol. Quotes older than
    ``max_quote_age_ms`` at ``now_ms`` are excluded as stale (both ``None``: no check). ``qty``
    overrides the intent's quantity for a re-route of a remainder; ``unavailable`` names venues
    the caller has ruled out (an open circuit breaker, a venue that already failed this intent).
    """
    with decimal.localcontext(_CONTEXT):
        chosen = intent.algorithm if algorithm is None else Algorithm(algorithm)
        return _route(intent, books, venues, now_ms, max_quote_age_ms, round_no, qty, unavailable or {}, chosen)


def _route(intent, books, venues, now_ms, max_quote_age_ms, round_no, qty, unavailable, algorithm) -> RoutePlan:
    side = intent.side
    total = intent.qty if qty is None else qty
    eligible, routes, excluded, quoted = _eligible_books(intent, books, venues, now_ms, max_quote_age_ms, unavailable)
    routes = rank(side, routes)
    order = {r.provider: i for i, r in enumerate(routes)}
    eligible.sort(key=lambda b: order[b.name])
    allocation = allocate(algorithm, eligible, routes, side, total)

    by_name = {r.provider: r for r in routes}
    legs: list[PlanLeg] = []
    notional_sum = fees = planned = ZERO
    for book in eligible:
        leg_qty = allocation.qty.get(book.name, ZERO)
        if leg_qty <= 0:
            continue
        leg_qty = leg_qty.quantize(book.venue.step_size)  # venue precision; exact, it is on the step
        notional = book.notional(leg_qty)
        fee = notional * book.fee_rate
        r = by_name[book.name]
        legs.append(
            trusted(PlanLeg,
                provider=book.name,
                qty=leg_qty,
                estimated_price=average_price(notional, leg_qty),
                estimated_fee=fee,
                estimated_notional=notional,
                bid_price=r.bid_price,
                ask_price=r.ask_price,
                worst_price=book.worst_price(leg_qty),
                levels=book.levels_touched(leg_qty),
            )
        )
        notional_sum += notional
        fees += fee
        planned += leg_qty

    vwap = net = savings_worst = savings_best = None
    if planned > 0:
        vwap = average_price(notional_sum, planned)
        net = average_price(notional_sum + side.sign * fees, planned)
        # Single-venue benchmarks: the same quantity sent whole to one venue, walking its
        # whole visible book (the seed compares against the worst venue).
        benchmarks = [v for v in (b.net_vwap(planned) for b in quoted) if v is not None]
        if benchmarks:
            worst = max(benchmarks, key=lambda p: side.sign * p)
            best = min(benchmarks, key=lambda p: side.sign * p)
            savings_worst = _savings_bps(side, worst, net)
            savings_best = _savings_bps(side, best, net)

    as_of = max((books[b.name].ts for b in eligible), default=None)
    plan_id = plan_id_for(intent.intent_id, round_no)
    return trusted(RoutePlan,
        event_id=plan_id,
        plan_id=plan_id,
        intent_id=intent.intent_id,
        symbol=intent.symbol,
        side=side,
        total_qty=total,
        algorithm=algorithm,
        time_in_force=intent.time_in_force,
        limit_price=intent.limit_price,
        round=round_no,
        legs=legs,
        planned_qty=planned,
        unfilled_qty=total - planned,
        estimated_vwap=vwap,
        estimated_fees=fees,
        estimated_net=net,
        savings_vs_single_venue=savings_worst,
        savings_vs_best_single_venue_bps=savings_best,
        routes=routes,
        excluded=excluded,
        optimal=allocation.optimal,
        quotes_as_of=as_of,
    )

