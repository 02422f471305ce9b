"""An intents record -> a valid :class:`OrderIntent`, or an :class:`InputError` for the DLQ.

What only the Kafka edge can check: the record's key must be the intent id (dedupe and
partitioning rely on it), and an intent without ``created_at`` or ``expires_at`` is dated by
its record's broker timestamp, so the TTL applies to it like to every other intent.
"""

from __future__ import annotations

from typing import Protocol

from worker.domain.errors import InputError
from worker.domain.models import OrderIntent
from worker.pipeline.codec import decode


class IntentRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` the intake reads."""

    key: bytes | None
    value: bytes | None
    timestamp: int


def decode_intent(record: IntentRecord) -> OrderIntent:
    """Decode and check one intents record; every failure names its field."""
    try:
        intent = decode(OrderIntent, record.value)
    except InputError:
        raise
    except Exception as exc:  # a decoder bug or a pathological document: still a DLQ record
        raise InputError(f"(value): undecodable: {type(exc).__name__}: {str(exc)[:200]}") from None
    if record.key != intent.intent_id.encode():
        got = "no key" if record.key is None else repr(record.key[:80].decode(errors="replace"))
        raise InputError(f"key: must equal intent_id {intent.intent_id[:80]!r} (got {got})")
    if intent.created_at is None and intent.expires_at is None:
        if record.timestamp is not None and record.timestamp > 0:  # Kafka's "no timestamp" is -1
            intent = intent.model_copy(update={"created_at": record.timestamp})
    return intent
