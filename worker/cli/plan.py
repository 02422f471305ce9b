"""``sor plan``: one JSON document on stdin, one RoutePlan on stdout."""

from __future__ import annotations

import sys
from typing import BinaryIO, TextIO

from pydantic import BaseModel, ConfigDict, Field, model_validator

from worker.domain.errors import InputError
from worker.domain.models import OrderIntent, RoutePlan, VenueConfig, VenueQuote
from worker.pipeline.codec import decode
from worker.routing.planner import route


class PlanRequest(BaseModel):
    """``{"intent": ..., "venues": [...], "quotes": [...]}``: the input of ``sor plan``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    intent: OrderIntent
    venues: list[VenueConfig]
    quotes: list[VenueQuote] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_venues(self) -> "PlanRequest":
        seen: set[str] = set()
        for venue in self.venues:
            if venue.name in seen:
                raise ValueError(f"venues: duplicate venue name {venue.name!r}")
            seen.add(venue.name)
        return self


def parse_plan_request(text: str | bytes) -> tuple[OrderIntent, list[VenueConfig], dict[str, VenueQuote]]:
    """Parse the document with the Kafka edge's own decoder: the same bounds, the same exact
    numbers and the same errors (prefixed with where they are in the document)."""
    request = decode(PlanRequest, text, label="(document)")
    quotes: dict[str, VenueQuote] = {}
    for quote in request.quotes:
        if quote.symbol == request.intent.symbol:
            quotes[quote.venue] = quote  # the last snapshot of a venue wins, as on the quotes topic
    return request.intent, request.venues, quotes


def run(stdin: TextIO | BinaryIO, stdout: TextIO, stderr: TextIO) -> int:
    """Plan the document read from ``stdin``; 0 with the plan on ``stdout``, or 2 with one line on ``stderr``."""
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
    # Bytes, not text: the decoder checks the UTF-8 itself, whatever the locale.
    return run(sys.stdin.buffer, sys.stdout, sys.stderr)
