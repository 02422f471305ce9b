"""What the router memoises per snapshot: bounded by the latest snapshot of each venue and
symbol, never by the number of snapshots seen, and never visible in a plan."""

from __future__ import annotations

import gc
import random
from decimal import Decimal

import pytest

from tests.support.oracles import legacy_route
from tests.support.scenarios import make_intent, make_quote, random_market
from worker.bootstrap import prewarm
from worker.domain.models import ExclusionReason, PlanLeg, RoutePlan, Side, VenueConfig
from worker.routing import allocators, book, planner
from worker.routing.allocators import _Lattice, _MergedLevels, _rebalance
from worker.routing.book import forget_prepared_books, floor_units
from worker.routing.planner import route
from worker.routing.ranking import venue_route
from worker.pipeline.codec import encode
from worker.service.quotes import QuoteCache

D = Decimal
VENUES = [VenueConfig(name="a", step_size=D("0.001"), min_notional=D(10)),
          VenueConfig(name="b", taker_fee_bps=D(5), step_size=D("0.0001")),
          VenueConfig(name="c", taker_fee_bps=D("7.5"), step_size=D("0.01"), min_qty=D("0.05"))]
SYMBOLS = ("BTC/USD", "ETH/USD")


def snapshot(rng: random.Random, venue: str, symbol: str, ts: int):
    mid = rng.uniform(40_000, 44_000)
    # Each level at least 0.5 further from the mid than the one before: a price appears once.
    ask_prices = [round(mid + 1 + j * 3 + rng.uniform(0.5, 2.5), 2) for j in range(3)]
    bid_prices = [round(mid - 1 - j * 3 - rng.uniform(0.5, 2.5), 2) for j in range(3)]
    asks = [(p, round(rng.uniform(0.01, 2), 4)) for p in ask_prices]
    bids = [(p, round(rng.uniform(0.01, 2), 4)) for p in bid_prices]
    return make_quote(venue, asks=asks, bids=bids, ts=ts, symbol=symbol)


def memo_sizes() -> dict[str, int]:
    """Entries in every routing memo, the per-snapshot ones included."""
    snapshots = list(book._LATEST.values())
    sides = [p for m in snapshots for p in m.sides.values()]
    return {
        "snapshots": len(snapshots),
        "prepared sides": len(sides),
        "venue entries": sum(len(m.entries) for m in snapshots),
        "derived per side": max((len(p.derived) for p in sides), default=0),
        "markets": len(allocators._MARKETS),
        "line-ups": len(planner._LINEUPS),
    }


