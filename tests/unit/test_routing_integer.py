"""The integer hot path gives exactly the plans of the all-``Decimal`` router it replaced,
in any ambient decimal context, and never raises on extreme but valid numbers."""

from __future__ import annotations

import decimal
import random
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.adversarial import instances as adversarial_instances
from tests.support.oracles import legacy_route
from tests.support.scenarios import make_intent, make_quote, random_market, small_scenarios
from worker.domain.models import Algorithm, Side, VenueConfig
from worker.routing.book import ROUTING_CONTEXT, _MEMO
from worker.routing.planner import route
from worker.routing.ranking import venue_route

D = Decimal


def same_plan(intent, venues, quotes, **kw) -> None:
    new = route(intent, quotes, venues, **kw).model_dump_json()
    old = legacy_route(intent, quotes, venues, **kw).model_dump_json()
    assert new == old


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_scenarios(max_venues=4, max_levels=4))
def test_every_algorithm_equals_the_decimal_router_on_small_books(scenario):
    intent, venues, quotes = scenario
    for algorithm in Algorithm:
        same_plan(intent, venues, quotes, algorithm=algorithm)


@pytest.mark.parametrize("seed", range(30))
def test_every_algorithm_equals_the_decimal_router_on_realistic_books(seed):
    rng = random.Random(seed)
    side = "buy" if seed % 2 == 0 else "sell"
    venues, quotes = random_market(rng, n_venues=10, n_levels=50, side=side, aligned=seed % 3 != 0)
    qty = D(str(round(rng.uniform(0.05, 20), 5)))
    limit = None if seed % 4 else (42_015 if side == "buy" else 41_985)
    for algorithm in Algorithm:
        same_plan(make_intent(qty, side=side, limit=limit), venues, quotes, algorithm=algorithm)


def test_sor_equals_the_decimal_router_on_adversarial_books():
    # Coprime lot steps: deep searches. Both searches are the same, node for node.
    for intent, venues, quotes in adversarial_instances(25, seed=3):
        same_plan(intent, venues, quotes)
