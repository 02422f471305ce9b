"""``sor worker``, ``sor paper-venue`` and ``sor broker``: the long-running commands."""

from __future__ import annotations

import asyncio
import os
import sys

from worker.cli.service import run_until_signalled


def broker(port: int) -> int:
    """Run Tansu in the foreground (exec: signals reach it directly)."""
    from worker.broker import broker_args

    args = broker_args(port)
    print(f"sor broker: Kafka protocol on 127.0.0.1:{port} (Tansu, memory-only)", file=sys.stderr, flush=True)
    os.execv(args[0], args)
    return 0  # not reached


async def _serve_worker(settings, venues, stop: asyncio.Event) -> None:
    from worker.bootstrap import build

    await build(settings, venues).run(stop)


def worker(overrides: dict) -> int:
    """``sor worker``: consume intents until SIGTERM, then drain."""
    return run_until_signalled("worker", overrides, _serve_worker)


def paper_venue(port: int, overrides: dict) -> int:
    """``sor paper-venue``: the Binance-style paper venues over HTTP until SIGTERM."""
    from worker.bootstrap import serve_paper_venue

    async def serve(settings, venues, stop: asyncio.Event) -> None:
        task = asyncio.create_task(serve_paper_venue(settings, venues, port))
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()

    return run_until_signalled("paper-venue", {**overrides, "client_id": "sor-paper-venue"}, serve)
