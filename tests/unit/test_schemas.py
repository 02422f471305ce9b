"""The committed contract under schemas/ must be exactly what the models generate."""

from __future__ import annotations

import json
from pathlib import Path

from worker.schemas import EVENTS, render

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_committed_schemas_match_the_models():
    for name, text in render().items():
        committed = SCHEMAS / name
        assert committed.exists(), f"{name} missing: run `sor schemas export`"
        assert committed.read_text() == text, f"{name} drifted from the models: run `sor schemas export` and commit"


def test_asyncapi_names_every_topic_key_message_and_direction():
    doc = json.loads((SCHEMAS / "asyncapi.json").read_text())
    assert doc["asyncapi"].startswith("3.")
    assert {c["address"] for c in doc["channels"].values()} >= {
        "sor.intents.v1", "sor.quotes.v1", "sor.plans.v1", "sor.executions.v1", "sor.fills.v1", "sor.dlq.v1"}
    actions = {op["channel"]["$ref"].split("/")[-1]: op["action"] for op in doc["operations"].values()}
    assert actions["intents"] == "receive" and actions["quotes"] == "receive" and actions["executions"] == "send"
    for msg in doc["components"]["messages"].values():
        assert msg["bindings"]["kafka"]["key"]["description"]
        assert (SCHEMAS / msg["payload"]["$ref"]).exists()
    assert len(doc["components"]["messages"]) == len(EVENTS)


def test_money_is_a_string_in_every_outgoing_schema():
    result = json.loads((SCHEMAS / "execution_result.schema.json").read_text())
    assert result["properties"]["filled_qty"]["type"] == "string"
    fill = json.loads((SCHEMAS / "fill_event.schema.json").read_text())
    assert fill["$defs"]["Fill"]["properties"]["price"]["type"] == "string"
