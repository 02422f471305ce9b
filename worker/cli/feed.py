"""``sor feed``: poll the order books of the ccxt venues and publish them as quotes."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from worker.domain.errors import InputError


def main(args) -> int:
    from worker import logging as sor_logging
    from worker.cli.run import load_settings
    from worker.config import load_venues

    overrides = {"venues_file": args.venues_file, "bootstrap_servers": args.bootstrap_servers, "http_port": args.http_port,
                 "feed_interval_ms": args.interval_ms, "feed_depth": args.depth, "client_id": "sor-feed"}
    try:
        settings = load_settings(overrides)
        if settings.venues_file is None:
            raise InputError("settings.venues_file: required (--venues FILE or SOR_VENUES_FILE)")
        from worker.bootstrap import build_feed

        feed = build_feed(settings, load_venues(Path(settings.venues_file)))
    except InputError as exc:
        print(f"sor feed: error: {exc}", file=sys.stderr)
        return 2
    sor_logging.configure(settings.log_format, settings.log_level)

    async def run() -> None:
        from worker.bootstrap import run_feed

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_feed(feed, stop)

    from aiokafka.errors import KafkaError

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass
    except (KafkaError, OSError) as exc:
        print(f"sor feed: error: {exc}", file=sys.stderr)
        return 1
    return 0
