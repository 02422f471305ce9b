"""``sor replay``: what-if routing or faithful re-publishing of a topic range."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from worker.domain.errors import InputError


def main(args) -> int:
    from worker.cli.service import load_settings
    from worker.config import load_venues
    from worker.domain.models import Algorithm
    from worker.replay import Range, parse_time, run_republish, run_what_if

    try:
        settings = load_settings({"bootstrap_servers": args.bootstrap_servers, "venues_file": args.venues})
        rng = Range(partitions=args.partition or None, from_offset=args.from_offset, to_offset=args.to_offset,
                    from_time=parse_time(args.from_time), to_time=parse_time(args.to_time))
        if args.mode == "what-if":
            if settings.venues_file is None:
                raise InputError("--venues: required for what-if (the venues' fees and lot rules)")
            venues = load_venues(Path(settings.venues_file))
            known = {a.value for a in Algorithm}
            unknown = [a for a in args.algorithms.split(",") if a not in known]
            if unknown:
                raise InputError(f"--algorithms: {', '.join(map(repr, unknown))} not one of {', '.join(sorted(known))}")
            algorithms = [Algorithm(a) for a in args.algorithms.split(",")]
            if args.topic:
                settings = settings.model_copy(update={"topics": settings.topics.model_copy(update={"intents": args.topic})})
            report = Path(args.report) if getattr(args, "report", None) else None
            if report is not None and report.suffix.lower() not in (".html", ".htm"):
                raise InputError(f"--report: {args.report} should end in .html (the CSV is written beside it)")
            summary = asyncio.run(run_what_if(settings, venues, rng, algorithms, Path(args.out) if args.out else None, args.to_topic))
            if report is not None:
                from worker.report.whatif import write_what_if_report

                html_path, csv_path = write_what_if_report(summary, report, settings.topics.intents)
                print(f"report: {html_path}\ncsv:    {csv_path}")
        else:
            if not args.topic or not args.to_topic:
                raise InputError("--topic and --to-topic: both required for republish")
            asyncio.run(run_republish(settings, args.topic, rng, args.to_topic))
    except (ValueError, ArithmeticError) as exc:  # InputError or a bad value in a record: exit 2, one line
        print(f"sor replay: error: {exc}", file=sys.stderr)
        return 2
    return 0
