"""Test helpers that talk to the real broker: produce, read topics, run `sor worker`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
SOR = str(Path(sys.executable).with_name("sor"))


@dataclass
class TopicSet:
    """Unique topic names for one test, and the matching SOR_TOPICS__* environment."""

    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")

    def name(self, kind: str) -> str:
        return f"{self.prefix}.{kind}"

    @property
    def env(self) -> dict[str, str]:
        kinds = ["intents", "quotes", "plans", "executions", "fills", "dlq", "journal"]
        return {f"SOR_TOPICS__{k.upper()}": self.name(k) for k in kinds} | {"SOR_GROUP_ID": f"{self.prefix}-group"}

    def __getattr__(self, kind: str) -> str:
        if kind in ("intents", "quotes", "plans", "executions", "fills", "dlq", "journal"):
            return self.name(kind)
        raise AttributeError(kind)


def run(coro):
    return asyncio.run(coro)


async def produce(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in messages:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def produce_json(bootstrap: str, topic: str, docs: list[tuple[str | None, object]]) -> None:
    run(produce(bootstrap, topic, [(k.encode() if k else None, v if isinstance(v, bytes) else orjson.dumps(v)) for k, v in docs]))


async def read_topic(bootstrap: str, topic: str, want: int, timeout_s: float = 30.0, settle_s: float = 0.5) -> list:
    """Every record of ``topic`` from the start, once ``want`` arrived (or the timeout)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    records = []
    deadline = time.monotonic() + timeout_s
    settled_at = None
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= want:
                settled_at = settled_at or time.monotonic() + settle_s
                if time.monotonic() >= settled_at:
                    break
    finally:
        await consumer.stop()
    return records


def read_json(bootstrap: str, topic: str, want: int, timeout_s: float = 30.0) -> list[dict]:
    return [orjson.loads(r.value) for r in run(read_topic(bootstrap, topic, want, timeout_s))]


async def committed(bootstrap: str, group: str, topic: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in sorted(parts)}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        parts = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


class WorkerProcess:
    """`sor worker` as a subprocess, exactly as an operator runs it; stderr is captured."""

    def __init__(self, bootstrap: str, venues_file: Path, topics: TopicSet, extra_env: dict | None = None, args: list[str] | None = None):
        env = {**os.environ, **topics.env, "SOR_MAX_QUOTE_AGE_MS": "600000", "SOR_TOPIC_PARTITIONS": "3", **(extra_env or {})}
        self.proc = subprocess.Popen([SOR, "worker", "--bootstrap-servers", bootstrap, "--venues", str(venues_file), *(args or [])],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())

    def wait_for(self, text: str, timeout_s: float = 60.0, since: int = 0) -> str:
        """The first line holding ``text`` among those from index ``since`` on."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.lines[since:]:
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker never logged {text!r}; exit={self.proc.poll()}; log tail:\n" + "\n".join(self.lines[-30:]))

    def started(self) -> "WorkerProcess":
        self.wait_for('"worker_started"')
        return self

    def stop(self, sig=None, timeout_s: float = 60.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._reader.join(2)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def log(self) -> list[dict]:
        out = []
        for line in self.lines:
            if line.startswith("{"):
                try:
                    out.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    pass
        return out
