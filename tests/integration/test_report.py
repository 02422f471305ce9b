"""`sor report` over a real executions range (plans read from the plans topic), and
`sor replay --mode what-if --report` drawing the algorithm comparison."""

from __future__ import annotations

import csv
import io
import re

import orjson
import pytest

from tests.integration.test_replay import sor
from tests.integration.test_worker import BOOKS, intent, make_topics, publish_quotes
from tests.support.kafka_io import produce_json
from tests.unit.test_report import CHARTS, recorded

pytestmark = pytest.mark.integration


def test_report_of_an_executions_range_links_plans_from_the_plans_topic(bootstrap, topics, tmp_path):
    make_topics(bootstrap, topics)
    results, plans = recorded()
    produce_json(bootstrap, topics.plans, [(p["intent_id"], p) for p in plans])
    produce_json(bootstrap, topics.executions, [(r["intent_id"], r) for r in results] + [("junk", b"{not json")])
    out = tmp_path / "range.html"
    proc = sor("report", "--bootstrap-servers", bootstrap, "--out", str(out), env=topics.env)
    assert proc.returncode == 0, proc.stderr
    assert f"report: {out}" in proc.stdout and "skipped result" in proc.stderr
    html = out.read_text()
    for chart in CHARTS:
        assert f'<figure id="{chart}"><img' in html
    assert "60 intents" in html and "1 undecodable records skipped" in html
    assert len(re.findall(r'<a href="#plan-[0-9a-f]{16}">', html)) == 20
    assert html.count('<div class="plan" id="plan-') == 20

    # An offset range of one partition holds only that partition's results.
    proc = sor("report", "--bootstrap-servers", bootstrap, "--partition", "0", "--out", str(tmp_path / "p0.html"), env=topics.env)
    assert proc.returncode == 0, proc.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p0.csv").read_text())))
    intents = sum(int(r["value"]) for r in rows if r["figure"] == "summary" and r["metric"] == "intents")
    assert 0 < intents < 60


def test_report_of_an_empty_range_is_a_clear_error(bootstrap, topics, tmp_path):
    make_topics(bootstrap, topics)
    proc = sor("report", "--bootstrap-servers", bootstrap, "--out", str(tmp_path / "r.html"), env=topics.env)
    assert proc.returncode == 2 and "no execution results" in proc.stderr and "Traceback" not in proc.stderr


def test_what_if_report_draws_sor_split_and_best(bootstrap, topics, venues_file, tmp_path):
    make_topics(bootstrap, topics)
    publish_quotes(bootstrap, topics, BOOKS["BTC/USD"])
    produce_json(bootstrap, topics.intents, [(f"w-{n}", intent(f"w-{n}", f"{0.2 + n / 10:.1f}", limit=42170)) for n in range(10)])
    out = tmp_path / "what-if.html"
    proc = sor("replay", "--mode", "what-if", "--bootstrap-servers", bootstrap, "--venues", str(venues_file), "--report", str(out),
               env={**topics.env, "SOR_MAX_QUOTE_AGE_MS": "600000"})
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    for chart in ("chart-vs-sor", "chart-savings", "chart-unfilled"):
        assert f'<figure id="{chart}"><img' in html
    for algorithm in ("sor", "split", "best"):
        assert f'<td class="l">{algorithm}</td><td>10</td>' in html
    assert orjson.loads(orjson.dumps(out.with_suffix(".csv").read_text().splitlines()[0])) == "figure,series,key,metric,value"
