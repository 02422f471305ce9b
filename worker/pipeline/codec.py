"""Bytes <-> domain objects at the Kafka edge (orjson + pydantic), with exact numbers.

JSON numbers never pass through a binary float. orjson parses every document first (fast);
it returns JSON strings and integers of up to 64 bits exactly, and only numbers with a
fraction or exponent, or larger integers, as floats. A float reaching a decimal or integer
field stops validation at once (:class:`~worker.domain.numbers.FloatInput`), and only then
the document is parsed again with the standard library straight to ``Decimal``
(:func:`loads_exact`) and validated once more. The common all-strings document costs one orjson parse; a document with JSON
numbers costs a second, exact parse, and gets exactly the values it wrote.

``sor plan`` decodes its stdin with the same :func:`decode`, so both edges accept, refuse and
parse every document identically.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from worker.domain.errors import InputError, describe
from worker.domain.models import ExecutionResult, RoutePlan
from worker.domain.numbers import MAX_DECIMAL_CHARS, FloatInput, OversizeNumber

M = TypeVar("M", bound=BaseModel)

# orjson refuses integers beyond a double's range ("1" * 400); the exact parser reads them
# (as OversizeNumber), so the error names the field instead of the whole document.
_NUMBER_OUT_OF_RANGE = "number is infinity"
_SURROGATE = re.compile("[\ud800-\udfff]")


#: Beyond this decimal exponent a JSON number is refused (see :func:`_exact_number`).
_MAX_EXPONENT = 1_000


def _exact_number(literal: str) -> Decimal | OversizeNumber:
    if len(literal) > MAX_DECIMAL_CHARS:
        return OversizeNumber(literal)
    try:
        number = Decimal(literal)
    except InvalidOperation:  # an exponent beyond what Decimal holds (1e1000000000000000000)
        return OversizeNumber(literal)
    # No accepted value is anywhere near 1e±1000; converting 1e999999999 to an int for a plain
    # int field would take minutes on the event loop. Every field refuses the marker by name.
    if not number.is_zero() and abs(number.adjusted()) > _MAX_EXPONENT:
        return OversizeNumber(literal)
    return number


def _exact_int(literal: str) -> int | OversizeNumber:
    # int() refuses more than 4,300 digits (ValueError); no accepted value has more than 40.
    return int(literal) if len(literal) <= MAX_DECIMAL_CHARS else OversizeNumber(literal)


class _NonFinite(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _NonFinite(name)


def _check_strings(data: Any, label: str) -> None:
    """Refuse lone surrogates, as orjson does (they cannot be encoded again); iterative, so
    depth cannot exhaust the stack."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                raise InputError(f"{label}: not valid JSON: a string holds a lone UTF-16 surrogate")
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads_exact(raw: bytes | str, label: str = "(value)") -> Any:
    """Parse JSON with every number as an exact ``Decimal`` (or ``int``), never a float.

    Literals longer than any accepted value become :class:`OversizeNumber`; ``NaN`` and
    ``Infinity`` are refused. Raises :class:`InputError`.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray, memoryview)) else raw
        data = json.loads(text, parse_float=_exact_number, parse_int=_exact_int, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise InputError(f"{label}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except UnicodeDecodeError:
        raise InputError(f"{label}: not valid JSON: not UTF-8") from None
    except _NonFinite as exc:
        raise InputError(f"{label}: not valid JSON: {exc} is not a JSON number") from None
    except RecursionError:
        raise InputError(f"{label}: not valid JSON: nested too deeply") from None
    _check_strings(data, label)
    return data


def _validate(model: type[M], data: Any, label: str) -> M:
    if not isinstance(data, dict):
        raise InputError(f"{label}: expected a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(describe(exc)) from None


def decode(model: type[M], raw: bytes | str | None, label: str = "(value)") -> M:
    """Parse one message value; raises :class:`InputError` with a one-line, field-naming message.

    ``label`` names the whole document in errors about it (``(value)`` for a Kafka record).
    """
    if raw is None:
        raise InputError(f"{label}: empty message (tombstone)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if _NUMBER_OUT_OF_RANGE not in str(exc):
            raise InputError(f"{label}: not valid JSON: {exc}") from None
    else:
        try:
            return _validate(model, data, label)
        except FloatInput:
            pass  # a JSON number orjson made a float: parse again, exactly
    return _validate(model, loads_exact(raw, label), label)


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


class EncodedCache:
    """The JSON of recently encoded immutable (frozen) domain objects, by identity.

    A plan is published on the plans topic and also written in every journal record of its
    intent (planned, then completed), and the intent in each of those records: this encodes
    each once. An entry holds its object, so its ``id`` cannot be reused while cached.
    """

    def __init__(self, capacity: int = 4096):
        self.capacity = capacity
        self._by_id: OrderedDict[int, tuple[BaseModel, bytes]] = OrderedDict()

    def encode(self, obj: BaseModel) -> bytes:
        key = id(obj)
        hit = self._by_id.get(key)
        if hit is not None and hit[0] is obj:
            self._by_id.move_to_end(key)  # least recently used first out: ranking entries are shared
            return hit[1]
        value = self._plan(obj) if type(obj) is RoutePlan else encode(obj)
        self._by_id[key] = (obj, value)
        if len(self._by_id) > self.capacity:
            self._by_id.popitem(last=False)
        return value

    def _plan(self, plan: RoutePlan) -> bytes:
        """``encode(plan)``, byte for byte, with its ranking entries encoded once each: the
        plans of one snapshot share them, and they are half of a plan's fields."""
        body = plan.__pydantic_serializer__.to_json(plan, exclude=_ROUTES)
        routes = b",".join([self.encode(r) for r in plan.routes])
        # Unambiguous: inside a JSON string a quote is escaped, so this only matches the key.
        at = body.index(b',"excluded":')
        return b"".join((body[:at], b',"routes":[', routes, b"]", body[at:]))


_ROUTES = {"routes"}

