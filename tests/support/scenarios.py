"""Random books, venues and intents for property tests and benchmarks."""

from __future__ import annotations

import random
from decimal import Decimal

from hypothesis import strategies as st

from worker.domain.models import Algorithm, OrderIntent, OrderType, Side, TimeInForce, VenueConfig, VenueQuote
from tests.support.oracles import Venue

D = Decimal


def make_intent(qty, side="buy", limit=None, algorithm="sor", tif="IOC", intent_id="t-1", symbol="BTC/USD", **extra) -> OrderIntent:
    return OrderIntent(
        intent_id=intent_id, account_id="acct", symbol=symbol, side=side,
        type="limit" if limit is not None else "market", qty=D(str(qty)),
        limit_price=None if limit is None else D(str(limit)), time_in_force=tif, algorithm=algorithm, **extra,
    )


def make_quote(venue: str, asks=(), bids=(), ts: int = 1_000, symbol: str = "BTC/USD") -> VenueQuote:
    return VenueQuote(venue=venue, symbol=symbol, ts=ts,
                      asks=[(D(str(p)), D(str(q))) for p, q in asks], bids=[(D(str(p)), D(str(q))) for p, q in bids])


def unchecked(model, **fields):
    """A model built WITHOUT validation: what the domain's bounds refuse at the edge (qty 1e70, a
    crossed book, a 10,000 bps fee). The routing core must still never raise on it: defence in depth."""
    return model.model_construct(**fields)


def unchecked_intent(qty, side="buy", algorithm="sor") -> OrderIntent:
    return unchecked(OrderIntent, intent_id="t-1", account_id="acct", symbol="BTC/USD", side=Side(side),
                     type=OrderType.MARKET, qty=D(str(qty)), limit_price=None, time_in_force=TimeInForce.IOC,
                     algorithm=Algorithm(algorithm), created_at=None, expires_at=None, venues=None, dry_run=False)


def unchecked_quote(venue: str, asks=(), bids=(), ts: int = 1_000) -> VenueQuote:
    return unchecked(VenueQuote, venue=venue, symbol="BTC/USD", ts=ts,
                     asks=[(D(str(p)), D(str(q))) for p, q in asks], bids=[(D(str(p)), D(str(q))) for p, q in bids])


def unchecked_venue(name: str, **rules) -> VenueConfig:
    return unchecked(VenueConfig, **{**VenueConfig(name=name).model_dump(), **rules})


def oracle_venues(intent: OrderIntent, venues: list[VenueConfig], quotes: dict[str, VenueQuote]) -> list[Venue]:
    """The same books, cut at the limit by hand, for the independent solvers."""
    out = []
    for v in venues:
        q = quotes.get(v.name)
        if q is None:
            continue
        levels = q.asks if intent.side.value == "buy" else q.bids
        if intent.limit_price is not None:
            lim = intent.limit_price
            levels = [(p, s) for p, s in levels if (p <= lim if intent.side.value == "buy" else p >= lim)]
        if levels:
            out.append(Venue(list(levels), v.taker_fee_bps, v.step_size, v.min_qty, v.min_notional))
    return out


@st.composite
def small_scenarios(draw, max_venues: int = 3, max_levels: int = 3):
    """Tiny books on coarse steps, so brute force can enumerate every combination."""
    side = draw(st.sampled_from(["buy", "sell"]))
    n = draw(st.integers(1, max_venues))
    venues, quotes = [], {}
    for i in range(n):
        name = f"v{i}"
        step = draw(st.sampled_from([D("0.25"), D("0.5"), D("1"), D("0.2")]))
        venues.append(VenueConfig(
            name=name, taker_fee_bps=D(draw(st.integers(0, 40))), step_size=step,
            min_qty=draw(st.sampled_from([D(0), D("0.5"), D(1)])),
            min_notional=draw(st.sampled_from([D(0), D(60), D(150), D(250)])),
        ))
        k = draw(st.integers(1, max_levels))
        prices = sorted(draw(st.lists(st.integers(90, 110), min_size=k, max_size=k, unique=True)))
        sizes = [D(draw(st.integers(1, 12))) / 4 for _ in range(k)]
        if side == "buy":
            quotes[name] = make_quote(name, asks=list(zip(prices, sizes)))
        else:
            quotes[name] = make_quote(name, bids=list(zip(reversed(prices), sizes)))
    qty = D(draw(st.integers(1, 40))) / 4
    limit = draw(st.sampled_from([None, 100, 104, 96]))
    return make_intent(qty, side=side, limit=limit), venues, quotes


def random_market(rng: random.Random, n_venues: int = 10, n_levels: int = 50, side: str = "buy",
                  aligned: bool = True, mid: float = 42_000.0, symbol: str = "BTC/USD"):
    """Realistic-looking books: ~1 bp tick, growing sizes, venue-specific steps and minimums.

    With ``aligned`` every level's size is on its venue's step, as on a real exchange.
    """
    venues, quotes = [], {}
    steps = [D("0.00001"), D("0.0001"), D("0.001"), D("0.00000001")]
    for i in range(n_venues):
        name = f"venue{i}"
        step = rng.choice(steps)
        venues.append(VenueConfig(
            name=name, taker_fee_bps=D(rng.choice([0, 2, 5, 7.5, 10, 15, 20, 25])), step_size=step,
            min_qty=step * rng.choice([1, 10, 100]), min_notional=D(rng.choice([0, 5, 10, 100, 1000, 5000])),
        ))
        offset = rng.uniform(-3, 3)  # venues disagree by a few bps
        levels = []
        price = mid * (1 + offset / 1e4)
        for j in range(n_levels):
            price += mid * rng.uniform(0.2, 2) / 1e4
            size = D(str(round(rng.uniform(0.001, 0.3) * (1 + j / 5), 8)))
            if aligned:
                size = max(step, (size // step) * step)
            levels.append((D(f"{price:.2f}"), size))
        if side == "buy":
            quotes[name] = make_quote(name, asks=levels, symbol=symbol)
        else:
            quotes[name] = make_quote(name, bids=[(D(f"{2 * mid - float(p):.2f}"), s) for p, s in levels], symbol=symbol)
    return venues, quotes
