"""structlog set-up: JSON lines for machines, a readable console for the demo."""

from __future__ import annotations

import json
import logging
import sys

import orjson
import structlog


def _json_line(event: dict, **options) -> str:
    # orjson instead of the standard library's encoder: a few lines per intent, several
    # times cheaper each. ``options`` carries structlog's ``default`` (repr of the unknown).
    # A log call must never raise (the leg line runs after an order is placed): what orjson
    # refuses (an integer beyond 64 bits, a lone surrogate) goes through the standard encoder.
    try:
        return orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS, **options).decode()
    except TypeError:
        pass
    try:
        return json.dumps(event, **options)
    except (TypeError, ValueError):  # keys neither encoder takes (a tuple), a circular structure
        return json.dumps({"event": str(event.get("event")), "level": str(event.get("level")),
                           "timestamp": str(event.get("timestamp")), "unrenderable": repr(event)[:2_000]})


def configure(fmt: str = "json", level: str = "info", stream=None) -> None:
    """Configure structlog once per process; every logger then binds ``intent_id`` etc."""
    stream = stream or sys.stderr
    renderer = structlog.processors.JSONRenderer(serializer=_json_line) if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # aiokafka logs through stdlib logging: keep its warnings, route them to the same stream.
    logging.basicConfig(level=logging.WARNING, stream=stream, format="%(levelname)s %(name)s: %(message)s")
