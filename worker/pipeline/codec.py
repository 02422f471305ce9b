"""Bytes <-> domain objects at the Kafka edge (orjson + pydantic)."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel

from worker.domain.errors import InputError, parse_model

M = TypeVar("M", bound=BaseModel)


def decode(model: type[M], raw: bytes | None) -> M:
    """Parse one message value; raises :class:`InputError` with a field-naming message."""
    if raw is None:
        raise InputError("(value): empty message (tombstone)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"(value): not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"(value): expected a JSON object, got {type(data).__name__}")
    return parse_model(model, data)


def encode(obj: BaseModel) -> bytes:
    """JSON bytes with every Decimal as a string."""
    return obj.__pydantic_serializer__.to_json(obj)

