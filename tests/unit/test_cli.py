"""The `sor` command as a user runs it: output on stdout, one-line errors, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from decimal import Decimal

SOR = str(Path(sys.executable).with_name("sor"))

ISSUE_EXAMPLE = {
    "intent": {"intent_id": "oms-1", "account_id": "acct-7", "symbol": "BTC/USD", "side": "buy", "type": "limit", "qty": "5",
               "limit_price": "31000", "time_in_force": "IOC", "algorithm": "sor"},
    "venues": [{"name": "binance", "taker_fee_bps": "10", "maker_fee_bps": "10", "step_size": "0.00001", "min_qty": "0.00001",
                "min_notional": "5"}],
    "quotes": [{"venue": "binance", "symbol": "BTC/USD", "ts": 1710000000000, "bids": [["42150.00", "1.2"]],
                "asks": [["42155.00", "0.8"], ["42156.00", "2"]]}],
}


def sor_plan(doc) -> subprocess.CompletedProcess:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return subprocess.run([SOR, "plan"], input=text, capture_output=True, text=True, timeout=60)


def test_sor_plan_on_the_issue_example_excludes_the_venue_above_the_limit():
    proc = sor_plan(ISSUE_EXAMPLE)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["legs"] == [] and plan["unfilled_qty"] == "5"
    assert plan["excluded"][0]["reason"] == "no_liquidity_within_limit"
    assert Decimal(plan["routes"][0]["net_price"]) == Decimal("42197.155")


def test_sor_plan_reproduces_the_binance_faq_cross_book_example():
    doc = {"intent": {"intent_id": "faq", "account_id": "a", "symbol": "BTC/USD", "side": "buy", "type": "limit", "qty": 5,
                      "limit_price": 31000},
           "venues": [{"name": "BTCUSDT"}, {"name": "BTCUSDC"}, {"name": "BTCUSDP"}],
           "quotes": [{"venue": "BTCUSDT", "symbol": "BTC/USD", "ts": 1, "asks": [["30800", "3"], ["30500", "3"]]},
                      {"venue": "BTCUSDC", "symbol": "BTC/USD", "ts": 1, "asks": [["30000", "1"], ["28000", "1"]]},
                      {"venue": "BTCUSDP", "symbol": "BTC/USD", "ts": 1, "asks": [["35000", "1"], ["29000", "1"]]}]}
    plan = json.loads(sor_plan(doc).stdout)
    legs = {leg["provider"]: (float(leg["qty"]), leg["worst_price"]) for leg in plan["legs"]}
    assert legs == {"BTCUSDC": (2.0, "30000"), "BTCUSDP": (1.0, "29000"), "BTCUSDT": (2.0, "30500")}
    assert sum(float(leg["estimated_notional"]) for leg in plan["legs"]) == 148000


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d["intent"].update(side="hold"), "intent.side"),
    (lambda d: d["intent"].update(qty="-1"), "intent.qty"),
    (lambda d: d["intent"].pop("limit_price"), "intent.limit_price"),
    (lambda d: d["venues"][0].update(step_size="0"), "venues[0].step_size"),
    (lambda d: d["quotes"][0]["asks"][0].__setitem__(0, "abc"), "quotes[0].asks[0][0]"),
    (lambda d: d.pop("intent"), "intent"),
])
def test_sor_plan_bad_input_exits_2_with_one_line_naming_the_field(mutate, field):
    doc = json.loads(json.dumps(ISSUE_EXAMPLE))
    mutate(doc)
    proc = sor_plan(doc)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_sor_plan_rejects_non_json():
    proc = sor_plan("{not json")
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_sor_worker_without_a_venues_file_is_a_clear_error(tmp_path):
    proc = subprocess.run([SOR, "worker", "--bootstrap-servers", "127.0.0.1:1", "--venues", str(tmp_path / "nope.toml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[[venues]]\nname = "x"\ntaker_fee_bps = "-3"\n')
    proc = subprocess.run([SOR, "worker", "--venues", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "venues[0].taker_fee_bps" in proc.stderr


def test_sor_worker_says_it_cannot_reach_kafka_and_exits_1(tmp_path):
    venues = tmp_path / "v.toml"
    venues.write_text('[[venues]]\nname = "a"\n')
    proc = subprocess.run([SOR, "worker", "--bootstrap-servers", "127.0.0.1:1", "--venues", str(venues)], capture_output=True,
                          text=True, timeout=60, env={**__import__("os").environ, "SOR_CONNECT_TIMEOUT_S": "1"})
    assert proc.returncode == 1 and "cannot reach Kafka at 127.0.0.1:1" in proc.stderr and "Traceback" not in proc.stderr


_STOPPING = """
import asyncio, sys
from worker.cli.service import run_until_signalled

async def work(settings, venues, stop):
    stop.set()  # as SIGTERM does
    if sys.argv[1] == "hang":
        await asyncio.Event().wait()  # a stop that never finishes (a group that never lets go)

sys.exit(run_until_signalled("worker", {}, work))
"""


@pytest.mark.parametrize("mode, code", [("hang", 1), ("prompt", 0)])
def test_a_stop_that_hangs_ends_the_process_with_a_line_of_its_own(mode, code):
    root = Path(__file__).resolve().parents[2]
    env = {"SOR_VENUES_FILE": str(root / "examples" / "venues.toml"), "SOR_SHUTDOWN_TIMEOUT_S": "0.3", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", _STOPPING, mode], cwd=root, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == code, done.stderr
    assert ("did not finish within 0.4 s" in done.stderr) is (mode == "hang")
