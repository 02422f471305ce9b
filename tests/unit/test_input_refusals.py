"""What the input edges refuse, and how: a number with a giant exponent is a field error at
once (never a stall of the event loop, never a stray InvalidOperation); a quote that fails
preparing is dead-lettered and never cached; readers without a DLQ log what they refuse;
replay refuses future-dated quotes as the worker does; an intent dated in the future never
trades; notional caps never pass through a float; the venues file and the CLI exit 2 with
the file or flag named. Each test failed on the code before its fix."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition

from tests.support.fakes import FakeConsumer, FakeRecord
from tests.support.scenarios import make_intent, make_quote
from tests.unit.test_hostile_edge import poisoned_feed
from worker.cli import plan as plan_cli
from worker.cli.service import load_settings
from worker.config import Settings, load_venues
from worker.domain.errors import InputError
from worker.domain.models import Algorithm, OrderIntent, VenueConfig, VenueQuote
from worker.execution.risk import RiskLimits, check_intent
from worker.pipeline.codec import decode, encode
from worker.pipeline.kafka import QuoteFeed
from worker.replay import what_if
from worker.service.quotes import QuoteCache

D = Decimal
REPO = Path(__file__).resolve().parents[2]
ROOT = Path(__file__).resolve().parents[2]
QTP = TopicPartition("sor.quotes.v1", 0)
INTENT = {"intent_id": "r-1", "account_id": "a", "symbol": "BTC/USD", "side": "buy", "type": "limit", "qty": "1",
          "limit_price": "43000"}


def _with_raw(doc: dict, field: str, token: str) -> bytes:
    return json.dumps({**doc, field: "\x00HOLE\x00"}).replace('"\\u0000HOLE\\u0000"', token).encode()


# --- 1. codec.py:39 _exact_number: Decimal() raises InvalidOperation for an exponent past 10**18 ------------

@pytest.mark.parametrize("token", ["1e1000000000000000000", "1e-99999999999999999999"])
def test_a_json_number_with_a_giant_exponent_is_a_field_error_not_invalid_operation(token):
    raw = _with_raw(INTENT, "qty", token)
    with pytest.raises(InputError) as info:  # today: decimal.InvalidOperation escapes decode()
        decode(OrderIntent, raw)
    assert str(info.value).startswith("qty"), str(info.value)


def test_sor_plan_exits_2_on_a_giant_exponent_instead_of_a_traceback():
    doc = {"intent": {**INTENT, "qty": "\x00HOLE\x00"}, "venues": [{"name": "v"}]}
    text = json.dumps(doc).replace('"\\u0000HOLE\\u0000"', "1e1000000000000000000")
    out, err = io.StringIO(), io.StringIO()
    assert plan_cli.run(io.StringIO(text), out, err) == 2  # today: InvalidOperation propagates (exit 1, traceback)
    assert "intent.qty" in err.getvalue()


# --- 2. numbers.py:140 check_integer_input lets a Decimal through; pydantic's int() of 1E+99999999 runs for minutes

def _decode_in_subprocess(code: str, timeout: float = 5.0) -> str:
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"decoding stalled for more than {timeout} s (the partition / quote feed would stall too)")
    return proc.stdout + proc.stderr


def test_a_timestamp_with_a_huge_exponent_is_refused_at_once_not_a_stall():
    out = _decode_in_subprocess(
        "from worker.pipeline.codec import decode\n"
        "from worker.domain.models import VenueQuote\n"
        "from worker.domain.errors import InputError\n"
        "try:\n"
        "    decode(VenueQuote, b'{\"venue\":\"v\",\"symbol\":\"S\",\"ts\":1e99999999}')\n"
        "except InputError as e:\n"
        "    print('ERR', e)\n")
    assert out.startswith("ERR ts:"), out


def test_a_venues_file_int_with_a_huge_exponent_is_refused_at_once_not_a_stall(tmp_path):
    path = tmp_path / "venues.toml"
    path.write_text('[[venues]]\nname = "a"\nlatency_ms = 1e99999999\n')
    out = _decode_in_subprocess(
        "from pathlib import Path\n"
        "from worker.config import load_venues\n"
        "from worker.domain.errors import InputError\n"
        "try:\n"
        f"    load_venues(Path({str(path)!r}))\n"
        "except InputError as e:\n"
        "    print('ERR', e)\n")
    assert out.startswith("ERR ") and "latency_ms" in out, out


# --- 3. config.py:169 load_venues catches FileNotFoundError only ----------------------------------------------

def test_a_venues_path_that_is_a_directory_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="venues file"):  # today: IsADirectoryError (sor worker: traceback, exit 1)
        load_venues(tmp_path)


def test_a_venues_file_that_is_not_utf8_is_an_input_error(tmp_path):
    path = tmp_path / "venues.toml"
    path.write_bytes(b"\xff\xfe[[venues]]\n")
    with pytest.raises(InputError, match="venues file"):  # today: UnicodeDecodeError (traceback)
        load_venues(path)


# --- 4. kafka.py:318-320 a quote that fails preparing (on_update) is dead-lettered but stays cached ----------

def test_a_dead_lettered_poison_quote_is_not_left_in_the_cache():
    async def main():
        feed, producer, cache = poisoned_feed()
        feed.consumer.feed(QTP, 0, encode(make_quote("a", asks=[(1, 1)], ts=5)), key=b"a:BTC/USD")
        feed.consumer.feed(QTP, 1, encode(make_quote("a", asks=[(2, 13)], ts=6)), key=b"a:BTC/USD")
        await feed._poll(0)
        assert [t for t, _, _ in producer.sent] == ["sor.dlq.v1"]
        # The DLQ'd snapshot is what every plan now routes on (and it replaced the good one).
        assert cache.get("a", "BTC/USD").ts == 5

    asyncio.run(main())


# --- 5. kafka.py:319 on_update (prewarm) gets the uncapped decoded quote, not the capped copy cached ---------

def test_prewarm_prepares_the_capped_snapshot_the_cache_holds():
    async def main():
        seen = []
        cache = QuoteCache({"a"}, max_levels=2)
        feed = QuoteFeed(Settings(), cache, None, on_update=seen.append)
        feed.consumer = FakeConsumer()
        feed.consumer.assigned.add(QTP)
        feed.consumer.feed(QTP, 0, encode(make_quote("a", asks=[(p, 1) for p in range(1, 6)], ts=5)), key=b"a:BTC/USD")
        await feed._poll(0)
        assert seen[0] is cache.get("a", "BTC/USD"), (len(seen[0].asks), len(cache.get("a", "BTC/USD").asks))

    asyncio.run(main())


# --- 6. replay.py:156 what-if caches a future-dated quote the worker dead-letters (no clock-skew check) ------

def test_what_if_ignores_a_future_dated_quote_as_the_worker_does():
    now = 1_710_000_000_000
    day = 86_400_000
    venues = [VenueConfig(name="a", step_size="0.00001")]
    poison = FakeRecord("q", 0, 0, b"a:BTC/USD", encode(make_quote("a", asks=[(100, 5)], ts=now + day)), timestamp=now)
    real = FakeRecord("q", 0, 1, b"a:BTC/USD", encode(make_quote("a", asks=[(101, 5)], ts=now + 1)), timestamp=now + 1)
    intent = make_intent(1, limit=200, intent_id="w-1")
    rec = FakeRecord("i", 0, 0, b"w-1", encode(intent), timestamp=now + 2)
    plans, _ = what_if([rec], [poison, real], venues, [Algorithm.SOR], max_quote_age_ms=2_000)
    # The worker refused the future quote (DLQ) and routed on the real one; the replay keeps the
    # future quote, which shadows the real one and is stale: the venue is excluded.
    assert plans[0].planned_qty == 1, plans[0].excluded


# --- 7. intake.py / risk.py: a created_at in microseconds (or any far-future date) never expires -----------

def test_an_intent_dated_in_microseconds_still_expires():
    now_ms = 1_710_000_000_000
    intent = make_intent(1, limit=100, created_at=now_ms * 1000)  # a unit slip: microseconds
    # A day later (a replay after lost offsets), the intent must be rejected, not executed again.
    assert check_intent(intent, now_ms + 86_400_000, RiskLimits(intent_ttl_ms=60_000)) is not None


# --- 8. config.py:86-95 notional caps (money) go through a binary float and are unbounded/negative ---------

def test_an_account_cap_from_json_is_exact_not_a_float(monkeypatch):
    monkeypatch.setenv("SOR_ACCOUNT_MAX_NOTIONAL", '{"a": 12345678901234567.89}')
    try:
        caps = Settings().account_max_notional
    except Exception:  # refusing the JSON number with a clear error would do too
        return
    assert caps["a"] == D("12345678901234567.89"), caps  # today: Decimal('12345678901234568')


def test_a_negative_notional_cap_is_refused_naming_the_field():
    from worker.cli.service import load_settings

    with pytest.raises(InputError, match="default_max_notional"):  # today: accepted; every intent is risk_limit
        load_settings({"default_max_notional": "-5"})


# --- 9. cli/replay.py:23 and cli/sim.py:48: errors that do not name the flag, and tracebacks ---------------

def test_replay_with_an_unknown_algorithm_names_the_flag(tmp_path, capsys):
    from worker.cli.main import main

    venues = tmp_path / "v.toml"
    venues.write_text('[[venues]]\nname = "a"\n')
    code = main(["replay", "--mode", "what-if", "--venues", str(venues), "--algorithms", "sor,xx",
                 "--bootstrap-servers", "127.0.0.1:1"])
    assert code == 2
    assert "--algorithms" in capsys.readouterr().err  # today: "'xx' is not a valid Algorithm"


def test_sim_with_a_bad_setting_exits_2_not_a_traceback(monkeypatch, capsys):
    from worker.cli.main import main

    monkeypatch.setenv("SOR_MAX_QUOTE_AGE_MS", "abc")
    assert main(["sim", "market"]) == 2  # today: InputError escapes main (traceback, exit 1)


def test_sim_oms_with_rate_0_exits_2_not_zero_division(monkeypatch):
    import worker.pipeline.kafka as kafka
    from worker.cli.main import main

    async def no_topics(*a, **k):
        return None

    class _Producer:
        async def send(self, *a, **k):
            return None

        async def flush(self):
            return None

        async def stop(self):
            return None

    async def producer(self, role=""):
        return _Producer()

    monkeypatch.setattr(kafka, "ensure_topics", no_topics)
    monkeypatch.setattr(kafka.KafkaClients, "producer", producer)
    assert main(["sim", "oms", "--intents", "1", "--rate", "0"]) == 2  # today: ZeroDivisionError traceback


# --- 10. kafka.py:323 a quote reader without a DLQ (sor api, sor paper-venue) drops a bad quote silently -------

def test_a_bad_quote_is_never_dropped_silently_by_a_reader_without_a_dlq():
    from structlog.testing import capture_logs

    async def main():
        feed = QuoteFeed(Settings(), QuoteCache({"a"}), None)  # as bootstrap builds it for sor api / paper-venue
        feed.consumer = FakeConsumer()
        feed.consumer.assigned.add(QTP)
        feed.consumer.feed(QTP, 0, b'{"venue": "a"}', key=b"a:BTC/USD")
        with capture_logs() as logs:
            assert await feed._poll(0) == 1
        return logs

    logs = asyncio.run(main())
    assert any("symbol" in str(entry.get("error", "")) for entry in logs), logs  # today: no log, no counter


def _clean(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("SOR_"):
            monkeypatch.delenv(name, raising=False)


def test_a_toml_config_file_cap_written_as_a_toml_float_still_loads_exactly(tmp_path, monkeypatch):
    """SOR_CONFIG_FILE is read as the venues file is: `50000.5` is an exact TOML decimal."""
    _clean(monkeypatch)
    path = tmp_path / "sor.toml"
    path.write_text("default_max_notional = 50000.5\n\n[account_max_notional]\nacct-7 = 1000000.0\n")
    monkeypatch.setenv("SOR_CONFIG_FILE", str(path))
    settings = Settings()
    assert settings.default_max_notional == D("50000.5")
    assert settings.account_max_notional == {"acct-7": D("1000000.0")}


def test_an_account_cap_above_the_wire_bound_still_loads(monkeypatch):
    """A cap is compared with qty x limit price (up to 1e36): a huge per-account cap is how one
    account is exempted from SOR_DEFAULT_MAX_NOTIONAL."""
    _clean(monkeypatch)
    monkeypatch.setenv("SOR_DEFAULT_MAX_NOTIONAL", "100000")
    monkeypatch.setenv("SOR_ACCOUNT_MAX_NOTIONAL", '{"house": "1e20"}')
    settings = Settings()
    assert settings.account_max_notional["house"] == D("1e20")



def test_a_toml_integer_setting_with_a_huge_exponent_is_refused_promptly(tmp_path):
    """Only the caps are read exactly from SOR_CONFIG_FILE: `dedupe_capacity = 1e99999999` stays a
    float (inf), refused at once, never a 100-million-digit integer built at start-up."""
    path = tmp_path / "sor.toml"
    path.write_text("dedupe_capacity = 1e99999999\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOR_")}
    env["SOR_CONFIG_FILE"] = str(path)
    code = ("from worker.cli.service import load_settings\n"
            "from worker.domain.errors import InputError\n"
            "try:\n    load_settings({})\nexcept InputError as exc:\n    print('REFUSED', exc)\n"
            "else:\n    print('ACCEPTED')\n")
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("SOR_CONFIG_FILE `dedupe_capacity = 1e99999999`: still validating after 20 s")
    assert done.stdout.startswith("REFUSED") and "dedupe_capacity" in done.stdout, (done.stdout, done.stderr[-500:])


def test_a_cap_given_as_a_json_list_with_a_huge_exponent_is_a_settings_error_not_a_traceback(monkeypatch):
    """Decimal() takes a list as a (sign, digits, exponent) tuple; an exponent beyond ssize_t
    raises OverflowError, which _notional_cap does not catch: a traceback, not InputError."""
    _clean(monkeypatch)
    monkeypatch.setenv("SOR_ACCOUNT_MAX_NOTIONAL", '{"a": [0, [1], 99999999999999999999999]}')
    with pytest.raises(InputError, match="account_max_notional"):
        load_settings({})


def test_a_cap_given_as_a_json_list_is_refused(monkeypatch):
    """Before f32ebed a list was refused by name; now `[0, [1, 2], -1]` is a cap of 1.2."""
    _clean(monkeypatch)
    monkeypatch.setenv("SOR_ACCOUNT_MAX_NOTIONAL", '{"a": [0, [1, 2], -1]}')
    with pytest.raises(InputError, match="account_max_notional"):
        load_settings({})


# --- 13. looser edges: booleans as words, invisible characters in identifiers, replay's key check ---------

@pytest.mark.parametrize("token", ['"yes"', '"no"', "1", '"false"'])
def test_dry_run_is_a_json_boolean_as_the_schema_says(token):
    """models.py `dry_run: bool`: pydantic's lax mode took "yes", "no", 1 and "false" where the
    published schema says boolean; a consumer checking the schema and the worker then disagree
    on whether an order was real. Only ``true`` and ``false`` are accepted."""
    with pytest.raises(InputError) as info:
        decode(OrderIntent, _with_raw(INTENT, "dry_run", token))
    assert str(info.value).startswith("dry_run"), str(info.value)


def test_the_http_order_body_takes_dry_run_as_a_json_boolean_only():
    from worker.api.models import SmartOrderRequest
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        SmartOrderRequest.model_validate_json(json.dumps({"symbol": "BTC/USD", "side": "buy", "qty": "1", "dry_run": "yes"}))
    assert info.value.errors()[0]["loc"] == ("dry_run",)


@pytest.mark.parametrize("field", ["intent_id", "account_id", "symbol"])
@pytest.mark.parametrize("text", ["acct\u200b", "a\x00b", "a\nb", "\u202eacct"])
def test_identifiers_with_invisible_or_control_characters_are_refused_naming_the_field(field, text):
    """``account_id`` "acct" plus a zero-width space is another account to the allow-list and the
    notional caps (neither applies), yet reads the same in every log and dashboard; a newline
    splits a log line. Such identifiers are refused by name."""
    from worker.pipeline.intake import decode_intent

    doc = {**INTENT, field: text}
    record = FakeRecord("i", 0, 0, doc["intent_id"].encode(), json.dumps(doc).encode())
    with pytest.raises(InputError) as info:  # at the intake: a journal record of such an intent still reads back
        decode_intent(record)
    assert str(info.value).startswith(field), str(info.value)


def test_identifiers_keep_ordinary_characters():
    intent = decode(OrderIntent, json.dumps({**INTENT, "intent_id": "oms:2024/03-ü 1", "account_id": "desk 7",
                                             "symbol": "BTC/USDT"}).encode())
    assert intent.intent_id == "oms:2024/03-ü 1" and intent.account_id == "desk 7"


def test_what_if_skips_an_intent_record_the_worker_would_dead_letter_for_its_key():
    """replay.py `what_if` decoded the value only: a record keyed by another id (which the
    worker dead-letters, never executes) was routed and counted as an intent."""
    now = 1_710_000_000_000
    venues = [VenueConfig(name="a", step_size="0.00001")]
    quote = FakeRecord("q", 0, 0, b"a:BTC/USD", encode(make_quote("a", asks=[(100, 5)], ts=now)), timestamp=now)
    good = FakeRecord("i", 0, 0, b"w-1", encode(make_intent(1, limit=200, intent_id="w-1")), timestamp=now + 1)
    bad_key = FakeRecord("i", 0, 1, b"other", encode(make_intent(1, limit=200, intent_id="w-2")), timestamp=now + 2)
    plans, summary = what_if([good, bad_key], [quote], venues, [Algorithm.SOR], max_quote_age_ms=None)
    assert [p.intent_id for p in plans] == ["w-1"] and summary.invalid == 1


def test_a_quote_keyed_as_another_book_is_dead_lettered_and_never_cached():
    """kafka.py QuoteFeed: the record's key was never read. The quotes topic is compacted by
    ``venue:symbol``, so a snapshot of book B keyed as book A is cached live as B, but after the
    next compaction it has erased A's latest snapshot and will itself vanish once B's key moves
    on: a restart then loads other books than the running worker routed on. Refused like an
    intent whose key is not its id."""

    async def main():
        feed, producer, cache = poisoned_feed()
        feed.consumer.feed(QTP, 0, encode(make_quote("a", asks=[(100, 1)], ts=5)), key=b"b:BTC/USD")
        await feed._poll(0)
        [dead] = [orjson.loads(v) for t, v, _ in producer.sent if t == "sor.dlq.v1"]
        assert dead["error"].startswith("key: must equal venue:symbol 'a:BTC/USD'"), dead["error"]
        assert cache.get("a", "BTC/USD") is None

    asyncio.run(main())


def test_what_if_skips_a_quote_keyed_as_another_book_as_the_worker_does():
    now = 1_710_000_000_000
    venues = [VenueConfig(name="a", step_size="0.00001")]
    mis_keyed = FakeRecord("q", 0, 0, b"b:BTC/USD", encode(make_quote("a", asks=[(100, 5)], ts=now)), timestamp=now)
    intent = FakeRecord("i", 0, 0, b"w-1", encode(make_intent(1, limit=200, intent_id="w-1")), timestamp=now + 1)
    plans, _ = what_if([intent], [mis_keyed], venues, [Algorithm.SOR], max_quote_age_ms=None)
    assert plans[0].planned_qty == 0, "routed on a snapshot the worker refused"
