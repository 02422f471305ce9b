"""The Grafana dashboard only queries series the worker exports, TCA histograms included."""

from __future__ import annotations

import json
import re
from pathlib import Path

from worker.observability import Metrics, _ScrapeTimeGauges

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sor-dashboard.json"


def exported_series() -> set[str]:
    names = set(_ScrapeTimeGauges.SPECS)
    for family in Metrics().registry.collect():
        if family.type == "histogram":
            names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum"}
        elif family.type == "counter":
            names.add(f"{family.name}_total")
        else:
            names.add(family.name)
    return names


def test_every_query_names_an_exported_series():
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in doc["templating"]["list"] if isinstance(v.get("query"), dict)]
    used = {name for e in exprs for name in re.findall(r"\bsor_[a-z_]+", e)}
    assert used and used <= exported_series(), used - exported_series()
    for series in ("sor_shortfall_bps_bucket", "sor_intent_shortfall_bps_bucket", "sor_realized_savings_bps_bucket",
                   "sor_slippage_bps_bucket", "sor_intents_total", "sor_leg_seconds_bucket", "sor_consumer_lag"):
        assert series in used, f"no panel shows {series}"


def test_panels_are_laid_out_once_each_on_one_datasource():
    doc = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    assert doc["__inputs"][0]["pluginId"] == "prometheus"
    for p in doc["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${DS_PROMETHEUS}" and p["targets"]
