"""An intents record -> a valid :class:`OrderIntent`, a quotes record -> a valid
:class:`VenueQuote`, or an :class:`InputError` for the DLQ.

What only the Kafka edge can check: the record's key must be the intent id (dedupe and
partitioning rely on it), and an intent without ``created_at`` or ``expires_at`` is dated by
its record's broker timestamp, so the TTL applies to it like to every other intent. A quote's
key must be its ``venue:symbol``: the topic is compacted by it.
"""

from __future__ import annotations

from typing import Protocol

from worker.domain.errors import InputError
from worker.domain.models import OrderIntent, VenueQuote, invisible_field
from worker.pipeline.codec import decode


class IntentRecord(Protocol):
    """The fields of an aiokafka ``ConsumerRecord`` the intake reads."""

    key: bytes | None
    value: bytes | None
    timestamp: int


def decode_intent(record: IntentRecord) -> OrderIntent:
    """Decode and check one intents record; every failure names its field."""
    intent = _decoded(OrderIntent, record)
    invisible = invisible_field(intent)
    if invisible is not None:
        raise InputError(invisible)
    if record.key != intent.intent_id.encode():
        raise InputError(f"key: must equal intent_id {intent.intent_id[:80]!r} (got {_shown(record.key)})")
    if intent.created_at is None and intent.expires_at is None:
        if record.timestamp is not None and record.timestamp > 0:  # Kafka's "no timestamp" is -1
            intent = intent.model_copy(update={"created_at": record.timestamp})
    return intent


def decode_quote(record: IntentRecord) -> VenueQuote:
    """Decode and check one quotes record. A snapshot keyed as another book would, once the
    topic is compacted, erase that book's latest snapshot and vanish itself: refused. A record
    without a key is read (the broker refuses those on a compacted topic anyway)."""
    quote = _decoded(VenueQuote, record)
    if record.key is not None and record.key != quote.key.encode():
        raise InputError(f"key: must equal venue:symbol {quote.key[:80]!r} (got {_shown(record.key)})")
    return quote


def _decoded(model, record: IntentRecord):
    try:
        return decode(model, record.value)
    except InputError:
        raise
    except Exception as exc:  # a decoder bug or a pathological document: still a DLQ record
        raise InputError(f"(value): undecodable: {type(exc).__name__}: {str(exc)[:200]}") from None


def _shown(key: bytes | None) -> str:
    return "no key" if key is None else repr(key[:80].decode(errors="replace"))
