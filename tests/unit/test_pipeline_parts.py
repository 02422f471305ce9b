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
    cache.reserve(plan)
    view = cache.books("BTC/USD")["a"]
    assert view.asks == [(Decimal(101), Decimal("1.5"))]
    assert cache.get("a", "BTC/USD").asks[0] == (Decimal(100), Decimal(1))  # the raw book is untouched
    cache.update(make_quote("a", asks=[(100, 1), (101, 2)], ts=2))
    assert cache.books("BTC/USD")["a"].asks[0] == (Decimal(100), Decimal(1))
