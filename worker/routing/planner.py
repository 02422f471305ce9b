"""``route(intent, books, venues) -> RoutePlan``: the pure heart of the router.

No clock, no randomness, no I/O: the same inputs always give the same plan (``plan_id``
included), which is what makes replays and crash recovery reproducible.
"""

from __future__ import annotations

import decimal
from bisect import bisect_left, bisect_right
from decimal import Decimal
from operator import itemgetter
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
from worker.domain.money import BPS, PRICE_QUANTUM, ZERO, average_price
from worker.routing.allocators import _MARKETS, DEFAULT_NODE_LIMIT, Allocation, allocate_best, allocate_sor, allocate_split, market
from worker.routing.book import (
    MAX_ROUTING_DIGITS,
    ROUTING_CONTEXT,
    _MEMO,
    BookState,
    SideBook,
    floor_units,
    routing_context,
)
from worker.routing.ranking import _VENUES, BPS_QUANTUM, venue_entry

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
) -> tuple[list[SideBook], list[tuple[tuple, VenueRoute]], list[Exclusion], list[SideBook]]:
    allowed = set(intent.venues) if intent.venues is not None else None
    side, limit, symbol = intent.side, intent.limit_price, intent.symbol
    limit_key = None if limit is None else (limit if side is Side.BUY else limit.copy_negate())
    check_age = now_ms is not None and max_quote_age_ms is not None
    is_buy = side is Side.BUY
    eligible: list[SideBook] = []
    quoted: list[SideBook] = []  # every venue with a usable quote: the single-venue benchmarks
    routes: list[tuple[tuple, VenueRoute]] = []  # (ranking key, entry)
    excluded: list[Exclusion] = []
    for venue in venues:
        name = venue.name
        if allowed is not None and name not in allowed:
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NOT_ALLOWED, detail="not in the intent's venues"))
            continue
        if name in unavailable:
            excluded.append(trusted(Exclusion, venue=name, reason=unavailable[name]))
            continue
        quote = books.get(name)
        if quote is None or quote.symbol != symbol:
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NO_QUOTE, detail=f"no book for {symbol}"))
            continue
        # A quote dated in the future is as untrustworthy as an old one: |age| is what counts.
        if check_age and abs(now_ms - quote.ts) > max_quote_age_ms:  # type: ignore[operator]
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.STALE,
                                    detail=f"quote is {now_ms - quote.ts} ms old (max {max_quote_age_ms})"))  # type: ignore[operator]
            continue
        memo = _VENUES.get((id(quote), id(venue), is_buy))
        if memo is None or memo[0] is not quote or memo[1] is not venue:
            memo = venue_entry(quote, venue, side)
        entry = memo[3]
        if entry is None:
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT,
                                    detail=f"no {'asks' if is_buy else 'bids'}"))
            continue
        routes.append((memo[4], entry))
        book = memo[5] if limit_key is None else SideBook.of(venue, memo[2], bisect_right(memo[2].keys, limit_key))
        state = book.state
        if state is BookState.USABLE:
            quoted.append(book)
            eligible.append(book)
        elif state is BookState.UNROUTABLE:
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT,
                                    detail=f"book or rules need more than {MAX_ROUTING_DIGITS} digits"))
        elif state is BookState.EMPTY:
            quoted.append(book)
            excluded.append(trusted(Exclusion, venue=name, reason=ExclusionReason.NO_LIQUIDITY_WITHIN_LIMIT, detail=f"no level within limit {limit}"))
        else:
            quoted.append(book)
            excluded.append(
                trusted(Exclusion,
                    venue=name,
                    reason=ExclusionReason.BELOW_MINIMUM,
                    detail=f"depth {book.max_qty} within limit is below min_qty {venue.min_qty} / min_notional {venue.min_notional}",
                )
            )
    return eligible, routes, excluded, quoted


def forget_prepared_books() -> None:
    """Drop every memoised prepared book, venue entry and integer market: the next plans
    prepare their books again, as the first intent after a snapshot does (benchmarks)."""
    _VENUES.clear()
    _MEMO.clear()
    _MARKETS.clear()


def _savings_bps(side: Side, reference: Decimal, net: Decimal) -> Decimal | None:
    if reference == 0:  # a sell whose fee takes everything: no ratio to report
        return None
    return (side.sign * (reference - net) / reference * BPS).quantize(BPS_QUANTUM)


