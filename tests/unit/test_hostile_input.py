"""Issue 11 items 1-2: hostile documents get one short line naming the field, never a traceback,
and JSON numbers reach ``Decimal`` exactly on both edges (Kafka ``decode`` and ``sor plan``)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from worker.cli import plan as plan_cli
from worker.domain.errors import InputError
from worker.domain.models import OrderIntent, VenueQuote
from worker.pipeline.codec import decode

SOR = str(Path(sys.executable).with_name("sor"))
D = Decimal

INTENT = {"intent_id": "oms-1", "account_id": "acct-7", "symbol": "BTC/USD", "side": "buy", "type": "limit", "qty": "1",
          "limit_price": "43000"}
VENUE = {"name": "binance", "taker_fee_bps": "10", "step_size": "0.00001", "min_qty": "0.00001", "min_notional": "5"}
QUOTE = {"venue": "binance", "symbol": "BTC/USD", "ts": 1710000000000, "bids": [["42150.00", "1.2"]],
         "asks": [["42155.00", "0.8"], ["42156.00", "2"]]}


def document(intent=None, venue=None, quote=None) -> dict:
    return {"intent": {**INTENT, **(intent or {})}, "venues": [{**VENUE, **(venue or {})}], "quotes": [{**QUOTE, **(quote or {})}]}


def run_plan(text: str) -> tuple[int, str, str]:
    """``sor plan`` in-process: an exception escaping here is the traceback a user would see."""
    out, err = io.StringIO(), io.StringIO()
    code = plan_cli.run(io.StringIO(text), out, err)
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, out: str, err: str, field: str) -> str:
    assert code == 2 and out == "", (code, out[:300], err[:300])
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:1000]
    line = lines[0]
    assert line.startswith("sor plan: error: ") and field in line, line
    assert len(line) <= 600, len(line)
    return line


# --- item 1: the fuzzed crashes of `sor plan` ---------------------------------------------------

CRASHERS = {
    "qty_1e70": (document(intent={"qty": "1e70"}), "intent.qty"),
    "level_size_1e56": (document(quote={"asks": [["42155", "1e56"]]}), "quotes[0].asks[0][1]"),
    "step_size_1e-61": (document(venue={"step_size": "1e-61"}), "venues[0].step_size"),
    "min_qty_1e70": (document(venue={"min_qty": "1e70"}), "venues[0].min_qty"),
    "sell_fee_10000_bps": (document(intent={"side": "sell", "limit_price": "42000"}, venue={"taker_fee_bps": "10000"}),
                           "venues[0].taker_fee_bps"),
    "ask_price_1e-70": (document(quote={"asks": [["1e-70", "1"]], "bids": []}), "quotes[0].asks[0][0]"),
    "ask_price_1E-999999": (document(quote={"asks": [["1E-999999", "1"]], "bids": []}), "quotes[0].asks[0][0]"),
}


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_fuzzed_crashers_are_one_line_errors(name):
    doc, field = CRASHERS[name]
    assert_one_line_error(*run_plan(json.dumps(doc)), field)


def test_a_4300_digit_integer_literal_is_a_field_error():
    text = json.dumps(document()).replace('"qty": "1"', '"qty": ' + "9" * 4300)
    line = assert_one_line_error(*run_plan(text), "intent.qty")
    assert "9" * 100 not in line  # the literal is not echoed whole


def test_a_4300_digit_timestamp_is_a_field_error():
    text = json.dumps(document()).replace('"ts": 1710000000000', '"ts": ' + "9" * 4300)
    assert_one_line_error(*run_plan(text), "quotes[0].ts")


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_deeply_nested_objects_are_a_document_error(depth):
    text = '{"a":' * depth + "1" + "}" * depth
    code, out, err = run_plan(text)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err[:500]


def test_deeply_nested_value_inside_a_field_is_a_field_error():
    nested = '{"a":' * 3_000 + "1" + "}" * 3_000
    text = json.dumps(document()).replace('"qty": "1"', '"qty": ' + nested)
    code, out, err = run_plan(text)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err[:500]


def test_a_50_mb_intent_id_is_not_echoed_whole():
    doc = document(intent={"intent_id": "x" * 50_000_000})
    line = assert_one_line_error(*run_plan(json.dumps(doc)), "intent.intent_id")
    assert len(line) <= 600


@pytest.mark.parametrize("literal", ["١٢٣", "1_000", "NaN", "nan", "Infinity", "-Infinity", "inf", "sNaN", " 1", "1 ", "\u00a01",
                                     "1\n", "+1", ".5", "5.", "0x10", "1e", "", "１", "1,5", "--1", "1e+", "١.٥"])
def test_non_ascii_or_non_json_decimal_syntax_is_rejected(literal):
    assert_one_line_error(*run_plan(json.dumps(document(intent={"qty": literal}))), "intent.qty")


@pytest.mark.parametrize("fee", ["10000", "10000.0", "12000", "-0.5"])
def test_fees_outside_0_to_10000_bps_are_rejected(fee):
    assert_one_line_error(*run_plan(json.dumps(document(venue={"taker_fee_bps": fee}))), "venues[0].taker_fee_bps")
    assert_one_line_error(*run_plan(json.dumps(document(venue={"maker_fee_bps": fee}))), "venues[0].maker_fee_bps")


@pytest.mark.parametrize("bids, asks", [([["42160", "1"]], [["42155", "1"]]), ([["42155", "1"]], [["42155", "1"]])])
def test_a_crossed_or_locked_book_is_a_named_error(bids, asks):
    line = assert_one_line_error(*run_plan(json.dumps(document(quote={"bids": bids, "asks": asks}))), "quotes[0].bids/asks")
    assert "crossed book" in line


def test_a_market_order_with_a_limit_price_is_a_named_error():
    doc = document(intent={"type": "market", "limit_price": "43000"})
    line = assert_one_line_error(*run_plan(json.dumps(doc)), "intent.limit_price")
    assert "market" in line


def test_a_book_listed_worst_first_is_sorted_best_first():
    quote = decode(VenueQuote, json.dumps({**QUOTE, "bids": [["42140", "1"], ["42150", "2"]],
                                           "asks": [["42157", "1"], ["42155", "2"]]}).encode())
    assert [p for p, _ in quote.bids] == [D("42150"), D("42140")]
    assert [p for p, _ in quote.asks] == [D("42155"), D("42157")]


def test_a_duplicate_price_level_is_a_named_error():
    doc = document(quote={"asks": [["42155", "1"], ["42156", "1"], ["42155", "2"]]})
    line = assert_one_line_error(*run_plan(json.dumps(doc)), "quotes[0].asks")
    assert "duplicate price level 42155" in line


@pytest.mark.parametrize("value, field", [
    ("999999999999999999", None), ("1000000000000000000", "intent.qty"),
    ("0.000000000000000001", None), ("0.0000000000000000001", "intent.qty"),
    ("1.000000000000000000000000", None), ("1E-18", None), ("1e18", "intent.qty"), ("100e-20", None),
])
def test_the_documented_bounds_are_exactly_where_they_say(value, field):
    code, out, err = run_plan(json.dumps(document(intent={"qty": value, "type": "market", "limit_price": None})))
    if field is None:
        assert code == 0, err
    else:
        assert_one_line_error(code, out, err, field)


def test_the_subprocess_never_prints_a_traceback():
    for doc, field in [CRASHERS["qty_1e70"], CRASHERS["sell_fee_10000_bps"]]:
        proc = subprocess.run([SOR, "plan"], input=json.dumps(doc), capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and field in proc.stderr, proc.stderr
    for raw in [('{"a":' * 5_000 + "1" + "}" * 5_000).encode(), b'{"intent": "\xff"}', b"\xef\xbb\xbf{}", b"\x00"]:
        proc = subprocess.run([SOR, "plan"], input=raw, capture_output=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"})
        err = proc.stderr.decode()
        assert proc.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err[-500:]


def test_sor_plan_keeps_json_numbers_exact_end_to_end():
    doc = ('{"intent": {"intent_id": "x", "account_id": "a", "symbol": "BTC/USD", "side": "buy", "type": "market", '
           '"qty": 0.123456789012345678}, "venues": [{"name": "binance", "step_size": 1e-18}], '
           '"quotes": [{"venue": "binance", "symbol": "BTC/USD", "ts": 1, "asks": [[42155.000000000000000001, 12345678901234567.891]]}]}')
    proc = subprocess.run([SOR, "plan"], input=doc, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["total_qty"] == plan["planned_qty"] == plan["legs"][0]["qty"] == "0.123456789012345678"
    assert plan["legs"][0]["worst_price"] == "42155.000000000000000001"


# --- item 1 on the Kafka edge: the same rules in decode() -------------------------------------


def test_decode_caps_the_error_and_names_the_field():
    raw = json.dumps({**INTENT, "intent_id": "y" * 5_000_000, "symbol": "z" * 1_000_000}).encode()
    with pytest.raises(InputError) as exc:
        decode(OrderIntent, raw)
    text = str(exc.value)
    assert "intent_id" in text and len(text) <= 600 and "\n" not in text


@pytest.mark.parametrize("quote, field", [
    ({"asks": [["1e-70", "1"]], "bids": []}, "asks[0][0]"),
    ({"asks": [["42155", "1e56"]]}, "asks[0][1]"),
    ({"asks": [["42155", 123456789012345678901]]}, "asks[0][1]: must be less than 1e18"),  # the size, as a number
    ({"bids": [["42160", "1"]]}, "bids/asks: crossed book"),
    ({"asks": [["١٢٣", "1"]]}, "asks[0][0]"),
    ({"ts": 1e300}, "ts"),
])
def test_decode_rejects_hostile_quotes_naming_the_field(quote, field):
    with pytest.raises(InputError, match=None) as exc:
        decode(VenueQuote, json.dumps({**QUOTE, **quote}).encode())
    assert field in str(exc.value)


# --- item 2: exact numbers on both edges --------------------------------------------------------

EXACT = [
    # (raw intent JSON, expected qty, expected limit_price)
    ('"qty": 0.123456789012345678, "limit_price": 43000', "0.123456789012345678", "43000"),
    ('"qty": 12345678901234567.891, "limit_price": 43000.000000000000000001', "12345678901234567.891", "43000.000000000000000001"),
    ('"qty": 123456789012345678, "limit_price": 1E+3', "123456789012345678", "1000"),
    ('"qty": 0.1, "limit_price": 42155.1', "0.1", "42155.1"),
    ('"qty": "0.123456789012345678", "limit_price": "43000"', "0.123456789012345678", "43000"),
    ('"qty": 1e-18, "limit_price": 999999999999999999.999999999999999999', "1E-18", "999999999999999999.999999999999999999"),
]
HEAD = '"intent_id": "e-1", "account_id": "a", "symbol": "BTC/USD", "side": "buy", "type": "limit", '


@pytest.mark.parametrize("body, qty, limit", EXACT)
def test_json_numbers_reach_decimal_exactly_on_kafka_and_cli(body, qty, limit):
    raw_intent = "{" + HEAD + body + "}"
    kafka = decode(OrderIntent, raw_intent.encode())
    assert (kafka.qty, kafka.limit_price) == (D(qty), D(limit))
    assert str(kafka.qty) == str(D(qty))  # not merely equal: the same digits
    cli_text = '{"intent": ' + raw_intent + ', "venues": [{"name": "binance"}], "quotes": []}'
    cli_intent, _, _ = plan_cli.parse_plan_request(cli_text)
    assert cli_intent == kafka
    code, out, err = run_plan(cli_text)
    assert code == 0, err
    assert json.loads(out)["total_qty"] == format(D(qty), "f")


def test_level_sizes_and_prices_reach_decimal_exactly_on_kafka_and_cli():
    raw_quote = ('{"venue": "binance", "symbol": "BTC/USD", "ts": 1710000000000, "bids": [[42150.123456789012345678, 123456789012345678]],'
                 ' "asks": [[42155.000000000000000001, 0.123456789012345678], [42156, 12345678901234567.891]]}')
    kafka = decode(VenueQuote, raw_quote.encode())
    assert kafka.bids == [(D("42150.123456789012345678"), D("123456789012345678"))]
    assert kafka.asks == [(D("42155.000000000000000001"), D("0.123456789012345678")), (D("42156"), D("12345678901234567.891"))]
    cli_text = '{"intent": ' + json.dumps(INTENT) + ', "venues": [{"name": "binance"}], "quotes": [' + raw_quote + "]}"
    _, _, quotes = plan_cli.parse_plan_request(cli_text)
    assert quotes["binance"] == kafka


@pytest.mark.parametrize("body, field", [
    ('"qty": 0.12345678901234567891, "limit_price": 1', "qty"),  # the qty: 20 places, refused, not rounded
    ('"qty": 123456789012345678901, "limit_price": 1', "qty"),  # the level size as a qty: above 1e18
    ('"qty": 1e70, "limit_price": 1', "qty"),
    ('"qty": 0.0000000000000000001, "limit_price": 1', "qty"),
    ('"qty": 1, "limit_price": 1E-999999', "limit_price"),
    ('"qty": ' + "1" * 5000 + ', "limit_price": 1', "qty"),
    ('"qty": 1, "limit_price": 1, "created_at": 1e300', "created_at"),
    ('"qty": 1, "limit_price": 1, "created_at": 12345678901234567.0', None),
])
def test_json_numbers_out_of_bounds_give_the_same_error_on_kafka_and_cli(body, field):
    raw_intent = "{" + HEAD + body + "}"
    cli_text = '{"intent": ' + raw_intent + ', "venues": [{"name": "binance"}], "quotes": []}'
    if field is None:
        kafka = decode(OrderIntent, raw_intent.encode())
        assert kafka.created_at == 12345678901234567  # not the float's 12345678901234568
        assert plan_cli.parse_plan_request(cli_text)[0] == kafka
        return
    with pytest.raises(InputError) as k_exc:
        decode(OrderIntent, raw_intent.encode())
    with pytest.raises(InputError) as c_exc:
        plan_cli.parse_plan_request(cli_text)
    assert str(k_exc.value).startswith(field + ":"), str(k_exc.value)
    assert str(c_exc.value) == "intent." + str(k_exc.value)


def test_binary_floats_from_python_callers_are_refused():
    with pytest.raises(TypeError, match="float"):
        OrderIntent.model_validate({**INTENT, "qty": 0.1})


def test_toml_floats_in_a_venues_file_are_exact_decimals(tmp_path):
    from worker.config import load_venues

    path = tmp_path / "venues.toml"
    path.write_text('[[venues]]\nname = "a"\ntaker_fee_bps = 7.5\nstep_size = 1e-8\nreject_rate = 0.02\n'
                    '[[venues]]\nname = "b"\nmin_qty = nan\n')
    with pytest.raises(InputError, match=r"venues\[1\]\.min_qty: must be a finite number"):
        load_venues(path)
    path.write_text('[[venues]]\nname = "a"\ntaker_fee_bps = 7.5\nstep_size = 1e-8\nreject_rate = 0.02\n')
    (venue,) = load_venues(path)
    assert (venue.taker_fee_bps, venue.step_size, venue.reject_rate) == (D("7.5"), D("1E-8"), 0.02)


def test_money_helpers_are_exact_at_the_bounds_whatever_the_ambient_context():
    """The largest accepted quantity on the smallest accepted step needs 36 digits: the
    executor's and the paper venue's lot rounding and VWAPs must not depend on the caller's
    28-digit default context (DivisionImpossible) or on a narrower one."""
    import decimal

    from worker.domain.money import average_price, ceil_to_step, floor_to_step

    qty, step = Decimal("999999999999999999.123456789012345678"), Decimal("1e-18")
    with decimal.localcontext(decimal.Context(prec=80)):
        notional = qty * Decimal("42155.5")  # exact
    for ctx in (decimal.Context(), decimal.Context(prec=5)):
        with decimal.localcontext(ctx):
            assert floor_to_step(qty, step) == qty
            assert ceil_to_step(qty + Decimal("1e-19"), step) == qty + step
            assert average_price(notional, qty) == Decimal("42155.5")
