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


def test_a_view_keeps_the_raw_levels_nothing_was_taken_from_so_it_is_derived():
    """A reservation made on an older snapshot may hold a price the new one no longer has: the
    view must still be the raw levels themselves past what was taken, or routing prepares it
    from scratch instead of deriving it."""
    levels = [(D(100), D(1)), (D(101), D(2)), (D(102), D(3))]
    raw = make_quote("v", asks=levels, bids=[], ts=7)
    taken = {D(99): D(1), D(100): D("0.5")}  # 99: a level of an older snapshot, gone from this one
    view = _less(raw.asks, taken)
    assert view == [(D(100), D("0.5")), (D(101), D(2)), (D(102), D(3))]
    assert view[1] is raw.asks[1] and view[2] is raw.asks[2]
    view_quote = make_quote("v", asks=view, bids=[], ts=7)
    derived = derive_side(_prepare(raw, Side.BUY, D(0)), view_quote, view)
    assert derived is not None
    same(derived, _prepare(view_quote, Side.BUY, D(0)))


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


def test_views_of_sizes_with_36_significant_digits_are_exact():
    """Sizes up to 1e18 with 18 places (the input bounds) have 36 digits: a view less a
    reservation of 1e-18 must be exact, not rounded in Python's 28-digit default context
    (which could show liquidity that does not exist), whether built by reserve() or again."""
    forget_prepared_books()
    size = D("123456789012345678.123456789012345678")
    cache = QuoteCache({"a"})
    cache.update(make_quote("a", asks=[(1, size)], bids=[], ts=5))
    venue = VenueConfig(name="a", step_size=D("0.000000000000000001"))
    for qty in ("0.000000000000000001", "0.000000000000000003"):
        cache.reserve(route(make_intent(qty, intent_id=qty), cache.books("BTC/USD"), [venue]))
    exact = D("123456789012345678.123456789012345674")  # a literal: this test's context rounds too
    assert cache.books("BTC/USD")["a"].asks == [(D(1), exact)]
    cache._views.clear()
    assert cache.books("BTC/USD")["a"].asks == [(D(1), exact)]
    forget_prepared_books()


def _fresh(quote):
    """The same book made of new objects: nothing routing memoised can match it."""
    copy = lambda levels: [(D(str(p)), D(str(q))) for p, q in levels]  # noqa: E731
    return quote.model_construct(venue=quote.venue, symbol=quote.symbol, ts=quote.ts, bids=copy(quote.bids), asks=copy(quote.asks))


def _plans_of_a_random_session(seed: int, reference: bool) -> list[bytes]:
    """Reserve, release, settle and new snapshots (newer, of the same timestamp, sharing level
    objects with the previous one), and plans of every algorithm in between."""
    from worker.pipeline.codec import encode

    rng = random.Random(seed)
    forget_prepared_books()
    venues = [VenueConfig(name=n, taker_fee_bps=D(rng.choice(["0", "5", "7.5", "10"])),
                          step_size=D(rng.choice(["0.001", "0.01", "0.0001", "0.00000001", "1"])),
                          min_qty=D(rng.choice(["0", "0.01"]))) for n in "abc"]
    cache = QuoteCache({v.name for v in venues}, max_levels=rng.choice([None, 8]))
    ts = {v.name: 7 for v in venues}
    for v in venues:
        cache.update(make_quote(v.name, asks=random_levels(rng, rng.randint(1, 12), Side.BUY, D("40000.5")),
                                bids=random_levels(rng, rng.randint(1, 12), Side.SELL, D("40000")), ts=7))
    held, plans = [], []
    for k in range(40):
        op = rng.random()
        if op < 0.15:
            name = rng.choice(venues).name
            raw = cache.get(name, "BTC/USD")
            if rng.random() < 0.5:
                ts[name] += rng.choice([0, 0, 1])
                quote = make_quote(name, asks=random_levels(rng, rng.randint(0, 12), Side.BUY, D("40000.5")),
                                   bids=random_levels(rng, rng.randint(0, 12), Side.SELL, D("40000")), ts=ts[name])
            else:  # a snapshot of the same timestamp sharing level objects with the previous one
                quote = raw.model_construct(venue=name, symbol="BTC/USD", ts=ts[name], asks=raw.asks[rng.randint(0, 2):], bids=raw.bids)
            cache.update(quote)
        elif op < 0.25 and held:
            taken = held.pop(rng.randrange(len(held)))
            if rng.random() < 0.5:
                cache.release(taken)
            else:
                cache.settle(taken, max(ts.values()) + rng.choice([-1, 0]))
        side = rng.choice(["buy", "sell"])
        intent = make_intent(D(str(round(rng.uniform(0.01, 5), 3))), side=side, algorithm=rng.choice(["sor", "split", "best"]),
                             intent_id=f"i{k}", limit=None if rng.random() < 0.7 else ("40004" if side == "buy" else "39996"))
        books = cache.books("BTC/USD")
        for name, view in books.items():  # every view is its book less everything held
            raw, taken = cache.get(name, "BTC/USD"), cache._taken.get((name, "BTC/USD"), {})
            assert (repr(view.bids), repr(view.asks)) == (repr(_less(raw.bids, taken.get(Side.SELL))), repr(_less(raw.asks, taken.get(Side.BUY))))
        if reference:
            forget_prepared_books()
            books = {name: _fresh(q) for name, q in books.items()}
        plan = route(intent, books, venues)
        plans.append(encode(plan))
        if rng.random() < 0.8:
            held.append(cache.reserve(plan))
    forget_prepared_books()
    return plans


