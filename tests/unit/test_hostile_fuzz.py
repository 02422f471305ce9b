"""Fuzzing the edges (issue 11): the Kafka decoder, ``route()`` and ``sor plan`` never raise
anything but :class:`InputError` / exit 2 with one short line naming the field.

Values are drawn around the documented bounds (|x| < 1e18, at most 18 decimal places, fees
below 10000 bps) and far beyond them, as JSON strings and as raw JSON number tokens.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal, localcontext

from hypothesis import HealthCheck, given, settings, strategies as st

from worker.cli import plan as plan_cli
from worker.domain.errors import MAX_MESSAGE_CHARS, InputError
from worker.domain.models import OrderIntent, RoutePlan, VenueConfig, VenueQuote
from worker.pipeline.codec import decode
from worker.routing.planner import route

D = Decimal
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- raw JSON tokens: (text as it appears in the document) -------------------------------------

EDGE_LITERALS = [
    "1e70", "1e56", "1e-61", "1e-70", "1E-999999", "1e999999999999999999999", "10000", "9999.999999999999999999",
    "0", "-0", "0.0", "-1", "1e18", "999999999999999999", "999999999999999999.999999999999999999", "1000000000000000000",
    "0.000000000000000001", "0.0000000000000000001", "1E-18", "1e-19", "100e-20", "1.000000000000000000000000",
    "123456789012345678901", "0.12345678901234567891", "12345678901234567.891", "42155.5", "1", "0.5",
    "١٢٣", "1_000", "NaN", "Infinity", "-Infinity", "sNaN", " 1", "1 ", "+1", ".5", "5.", "0x10", "", "１", "1e", "--1",
    "9" * 4300, "1" * 41,
]
NUMBER_TOKENS = [
    "0.12345678901234567891", "123456789012345678901", "1e70", "1e-70", "1E-999999", "1e400", "-1e400", "9" * 4300,
    "1" * 400, "42155.5", "1", "0", "-0", "1.5e3", "5e-324", "1.7976931348623157e308", "18446744073709551616",
    "NaN", "Infinity", "true", "false", "null", "[]", "{}", '[["1", "1"]]', '{"a": 1}', "[" * 2000 + "]" * 2000,
    '{"a":' * 1100 + "1" + "}" * 1100, '"' + "x" * 100_000 + '"', '"\\ud800"',
]


def json_number_literals() -> st.SearchStrategy[str]:
    mantissa = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?\Z")
    exponent = st.one_of(st.just(""), st.integers(-400, 400).map(lambda e: f"e{e}"))
    return st.builds(lambda m, e: m + e, mantissa, exponent)


def hostile_tokens() -> st.SearchStrategy[str]:
    """A raw JSON token: a string literal or a number (or something else entirely)."""
    as_string = st.one_of(
        st.sampled_from(EDGE_LITERALS), json_number_literals(), st.text(max_size=30),
        st.decimals(allow_nan=True, allow_infinity=True).map(str),
    ).map(json.dumps)
    as_number = st.one_of(st.sampled_from(NUMBER_TOKENS), json_number_literals(),
                          st.integers(-(10**30), 10**30).map(str),
                          st.floats(allow_nan=False, allow_infinity=False).map(repr))
    return st.one_of(as_string, as_number)


def valid_decimals(low_places: int = 0) -> st.SearchStrategy[str]:
    """In-bounds positive decimals, piled up at the edges."""
    return st.one_of(
        st.sampled_from(["1E-18", "0.000000000000000001", "999999999999999999.999999999999999999", "999999999999999999",
                         "1", "42155.5", "0.00001", "1e17", "100e-20"]),
        st.decimals(min_value=D("1e-18"), max_value=D("999999999999999999.999999999999999999"), places=18,
                    allow_nan=False, allow_infinity=False).filter(lambda d: 0 < d < D("1e18")).map(lambda d: format(d, "f")),
        st.integers(1, 10**18 - 1).map(str),
    )


INTENT = {"intent_id": "fz-1", "account_id": "a", "symbol": "BTC/USD", "side": "buy", "type": "limit", "qty": "1",
          "limit_price": "43000", "created_at": 1710000000000}
QUOTE = {"venue": "v0", "symbol": "BTC/USD", "ts": 1710000000000, "bids": [["42150", "1"]], "asks": [["42155", "1"], ["42156", "2"]]}
VENUE = {"name": "v0", "taker_fee_bps": "10", "maker_fee_bps": "5", "step_size": "0.00001", "min_qty": "0", "min_notional": "0"}

INTENT_FIELDS = ["qty", "limit_price", "created_at", "expires_at", "intent_id", "side", "type", "venues", "dry_run"]
QUOTE_PATHS = [("ts",), ("bids",), ("asks",), ("asks", 0), ("asks", 0, 0), ("asks", 0, 1), ("bids", 0, 0), ("bids", 0, 1), ("venue",)]
VENUE_FIELDS = ["taker_fee_bps", "maker_fee_bps", "step_size", "min_qty", "min_notional", "name"]


def with_token(doc: dict, path: tuple, token: str) -> str:
    """``doc`` as JSON text with the value at ``path`` replaced by the raw ``token``."""
    doc = json.loads(json.dumps(doc))
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "\x00HOLE\x00"
    return json.dumps(doc).replace(json.dumps("\x00HOLE\x00"), token, 1)


def assert_clean_error(exc: InputError, fields: tuple[str, ...]) -> None:
    text = str(exc)
    assert "\n" not in text and len(text) <= MAX_MESSAGE_CHARS, text[:600]
    assert text.startswith(fields) or text.startswith(("(value)", "(document)")), text


# --- the Kafka decoder ----------------------------------------------------------------------


@FUZZ
@given(st.sampled_from(INTENT_FIELDS), hostile_tokens())
def test_decoding_a_hostile_intent_is_an_intent_or_one_line_naming_the_field(field, token):
    raw = with_token(INTENT, (field,), token).encode()
    try:
        intent = decode(OrderIntent, raw)
    except InputError as exc:
        assert_clean_error(exc, (field, "limit_price", "expires_at", "created_at"))
    else:
        assert all(type(v) is not float for v in intent.__dict__.values())
        assert intent.qty < D("1e18") and intent.qty > 0


@FUZZ
@given(st.sampled_from(QUOTE_PATHS), hostile_tokens())
def test_decoding_a_hostile_quote_is_a_quote_or_one_line_naming_the_field(path, token):
    raw = with_token(QUOTE, path, token).encode()
    try:
        quote = decode(VenueQuote, raw)
    except InputError as exc:
        assert_clean_error(exc, (path[0], "bids", "asks"))
    else:
        for price, size in quote.bids + quote.asks:
            assert type(price) is Decimal and type(size) is Decimal and 0 < price < D("1e18") and 0 < size < D("1e18")
        assert not (quote.bids and quote.asks) or quote.bids[0][0] < quote.asks[0][0]


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_decoding_arbitrary_bytes_never_raises_anything_else(raw):
    for model in (OrderIntent, VenueQuote):
        try:
            decode(model, raw)
        except InputError as exc:
            assert_clean_error(exc, tuple(model.model_fields))


@FUZZ
@given(st.sampled_from(list(INTENT) + ["qty"] * 4), json_number_literals())
def test_json_numbers_and_the_same_strings_decode_identically(field, literal):
    """A number written as a JSON number or as a JSON string is the same value, or the same error."""
    results = []
    for token in (literal, json.dumps(literal)):
        try:
            results.append(decode(OrderIntent, with_token(INTENT, (field,), token).encode()))
        except InputError as exc:
            results.append(str(exc).split(" (got ")[0])
    if field in ("qty", "limit_price"):
        assert results[0] == results[1]


# --- route() and sor plan on in-bounds extremes ------------------------------------------------


@st.composite
def extreme_documents(draw) -> dict:
    """Valid documents with every number somewhere in bounds, favouring the edges."""
    n = draw(st.integers(1, 3))
    venues, quotes = [], []
    for i in range(n):
        venues.append({
            "name": f"v{i}",
            "taker_fee_bps": draw(st.sampled_from(["0", "10", "9999", "9999.999999999999999999", "0.000000000000000001"])),
            "step_size": draw(st.sampled_from(["1E-18", "0.00001", "1", "999999999999999999", "0.3", "7"]) | valid_decimals()),
            "min_qty": draw(st.sampled_from(["0", "1E-18", "999999999999999999"]) | valid_decimals()),
            "min_notional": draw(st.sampled_from(["0", "5", "999999999999999999.999999999999999999"]) | valid_decimals()),
        })
        prices = draw(st.lists(valid_decimals(), min_size=1, max_size=6, unique_by=lambda s: D(s)))
        prices.sort(key=D)
        cut = draw(st.integers(0, len(prices)))
        sizes = st.lists(valid_decimals(), min_size=len(prices), max_size=len(prices))
        levels = [[p, s] for p, s in zip(prices, draw(sizes))]
        quotes.append({"venue": f"v{i}", "symbol": "BTC/USD", "ts": draw(st.integers(0, 2**63 - 1)),
                       "bids": levels[:cut], "asks": levels[cut:]})
    order_type = draw(st.sampled_from(["limit", "market"]))
    intent = {"intent_id": "fz", "account_id": "a", "symbol": "BTC/USD", "side": draw(st.sampled_from(["buy", "sell"])),
              "type": order_type, "qty": draw(valid_decimals()), "algorithm": draw(st.sampled_from(["sor", "split", "best"]))}
    if order_type == "limit":
        intent["limit_price"] = draw(valid_decimals())
    return {"intent": intent, "venues": venues, "quotes": quotes}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extreme_documents())
def test_route_never_raises_on_in_bounds_extremes(doc):
    intent, venues, quotes = plan_cli.parse_plan_request(json.dumps(doc))
    plan = route(intent, quotes, venues)
    assert isinstance(plan, RoutePlan)
    RoutePlan.model_validate_json(plan.model_dump_json())  # and it serializes to a readable event
    with localcontext(prec=80):  # the test's own sum must not round: 36-digit quantities
        assert plan.planned_qty + plan.unfilled_qty == intent.qty


def run_plan(text: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = plan_cli.run(io.StringIO(text), out, err)
    return code, out.getvalue(), err.getvalue()


def plan_paths() -> list[tuple]:
    return ([("intent", f) for f in INTENT_FIELDS] + [("venues", 0, f) for f in VENUE_FIELDS]
            + [("quotes", 0, *p) for p in QUOTE_PATHS] + [("intent",), ("venues",), ("quotes",), ("venues", 0), ("quotes", 0)])


@FUZZ
@given(st.sampled_from(plan_paths()), hostile_tokens())
def test_sor_plan_exits_0_or_2_with_one_line_naming_the_field(path, token):
    doc = {"intent": dict(INTENT), "venues": [dict(VENUE)], "quotes": [dict(QUOTE)]}
    code, out, err = run_plan(with_token(doc, path, token))
    if code == 0:
        assert json.loads(out)["plan_id"].startswith("plan:") and err == ""
        return
    assert code == 2 and out == "", (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= MAX_MESSAGE_CHARS + len("sor plan: error: "), err[:600]
    head = path[0] if len(path) == 1 else f"{path[0]}[{path[1]}]" if isinstance(path[1], int) else f"{path[0]}.{path[1]}"
    assert lines[0].startswith(("sor plan: error: " + head, "sor plan: error: (document)", "sor plan: error: intent.limit_price",
                                "sor plan: error: quotes[0].bids/asks")), lines[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(extreme_documents())
def test_sor_plan_plans_every_in_bounds_document(doc):
    code, out, err = run_plan(json.dumps(doc))
    assert code == 0, err
    assert D(json.loads(out)["total_qty"]) == D(doc["intent"]["qty"])
