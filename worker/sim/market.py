"""Market-data simulator: realistic books for several venues on ``sor.quotes.v1``."""

from __future__ import annotations

import asyncio
import random
import time
from decimal import Decimal

from aiokafka import AIOKafkaProducer

from worker.domain.models import VenueConfig, VenueQuote
from worker.pipeline.codec import encode
from worker.domain.money import floor_to_step

# Venue personalities: price offset vs the "true" mid in bps, half-spread in bps, depth scale.
PROFILES = {
    "binance": (0.0, 0.6, 1.6),
    "kraken": (-1.5, 1.2, 0.8),
    "coinbase": (1.0, 0.9, 1.0),
    "bitstamp": (-2.5, 2.0, 0.5),
    "okx": (0.5, 0.8, 1.2),
}


class MarketSimulator:
    """A slow random-walk mid; every venue keeps its own price ladder (offset, spread, gaps)
    around it and its level sizes churn a little between snapshots, as real books do."""

    def __init__(self, venues: list[VenueConfig], symbol: str = "BTC/USD", mid: float = 42_000.0, levels: int = 20, seed: int = 1):
        self.venues = venues
        self.symbol = symbol
        self.mid = mid
        self.levels = levels
        self.rng = random.Random(seed)
        self._ladders = {v.name: self._ladder(v) for v in venues}

    def _ladder(self, venue: VenueConfig) -> dict:
        offset, half_spread, depth = PROFILES.get(venue.name, (self.rng.uniform(-2, 2), 1.0, 1.0))
        gaps = [half_spread + sum(self.rng.uniform(0.3, 1.2) for _ in range(j)) for j in range(self.levels)]
        sizes = {side: [self.rng.uniform(0.1, 1.2) * depth * (1 + j / 3) for j in range(self.levels)] for side in ("bid", "ask")}
        return {"offset": offset, "gaps": gaps, "sizes": sizes}

    def snapshot(self, venue: VenueConfig, ts: int) -> VenueQuote:
        ladder = self._ladders.setdefault(venue.name, self._ladder(venue))
        center = self.mid * (1 + ladder["offset"] / 1e4)
        levels = {}
        for side, sign in (("bid", -1), ("ask", 1)):
            out: dict[Decimal, Decimal] = {}
            for gap, size in zip(ladder["gaps"], ladder["sizes"][side]):
                qty = max(venue.step_size, floor_to_step(Decimal(str(round(size, 6))), venue.step_size))
                price = Decimal(f"{center * (1 + sign * gap / 1e4):.2f}")
                # Gaps finer than a cent at low prices round to one price: one level, summed
                # (a book with a price twice is refused by VenueQuote).
                out[price] = out.get(price, Decimal(0)) + qty
            levels[side] = list(out.items())
        return VenueQuote(venue=venue.name, symbol=self.symbol, ts=ts, bids=levels["bid"], asks=levels["ask"])

    def step(self) -> None:
        self.mid *= 1 + self.rng.gauss(0, 0.15) / 1e4
        for ladder in self._ladders.values():
            for sizes in ladder["sizes"].values():
                j = self.rng.randrange(len(sizes))
                sizes[j] = max(0.01, sizes[j] * self.rng.uniform(0.8, 1.25))

    async def publish_all(self, producer: AIOKafkaProducer, topic: str) -> None:
        ts = time.time_ns() // 1_000_000
        sends = []
        for venue in self.venues:
            quote = self.snapshot(venue, ts)
            sends.append(await producer.send(topic, encode(quote), key=quote.key.encode()))
        await asyncio.gather(*sends)

    async def run(self, producer: AIOKafkaProducer, topic: str, interval_s: float = 0.1) -> None:
        while True:
            self.step()
            await self.publish_all(producer, topic)
            await asyncio.sleep(interval_s)