def feed(n: int, rng: random.Random, books: dict[str, dict]) -> None:
    """``n`` new snapshots, each prepared on arrival (the worker's prewarm); every other one routed."""
    for k in range(n):
        venue, symbol = VENUES[k % len(VENUES)], SYMBOLS[(k // len(VENUES)) % len(SYMBOLS)]
        quote = snapshot(rng, venue.name, symbol, ts=k)
        books[symbol][venue.name] = quote
        for side in Side:
            venue_route(side, venue, quote)
        if k % 2:
            continue
        side = "buy" if k % 4 else "sell"
        limit = None if k % 3 else (43_000 if side == "buy" else 41_000)
        route(make_intent(D("0.7"), side=side, limit=limit, symbol=symbol), books[symbol], VENUES)


def test_memos_stay_bounded_after_10000_snapshots():
    forget_prepared_books()
    rng = random.Random(5)
    books: dict[str, dict] = {s: {} for s in SYMBOLS}
    feed(1_000, rng, books)
    gc.collect()
    objects_after_1k = len(gc.get_objects())  # every container the memos could keep alive
    feed(9_000, rng, books)
    gc.collect()
    objects_after_10k = len(gc.get_objects())
    sizes = memo_sizes()
    # One memo per venue and symbol; a market and a line-up or two per symbol and side.
    assert sizes["snapshots"] == len(VENUES) * len(SYMBOLS)
    assert sizes["prepared sides"] <= 2 * len(VENUES) * len(SYMBOLS)
    assert sizes["venue entries"] <= 2 * len(VENUES) * len(SYMBOLS)
    assert sizes["derived per side"] <= 4  # the route entry, the book without a limit, one limit depth
    assert sizes["markets"] <= 2 * 2 * len(SYMBOLS)
    assert sizes["line-ups"] <= 2 * 2 * len(SYMBOLS)
    # 9,000 more snapshots leave no more objects behind than the first thousand did (slack:
    # which snapshots and line-ups happen to be the latest when counting).
    assert objects_after_10k - objects_after_1k < 500, (objects_after_1k, objects_after_10k)


def test_memos_forget_the_oldest_venue_and_symbol_pairs(monkeypatch):
    forget_prepared_books()
    monkeypatch.setattr(book, "LATEST_SIZE", 8)
    rng = random.Random(9)
    for n in range(40):  # 40 symbols, one venue each
        symbol = f"S{n}/USD"
        quote = snapshot(rng, "a", symbol, ts=n)
        route(make_intent(D("0.3"), symbol=symbol), {"a": quote}, VENUES[:1])
    assert len(book._LATEST) == 8
    assert {s for s, _ in planner._LINEUPS._groups} <= {s for _, s in book._LATEST}  # the evicted symbols' too
    assert {s for s, _ in allocators._MARKETS._groups} <= {s for _, s in book._LATEST}


def test_a_new_snapshot_replaces_what_was_derived_from_the_old_one():
    forget_prepared_books()
    quotes = {"a": make_quote("a", asks=[(100, 1)]), "b": make_quote("b", asks=[(101, 5)])}
    venues = [VenueConfig(name="a"), VenueConfig(name="b")]
    first = route(make_intent(2), quotes, venues)
    assert {leg.provider: leg.qty for leg in first.legs} == {"a": 1, "b": 1}
    quotes = {**quotes, "a": make_quote("a", asks=[(100, 3)], ts=2_000)}  # a deeper book at "a"
    second = route(make_intent(2), quotes, venues)
    assert {leg.provider: leg.qty for leg in second.legs} == {"a": 2}
    assert second.quotes_as_of == 2_000
    assert len(planner._LINEUPS) == 1 and len(allocators._MARKETS) == 1  # the first line-up is gone


def test_stale_quotes_are_judged_at_each_plans_clock():
    forget_prepared_books()
    rng = random.Random(3)
    venues, quotes = random_market(rng, 4, 5)
    quotes = {name: q.model_copy(update={"ts": 9_000 if name == "venue1" else 10_000}) for name, q in quotes.items()}
    intent = make_intent(D("1.5"))
    for now in (11_500, 12_000, 12_000, 10_500):
        kw = {"now_ms": now, "max_quote_age_ms": 2_000, "unavailable": {"venue3": ExclusionReason.CIRCUIT_OPEN}}
        plan = route(intent, quotes, venues, **kw)
        assert plan.model_dump_json() == legacy_route(intent, quotes, venues, **kw).model_dump_json()
        stale = [e for e in plan.excluded if e.reason is ExclusionReason.STALE]
        if now - 9_000 > 2_000:
            assert [e.detail for e in stale] == [f"quote is {now - 9_000} ms old (max 2000)"]
        else:
            assert not stale


def test_a_quote_dated_in_the_future_is_stale():
    quotes = {"a": make_quote("a", asks=[(100, 1)], ts=20_000), "b": make_quote("b", asks=[(101, 5)], ts=10_000)}
    plan = route(make_intent(2), quotes, [VenueConfig(name="a"), VenueConfig(name="b")], now_ms=10_000, max_quote_age_ms=2_000)
    assert [(e.venue, e.reason) for e in plan.excluded] == [("a", ExclusionReason.STALE)]
    assert [leg.provider for leg in plan.legs] == ["b"]


class LegWithANewField(PlanLeg):
    venue_order_id: str | None = None


def test_a_model_field_the_router_does_not_set_gets_its_default():
    # As if PlanLeg gained a field before the planner learnt to set it: the leg is still complete.
    values = {"provider": "a", "qty": D(1), "estimated_price": D(1), "estimated_fee": D(0), "estimated_notional": D(1),
              "bid_price": None, "ask_price": D(1), "worst_price": D(1), "levels": 1}
    leg = planner._model(LegWithANewField, planner._LEG_FIELDS, values)
    assert list(leg.__dict__) == list(LegWithANewField.model_fields) and leg.venue_order_id is None
    assert leg.model_dump_json() == LegWithANewField(**values).model_dump_json()


@pytest.mark.parametrize("seed", range(6))
def test_root_bisection_is_the_walk_from_the_top(seed):
    rng = random.Random(seed)
    side = "buy" if seed % 2 == 0 else "sell"
    venues, quotes = random_market(rng, 8, 30, side=side, aligned=seed % 3 != 0)
    intent = make_intent(1, side=side)
    lineup = planner._lineup(intent, quotes, venues, None, None, {})
    books = lineup.market.lots
    n = len(books)
    shared = _MergedLevels(books)
    depth = sum(b.max_qty for b in books)
    for target in sorted({1, 2, depth // 7, depth // 3, depth - 1, depth, depth + 5, *(rng.randrange(1, depth) for _ in range(20))}):
        walked = _rebalance(books, _MergedLevels(books), [0] * n, [0] * n, [b.max_qty for b in books], 0, 0, target, 0)
        for levels in (_MergedLevels(books), shared):  # merged from scratch, or already further
            found = levels.root(target)
            assert (found.fill, found.cost, found.x, found.stop) == (walked.fill, walked.cost, walked.x, walked.stop)


def test_the_plans_models_are_complete_and_in_declaration_order():
    rng = random.Random(1)
    venues, quotes = random_market(rng, 6, 20)
    plan = route(make_intent(D("3.21")), quotes, venues)
    assert list(plan.__dict__) == list(RoutePlan.model_fields)
    assert plan.model_fields_set == set(RoutePlan.model_fields)
    for leg in plan.legs:
        assert list(leg.__dict__) == list(PlanLeg.model_fields)
        assert leg.model_fields_set == set(PlanLeg.model_fields)
    again = RoutePlan.model_validate_json(plan.model_dump_json())
    assert again == plan and again.model_dump_json() == plan.model_dump_json()


def test_floor_units_floors_both_signs():
    assert floor_units(D("1.239"), 2) == 123
    assert floor_units(D("-1.231"), 2) == -124
    assert floor_units(D("5E+3"), 2) == 500_000


def test_the_lattice_of_the_root_is_every_step():
    steps = [6, 10, 15]
    books = [allocators.Lots((0, 100), (1,), (0, 100), s, s, 90, 1) for s in steps]
    assert _Lattice(books, 97).target([90, 90, 90]) == 97
    assert _Lattice(books, 97, units=[6, 10, 15]).target([90, 0, 90]) == 96  # gcd(6, 15) = 3


def test_line_ups_of_symbols_nobody_quotes_are_not_kept_forever():
    """An intent for a symbol without any snapshot (a typo, a delisted pair, a hostile
    producer) is routed on an empty book set, as IntentService._route does. Its line-up is
    memoised under its symbol, but only a replaced snapshot of that symbol forgets it, and
    none ever comes: every new symbol leaves one more line-up behind, with no limit."""
    forget_prepared_books()
    venues = [VenueConfig(name=n) for n in ("a", "b", "c")]
    cache = QuoteCache({v.name for v in venues})
    cache.update(make_quote("a", asks=[(100, 1)], bids=[(99, 1)], ts=5))
    prewarm({v.name: v for v in venues}, cache.get("a", "BTC/USD"))  # what the quote feed does
    for n in range(3_000):
        symbol = f"NOPE{n}/USD"
        books = cache.books(symbol)
        assert books == {}
        plan = route(make_intent(1, symbol=symbol, intent_id=f"i{n}"), books, venues)
        assert not plan.legs
    assert len(planner._LINEUPS) < 100, len(planner._LINEUPS)  # 3,000: one per symbol
    # The memo's own contract: only values derived from the latest snapshots are kept.
    assert {s for s, _ in planner._LINEUPS._groups} <= {s for _, s in book._LATEST}
    forget_prepared_books()


def _plan_after(first: VenueConfig, second: VenueConfig) -> tuple[bytes, bytes]:
    """The plan of ``second`` on a book just routed with ``first``, and on the same book routed
    afresh. ``route`` is documented as pure: both must be the same bytes."""
    quote = make_quote("a", asks=[(100, "1.5"), (101, 2)], bids=[(99, 1)], ts=5)
    intent = make_intent("1.7")
    forget_prepared_books()
    route(intent, {"a": quote}, [first])
    after = encode(route(intent, {"a": quote}, [second]))
    forget_prepared_books()
    fresh = encode(route(intent, {"a": quote}, [second]))
    forget_prepared_books()
    return after, fresh


def test_a_ranking_entry_is_not_shared_with_a_venue_whose_fees_are_written_differently():
    """ranking._ROUTE_ENTRIES keys the fees by Decimal equality (10 == 10.0): the entry made for
    the first configuration is reused for the second and prints its fee as the first wrote it."""
    after, fresh = _plan_after(VenueConfig(name="a", taker_fee_bps=D("10")), VenueConfig(name="a", taker_fee_bps=D("10.0")))
    assert after == fresh


def test_a_book_is_not_shared_with_a_venue_whose_step_is_written_differently():
    """SideBook.of keys the venue's rules by Decimal equality (0.01 == 0.010): the book built for
    the first configuration is reused, and the legs take the exponent of *its* step_size."""
    after, fresh = _plan_after(VenueConfig(name="a", step_size=D("0.01")), VenueConfig(name="a", step_size=D("0.010")))
    assert after == fresh
