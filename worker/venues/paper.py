"""The paper venue: fills IOC orders against the latest real order-book snapshot.

It reports one trade per book level it takes, charges the taker fee in the quote asset,
and remembers what it consumed until the next snapshot of that book arrives. Latency,
rejects and partial fills can be injected; the dice are seeded by client order id, so a
run replays the same way.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import OrderedDict
from decimal import Decimal
from typing import Callable

from worker.domain.models import LegStatus, Side, VenueConfig, VenueQuote, quote_asset
from worker.domain.money import BPS, ZERO, floor_to_step
from worker.venues.base import DUPLICATE_ORDER, LegOrder, OrderReport, VenueTrade

#: Orders a paper venue remembers (queries by client order id older than that find nothing).
LEDGER_CAPACITY = 10_000


class PaperBook:
    """One venue's matching against snapshots: the part shared by the in-process adapter
    and the ``sor paper-venue`` HTTP process."""

    def __init__(self, venue: VenueConfig, book_source: Callable[[str], VenueQuote | None]):
        self.venue = venue
        self._book_source = book_source
        self._consumed: dict[str, tuple[VenueQuote, dict[Decimal, Decimal]]] = {}
        # The latest LEDGER_CAPACITY orders, oldest first: like an exchange's order-query
        # window, and what keeps a long-running paper venue's memory flat.
        self.ledger: OrderedDict[str, OrderReport] = OrderedDict()
        self._order_ids = itertools.count(1)
        self._trade_ids = itertools.count(1)

    def _dice(self, client_order_id: str) -> random.Random:
        return random.Random(f"{self.venue.name}:{client_order_id}")

    def match(self, order: LegOrder) -> OrderReport:
        """Match one IOC order now; a known client order id is refused as a duplicate."""
        if order.client_order_id in self.ledger:
            return OrderReport(order.client_order_id, None, LegStatus.REJECTED, ZERO, error=DUPLICATE_ORDER, duplicate=True)
        order_id = f"{self.venue.name}-{next(self._order_ids)}"
        dice = self._dice(order.client_order_id)
        report = self._match(order, order_id, dice)
        self.ledger[order.client_order_id] = report
        if len(self.ledger) > LEDGER_CAPACITY:
            self.ledger.popitem(last=False)
        return report

    def _match(self, order: LegOrder, order_id: str, dice: random.Random) -> OrderReport:
        if dice.random() < self.venue.reject_rate:
            return OrderReport(order.client_order_id, order_id, LegStatus.REJECTED, ZERO, error="injected reject")
        quote = self._book_source(order.symbol)
        if quote is None:
            return OrderReport(order.client_order_id, order_id, LegStatus.REJECTED, ZERO, error=f"no book for {order.symbol}")
        wanted = order.qty
        if dice.random() < self.venue.partial_fill_rate:
            wanted = floor_to_step(order.qty * Decimal(dice.randint(1, 9)) / 10, self.venue.step_size)
        consumed = self._consumed_for(order.symbol, quote)
        fee_rate = self.venue.taker_fee_bps / BPS
        asset = quote_asset(order.symbol)
        trades: list[VenueTrade] = []
        left = wanted
        for price, size in quote.side_levels(order.side):
            if left <= 0:
                break
            if (price > order.limit_price) if order.side is Side.BUY else (price < order.limit_price):
                break
            available = size - consumed.get(price, ZERO)
            take = min(available, left)
            if take <= 0:
                continue
            consumed[price] = consumed.get(price, ZERO) + take
            left -= take
            trades.append(VenueTrade(price, take, price * take * fee_rate, asset, f"{self.venue.name}-t{next(self._trade_ids)}"))
        filled = wanted - left
        status = LegStatus.FILLED if filled == order.qty else (LegStatus.PARTIAL if filled > 0 else LegStatus.EXPIRED)
        return OrderReport(order.client_order_id, order_id, status, filled, tuple(trades))

    def visible(self, symbol: str) -> VenueQuote | None:
        """The book as the venue shows it now: the latest snapshot less what orders took from
        it (what a real exchange's depth shows after trades; same snapshot time)."""
        quote = self._book_source(symbol)
        held = self._consumed.get(symbol)
        if quote is None or held is None or held[0] is not quote or not held[1]:
            return quote
        taken = held[1]

        def left(levels):
            rest = ((p, q - taken.get(p, ZERO)) for p, q in levels)
            return [(p, q) for p, q in rest if q > 0]

        return quote.model_copy(update={"bids": left(quote.bids), "asks": left(quote.asks)})

    def _consumed_for(self, symbol: str, quote: VenueQuote) -> dict[Decimal, Decimal]:
        held = self._consumed.get(symbol)
        if held is None or held[0] is not quote:
            held = (quote, {})  # a new snapshot replaces what earlier orders consumed
            self._consumed[symbol] = held
        return held[1]


class PaperVenue:
    """In-process :class:`~worker.venues.base.VenueAdapter` over a :class:`PaperBook`."""

    def __init__(self, venue: VenueConfig, book_source: Callable[[str], VenueQuote | None]):
        self.name = venue.name
        self.venue = venue
        self.book = PaperBook(venue, book_source)

    async def _latency(self, client_order_id: str) -> None:
        if self.venue.latency_ms:
            jitter = random.Random(client_order_id).uniform(0.5, 1.5)
            await asyncio.sleep(self.venue.latency_ms * jitter / 1000)

    async def place(self, order: LegOrder) -> OrderReport:
        await self._latency(order.client_order_id)
        return self.book.match(order)

    async def query(self, client_order_id: str) -> OrderReport | None:
        return self.book.ledger.get(client_order_id)

    async def cancel(self, client_order_id: str) -> OrderReport | None:
        return self.book.ledger.get(client_order_id)  # IOC: nothing rests, nothing to cancel

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None
