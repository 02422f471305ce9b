"""``sor schemas export``: JSON Schemas of every event and the AsyncAPI 3.0 document,
generated from the pydantic models so that the published contract cannot drift."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from worker.config import Topics
from worker.domain.models import DeadLetter, ExecutionResult, FillEvent, OrderIntent, RoutePlan, VenueQuote
from worker.execution.journal import JOURNAL_FORMAT, JournalEntry

# (topic field, message name, model, schema mode, direction for the worker, key, summary)
EVENTS: list[tuple[str, str, type[BaseModel], str, str, str, str]] = [
    ("intents", "OrderIntent", OrderIntent, "validation", "receive", "intent_id", "An order the OMS wants executed."),
    ("quotes", "VenueQuote", VenueQuote, "validation", "receive", "venue:symbol", "An order-book snapshot, best level first."),
    ("plans", "RoutePlan", RoutePlan, "serialization", "send", "intent_id", "The split plan of one routing round."),
    ("fills", "FillEvent", FillEvent, "serialization", "send", "intent_id", "One allocation; de-duplicate on fill_id."),
    ("executions", "ExecutionResult", ExecutionResult, "serialization", "send", "intent_id", "Exactly one final outcome per intent."),
    ("dlq", "DeadLetter", DeadLetter, "serialization", "send", "source topic:partition:offset", "Input that could not be decoded or validated."),
    ("journal", "JournalEntry", JournalEntry, "serialization", "send", "intent_id", "Internal: the intent state machine (compacted)."),
]


def _http_shapes() -> list[tuple[str, dict]]:
    """The JSON shapes of `sor api` (the seed's route, split and execution results)."""
    from pydantic import TypeAdapter

    from worker.api.models import ExecutionReport, Pending, RouteResult, SmartOrderRequest, SplitPlan

    route = TypeAdapter(list[RouteResult]).json_schema(mode="serialization")
    route["title"] = "RouteResult"
    route["description"] = "GET /v1/route/{symbol}[/{quote}]: every venue with a usable quote, best first."
    return [
        ("RouteResult", route),
        ("SplitPlan", SplitPlan.model_json_schema(mode="serialization")),
        ("SmartOrderRequest", SmartOrderRequest.model_json_schema(mode="validation")),
        ("ExecutionReport", ExecutionReport.model_json_schema(mode="serialization")),
        ("PendingOrder", Pending.model_json_schema(mode="serialization")),
    ]


def file_name(message: str) -> str:
    snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in message).lstrip("_")
    return f"{snake}.schema.json"


def json_schemas() -> dict[str, dict]:
    out = {}
    for _, name, model, mode, *_ in EVENTS:
        schema = model.model_json_schema(mode=mode)
        if model is JournalEntry:  # the record leaves out a leg's planned leg: it is its round's plan.legs[i]
            leg = schema["$defs"]["JournalLeg"]
            leg["required"] = [f for f in leg["required"] if f != "leg"]
            leg["properties"]["leg"] = {**leg["properties"]["leg"], "description": "Absent when equal to the round's plan.legs[i]."}
            schema["properties"] = {"format": {"type": "integer", "minimum": 1, "default": 1, "description":
                                               f"Record layout; this release writes {JOURNAL_FORMAT} and refuses newer ones."},
                                    **schema["properties"]}
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = file_name(name)
        out[file_name(name)] = schema
    for name, schema in _http_shapes():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = file_name(name)
        out[file_name(name)] = schema
    return out


def asyncapi(topics: Topics | None = None) -> dict:
    topics = topics or Topics()
    channels, operations, messages = {}, {}, {}
    for field, name, _, _, action, key, summary in EVENTS:
        channels[field] = {
            "address": getattr(topics, field),
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
            "bindings": {"kafka": {"topicConfiguration": {"cleanup.policy": ["compact"]}} if field == "journal" else {}},
        }
        operations[f"{action}{name}"] = {
            "action": action, "channel": {"$ref": f"#/channels/{field}"},
            "messages": [{"$ref": f"#/channels/{field}/messages/{name}"}], "summary": summary,
        }
        messages[name] = {
            "name": name, "title": name, "summary": summary, "contentType": "application/json",
            "payload": {"$ref": file_name(name)},
            "bindings": {"kafka": {"key": {"type": "string", "description": key}}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "SOR worker", "version": "1.0.0",
                 "description": "Smart order router: order intents in, plans, fills and results out. Money is JSON strings (Decimal)."},
        "servers": {
            "production": {"host": "kafka:9092", "protocol": "kafka", "description": "Apache Kafka (KRaft)"},
            "embedded": {"host": "127.0.0.1:9092", "protocol": "kafka", "description": "`sor broker` (Tansu, memory-only)"},
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render() -> dict[str, str]:
    """File name -> exact text, as committed under ``schemas/``."""
    files = {name: json.dumps(schema, indent=2, sort_keys=True) + "\n" for name, schema in json_schemas().items()}
    files["asyncapi.json"] = json.dumps(asyncapi(), indent=2) + "\n"
    return files


def export(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
