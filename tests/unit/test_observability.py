"""The metrics endpoint serves the listed series; secrets never reach a log line."""

from __future__ import annotations

import asyncio
import io
import json

import aiohttp
import structlog

from worker.broker import free_port
from worker.config import Settings, kafka_security
from worker.observability import Health, Metrics, start_http


def test_metrics_health_and_readiness_endpoints():
    async def scenario():
        metrics = Metrics()
        metrics.watch(lambda: {"sor_in_flight_intents": {(): 3.0}, "sor_quote_age_seconds": {("binance", "BTC/USD"): 0.25},
                               "sor_consumer_lag": {("0",): 7.0}, "sor_circuit_open": {("kraken",): 1.0}, "sor_ready": {(): 0.0}})
        metrics.intents.labels("filled").inc(2)
        metrics.dead_letters.labels("sor.intents.v1").inc()
        metrics.leg_latency.labels("binance").observe(0.02)
        metrics.leg_errors.labels("kraken", "rejected").inc()
        metrics.routing.observe(0.0005)
        metrics.intent_latency.observe(0.03)
        port = free_port()
        health = Health()
        runner = await start_http(port, metrics, health, host="127.0.0.1")
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
                    text = await r.text()
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    not_ready = r.status
                health.started = True
                async with http.get(f"http://127.0.0.1:{port}/readyz") as r:
                    is_ready = r.status
                async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
                    health = r.status
        finally:
            await runner.cleanup()
        return text, not_ready, is_ready, health

    text, not_ready, is_ready, health = asyncio.run(scenario())
    assert (not_ready, is_ready, health) == (503, 200, 200)
    for series in ('sor_intents_total{status="filled"} 2.0', "sor_routing_seconds_bucket", "sor_intent_to_result_seconds_bucket",
                   'sor_leg_seconds_bucket{le="0.025",venue="binance"}', 'sor_leg_errors_total{status="rejected",venue="kraken"}',
                   'sor_quote_age_seconds{symbol="BTC/USD",venue="binance"} 0.25', 'sor_dead_letters_total{topic="sor.intents.v1"}',
                   "sor_in_flight_intents 3.0", 'sor_consumer_lag{partition="0"} 7.0', 'sor_circuit_open{venue="kraken"} 1.0'):
        assert series in text, series


def test_secrets_appear_in_no_log_line_or_repr(monkeypatch):
    monkeypatch.setenv("SOR_SASL_PASSWORD", "hunter2-very-secret")
    monkeypatch.setenv("SOR_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("SOR_SASL_USERNAME", "sor")
    settings = Settings()
    buf = io.StringIO()
    from worker import logging as sor_logging

    sor_logging.configure("json", "debug", stream=buf)
    log = structlog.get_logger("test")
    log.info("settings", settings=settings, dump=settings.model_dump(), password=settings.sasl_password)
    log.info("repr", text=repr(settings), text2=str(settings))
    out = buf.getvalue()
    assert "hunter2" not in out
    assert "**********" in out
    json.loads(out.splitlines()[0])
    # ...and the real value still reaches aiokafka
    assert kafka_security(settings)["sasl_plain_password"] == "hunter2-very-secret"


def test_settings_come_from_flags_env_and_an_optional_toml_file(monkeypatch, tmp_path):
    cfg = tmp_path / "sor.toml"
    cfg.write_text('group_id = "from-file"\nmax_in_flight = 64\n[topics]\nintents = "file.intents"\n')
    monkeypatch.setenv("SOR_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("SOR_MAX_IN_FLIGHT", "128")
    s = Settings(bootstrap_servers="flag:9092")
    assert (s.group_id, s.max_in_flight, s.bootstrap_servers, s.topics.intents) == ("from-file", 128, "flag:9092", "file.intents")
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        s.group_id = "mutated"  # frozen


def test_a_log_line_never_raises_whatever_its_values():
    """The JSON renderer is orjson; what it refuses (non-string keys, integers beyond 64 bits,
    a lone surrogate, an unknown type) still makes one readable line, never an exception in
    the caller (the leg line runs after an order was placed)."""
    from decimal import Decimal

    from worker import logging as sor_logging

    buf = io.StringIO()
    sor_logging.configure("json", "debug", stream=buf)
    log = structlog.get_logger("test")
    log.info("odd", keys={1: 2}, big=2**70, text="\ud800", amount=Decimal("0.1"), obj=object())
    line = json.loads(buf.getvalue().splitlines()[-1])
    assert line["event"] == "odd" and line["big"] == 2**70 and "0.1" in line["amount"] and line["keys"] == {"1": 2}
    circular: list = []
    circular.append(circular)
    log.info("odder", keys={(1, 2): 3}, loop=circular)  # neither encoder takes these
    line = json.loads(buf.getvalue().splitlines()[-1])
    assert line["event"] == "odder" and line["level"] == "info" and "(1, 2)" in line["unrenderable"]
