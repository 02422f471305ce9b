"""``sor feed``: poll the order books of the ccxt venues and publish them as quotes."""

from __future__ import annotations

import asyncio

from worker.cli.service import run_until_signalled


async def _serve(settings, venues, stop: asyncio.Event) -> None:
    from worker.bootstrap import build_feed, run_feed

    await run_feed(build_feed(settings, venues), stop)  # no ccxt venue in the file: InputError, exit 2


def main(args) -> int:
    overrides = {"venues_file": args.venues_file, "bootstrap_servers": args.bootstrap_servers, "http_port": args.http_port,
                 "feed_interval_ms": args.interval_ms, "feed_depth": args.depth, "client_id": "sor-feed"}
    return run_until_signalled("feed", overrides, _serve)
