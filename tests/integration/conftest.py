"""One real Kafka-protocol broker per test session: Tansu by default, or SOR_TEST_BOOTSTRAP."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.support.kafka_io import TopicSet
from worker.broker import EmbeddedBroker

VENUES_TOML = """
[[venues]]
name = "binance"
taker_fee_bps = "10"
step_size = "0.00001"
min_qty = "0.00001"
min_notional = "5"

[[venues]]
name = "kraken"
taker_fee_bps = "26"
step_size = "0.00000001"
min_notional = "0.5"

[[venues]]
name = "coinbase"
taker_fee_bps = "40"
step_size = "0.00000001"
min_notional = "1"
"""


def _docker_kafka():
    """testcontainers' Kafka when a Docker engine answers; never required."""
    if not shutil.which("docker") or os.environ.get("SOR_TEST_DOCKER") != "1":
        return None
    try:
        from testcontainers.kafka import KafkaContainer

        return KafkaContainer().start()
    except Exception:
        return None


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """The embedded broker, or ``None`` when the tests use an external Kafka."""
    if os.environ.get("SOR_TEST_BOOTSTRAP"):
        yield None
        return
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as b:
        yield b


@pytest.fixture(scope="session")
def bootstrap(broker):
    if os.environ.get("SOR_TEST_BOOTSTRAP"):
        yield os.environ["SOR_TEST_BOOTSTRAP"]
        return
    container = _docker_kafka()
    if container is not None:
        yield container.get_bootstrap_server()
        container.stop()
        return
    yield broker.bootstrap


@pytest.fixture
def topics() -> TopicSet:
    return TopicSet()


@pytest.fixture
def venues_file(tmp_path) -> Path:
    path = tmp_path / "venues.toml"
    path.write_text(VENUES_TOML)
    return path


def now_ms() -> int:
    return time.time_ns() // 1_000_000
