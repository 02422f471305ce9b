"""Deterministic identifiers: the same intent, round and leg always give the same ids."""

from __future__ import annotations

import hashlib
from typing import Mapping, TypeVar

from worker.domain.models import CLIENT_ORDER_ID_RE

V = TypeVar("V")


def intent_digest(intent_id: str) -> str:
    """20 hex characters of BLAKE2b: fixed length whatever the OMS's id looks like."""
    return hashlib.blake2b(intent_id.encode(), digest_size=10).hexdigest()


def client_order_id(intent_id: str, round_no: int, leg_no: int) -> str:
    """``sor-<digest>-<round>-<leg>``: at most 36 characters of ``[A-Za-z0-9._:-]``, so it
    fits Binance's ``newClientOrderId``; a re-send after a crash carries the same id."""
    if not (0 <= round_no < 100 and 0 <= leg_no < 1000):
        raise ValueError(f"round {round_no} / leg {leg_no} out of range")
    coid = f"sor-{intent_digest(intent_id)}-{round_no}-{leg_no}"
    assert CLIENT_ORDER_ID_RE.match(coid), coid
    return coid


def result_event_id(intent_id: str, version: int = 1) -> str:
    return f"result:{intent_id}" if version == 1 else f"result:{intent_id}:v{version}"


def fill_id(intent_id: str, alloc_id: int) -> str:
    return f"{intent_id}:{alloc_id}"


_MISSING = object()


def by_name(mapping: Mapping[str, V], name: str, default: V | None = None) -> V | None:
    """``mapping[name]``, else the one entry whose key matches ``name`` ignoring case.

    Settings written as nested environment variables (``SOR_ACCOUNT_MAX_NOTIONAL__ACCT7``,
    ``SOR_VENUE_CREDENTIALS__OKX__API_KEY``) arrive with their keys lowercased, while accounts
    and venues are named with any case: an exact match first, then a case-insensitive one, so
    a cap, an allow-list or a venue's keys are never silently dropped for a case difference
    (fail safe: a restriction applies rather than not). Two keys equal but for case: no guess.
    """
    found = mapping.get(name, _MISSING)
    if found is not _MISSING:
        return found  # type: ignore[return-value]
    folded = name.casefold()
    matches = [v for k, v in mapping.items() if k.casefold() == folded]
    return matches[0] if len(matches) == 1 else default
