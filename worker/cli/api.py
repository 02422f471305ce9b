"""``sor api``: the HTTP front (the seed's endpoints and Binance's SOR endpoints), until SIGTERM."""

from __future__ import annotations

import asyncio

from worker.cli.service import run_until_signalled


async def _serve(settings, venues, stop: asyncio.Event) -> None:
    from worker.bootstrap import serve_api

    async with serve_api(settings, venues) as server:
        await server.until_stopped_or_failed(stop)


def main(overrides: dict) -> int:
    return run_until_signalled("api", overrides, _serve)
