"""Books less this worker's reservations: the quote cache's views, and what routing derives
from them without preparing them again. Every derived field must equal a fresh preparation,
down to the exponents of the ``Decimal`` sums (the plans print them)."""

from __future__ import annotations

import random
from dataclasses import fields
from decimal import Decimal

import pytest

from tests.support.oracles import legacy_route
from tests.support.scenarios import make_intent, make_quote
from worker.domain.models import Side, VenueConfig
from worker.routing import book
from worker.routing.book import _prepare, derive_side, forget_prepared_books, prepare_side
from worker.routing.planner import route
from worker.service.quotes import QuoteCache, _less

D = Decimal


def random_levels(rng: random.Random, n: int, side: Side, start: Decimal | None = None) -> list[tuple[Decimal, Decimal]]:
    """Prices and sizes with mixed exponents (``1.5``, ``2.000``, ``0.125``, whole numbers):
    the cases where a sum's exponent depends on which levels it holds."""
    price = start if start is not None else D(rng.randint(30_000, 40_000)) + D(rng.randint(0, 99)) / 100
    levels = []
    for _ in range(n):
        step = D(rng.choice(["0.5", "1", "0.25", "2.125", "3"]))
        price = price + step if side is Side.BUY else price - step
        digits = rng.choice([0, 1, 3, 4, 8])
        size = D(rng.randint(1, 5_000)).scaleb(-digits) + D(rng.choice(["0", "0.10", "1.000"]))
        levels.append((price, size))
    return levels


def taken_prefix(rng: random.Random, levels, qty: Decimal) -> dict[Decimal, Decimal]:
    """What ``QuoteCache.reserve`` takes for a leg of ``qty``: the book walked from the top."""
    taken, left = {}, qty
    for price, size in levels:
        if left <= 0:
            break
        taken[price] = min(size, left)
        left -= taken[price]
    return taken


def same(a, b) -> None:
    for f in fields(book.PreparedSide):
        if f.name in ("quote", "derived"):
            continue
        assert repr(getattr(a, f.name)) == repr(getattr(b, f.name)), f.name


@pytest.mark.parametrize("seed", range(40))
def test_a_side_derived_from_its_unreserved_book_equals_a_fresh_preparation(seed):
    rng = random.Random(seed)
    side = rng.choice(list(Side))
    fee = D(rng.choice(["0", "7.5", "10", "0.125"]))
    levels = random_levels(rng, rng.randint(1, 30), side)
    raw = make_quote("v", asks=levels if side is Side.BUY else [], bids=levels if side is Side.SELL else [], ts=1)
    base = _prepare(raw, side, fee)
    total = sum(q for _, q in levels)
    derived_from = base
    taken: dict[Decimal, Decimal] = {}
    for _ in range(4):  # successive reservations, each derived from the previous view
        qty = (total * D(rng.uniform(0, 0.4))).quantize(D("0.00001"))
        view_levels = _less(raw.side_levels(side), taken)
        for price, q in taken_prefix(rng, view_levels, qty).items():
            taken[price] = taken.get(price, 0) + q
        view_levels = _less(raw.side_levels(side), taken)
        view = raw.model_construct(venue="v", symbol=raw.symbol, ts=1, asks=view_levels if side is Side.BUY else [],
                                   bids=view_levels if side is Side.SELL else [])
        derived = derive_side(derived_from, view, view_levels)
        if not view_levels:
            assert derived is None
            break
        assert derived is not None
        same(derived, _prepare(view, side, fee))
        derived_from = derived


def test_a_book_not_of_the_reserved_shape_is_prepared_afresh():
    levels = [(D(100), D(1)), (D(101), D(2)), (D(102), D(3))]
    raw = make_quote("v", asks=levels, bids=[], ts=1)
    base = _prepare(raw, Side.BUY, D(0))
    middle_taken = [levels[0], (D(101), D(1)), levels[2]]  # a level below the top reduced
    assert derive_side(base, make_quote("v", asks=middle_taken, bids=[], ts=1), middle_taken) is None
    other_objects = [(D(101), D(2)), (D(102), D(3))]  # equal values, not the book's own levels
    assert derive_side(base, make_quote("v", asks=other_objects, bids=[], ts=1), other_objects) is None


def test_the_side_nothing_was_taken_from_is_shared_with_the_raw_book():
    forget_prepared_books()
    venue = VenueConfig(name="v", taker_fee_bps=D(10))
    cache = QuoteCache({"v"})
    cache.update(make_quote("v", asks=[(100, 1), (101, 2)], bids=[(99, 1), (98, 2)], ts=5))
    raw = cache.get("v", "BTC/USD")
    raw_bids = prepare_side(raw, Side.SELL, venue.taker_fee_bps)
    plan = route(make_intent(D("1.5"), side="buy"), cache.books("BTC/USD"), [venue])
    cache.reserve(plan)
    view = cache.books("BTC/USD")["v"]
    assert view is not raw and view.bids is raw.bids and view.asks == [(D(101), D("1.5"))]
    assert prepare_side(view, Side.SELL, venue.taker_fee_bps) is raw_bids
    forget_prepared_books()


@pytest.mark.parametrize("seed", range(12))
def test_plans_on_reserved_books_equal_the_oracle_routers(seed):
    """Intents planned one after the other against the cache's views, as the worker plans
    them: every plan equals the all-Decimal router's on the same views."""
    forget_prepared_books()
    rng = random.Random(100 + seed)
    venues = [VenueConfig(name=n, taker_fee_bps=D(rng.choice(["0", "5", "10"])), step_size=D(rng.choice(["0.001", "0.01", "0.0001"])))
              for n in ("a", "b", "c")]
    cache = QuoteCache({v.name for v in venues})
    for v in venues:
        cache.update(make_quote(v.name, asks=random_levels(rng, 20, Side.BUY, D("40000.5")),
                                bids=random_levels(rng, 20, Side.SELL, D("40000")), ts=7))
    for k in range(15):
        side = rng.choice(["buy", "sell"])
        intent = make_intent(D(str(round(rng.uniform(0.01, 3), 3))), side=side, intent_id=f"i{k}")
        books = cache.books("BTC/USD")
        plan = route(intent, books, venues)
        assert plan == legacy_route(intent, books, venues)
        cache.reserve(plan)
    forget_prepared_books()


@pytest.mark.parametrize("seed", range(8))
def test_the_view_a_reservation_leaves_equals_the_book_less_every_reservation(seed):
    """``reserve`` builds the next view from the current one; it must be exactly the raw book
    less everything held (what the cache computes after a snapshot or a release)."""
    forget_prepared_books()
    rng = random.Random(200 + seed)
    venues = [VenueConfig(name=n, step_size=D("0.0001")) for n in ("a", "b")]
    cache = QuoteCache({"a", "b"})
    for v in venues:
        cache.update(make_quote(v.name, asks=random_levels(rng, 12, Side.BUY, D("40000.5")),
                                bids=random_levels(rng, 12, Side.SELL, D("40000")), ts=7))
    for k in range(20):
        intent = make_intent(D(str(round(rng.uniform(0.01, 2), 4))), side=rng.choice(["buy", "sell"]), intent_id=f"i{k}")
        cache.reserve(route(intent, cache.books("BTC/USD"), venues))
        incremental = cache.books("BTC/USD")
        cache._views.clear()  # what a snapshot or a release makes the cache compute again
        assert {n: (repr(q.bids), repr(q.asks)) for n, q in incremental.items()} == \
            {n: (repr(q.bids), repr(q.asks)) for n, q in cache.books("BTC/USD").items()}
    forget_prepared_books()
