"""Exact, bounded decimals from outside: the one parser of every price, quantity and fee.

The contract (also in the JSON Schemas under ``schemas/``):

* **Syntax**: the JSON number grammar (RFC 8259 §6) in ASCII, as a JSON string (preferred:
  ``"42155.5"``, ``"1E-8"``) or as a JSON number. No whitespace, ``+``, ``_``, ``.5``, ``5.``,
  hex, ``NaN``/``Infinity`` or non-ASCII digits (``"١٢٣"``). At most :data:`MAX_DECIMAL_CHARS`
  characters.
* **Magnitude**: ``|x|`` below :data:`MAX_DECIMAL` (``1e18``).
* **Precision**: at most :data:`MAX_DECIMAL_PLACES` (18) decimal places once trailing zeros are
  dropped (``"1.000000000000000000000"`` is 1; ``"1e-19"`` is refused).
* **Never a float**: a Python ``float`` is refused (:class:`FloatInput`), since it cannot
  carry an exact decimal; the Kafka codec and ``sor plan`` parse JSON numbers straight to
  ``Decimal``.

Within these bounds every lot-step division (a quantity below 1e18 over a step of at least
1e-18) has at most 36 digits, and no price or step can be zero, so the routing core's
arithmetic never overflows its precision or divides by zero on validated input.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from pydantic_core import PydanticCustomError, PydanticKnownError

#: Exclusive bound on the magnitude of every price, quantity and fee.
MAX_DECIMAL = Decimal("1e18")
#: Most decimal places (after dropping trailing zeros) of every price, quantity and fee.
MAX_DECIMAL_PLACES = 18
#: Longest accepted literal: 18 integer digits, a point and 18 decimals fit with room to spare.
MAX_DECIMAL_CHARS = 40
#: Largest timestamp or other integer field (Kafka's int64).
MAX_INT64 = 2**63 - 1

#: The JSON number grammar, ASCII digits only (``\d`` would accept every Unicode digit).
JSON_NUMBER_PATTERN = r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$"
_JSON_NUMBER = re.compile(JSON_NUMBER_PATTERN[1:-1])


def is_json_number(text: str) -> bool:
    """``text`` is a number as JSON writes it: ASCII digits, no "+", no "_", no spaces."""
    return _JSON_NUMBER.fullmatch(text) is not None
# The common case, plain notation already within every bound: one regex and Decimal(), no checks.
_ASCII_DIGITS = re.compile(r"[0-9]{1,20}")


def ascii_digits(text: str) -> bool:
    """``text`` is 1 to 20 ASCII digits: what a number in a query string may be. ``str.isdigit``
    also takes "²" (which ``int`` refuses: a server error) and other scripts' digits (which
    ``int`` reads)."""
    return _ASCII_DIGITS.fullmatch(text) is not None


_PLAIN_IN_BOUNDS = re.compile(r"(0|[1-9][0-9]{0,17})(\.[0-9]{1,18})?")
_MAX_INT = 10**18



class FloatInput(TypeError):
    """A binary float reached a decimal or integer field.

    A float cannot hold an exact decimal, so it is a programming error in a Python caller,
    and at the JSON edges a signal: the Kafka codec aborts validation on the first one and
    parses the document again straight to ``Decimal`` (:func:`worker.pipeline.codec.decode`).
    It is deliberately not a ``ValueError``: pydantic would collect it as one more field
    error and go on validating, instead of stopping at once.
    """


class OversizeNumber:
    """Stands in for a JSON number literal too long to be any accepted value.

    The exact JSON parser returns it instead of building a 4,300-digit ``int`` (which Python
    refuses) or a megabyte-long ``Decimal``; every numeric field then refuses it by name.
    """

    __slots__ = ("length",)

    def __init__(self, literal: str):
        self.length = len(literal)

    def __repr__(self) -> str:
        return f"<a {self.length}-character number>"


def _error(kind: str, message: str, **ctx: Any) -> PydanticCustomError:
    return PydanticCustomError(kind, message, ctx or None)


def bounded(value: Decimal) -> Decimal:
    """``value`` if it is within the documented bounds (trailing zeros past 18 places dropped)."""
    if not value.is_finite():
        raise _error("decimal_finite", "must be a finite number")
    if value.is_zero():
        return Decimal(0)  # no "-0" or "0E-50" downstream
    if value.adjusted() >= 18:
        raise _error("decimal_range", "must be less than 1e18 in magnitude")
    sign, digits, exponent = value.as_tuple()
    if exponent < -MAX_DECIMAL_PLACES:
        extra = -MAX_DECIMAL_PLACES - exponent  # digits past the 18th place: must all be zeros
        if any(digits[-extra:]):
            raise _error("decimal_places", "at most 18 decimal places")
        value = Decimal((sign, digits[:-extra] or (0,), -MAX_DECIMAL_PLACES))
    return value


def parse_decimal(value: Any) -> Decimal:
    """A bounded exact ``Decimal`` from a JSON string, JSON number (int or Decimal) or Decimal.

    Raises ``PydanticCustomError`` (so pydantic names the field) for anything else.
    """
    kind = type(value)
    if kind is str:
        if _PLAIN_IN_BOUNDS.fullmatch(value):
            return Decimal(value)
        if len(value) > MAX_DECIMAL_CHARS:
            raise _error("decimal_length", f"a number has at most {MAX_DECIMAL_CHARS} characters")
        if not _JSON_NUMBER.fullmatch(value):
            raise _error("decimal_syntax", "not a decimal number: use ASCII digits as in JSON, e.g. \"42155.5\" or \"1E-8\"")
        try:
            return bounded(Decimal(value))
        except InvalidOperation:  # an exponent beyond what Decimal represents
            raise _error("decimal_range", "must be less than 1e18 in magnitude") from None
    if kind is Decimal:
        return bounded(value)
    if kind is int:
        if -_MAX_INT < value < _MAX_INT:
            return Decimal(value)
        raise _error("decimal_range", "must be less than 1e18 in magnitude")
    if kind is float:
        raise FloatInput("a binary float cannot hold an exact decimal: pass a str, int or Decimal")
    if kind is OversizeNumber:
        raise _oversize(value)
    raise _error("decimal_type", "must be a decimal number as a JSON string or number")


def _oversize(value: OversizeNumber) -> PydanticCustomError:
    if value.length > MAX_DECIMAL_CHARS:
        return _error("decimal_length", f"a number has at most {MAX_DECIMAL_CHARS} characters")
    return _error("decimal_range", "must be less than 1e18 in magnitude")  # a short literal, a giant exponent


def check_integer_input(value: Any) -> Any:
    """Before pydantic's ``int``: refuse floats and booleans, which it would coerce, and an
    exact JSON number (a ``Decimal``) that is not a whole number within bounds, which it would
    convert digit by digit: ``1e99999999`` would hold the event loop for minutes."""
    kind = type(value)
    if kind is float:
        raise FloatInput("a binary float cannot hold an exact integer: pass an int")
    if kind is bool:
        raise _error("int_type", "a boolean is not a number")
    if kind is Decimal:
        if value.is_zero():
            return 0  # 0e99999999 is 0
        if not value.is_finite() or value != value.to_integral_value() or value.adjusted() >= 19:
            raise _error("int_type", "must be a whole number less than 1e19 in magnitude")
        return int(value)
    if kind is OversizeNumber:
        raise _oversize(value)
    return value


def decimal_validator(gt: Decimal | None = None, ge: Decimal | None = None, lt: Decimal | None = None) -> Callable[[Any], Decimal]:
    """The validator of one input decimal field: :func:`parse_decimal`, then ``gt``/``ge``/``lt``.

    A quote holds hundreds of these, so the common case (a plain in-bounds string that meets
    the constraints) is one call, one regex and one ``Decimal()``.
    """
    match = _PLAIN_IN_BOUNDS.fullmatch

    def validate(value: Any) -> Decimal:
        number = Decimal(value) if type(value) is str and match(value) else parse_decimal(value)
        if (gt is None or number > gt) and (ge is None or number >= ge) and (lt is None or number < lt):
            return number
        return check_bounds(number, gt, ge, lt)

    return validate


def check_bounds(value: Decimal, gt: Decimal | None, ge: Decimal | None, lt: Decimal | None) -> Decimal:
    """pydantic's own ``gt``/``ge``/``lt`` errors, for validators that replace its decimal schema."""
    if gt is not None and not value > gt:
        raise PydanticKnownError("greater_than", {"gt": gt})
    if ge is not None and not value >= ge:
        raise PydanticKnownError("greater_than_equal", {"ge": ge})
    if lt is not None and not value < lt:
        raise PydanticKnownError("less_than", {"lt": lt})
    return value