def allocate(algorithm: Algorithm, ranked: Sequence[SideBook], routes: Sequence[VenueRoute], side: Side, qty: Decimal,
             node_limit: int = DEFAULT_NODE_LIMIT) -> Allocation:
    """Dispatch to the allocator the intent asked for."""
    if algorithm is Algorithm.BEST:
        return allocate_best(ranked, qty)
    if algorithm is Algorithm.SPLIT:
        return allocate_split(ranked, routes, side, qty)
    return allocate_sor(ranked, qty, node_limit)


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
    node_limit: int = DEFAULT_NODE_LIMIT,
) -> RoutePlan:
    """Build the split plan of ``intent`` over the venues' books.

    ``books`` maps venue name to its latest quote for the intent's symbol. Quotes older than
    ``max_quote_age_ms`` at ``now_ms`` are excluded as stale (both ``None``: no check). ``qty``
    overrides the intent's quantity for a re-route of a remainder; ``unavailable`` names venues
    the caller has ruled out (an open circuit breaker, a venue that already failed this intent).
    ``node_limit`` bounds the ``sor`` branch and bound; past it the plan carries the best
    allocation found and says ``optimal: false``.

    The result does not depend on the caller's decimal context: every computation runs in
    :data:`~worker.routing.book.ROUTING_CONTEXT` (60 digits), widened only for a plan whose
    exact sums need more, so extreme but valid numbers never raise.
    """
    chosen = intent.algorithm if algorithm is None else Algorithm(algorithm)
    with decimal.localcontext(ROUTING_CONTEXT):
        total = intent.qty if qty is None else qty
        eligible, ranked, excluded, quoted = _eligible_books(intent, books, venues, now_ms, max_quote_age_ms, unavailable or {})
        ctx = routing_context(_digits_needed(total, quoted))
        if ctx is ROUTING_CONTEXT:
            return _plan(intent, total, eligible, ranked, excluded, quoted, round_no, chosen, node_limit)
    with decimal.localcontext(ctx):
        return _plan(intent, total, eligible, ranked, excluded, quoted, round_no, chosen, node_limit)


def _digits_needed(total: Decimal, quoted: Sequence[SideBook]) -> int:
    """Significant digits that hold this plan's sums exactly (see ``PreparedSide.digits``)."""
    if not quoted:
        return 0
    book_digits = max(b.prep.digits + b.step_digits for b in quoted)
    return book_digits + max(0, total.adjusted() + 1) + 10


def _plan(intent: OrderIntent, total: Decimal, eligible: list[SideBook], ranked: list[tuple[tuple, VenueRoute]],
          excluded: list[Exclusion], quoted: list[SideBook], round_no: int, algorithm: Algorithm, node_limit: int) -> RoutePlan:
    side = intent.side
    sign = side.sign
    ranked.sort(key=itemgetter(0))  # best first: lowest score for buys, highest for sells; ties by name
    routes = [entry for _, entry in ranked]
    if len(eligible) > 1:
        order = {r.provider: i for i, r in enumerate(routes)}
        eligible.sort(key=lambda b: order[b.name])
    mk = market(quoted, eligible) if quoted else None
    if algorithm is Algorithm.SOR:
        allocation = allocate_sor(eligible, total, node_limit, quoted)
    else:
        allocation = allocate(algorithm, eligible, routes, side, total, node_limit)

    by_name = {r.provider: r for r in routes}
    legs: list[PlanLeg] = []
    notional_sum = fees = planned = ZERO
    for book in eligible:
        leg_qty = allocation.qty.get(book.name, ZERO)
        if leg_qty <= 0:
            continue
        leg_qty = leg_qty.quantize(book.venue.step_size)  # venue precision; exact, it is on the step
        prep = book.prep
        touched = bisect_left(prep.cum_qty, leg_qty)  # levels touched; the last holds the leg's last unit
        last = touched - 1
        notional = prep.cum_notional[last] + (leg_qty - prep.cum_qty[last]) * prep.prices[last]
        fee = notional * prep.fee_rate
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
                worst_price=prep.prices[last],
                levels=touched,
            )
        )
        notional_sum += notional
        fees += fee
        planned += leg_qty

    vwap = net = savings_worst = savings_best = best_net = worst_net = None
    if planned > 0:
        vwap = average_price(notional_sum, planned)
        net = average_price(notional_sum + sign * fees, planned)
        # Single-venue benchmarks: the same quantity sent whole to one venue, walking its
        # whole visible book (the seed compares against the worst venue). The same quantity
        # everywhere: the signed costs rank the venues, and only two averages are divided out.
        worst_book = best_book = None
        lots = floor_units(planned, mk.q_digits)  # exact: every leg is on a step of this grid
        worst_cost = best_cost = 0
        for b, view in zip(quoted, mk.quoted_lots):
            cum = view.cum
            if 0 < lots <= cum[-1]:
                j = bisect_left(cum, lots) - 1  # Lots.signed_cost, inlined: ten books per plan
                cost = view.costs[j] + (lots - cum[j]) * view.rates[j]
                if worst_book is None or cost > worst_cost:
                    worst_book, worst_cost = b, cost
                if best_book is None or cost < best_cost:
                    best_book, best_cost = b, cost
        if worst_book is not None:
            worst, best = worst_book.net_vwap(planned), best_book.net_vwap(planned)
            savings_worst = _savings_bps(side, worst, net)
            savings_best = _savings_bps(side, best, net)
            best_net, worst_net = best.quantize(PRICE_QUANTUM).normalize(), worst.quantize(PRICE_QUANTUM).normalize()

    as_of = max((b.prep.quote.ts for b in eligible), default=None)
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
        best_single_venue_net=best_net,
        worst_single_venue_net=worst_net,
        routes=routes,
        excluded=excluded,
        optimal=allocation.optimal,
        quotes_as_of=as_of,
    )

