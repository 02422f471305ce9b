"""Order-book polling over venue adapters: one task per venue and symbol, in parallel.

Each ``(venue, symbol)`` has its own loop with its own timeout, so one slow or failing venue
never delays the others. A failing book backs off (up to ``max_backoff_s``) and is retried;
it never stops the feed. What to do with a snapshot (publish it) and with a failure (count
it) is the caller's: this module does no I/O but the venue's.
"""

from __future__ import annotations

import asyncio
import time
from typing import Awaitable, Callable, Mapping, Protocol, Sequence

import structlog

from worker.domain.models import VenueQuote

log = structlog.get_logger("sor.feed")


class BookSource(Protocol):
    """What the poller needs of a venue: :class:`~worker.venues.ccxt_venue.CcxtVenue` is one."""

    name: str

    async def start(self) -> None: ...

    async def fetch_quote(self, symbol: str, depth: int) -> VenueQuote: ...

    async def close(self) -> None: ...


OnQuote = Callable[[VenueQuote, float], Awaitable[None]]
OnError = Callable[[str, str, BaseException, float], None]


class BookPoller:
    """Polls ``symbols[venue]`` of every source every ``interval_s``, each book on its own."""

    def __init__(self, sources: Mapping[str, BookSource], symbols: Mapping[str, Sequence[str]], on_quote: OnQuote,
                 on_error: OnError, interval_s: float, depth: int, timeout_s: float, max_backoff_s: float = 30.0):
        self.sources = sources
        self.symbols = symbols
        self.on_quote = on_quote
        self.on_error = on_error
        self.interval_s = interval_s
        self.depth = depth
        self.timeout_s = timeout_s
        self.max_backoff_s = max(max_backoff_s, interval_s)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set; every per-book task is cancelled on the way out."""
        tasks = [asyncio.create_task(self._poll(venue, symbol, stop), name=f"poll:{venue}:{symbol}")
                 for venue, symbols in self.symbols.items() if venue in self.sources for symbol in symbols]
        log.info("feed_polling", books=[t.get_name()[5:] for t in tasks], interval_s=self.interval_s, depth=self.depth)
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _poll(self, venue: str, symbol: str, stop: asyncio.Event) -> None:
        source = self.sources[venue]
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            try:
                quote = await asyncio.wait_for(source.fetch_quote(symbol, self.depth), self.timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of this book is counted, then retried
                failures += 1
                elapsed = time.monotonic() - started
                self.on_error(venue, symbol, exc, elapsed)
                if failures == 1 or failures % 20 == 0:
                    log.warning("feed_poll_failed", venue=venue, symbol=symbol, failures=failures,
                                error=f"{type(exc).__name__}: {exc}"[:300])
                wait = min(self.max_backoff_s, self.interval_s * 2 ** min(failures, 10)) - elapsed
            else:
                if failures:
                    log.info("feed_poll_recovered", venue=venue, symbol=symbol, after_failures=failures)
                failures = 0
                elapsed = time.monotonic() - started
                await self.on_quote(quote, elapsed)
                wait = self.interval_s - (time.monotonic() - started)
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                except asyncio.TimeoutError:
                    pass
