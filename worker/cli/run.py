"""``sor worker`` and ``sor broker``: the long-running commands."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from worker.domain.errors import InputError, describe


def broker(port: int) -> int:
    """Run Tansu in the foreground (exec: signals reach it directly)."""
    from worker.broker import broker_args

    args = broker_args(port)
    print(f"sor broker: Kafka protocol on 127.0.0.1:{port} (Tansu, memory-only)", file=sys.stderr, flush=True)
    os.execv(args[0], args)
    return 0  # not reached


def load_settings(overrides: dict):
    """Settings from SOR_* env vars, with the command line's flags on top."""
    from worker.config import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise InputError(describe(exc, "settings")) from None


async def _serve(settings, venues) -> None:
    from worker.bootstrap import build

    app = build(settings, venues)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.run(stop)


def worker(overrides: dict) -> int:
    from worker import logging as sor_logging
    from worker.config import load_venues

    try:
        settings = load_settings(overrides)
        if settings.venues_file is None:
            raise InputError("settings.venues_file: required (--venues FILE or SOR_VENUES_FILE)")
        venues = load_venues(Path(settings.venues_file))
    except InputError as exc:
        print(f"sor worker: error: {exc}", file=sys.stderr)
        return 2
    sor_logging.configure(settings.log_format, settings.log_level)
    from aiokafka.errors import KafkaError

    from worker.venues.base import VenueError

    try:
        asyncio.run(_serve(settings, venues))
    except KeyboardInterrupt:
        pass
    except InputError as exc:
        print(f"sor worker: error: {exc}", file=sys.stderr)
        return 2
    except (KafkaError, OSError, VenueError) as exc:
        print(f"sor worker: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a background failure surfaced on the main loop (already logged in full)
        print(f"sor worker: error: {type(exc).__name__}: {str(exc)[:500]}", file=sys.stderr)
        return 1
    return 0


def paper_venue(port: int, overrides: dict) -> int:
    from worker import logging as sor_logging
    from worker.config import load_venues
    from worker.bootstrap import serve_paper_venue

    try:
        settings = load_settings({**overrides, "client_id": "sor-paper-venue"})
        venues = load_venues(Path(settings.venues_file))
    except InputError as exc:
        print(f"sor paper-venue: error: {exc}", file=sys.stderr)
        return 2
    sor_logging.configure(settings.log_format, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(serve_paper_venue(settings, venues, port))
        await asyncio.wait([task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception():
            raise task.exception()

    from aiokafka.errors import KafkaError

    try:
        asyncio.run(main())
    except (KafkaError, OSError) as exc:
        print(f"sor paper-venue: error: {exc}", file=sys.stderr)
        return 1
    return 0
