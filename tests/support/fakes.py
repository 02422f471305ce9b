"""Fakes of the worker's infrastructure for broker-free unit tests (cosmicpython style)."""

from __future__ import annotations

from worker.execution.journal import JournalEntry


class MemoryJournal:
    """A fake for unit tests: keeps every record in order."""

    def __init__(self) -> None:
        self.records: list[JournalEntry] = []

    async def write(self, entry: JournalEntry) -> None:
        self.records.append(entry)

    def latest(self) -> dict[str, JournalEntry]:
        return {e.intent_id: e for e in self.records}


class FakeRecord:
    """The fields of an aiokafka ``ConsumerRecord`` the edge reads."""

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, timestamp: int = -1):
        self.topic, self.partition, self.offset, self.key, self.value = topic, partition, offset, key, value
        self.timestamp = timestamp  # -1: Kafka's "no timestamp"
        self.headers = ()


def _intent_id_key(value: bytes | None) -> bytes | None:
    import orjson

    try:
        doc = orjson.loads(value) if value is not None else None
    except orjson.JSONDecodeError:
        return None
    intent_id = doc.get("intent_id") if isinstance(doc, dict) else None
    return intent_id.encode() if isinstance(intent_id, str) else None


class FakeConsumer:
    """A consumer-group member without a broker: the test feeds records, triggers
    assignments and revocations, and reads what was committed."""

    def __init__(self) -> None:
        self.queue: list = []  # (tp, record) waiting for getmany
        self.commits: list[dict] = []
        self.committed_offsets: dict = {}
        self.assigned: set = set()
        self.paused: set = set()
        self.listener = None
        self.fail_commits = False

    def subscribe(self, topics, listener) -> None:
        self.listener = listener

    def feed(self, tp, offset: int, value: bytes | None, key: bytes | None | object = ..., timestamp: int = -1) -> None:
        """Queue a record; its key defaults to the value's ``intent_id`` (as producers key intents)."""
        if key is ...:
            key = _intent_id_key(value)
        self.queue.append((tp, FakeRecord(tp.topic, tp.partition, offset, key, value, timestamp)))

    async def getmany(self, *partitions, timeout_ms: int = 0, max_records: int | None = None) -> dict:
        import asyncio

        out: dict = {}
        keep = []
        for tp, rec in self.queue:
            if tp in self.assigned and tp not in self.paused and (max_records is None or sum(map(len, out.values())) < max_records):
                out.setdefault(tp, []).append(rec)
            else:
                keep.append((tp, rec))
        self.queue = keep
        await asyncio.sleep(0 if out else timeout_ms / 1000 / 10)
        return out

    async def commit(self, offsets: dict | None = None) -> None:
        from aiokafka.errors import CommitFailedError

        if self.fail_commits:
            raise CommitFailedError("fenced by the group")
        self.commits.append(dict(offsets or {}))
        self.committed_offsets.update(offsets or {})

    async def committed(self, tp):
        return self.committed_offsets.get(tp)

    def assignment(self) -> set:
        return set(self.assigned)

    def pause(self, *tps) -> None:
        self.paused.update(tps)

    def resume(self, *tps) -> None:
        self.paused.difference_update(tps)

    def highwater(self, tp):
        return None

    async def assign(self, *tps) -> None:
        self.assigned.update(tps)
        await self.listener.on_partitions_assigned(set(tps))

    async def revoke(self, *tps) -> None:
        await self.listener.on_partitions_revoked(set(tps))
        self.assigned.difference_update(tps)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class FakeProducer:
    """Acknowledges every send at once (or never, with ``hold=True``) and records it."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes | None]] = []
        self.hold = False
        self._held: list = []

    async def send(self, topic, value, *, key=None, partition=None, headers=None):
        import asyncio

        self.sent.append((topic, value, key))
        fut = asyncio.get_running_loop().create_future()
        if self.hold:
            self._held.append(fut)
        else:
            fut.set_result(None)
        return fut

    async def send_and_wait(self, topic, value, **kwargs):
        return await (await self.send(topic, value, **kwargs))

    def release(self) -> None:
        for fut in self._held:
            if not fut.done():
                fut.set_result(None)
        self._held.clear()

    def topics(self) -> list[str]:
        return [t for t, _, _ in self.sent]

    async def flush(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
