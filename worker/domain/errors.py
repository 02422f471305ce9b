"""One readable line per bad input, naming the field: for stderr and for the DLQ.

The line is bounded whatever the input: an echoed value is cut at :data:`MAX_ECHO_CHARS` and
the whole message at :data:`MAX_MESSAGE_CHARS`, so a 50 MB field cannot become a 50 MB error.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Collection

from pydantic import BaseModel, ValidationError

#: Most characters of an input value quoted back in an error.
MAX_ECHO_CHARS = 80
#: Most characters of one error line.
MAX_MESSAGE_CHARS = 500


def one_line(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    if len(text) > 4 * limit:
        text = text[: 4 * limit]  # before the replaces: never copy a huge string whole
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InputError(ValueError):
    """Input that cannot become a domain object; ``str()`` is the one-line explanation
    (capped at :data:`MAX_MESSAGE_CHARS`)."""

    def __init__(self, message: str):
        super().__init__(one_line(message))


def echo(value: Any) -> str:
    """``repr(value)``, at most :data:`MAX_ECHO_CHARS` characters, built without copying a huge value."""
    if isinstance(value, (str, bytes)) and len(value) > MAX_ECHO_CHARS:
        return f"{value[:MAX_ECHO_CHARS - 20]!r}… ({len(value)} characters)"
    if isinstance(value, Decimal):
        return echo(str(value))  # '1E+70', as the sender wrote it, not Decimal('1E+70')
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        text = f"<{type(value).__name__}>"
    return text if len(text) <= MAX_ECHO_CHARS else text[: MAX_ECHO_CHARS - 1] + "…"


def field_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def describe(exc: ValidationError, prefix: str = "", secret: Collection[str] = ()) -> str:
    """``intent.qty: Input should be greater than 0 (got '-1')``; several errors joined by '; '.

    Values are echoed at most :data:`MAX_ECHO_CHARS` characters long and the line is capped at
    :data:`MAX_MESSAGE_CHARS`, with the number of errors left out. A value under a field named
    in ``secret`` is never echoed: written in the wrong shape, it is the secret itself.
    """
    parts: list[str] = []
    errors = exc.errors(include_url=False)
    length = 0
    for err in errors:
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if ":" in msg.split(" ")[0]:  # a model validator already named its field
            part = f"{field_path(loc, prefix)}.{msg}" if (prefix or loc) else msg
        else:
            got = err.get("input")
            shown = err["type"] != "missing" and not isinstance(got, (dict, list)) and not secret_path(loc, secret)
            suffix = f" (got {echo(got)})" if shown else ""
            part = f"{field_path(loc, prefix)}: {msg}{suffix}"
        if parts and length + len(part) + 2 > MAX_MESSAGE_CHARS - 30:
            parts.append(f"and {len(errors) - len(parts)} more errors")
            break
        parts.append(part)
        length += len(part) + 2
    return one_line("; ".join(parts))


def secret_path(loc: tuple, secret: Collection[str]) -> bool:
    return any(isinstance(part, str) and part in secret for part in loc)


def parse_model(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    """Validate ``data`` as ``model`` or raise :class:`InputError` naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(describe(exc, prefix)) from None