@pytest.mark.parametrize("seed", range(12))
def test_plans_in_a_session_of_reservations_equal_plans_on_books_prepared_afresh(seed):
    assert _plans_of_a_random_session(seed, reference=False) == _plans_of_a_random_session(seed, reference=True)


def test_a_views_ranking_entry_is_its_books_while_its_top_prices_are_the_books():
    from worker.routing.ranking import venue_route

    forget_prepared_books()
    venue = VenueConfig(name="v", taker_fee_bps=D(10), step_size=D("0.1"))
    cache = QuoteCache({"v"})
    cache.update(make_quote("v", asks=[(100, 1), (101, 2)], bids=[(99, 1), (98, 2)], ts=5))
    raw = cache.get("v", "BTC/USD")
    before = {side: venue_route(side, venue, raw) for side in Side}
    cache.reserve(route(make_intent("0.5", side="buy"), cache.books("BTC/USD"), [venue]))  # the top ask partly taken
    view = cache.books("BTC/USD")["v"]
    assert all(venue_route(side, venue, view) is before[side] for side in Side)
    cache.reserve(route(make_intent("0.5", side="buy", intent_id="t-2"), cache.books("BTC/USD"), [venue]))  # the rest of it
    emptied = cache.books("BTC/USD")["v"]
    after = {side: venue_route(side, venue, emptied) for side in Side}
    assert after[Side.BUY].ask_price == D(101) and after[Side.SELL].ask_price == D(101)
    assert after[Side.BUY] is not before[Side.BUY]
    forget_prepared_books()


@pytest.mark.parametrize("seed", range(40))
def test_a_side_whose_top_levels_are_gone_whole_is_derived_at_a_fresh_sums_exponents(seed):
    """Levels removed whole (a snapshot sharing the rest of its book's level objects): a fresh
    sum has the exponents of the levels left only, finer ones of the removed levels must not
    show (``Decimal('3.000')``, not ``Decimal('3.00000000')``)."""
    rng = random.Random(1000 + seed)
    side = rng.choice(list(Side))
    fee = D(rng.choice(["0", "7.5", "0.125"]))
    levels = random_levels(rng, rng.randint(2, 20), side)
    raw = make_quote("v", asks=levels if side is Side.BUY else [], bids=levels if side is Side.SELL else [], ts=1)
    base = _prepare(raw, side, fee)
    cut = rng.randint(1, len(levels) - 1)
    rest = raw.side_levels(side)[cut:]
    view = raw.model_construct(venue="v", symbol=raw.symbol, ts=1, asks=rest if side is Side.BUY else [],
                               bids=rest if side is Side.SELL else [])
    same(derive_side(base, view, rest), _prepare(view, side, fee))
