"""Idempotent order placement through the intent gateway.

An idempotency key (``Idempotency-Key``, ``idempotency_key`` or Binance's
``newClientOrderId``) is turned into the intent id by a hash of (account, key), so a retry,
through this replica or another, after a restart or not, names the same intent: the API
answers with the first attempt's result, and the worker, which executes an intent id at most
once, would ignore a second copy anyway.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from worker.domain.models import ExecutionResult, OrderIntent
from worker.service.results import IntentGateway, Settled


class IdempotencyConflict(Exception):
    """The key was used before for a different order."""


def intent_id_for(namespace: str, account_id: str, key: str | None) -> str:
    """``<namespace>-<32 hex>``: deterministic for a key, random without one."""
    if key is None:
        return f"{namespace}-{uuid.uuid4().hex}"
    digest = hashlib.blake2b(f"{account_id}\x00{key}".encode(), digest_size=16).hexdigest()
    return f"{namespace}-{digest}"


#: What makes two orders the same order: everything the client sent (not when it was made).
_ORDER_FIELDS = ("account_id", "symbol", "side", "type", "qty", "limit_price", "time_in_force", "algorithm", "expires_at",
                 "venues", "dry_run")


def _as_sent(intent: OrderIntent, name: str):
    value = getattr(intent, name)
    # The venues are a filter, a set: the same ones in another order are the same order.
    return value if name != "venues" or value is None else sorted(set(value))


def _same_order(intent: OrderIntent, other: OrderIntent | ExecutionResult) -> bool:
    """Whether ``intent`` is a retry of ``other``: the whole order when the intent is known,
    else what its result carries (another replica's order whose intent this one never read)."""
    if isinstance(other, OrderIntent):
        return all(_as_sent(intent, name) == _as_sent(other, name) for name in _ORDER_FIELDS)
    return ((intent.account_id, intent.symbol, intent.side, intent.qty, intent.algorithm)
            == (other.account_id, other.symbol, other.side, other.total_qty, other.algorithm))


@dataclass(frozen=True)
class Placement:
    """What happened to a placement: the result if it arrived in time; ``replayed`` when an
    earlier request with the same key had already placed it."""

    intent_id: str
    settled: Settled | None
    replayed: bool


class OrderDesk:
    def __init__(self, gateway: IntentGateway):
        self.gateway = gateway

    async def place(self, intent: OrderIntent, timeout_s: float, wait: bool = True) -> Placement:
        """Publish ``intent`` unless its id is known, then wait up to ``timeout_s`` for the result."""
        book = self.gateway.book
        known = book.get(intent.intent_id)
        if known is not None:
            if not _same_order(intent, book.order(intent.intent_id) or known.result):
                raise IdempotencyConflict(intent.intent_id)
            return Placement(intent.intent_id, known, True)
        earlier = book.pending(intent.intent_id)
        if earlier is not None:
            if not _same_order(intent, earlier):
                raise IdempotencyConflict(intent.intent_id)
        else:
            book.expect(intent)
            try:
                await self.gateway.publish(intent)
            except BaseException:
                book.forget(intent.intent_id)
                raise
        settled = await book.wait(intent.intent_id, timeout_s) if wait else None
        return Placement(intent.intent_id, settled, earlier is not None)
