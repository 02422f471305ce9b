"""What every long-running command shares: settings and venues from env + flags, logging,
SIGTERM/SIGINT to a stop event, and one mapping of failures to exit codes.

Exit codes: 0 stopped cleanly; 2 bad input (settings, venues file), with one line naming
the field; 1 the process could not run (Kafka, a port, a venue, a background failure), or
its stop did not finish within 4/3 of ``SOR_SHUTDOWN_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable

from pydantic import ValidationError

from worker.domain.errors import InputError, describe


def load_settings(overrides: dict):
    """Settings from SOR_* env vars, with the command line's flags on top."""
    from worker.config import SECRET_SETTINGS, Settings

    from pydantic_settings import SettingsError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise InputError(describe(exc, "settings", secret=SECRET_SETTINGS)) from None
    except SettingsError as exc:  # an SOR_* value that is not the JSON its setting needs
        raise InputError(f"settings: {str(exc)[:300]}") from None


def load_configured(overrides: dict) -> tuple[Any, list]:
    """Settings and the venues file they name (``--venues`` or ``SOR_VENUES_FILE``); raises
    :class:`InputError`."""
    from worker.config import load_venues

    settings = load_settings(overrides)
    if settings.venues_file is None:
        raise InputError("settings.venues_file: required (--venues FILE or SOR_VENUES_FILE)")
    return settings, load_venues(Path(settings.venues_file))


def run_until_signalled(command: str, overrides: dict, work: Callable[[Any, list, asyncio.Event], Awaitable[None]]) -> int:
    """Load settings and venues, configure logging, then run ``work(settings, venues, stop)``
    until it returns; SIGTERM and SIGINT set ``stop``. Returns the exit code."""
    from worker import logging as sor_logging

    try:
        settings, venues = load_configured(overrides)
    except InputError as exc:
        return _failed(command, exc, 2)
    sor_logging.configure(settings.log_format, settings.log_level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watchdog = asyncio.create_task(_exit_if_the_stop_hangs(command, stop, settings.shutdown_timeout_s * STOP_LIMIT_FACTOR))
        try:
            await work(settings, venues, stop)
        finally:
            watchdog.cancel()

    from aiokafka.errors import KafkaError

    from worker.venues.base import VenueError

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    except InputError as exc:
        return _failed(command, exc, 2)
    except (KafkaError, OSError, TimeoutError, VenueError) as exc:
        return _failed(command, exc, 1)
    except Exception as exc:  # a background failure surfaced on the main loop (already logged in full)
        return _failed(command, f"{type(exc).__name__}: {str(exc)[:500]}", 1)
    return 0


#: A stop may take this many shutdown timeouts in all (the drain takes at most one; flushing,
#: committing and leaving the group the rest): 40 s by default, within the 45 s grace period
#: of deploy/, so a stuck stop ends with a line of its own instead of a silent SIGKILL.
STOP_LIMIT_FACTOR = 4 / 3


async def _exit_if_the_stop_hangs(command: str, stop: asyncio.Event, limit_s: float) -> None:
    """Once ``stop`` is set, exit the process (code 1) if it has not ended within ``limit_s``.

    A stop can hang outside this code: a group coordinator that never completes a rebalance
    (Tansu, when the group's leader left during one) keeps the consumer from leaving. Exiting
    is safe whenever it happens: the journal makes a crash at any point recoverable.
    """
    await stop.wait()
    await asyncio.sleep(limit_s)
    print(f"sor {command}: error: the stop did not finish within {limit_s:.1f} s; exiting "
          f"(in-flight work is recovered from the journal by the next owner)", file=sys.stderr, flush=True)
    os._exit(1)


def _failed(command: str, error: object, code: int) -> int:
    print(f"sor {command}: error: {error}", file=sys.stderr)
    return code
