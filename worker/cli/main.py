"""The ``sor`` command: a thin dispatcher; each sub-command imports only what it needs."""

from __future__ import annotations

import argparse
import sys


def _range_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--partition", type=int, action="append", help="repeatable; default: all")
    p.add_argument("--from-offset", type=int)
    p.add_argument("--to-offset", type=int, help="exclusive")
    p.add_argument("--from-time", help="epoch ms or ISO 8601")
    p.add_argument("--to-time", help="epoch ms or ISO 8601, exclusive")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sor", description="Smart order router worker.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("plan", help="read {intent, venues, quotes} JSON on stdin, print the RoutePlan")

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker (Tansu) in the foreground")
    p.add_argument("--port", type=int, default=9092)

    p = sub.add_parser("worker", help="consume intents, route, execute, publish; until SIGTERM")
    p.add_argument("--bootstrap-servers", dest="bootstrap_servers", help="HOST:PORT[,...] (SOR_BOOTSTRAP_SERVERS)")
    p.add_argument("--venues", dest="venues_file", help="venues TOML file (SOR_VENUES_FILE)")
    p.add_argument("--group-id", dest="group_id", help="consumer group (SOR_GROUP_ID)")
    p.add_argument("--max-in-flight", dest="max_in_flight", type=int, help="intents in flight (SOR_MAX_IN_FLIGHT)")
    p.add_argument("--max-quote-age-ms", dest="max_quote_age_ms", type=int, help="stale after (SOR_MAX_QUOTE_AGE_MS)")
    p.add_argument("--http-port", dest="http_port", type=int, help="metrics/health port (SOR_HTTP_PORT)")
    p.add_argument("--log-format", dest="log_format", choices=["json", "console"], help="(SOR_LOG_FORMAT)")

    p = sub.add_parser("api", help="the HTTP API: route, split, smart orders and Binance's SOR endpoints; until SIGTERM")
    p.add_argument("--bootstrap-servers", dest="bootstrap_servers", help="HOST:PORT[,...] (SOR_BOOTSTRAP_SERVERS)")
    p.add_argument("--venues", dest="venues_file", help="venues TOML file (SOR_VENUES_FILE)")
    p.add_argument("--host", dest="api_host", help="listen address (SOR_API_HOST, default 127.0.0.1)")
    p.add_argument("--port", dest="api_port", type=int, help="listen port (SOR_API_PORT, default 8090)")
    p.add_argument("--log-format", dest="log_format", choices=["json", "console"], help="(SOR_LOG_FORMAT)")

    p = sub.add_parser("paper-venue", help="paper venues as a Binance-style HTTP process (books from the quotes topic)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--venues", dest="venues_file", required=True, help="venues TOML file")
    p.add_argument("--bootstrap-servers", dest="bootstrap_servers", help="HOST:PORT (SOR_BOOTSTRAP_SERVERS)")

    p = sub.add_parser("feed", help="poll the order books of the ccxt venues, publish them as quotes; until SIGTERM")
    p.add_argument("--venues", dest="venues_file", help="venues TOML file (SOR_VENUES_FILE); its adapter = \"ccxt\" venues")
    p.add_argument("--bootstrap-servers", dest="bootstrap_servers", help="HOST:PORT[,...] (SOR_BOOTSTRAP_SERVERS)")
    p.add_argument("--interval-ms", dest="interval_ms", type=int, help="between polls of one book (SOR_FEED_INTERVAL_MS)")
    p.add_argument("--depth", type=int, help="levels per side (SOR_FEED_DEPTH)")
    p.add_argument("--http-port", dest="http_port", type=int, help="metrics/health port (SOR_HTTP_PORT)")

    p = sub.add_parser("sim", help="run the market-data (quotes) or OMS (intents) simulator")
    p.add_argument("what", choices=["market", "oms"])
    p.add_argument("--bootstrap-servers", dest="bootstrap_servers")
    p.add_argument("--interval", type=float, default=0.1, help="market: seconds between snapshots")
    p.add_argument("--intents", type=int, default=0, help="oms: how many (0 = forever)")
    p.add_argument("--rate", type=float, default=20.0, help="oms: intents per second")
    p.add_argument("--mid", type=float, default=42_000.0, help="oms: price the limits are set around")

    p = sub.add_parser("replay", help="re-read a topic range: what-if routing (places nothing) or re-publish outcomes")
    p.add_argument("--mode", choices=["what-if", "republish"], required=True)
    p.add_argument("--bootstrap-servers", dest="bootstrap_servers")
    p.add_argument("--topic", help="source topic (what-if: the intents topic; republish: an outcome topic)")
    _range_arguments(p)
    p.add_argument("--venues", help="venues TOML (what-if)")
    p.add_argument("--algorithms", default="sor,split,best", help="what-if: comma-separated")
    p.add_argument("--out", help="what-if: write the plans as JSON lines here")
    p.add_argument("--report", help="what-if: write the comparison as an HTML page here (and a CSV beside it)")
    p.add_argument("--to-topic", dest="to_topic", help="what-if: publish plans here; republish: the target topic")

    p = sub.add_parser("report", help="best-execution (TCA) report of an executions range or JSON lines: one offline HTML + CSV")
    p.add_argument("--bootstrap-servers", dest="bootstrap_servers")
    p.add_argument("--topic", help="executions topic (default: SOR_TOPICS__EXECUTIONS or sor.executions.v1)")
    _range_arguments(p)
    p.add_argument("--jsonl", action="append", help="read results (and plans) from this JSON-lines file instead of Kafka; repeatable")
    p.add_argument("--out", default="sor-report.html", help="the HTML file; the CSV goes beside it (default: sor-report.html)")

    p = sub.add_parser("schemas", help="JSON Schemas and the AsyncAPI document of the events")
    p.add_argument("action", choices=["export"])
    p.add_argument("--dir", default="schemas")

    p = sub.add_parser("demo", help="broker + paper venues + market data + OMS + worker, with a summary")
    p.add_argument("--intents", type=int, default=300, help="how many intents the OMS simulator sends")
    p.add_argument("--rate", type=float, default=40.0, help="intents per second")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--bootstrap-servers", dest="bootstrap_servers", help="use this Kafka instead of an embedded broker")
    p.add_argument("--http-port", dest="http_port", type=int, default=8081, help="/metrics, /healthz, /readyz while it runs")
    p.add_argument("--report-dir", dest="report_dir", default=".", help="where the best-execution report (HTML + CSV) is written")
    p.add_argument("--ccxt", action="store_true",
                   help="trade and read books through ccxt's own binance class, pointed at the local paper venues (offline)")
    p.add_argument("--api-port", dest="api_port", type=int, default=8090, help="the HTTP API (`sor api`) while it runs; 0 picks a free port")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "plan":
        from worker.cli import plan

        return plan.main()
    if args.command == "broker":
        from worker.cli import run

        return run.broker(args.port)
    if args.command == "worker":
        from worker.cli import run

        opts = vars(args).copy()
        opts.pop("command")
        return run.worker(opts)
    if args.command == "api":
        from worker.cli import api

        return api.main({k: v for k, v in vars(args).items() if k != "command"})
    if args.command == "paper-venue":
        from worker.cli import run

        return run.paper_venue(args.port, {"venues_file": args.venues_file, "bootstrap_servers": args.bootstrap_servers})
    if args.command == "replay":
        from worker.cli import replay

        return replay.main(args)
    if args.command == "report":
        from worker.cli import report

        return report.main(args)
    if args.command == "feed":
        from worker.cli import feed

        return feed.main(args)
    if args.command == "sim":
        from worker.cli import sim

        return sim.main(args)
    if args.command == "schemas":
        from pathlib import Path

        from worker.schemas import export

        for path in export(Path(args.dir)):
            print(path)
        return 0
    if args.command == "demo":
        from worker.cli import demo

        return demo.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
