"""The what-if comparison (``sor replay --mode what-if --report``) in the report's style."""

from __future__ import annotations

from decimal import Decimal
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from worker.report import charts
from worker.report.html import figure_html, page, render_csv, table_html

if TYPE_CHECKING:
    from worker.replay import WhatIfSummary


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.4f}" if values else "–"


def render_what_if(summary: "WhatIfSummary", source: str = "") -> str:
    """Charts of ``sor`` against ``split`` against ``best`` over the same intents and books."""
    algorithms = list(summary.plans)
    rows = [[escape(a), str(summary.plans[a]), _mean(summary.vs_sor_bps.get(a, [])), _mean(summary.savings_bps.get(a, [])),
             format(summary.unfilled.get(a, Decimal(0)), "f")] for a in algorithms]
    table = table_html(["algorithm", "plans", "mean cost vs sor (bps)", "mean est. saving vs worst venue (bps)", "unfilled qty"],
                   rows, css_id="summary-table")
    table += ('<p class="meta">Cost vs sor: extra fee-inclusive cost per unit against sor, on intents where both planned '
              "the same quantity (positive = dearer than sor). Plans only: what-if never places an order.</p>")
    body = (
        figure_html("chart-vs-sor", charts.distribution({a: summary.vs_sor_bps.get(a, []) for a in algorithms},
                                                    "Estimated cost against sor, per intent", "extra cost vs sor (bps)"),
                "Each point is an intent routed by every algorithm against the same books.")
        + figure_html("chart-savings", charts.distribution({a: summary.savings_bps.get(a, []) for a in algorithms},
                                                       "Estimated saving against the worst single venue", "saving (bps)"),
                  "The plan's savings_vs_single_venue, per intent and algorithm.")
        + figure_html("chart-unfilled", charts.bars({a: summary.unfilled.get(a, Decimal(0)) for a in algorithms},
                                                "Quantity left unplanned", "base quantity"),
                  "Quantity the algorithm could not place within limits and lot rules, summed over the intents.")
    )
    subtitle = (f"{summary.intents} intents replayed ({summary.invalid} undecodable, skipped)"
                f"{' from ' + escape(source) if source else ''}.")
    return page("SOR what-if: sor vs split vs best", subtitle, [("summary", "Summary per algorithm", table), ("charts", "Charts", f'<div class="charts">{body}</div>')])


def what_if_csv_rows(summary: "WhatIfSummary") -> list[tuple[str, str, str, str, str]]:
    rows = []
    for a in summary.plans:
        rows.append(("summary", a, "", "plans", str(summary.plans[a])))
        rows.append(("summary", a, "", "unfilled_qty", format(summary.unfilled.get(a, Decimal(0)), "f")))
        rows += [("cost_vs_sor", a, str(i), "bps", repr(v)) for i, v in enumerate(summary.vs_sor_bps.get(a, []))]
        rows += [("savings_vs_worst_venue", a, str(i), "bps", repr(v)) for i, v in enumerate(summary.savings_bps.get(a, []))]
    return rows


def write_what_if_report(summary: "WhatIfSummary", html_path: Path, source: str = "") -> tuple[Path, Path]:
    """Write the comparison page and its CSV (same name, ``.csv``)."""
    html_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = html_path.with_suffix(".csv")
    html_path.write_text(render_what_if(summary, source), encoding="utf-8")
    csv_path.write_text(render_csv(what_if_csv_rows(summary)), encoding="utf-8")
    return html_path, csv_path
