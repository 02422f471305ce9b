"""The edge's small pure parts: the commit rule and the quote cache."""

from decimal import Decimal

from hypothesis import given, strategies as st

from tests.support.scenarios import make_intent, make_quote
from worker.domain.models import VenueConfig
from worker.pipeline.offsets import OffsetTracker
from worker.service.quotes import QuoteCache
from worker.routing.planner import route


def test_only_the_contiguous_finished_prefix_is_committable():
    t = OffsetTracker()
    for off in (10, 11, 12, 13):
        t.begin("p0", off)
    t.finish("p0", 11)
    t.finish("p0", 13)
    assert t.committable() == {}  # 10 still running
    t.finish("p0", 10)
    assert t.committable() == {"p0": 12}  # 10 and 11 done, 12 not
    t.finish("p0", 12)
    assert t.committable() == {"p0": 14}
    assert t.in_flight() == 0


@given(st.permutations(list(range(20))), st.integers(0, 20))
def test_commit_never_passes_an_unfinished_offset(order, stop_after):
    t = OffsetTracker()
    for off in range(20):
        t.begin("p", off)
    finished = set(order[:stop_after])
    for off in order[:stop_after]:
        t.finish("p", off)
    committed = t.committable().get("p", 0)
    assert all(off in finished for off in range(committed))
    assert committed == 20 or committed not in finished


def test_an_older_snapshot_never_replaces_a_newer_one():
    cache = QuoteCache()
    assert cache.update(make_quote("a", asks=[(100, 1)], ts=2_000))
    assert not cache.update(make_quote("a", asks=[(1, 1)], ts=1_000))
    assert cache.get("a", "BTC/USD").asks[0][0] == 100


def test_reservations_hide_our_own_takes_until_the_next_snapshot():
    cache = QuoteCache()
    cache.update(make_quote("a", asks=[(100, 1), (101, 2)], ts=1))
    venues = [VenueConfig(name="a")]
    plan = route(make_intent("1.5"), cache.books("BTC/USD"), venues)
    held = cache.reserve(plan)
    view = cache.books("BTC/USD")["a"]
    assert view.asks == [(Decimal(101), Decimal("1.5"))]
    assert cache.get("a", "BTC/USD").asks[0] == (Decimal(100), Decimal(1))  # the raw book is untouched
    cache.settle(held, acknowledged_ms=1)  # the venue answered: a snapshot after that is the truth
    cache.update(make_quote("a", asks=[(100, 1), (101, 2)], ts=2))
    assert cache.books("BTC/USD")["a"].asks[0] == (Decimal(100), Decimal(1))


def test_reserved_liquidity_is_released_only_by_a_snapshot_newer_than_the_fill():
    """Reproduction (issue 10): any new snapshot used to release a reservation, including
    one published before our fill, which still shows the liquidity we took."""
    from tests.support.scenarios import make_quote as quote

    cache = QuoteCache()
    cache.update(quote("a", asks=[(100, 1), (101, 1)], ts=1_000))
    plan = route(make_intent("1"), cache.books("BTC/USD"), [VenueConfig(name="a")])
    held = cache.reserve(plan)
    assert cache.books("BTC/USD")["a"].asks == [(Decimal(101), Decimal(1))]
    cache.settle(held, acknowledged_ms=2_000)
    cache.update(quote("a", asks=[(100, 1), (101, 1)], ts=1_500))  # in flight while we filled
    assert cache.books("BTC/USD")["a"].asks == [(Decimal(101), Decimal(1))]
    cache.update(quote("a", asks=[(100, 3), (101, 1)], ts=2_001))  # after our fill: the venue's truth
    assert cache.books("BTC/USD")["a"].asks == [(Decimal(100), Decimal(3)), (Decimal(101), Decimal(1))]


def test_an_unplaced_reservation_is_released_at_once():
    cache = QuoteCache()
    cache.update(make_quote("a", asks=[(100, 1)], ts=1_000))
    plan = route(make_intent("1"), cache.books("BTC/USD"), [VenueConfig(name="a")])
    cache.release(cache.reserve(plan))
    assert cache.books("BTC/USD")["a"].asks == [(Decimal(100), Decimal(1))]


def test_a_plan_built_by_the_router_encodes_like_its_decoded_copy():
    """Reproduction (kill loop): plans republished from the journal differed from the first
    copy in field order, because the router's unvalidated models kept the caller's order."""
    from worker.domain.models import RoutePlan
    from worker.pipeline.codec import encode

    books = {"a": make_quote("a", asks=[(100, 1), (101, 5)], bids=[(99, 1)], ts=1), "b": make_quote("b", asks=[(100.5, 2)], ts=1)}
    plan = route(make_intent("1.5"), books, [VenueConfig(name="a"), VenueConfig(name="b")])
    assert encode(RoutePlan.model_validate_json(encode(plan))) == encode(plan)


def test_the_market_simulator_publishes_only_books_the_domain_accepts():
    """Cheap symbols: two levels one cent apart used to round to one price (a duplicate level,
    refused, every quote of the bench's ETH and SOL books dead-lettered)."""
    from worker.domain.models import VenueQuote
    from worker.pipeline.codec import decode, encode
    from worker.sim.market import MarketSimulator
    from worker.sim.venues import DEMO_VENUES

    for seed, (symbol, mid) in enumerate({"BTC/USD": 42_000.0, "ETH/USD": 3_000.0, "SOL/USD": 150.0, "X/USD": 0.5}.items()):
        sim = MarketSimulator(DEMO_VENUES, symbol, mid, seed=seed)
        for _ in range(100):
            sim.step()
            for venue in DEMO_VENUES:
                quote = decode(VenueQuote, encode(sim.snapshot(venue, 1)))  # raises on a refused book
                assert quote.bids[0][0] < quote.asks[0][0]
