"""``sor api``: the HTTP front (the seed's endpoints and Binance's SOR endpoints), until SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from worker.domain.errors import InputError


def main(overrides: dict) -> int:
    from worker import logging as sor_logging
    from worker.cli.run import load_settings
    from worker.config import load_venues

    try:
        settings = load_settings(overrides)
        if settings.venues_file is None:
            raise InputError("settings.venues_file: required (--venues FILE or SOR_VENUES_FILE)")
        venues = load_venues(Path(settings.venues_file))
    except InputError as exc:
        print(f"sor api: error: {exc}", file=sys.stderr)
        return 2
    sor_logging.configure(settings.log_format, settings.log_level)

    async def serve() -> None:
        from worker.bootstrap import serve_api

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with serve_api(settings, venues):
            await stop.wait()

    from aiokafka.errors import KafkaError

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"sor api: error: {exc}", file=sys.stderr)
        return 1
    return 0
