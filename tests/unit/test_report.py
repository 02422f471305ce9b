"""The best-execution report renders from a recorded run: every chart, the tables, the plan
links, nothing fetched from anywhere; and the CSV carries the same figures.

``tests/fixtures/demo-run.jsonl`` is what ``sor demo --intents 60 --rate 40`` published:
its 60 execution results, then the plans its collector kept (the last round of each intent).
"""

from __future__ import annotations

import base64
import csv
import io
import re
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from worker.cli.main import main as sor
from worker.report import build, write_report
from worker.report.data import plan_anchor
from worker.report.html import csv_rows, render

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "demo-run.jsonl"
CHARTS = ("chart-shortfall", "chart-savings", "chart-venues-time", "chart-venue-share")
PNG = b"\x89PNG\r\n\x1a\n"


def recorded() -> tuple[list[dict], list[dict]]:
    results, plans = [], []
    for line in FIXTURE.read_bytes().splitlines():
        doc = orjson.loads(line)
        (plans if "routes" in doc else results).append(doc)
    return results, plans


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, Path]:
    results, plans = recorded()
    path = write_report({r["intent_id"]: r for r in results}, {p["intent_id"]: p for p in plans}, tmp_path_factory.mktemp("report"))
    return path.read_text(encoding="utf-8"), path


def _section(html: str, anchor: str) -> str:
    start = html.index(f'<section id="{anchor}">')
    return html[start:html.index("</section>", start)]


def test_every_chart_is_an_embedded_png(report):
    html, _ = report
    for chart in CHARTS:
        m = re.search(rf'<figure id="{chart}"><img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', html)
        assert m, f"{chart} missing"
        png = base64.b64decode(m.group(1))
        assert png.startswith(PNG) and len(png) > 10_000, f"{chart} is not a drawn PNG"


def test_the_page_is_self_contained(report):
    html, path = report
    assert path.name == "sor-report.html"
    assert "<script" not in html.lower()
    assert not re.search(r'(src|href)="(?!data:|#)', html), "every src/href is a data URI or an in-page anchor"
    assert "<link" not in html.lower() and "@import" not in html


def test_the_summary_and_the_worst_20_table_link_to_their_plans(report):
    html, _ = report
    summary = _section(html, "summary")
    for algorithm in ("sor", "split", "best"):
        assert f'<td class="l">{algorithm}</td>' in summary
    worst = _section(html, "worst")
    rows = re.findall(r"<tr><td", worst)
    assert len(rows) == 20
    links = re.findall(r'<a href="#(plan-[0-9a-f]{16})">([^<]+)</a>', worst)
    assert len(links) == 20
    plans = _section(html, "plans")
    for anchor, intent_id in links:
        assert anchor == plan_anchor(intent_id)
        block = plans[plans.index(f'id="{anchor}"'):]
        assert f"&quot;intent_id&quot;: &quot;{intent_id}&quot;" in block.split("</pre>")[0]
    # Worst first: the shortfall column (the 10th) never increases down the table.
    shortfalls = [Decimal(cells[9]) for cells in (re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", worst)) if cells]
    assert shortfalls == sorted(shortfalls, reverse=True)


def test_the_csv_carries_the_figures_of_the_page(report):
    _, path = report
    rows = list(csv.DictReader(io.StringIO(path.with_suffix(".csv").read_text())))
    figures = {r["figure"] for r in rows}
    assert figures == {"summary", "shortfall", "savings", "venue_over_time", "venue_share", "worst"}
    results, _ = recorded()
    executed = [r for r in results if r["status"] != "rejected"]
    shortfall = {r["key"]: Decimal(r["value"]) for r in rows if r["figure"] == "shortfall"}
    assert shortfall == {r["intent_id"]: Decimal(r["tca"]["shortfall_bps"]) for r in executed}
    shares = [Decimal(r["value"]) for r in rows if r["figure"] == "venue_share" and r["metric"] == "share"]
    assert abs(sum(shares) - 1) <= Decimal("0.0005")
    notional = sum(Decimal(leg["filled_qty"]) * Decimal(leg["price"]) for r in executed for leg in r["legs"] if leg["price"])
    assert sum(Decimal(r["value"]) for r in rows if r["figure"] == "venue_share" and r["metric"] == "filled_notional") == notional


def test_undecodable_records_are_listed_not_fatal():
    results, plans = recorded()
    data = build(results + [b"not json", {"status": "filled"}], plans)
    assert len(data.records) == 60 and len(data.skipped) == 2
    assert "undecodable records skipped" in render(data)
    assert len(csv_rows(data)) > 0
    rounds = build(results, {"oms-000021": [{"intent_id": "oms-000021", "round": 1}, {"intent_id": "oms-000021", "round": 0}]})
    assert [p["round"] for p in rounds.plans["oms-000021"]] == [0, 1]


def test_sor_report_from_json_lines(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert sor(["report", "--jsonl", str(FIXTURE), "--out", str(out)]) == 0
    assert out.exists() and out.with_suffix(".csv").exists()
    assert str(out) in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"status": "filled"}\n{oops\n')
    assert sor(["report", "--jsonl", str(bad), "--out", str(out)]) == 2
    assert f"{bad}:2: not valid JSON" in capsys.readouterr().err
    assert sor(["report", "--jsonl", str(FIXTURE), "--out", str(tmp_path / "r.png")]) == 2
    assert "--out" in capsys.readouterr().err


def test_the_what_if_comparison_renders_in_the_same_style(tmp_path):
    from worker.replay import WhatIfSummary
    from worker.report.whatif import write_what_if_report

    summary = WhatIfSummary(intents=3, invalid=1, plans={"sor": 3, "split": 3, "best": 3},
                            vs_sor_bps={"sor": [0.0, 0.0, 0.0], "split": [4.5, 6.25, 3.0], "best": [0.0, 1.5, 0.25]},
                            savings_bps={"sor": [30.1, 31.0, 29.5], "split": [18.2, 18.9, 17.0], "best": [30.0, 29.4, 29.5]},
                            unfilled={"sor": Decimal(0), "split": Decimal("0.5"), "best": Decimal("0.25")})
    html_path, csv_path = write_what_if_report(summary, tmp_path / "what-if.html")
    html = html_path.read_text()
    for chart in ("chart-vs-sor", "chart-savings", "chart-unfilled"):
        assert re.search(rf'<figure id="{chart}"><img alt="[^"]*" src="data:image/png;base64,', html), chart
    assert '<table id="summary-table">' in html and "<td>4.5833</td>" in html  # split: mean of 4.5, 6.25, 3.0
    rows = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert {"summary", "cost_vs_sor", "savings_vs_worst_venue"} == {r["figure"] for r in rows}
