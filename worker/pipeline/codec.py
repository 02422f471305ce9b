"""Bytes <-> domain objects at the Kafka edge (orjson + pydantic)."""

from __future__ import annotations

from typing import TypeVar

import orjson
from pydantic import BaseModel

from worker.domain.errors import InputError, parse_model
from worker.domain.models import ExecutionResult

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


#: Room left under the size limit for the record's key, headers and batch framing.
_RECORD_OVERHEAD = 4096


def encode_within(result: ExecutionResult, max_bytes: int) -> bytes:
    """The result's JSON, with ``fills`` cut to the longest prefix that keeps the record
    under ``max_bytes`` (then ``fills_complete`` is false; the fills topic has them all).
    Deterministic: a republish is byte-identical."""
    value = encode(result)
    limit = max_bytes - _RECORD_OVERHEAD
    if len(value) <= limit:
        return value
    lo, hi = 0, len(result.fills)  # the longest prefix that fits: bisect on its encoded size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(encode(result.model_copy(update={"fills": result.fills[:mid], "fills_complete": False}))) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return encode(result.model_copy(update={"fills": result.fills[:lo], "fills_complete": False}))

