"""A venue's book side prepared for routing: prefix sums and lot rules in one place.

Everything here is exact ``Decimal`` arithmetic; walking a book is O(log levels) thanks to
the cumulative quantity and notional arrays.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal

from worker.domain.models import Side, VenueConfig, VenueQuote
from worker.domain.money import BPS, ZERO, ceil_to_step, floor_to_step



@dataclass(frozen=True, slots=True)
class PreparedSide:
    """Prefix sums and fee-adjusted rates of one side of one quote: computed once per quote."""

    quote: VenueQuote  # held so the id() in the memo key cannot be recycled while cached
    side: Side
    keys: tuple[Decimal, ...]  # sign * price: ascending on both sides, for bisecting the limit
    prices: tuple[Decimal, ...]
    cum_qty: tuple[Decimal, ...]  # cum_qty[j] = quantity of the levels before j
    cum_notional: tuple[Decimal, ...]
    rates: tuple[Decimal, ...]
    fee_rate: Decimal
    factor: Decimal  # sign * (1 +/- fee): rates[j] == factor * prices[j]
    derived: dict = field(default_factory=dict, compare=False)  # per-venue values of this quote, memoised


_MEMO: OrderedDict[tuple[int, Side, Decimal], PreparedSide] = OrderedDict()
_MEMO_SIZE = 8192


def prepare_side(quote: VenueQuote, side: Side, taker_fee_bps: Decimal) -> PreparedSide:
    """The prepared side of ``quote``, memoised: the worker routes many intents per quote."""
    key = (id(quote), side, taker_fee_bps)
    hit = _MEMO.get(key)
    if hit is not None and hit.quote is quote:
        return hit
    sign = side.sign
    fee_rate = taker_fee_bps / BPS
    factor = sign * ((1 + fee_rate) if side is Side.BUY else (1 - fee_rate))
    prices, keys, rates, cum_q, cum_n = [], [], [], [ZERO], [ZERO]
    q_total = n_total = ZERO
    for price, qty in quote.side_levels(side):
        prices.append(price)
        keys.append(sign * price)
        rates.append(factor * price)
        q_total += qty
        n_total += price * qty
        cum_q.append(q_total)
        cum_n.append(n_total)
    prepared = PreparedSide(quote, side, tuple(keys), tuple(prices), tuple(cum_q), tuple(cum_n), tuple(rates), fee_rate, factor)
    _MEMO[key] = prepared
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return prepared


@dataclass(frozen=True, slots=True)
class SideBook:
    """The side of one venue's book an order takes from, with the venue's rules and the limit.

    ``rates[j]`` is the signed, fee-adjusted price per unit of level ``j``: buys minimise
    ``price * (1 + taker)``, sells minimise ``-price * (1 - taker)``; one ordering serves both.
    Levels past ``usable`` are beyond the limit price and only serve single-venue benchmarks.
    """

    venue: VenueConfig
    side: Side
    prices: tuple[Decimal, ...]
    cum_qty: tuple[Decimal, ...]
    cum_notional: tuple[Decimal, ...]
    rates: tuple[Decimal, ...]
    fee_rate: Decimal
    factor: Decimal
    usable: int
    max_qty: Decimal  # depth within limit, floored to the venue's step
    min_qty: Decimal  # smallest step-aligned qty meeting min_qty and min_notional; > max_qty: unusable

    @classmethod
    def build(cls, venue: VenueConfig, quote: VenueQuote, side: Side, limit: Decimal | None) -> "SideBook":
        prep = prepare_side(quote, side, venue.taker_fee_bps)
        usable = len(prep.prices) if limit is None else bisect_right(prep.keys, side.sign * limit)
        max_qty = floor_to_step(prep.cum_qty[usable], venue.step_size)
        book = cls(venue, side, prep.prices, prep.cum_qty, prep.cum_notional, prep.rates, prep.fee_rate, prep.factor, usable, max_qty, ZERO)
        key = ("min", venue.step_size, venue.min_qty, venue.min_notional, usable)
        smallest = prep.derived.get(key)
        if smallest is None:
            smallest = prep.derived[key] = book._smallest_order()
        object.__setattr__(book, "min_qty", smallest)
        return book

    @property
    def name(self) -> str:
        return self.venue.name

    @property
    def depth(self) -> Decimal:
        """Visible quantity on this side, ignoring the limit."""
        return self.cum_qty[-1]

    def _smallest_order(self) -> Decimal:
        step, max_qty = self.venue.step_size, self.max_qty
        smallest = ceil_to_step(max(self.venue.min_qty, step), step)
        if self.venue.min_notional > 0 and self.cum_notional[self.usable] >= self.venue.min_notional:
            j = bisect_left(self.cum_notional, self.venue.min_notional)  # first prefix reaching it
            level = j - 1
            needed = self.cum_qty[level] + (self.venue.min_notional - self.cum_notional[level]) / self.prices[level]
            smallest = max(smallest, ceil_to_step(needed, step))
            # Division rounds at the context precision; nudge up until the notional really holds.
            while smallest <= max_qty and self.notional(smallest) < self.venue.min_notional:
                smallest += step
        elif self.venue.min_notional > 0:
            return max_qty + step  # the whole visible depth is below min_notional
        return smallest

    def level_at(self, qty: Decimal) -> int:
        """Index of the level the next unit after ``qty`` comes from."""
        return bisect_right(self.cum_qty, qty) - 1 if qty < self.cum_qty[-1] else len(self.prices)

    def net_vwap(self, qty: Decimal) -> Decimal | None:
        """Fee-inclusive average price of ``qty`` walked from the top, ignoring the limit."""
        if qty <= 0 or qty > self.depth:
            return None
        return self.side.sign * self.signed_cost(qty) / qty

    def notional(self, qty: Decimal) -> Decimal:
        """Gross quote amount (before fees) of taking ``qty`` from the top of the book."""
        if qty <= 0:
            return ZERO
        j = bisect_left(self.cum_qty, qty) - 1  # level holding the qty-th unit
        return self.cum_notional[j] + (qty - self.cum_qty[j]) * self.prices[j]

    def signed_cost(self, qty: Decimal) -> Decimal:
        """Fee-inclusive cost of ``qty``: positive paid for buys, negative received for sells."""
        return self.factor * self.notional(qty)

    def worst_price(self, qty: Decimal) -> Decimal:
        """Price of the last level touched by ``qty``: the protective limit for the leg."""
        return self.prices[bisect_left(self.cum_qty, qty) - 1]

    def levels_touched(self, qty: Decimal) -> int:
        return bisect_left(self.cum_qty, qty) if qty > 0 else 0
