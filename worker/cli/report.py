"""``sor report``: the best-execution report of a range of the executions topic or of JSON lines."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

from worker.domain.errors import InputError

#: Plans are published before their result; read the plans topic from this long before the first result.
PLANS_LOOKBACK_MS = 10 * 60 * 1000


def read_jsonl(paths: list[str]) -> tuple[list[dict], list[dict]]:
    """(results, plans) from JSON-lines files; a line is a plan if it has ``routes``, a result
    if it has ``status`` (``sor replay --out`` plans and exported results can be mixed)."""
    results, plans = [], []
    for name in paths:
        try:
            lines = Path(name).read_bytes().splitlines()
        except OSError as exc:
            raise InputError(f"--jsonl: cannot read {name}: {exc.strerror}") from None
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"--jsonl: {name}:{n}: not valid JSON: {exc}") from None
            if isinstance(obj, dict) and "routes" in obj:
                plans.append(obj)
            elif isinstance(obj, dict) and "status" in obj:
                results.append(obj)
            else:
                raise InputError(f"--jsonl: {name}:{n}: neither an ExecutionResult (no 'status') nor a RoutePlan (no 'routes')")
    return results, plans


async def read_topics(settings, rng) -> tuple[list[bytes], list[bytes], dict[str, int]]:
    """Result values of the range, the plans published around them, and each result's record time."""
    from worker.replay import Range, read_range

    records = await read_range(settings, settings.topics.executions, rng, "executions")
    stamps: dict[str, int] = {}
    for rec in records:
        if rec.key:
            stamps[rec.key.decode(errors="replace")] = rec.timestamp
    plans: list[bytes] = []
    if records:
        first, last = min(r.timestamp for r in records), max(r.timestamp for r in records)
        try:
            plan_records = await read_range(settings, settings.topics.plans, Range(from_time=first - PLANS_LOOKBACK_MS, to_time=last + 1), "plans     ")
        except InputError as exc:  # no plans topic: the report still has everything but the plan JSON
            print(f"sor report: warning: {exc}; the report has no plans", file=sys.stderr)
            plan_records = []
        plans = [r.value for r in plan_records if r.key and r.key.decode(errors="replace") in stamps]
    return [r.value for r in records], plans, stamps


def main(args) -> int:
    from worker.cli.service import load_settings
    from worker.replay import Range, parse_time
    from worker.report import build, write_data

    try:
        out = Path(args.out)
        if out.suffix.lower() not in (".html", ".htm"):
            raise InputError(f"--out: {args.out} should end in .html (the CSV is written beside it)")
        if args.jsonl:
            results, plans = read_jsonl(args.jsonl)
            data, source = build(results, plans), ", ".join(args.jsonl)
        else:
            settings = load_settings({"bootstrap_servers": args.bootstrap_servers})
            if args.topic:
                settings = settings.model_copy(update={"topics": settings.topics.model_copy(update={"executions": args.topic})})
            rng = Range(partitions=args.partition or None, from_offset=args.from_offset, to_offset=args.to_offset,
                        from_time=parse_time(args.from_time), to_time=parse_time(args.to_time))
            results, plans, stamps = asyncio.run(read_topics(settings, rng))
            data, source = build(results, plans, stamps), settings.topics.executions
        if not data.records:
            raise InputError("no execution results in the input")
        html_path, csv_path = write_data(data, out, source)
    except ValueError as exc:  # InputError or a bad value in a record: exit 2, one line
        print(f"sor report: error: {exc}", file=sys.stderr)
        return 2
    for line in data.skipped[:5]:
        print(f"sor report: skipped {line}", file=sys.stderr)
    print(f"report: {html_path}\ncsv:    {csv_path}")
    return 0
