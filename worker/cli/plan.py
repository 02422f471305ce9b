"""``sor plan``: one JSON document on stdin, one RoutePlan on stdout."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any, TextIO

from worker.domain.errors import InputError, parse_model
from worker.domain.models import OrderIntent, RoutePlan, VenueConfig, VenueQuote
from worker.routing.planner import route


def parse_plan_request(text: str) -> tuple[OrderIntent, list[VenueConfig], dict[str, VenueQuote]]:
    """Parse ``{"intent": ..., "venues": [...], "quotes": [...]}``; floats are kept exact."""
    try:
        doc: Any = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise InputError(f"(document): not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(doc, dict):
        raise InputError("(document): expected a JSON object with 'intent', 'venues' and 'quotes'")
    for key in ("intent", "venues"):
        if key not in doc:
            raise InputError(f"{key}: Field required")
    for key in ("venues", "quotes"):
        if not isinstance(doc.get(key, []), list):
            raise InputError(f"{key}: expected a JSON array")
    intent = parse_model(OrderIntent, doc["intent"], "intent")
    venues = [parse_model(VenueConfig, v, f"venues[{i}]") for i, v in enumerate(doc["venues"])]
    names = [v.name for v in venues]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"venues: duplicate venue name {dupes[0]!r}")
    quotes: dict[str, VenueQuote] = {}
    for i, raw in enumerate(doc.get("quotes", [])):
        quote = parse_model(VenueQuote, raw, f"quotes[{i}]")
        if quote.symbol == intent.symbol:
            quotes[quote.venue] = quote  # the last snapshot of a venue wins, as on the quotes topic
    return intent, venues, quotes


def run(stdin: TextIO, stdout: TextIO, stderr: TextIO) -> int:
    try:
        intent, venues, quotes = parse_plan_request(stdin.read())
    except InputError as exc:
        print(f"sor plan: error: {exc}", file=stderr)
        return 2
    plan: RoutePlan = route(intent, quotes, venues)
    stdout.write(plan.model_dump_json(indent=2))
    stdout.write("\n")
    return 0


def main() -> int:
    return run(sys.stdin, sys.stdout, sys.stderr)
