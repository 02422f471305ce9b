"""The ``sor`` command: a thin dispatcher; each sub-command imports only what it needs."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sor", description="Smart order router worker.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("plan", help="read {intent, venues, quotes} JSON on stdin, print the RoutePlan")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "plan":
        from worker.cli import plan

        return plan.main()
    return 2


if __name__ == "__main__":
    sys.exit(main())
