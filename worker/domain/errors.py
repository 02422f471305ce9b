"""One readable line per bad input, naming the field: for stderr and for the DLQ."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError


class InputError(ValueError):
    """Input that cannot become a domain object; ``str()`` is the one-line explanation."""


def field_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "(document)"


def describe(exc: ValidationError, prefix: str = "") -> str:
    """``intent.qty: Input should be greater than 0 (got '-1')``; several errors joined by '; '."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        if ":" in msg.split(" ")[0]:  # a model validator already named its field
            parts.append(f"{field_path(loc, prefix)}.{msg}" if (prefix or loc) else msg)
            continue
        got = err.get("input")
        suffix = f" (got {got!r})" if err["type"] != "missing" and not isinstance(got, (dict, list)) else ""
        parts.append(f"{field_path(loc, prefix)}: {msg}{suffix}")
    return "; ".join(parts)


def parse_model(model: type[BaseModel], data: Any, prefix: str = "") -> Any:
    """Validate ``data`` as ``model`` or raise :class:`InputError` naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(describe(exc, prefix)) from None
