"""Starting and closing venue adapters, and the venue configs they leave behind."""

from __future__ import annotations

import asyncio
from typing import Mapping, Sequence

import structlog

from worker.domain.models import VenueConfig
from worker.venues.base import VenueAdapter

log = structlog.get_logger("sor.venues")


async def start_adapters(adapters: Mapping[str, VenueAdapter], venues: Sequence[VenueConfig]) -> list[VenueConfig]:
    """Start every adapter at once; return the venues as the router must see them.

    An adapter that learns its trading rules from the exchange (ccxt's ``load_markets``)
    exposes them as ``config``; the others keep the venues file's config. A venue that
    cannot start raises (fail fast: a worker must not route on rules it does not know).
    """
    names = list(adapters)
    results = await asyncio.gather(*(adapters[n].start() for n in names), return_exceptions=True)
    failed = {n: r for n, r in zip(names, results) if isinstance(r, BaseException)}
    if failed:
        await close_adapters(adapters)
        first = next(iter(failed.values()))
        raise first if len(failed) == 1 else RuntimeError("; ".join(f"{n}: {e}" for n, e in failed.items()))
    return [getattr(adapters[v.name], "config", v) if v.name in adapters else v for v in venues]


async def close_adapters(adapters: Mapping[str, VenueAdapter]) -> None:
    """Close every adapter's sessions; one that fails to close does not keep the others open."""
    results = await asyncio.gather(*(a.close() for a in adapters.values()), return_exceptions=True)
    for name, result in zip(adapters, results):
        if isinstance(result, Exception):
            log.warning("venue_close_failed", venue=name, error=str(result))
