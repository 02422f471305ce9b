"""One self-contained HTML page (inline CSS, charts as data URIs, no script) and its CSV."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timezone
from decimal import Decimal
from html import escape
from typing import Iterable, Sequence

import orjson

from worker.report import charts
from worker.report.data import ReportData, plan_anchor

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.25em;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#666;font-size:.9em}.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(600px,1fr));gap:12px 20px}
figure{margin:8px 0}figure img{width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.85em;max-width:900px}
table{border-collapse:collapse;font-size:.85em;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}tr:nth-child(even) td{background:#fafafa}
pre{background:#f7f7f7;border:1px solid #e3e3e3;padding:8px;font-size:.75em;overflow-x:auto;max-height:420px}
.plan{margin-bottom:18px}.bad{color:#b00}code{font-size:.95em}
"""


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, Decimal):
        return format(value.normalize() if value == value.to_integral_value() else value, "f")
    return str(value)


def _utc(ms: int | None) -> str:
    return "–" if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def table_html(headers: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1, css_id: str | None = None) -> str:
    """``rows`` are already-escaped cell HTML; the first ``left`` columns are left-aligned."""
    head = "".join(f'<th class="l">{escape(h)}</th>' if i < left else f"<th>{escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    ident = f' id="{css_id}"' if css_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(chart_id: str, uri: str, caption: str) -> str:
    return f'<figure id="{chart_id}"><img alt="{escape(caption)}" src="{uri}"><figcaption>{escape(caption)}</figcaption></figure>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document; ``sections`` are (anchor, heading, body HTML)."""
    toc = " · ".join(f'<a href="#{a}">{escape(h)}</a>' for a, h, _ in sections)
    body = "".join(f'<section id="{a}"><h2>{escape(h)}</h2>{html}</section>' for a, h, html in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f'<body><h1>{escape(title)}</h1><p class="meta">{subtitle}</p><p class="meta">{toc}</p>{body}</body></html>\n')


def render(data: ReportData, source: str = "") -> str:
    """The execution-quality report of ``data`` as one HTML document."""
    ts = [r.ts for r in data.records if r.ts is not None]
    statuses = data.statuses()
    subtitle = (f"{len(data.records)} intents ({', '.join(f'{k} {v}' for k, v in sorted(statuses.items()))})"
                f"{' from ' + escape(source) if source else ''}; "
                f"{_utc(min(ts)) if ts else '–'} to {_utc(max(ts)) if ts else '–'}. "
                "Costs in bps are positive when the execution cost money; savings are positive when it beat the reference.")
    if data.skipped:
        subtitle += f' <span class="bad">{len(data.skipped)} undecodable records skipped (first: {escape(data.skipped[0])}).</span>'

    summary = data.summary()
    summary_rows = [[escape(alg), _fmt(s["intents"]), _fmt(s["executed"]), _fmt(s["filled_qty"]), _fmt(s["fill_rate"]),
                     _fmt(s["shortfall_mean_bps"]), _fmt(s["shortfall_p50_bps"]), _fmt(s["shortfall_p90_bps"]),
                     _fmt(s["slippage_mean_bps"]), _fmt(s["estimated_savings_worst_mean_bps"]),
                     _fmt(s["realized_savings_worst_mean_bps"]), _fmt(s["realized_savings_best_mean_bps"]),
                     _fmt(s["time_to_fill_p50_ms"])] for alg, s in summary.items()]
    summary_html = table_html(["algorithm", "intents", "executed", "filled qty", "fill rate", "shortfall mean", "shortfall p50",
                           "shortfall p90", "slippage mean", "est. saving vs worst", "realized saving vs worst",
                           "realized saving vs best", "time to fill p50 (ms)"], summary_rows, css_id="summary-table")

    shortfall = {alg: [v for _, v in pts] for alg, pts in data.shortfall_by_algorithm().items()}
    savings = {alg: [(e, r) for _, e, r in pts] for alg, pts in data.savings().items()}
    bins = {v: [(b.start_ms, b.fill_rate, b.latency_p50_ms) for b in bs] for v, bs in data.venue_bins().items()}
    share = data.venue_share()
    charts_html = (
        figure_html("chart-shortfall", charts.distribution(shortfall, "Implementation shortfall per algorithm",
                                                       "shortfall vs arrival mid (bps, fees included)"),
                "Implementation shortfall: all-in net VWAP against the arrival mid across venues, per executed intent.")
        + figure_html("chart-savings", charts.realized_vs_estimated(savings),
                  "Each point is an intent: the plan's estimated saving against sending it whole to the worst single "
                  "venue, and the saving its fills realized. Below the line: the fills did worse than planned.")
        + figure_html("chart-venues-time", charts.venues_over_time(bins),
                  "Legs per venue in equal time bins: filled / sent quantity, and the median venue round trip.")
        + figure_html("chart-venue-share", charts.venue_share(share), "Share of all filled notional (in each symbol's quote asset) by venue.")
    )

    worst = data.worst()
    worst_rows = []
    for rank, res in enumerate(worst, start=1):
        t = res.tca
        anchor = plan_anchor(res.intent_id)
        link = f'<a href="#{anchor}">{escape(res.intent_id)}</a>' if res.intent_id in data.plans else escape(res.intent_id)
        worst_rows.append([str(rank), link, escape(res.algorithm.value), escape(res.side.value), escape(res.status.value),
                           _fmt(res.total_qty), _fmt(t.fill_rate), _fmt(t.arrival_mid), _fmt(t.net_vwap), _fmt(t.shortfall_bps),
                           _fmt(t.slippage_bps), _fmt(t.realized_savings_vs_worst_venue_bps), _fmt(t.time_to_fill_ms),
                           str(len({leg.provider for leg in res.legs})), _fmt(res.rounds)])
    worst_html = table_html(["#", "intent", "algorithm", "side", "status", "qty", "fill rate", "arrival mid", "net VWAP",
                         "shortfall (bps)", "slippage (bps)", "saving vs worst (bps)", "time to fill (ms)", "venues", "rounds"],
                        worst_rows, left=5, css_id="worst-table")

    plans_html = ""
    for res in worst:
        rounds = data.plans.get(res.intent_id)
        if not rounds:
            continue
        text = "\n".join(orjson.dumps(p, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() for p in rounds)
        plans_html += (f'<div class="plan" id="{plan_anchor(res.intent_id)}"><h3>{escape(res.intent_id)} '
                       f'<small>({len(rounds)} plan{"s" if len(rounds) > 1 else ""}; <a href="#worst">back to the table</a>)</small></h3>'
                       f"<pre>{escape(text)}</pre></div>")
    if not plans_html:
        plans_html = '<p class="meta">No plans were given for these intents.</p>'

    return page("SOR execution quality (TCA)", subtitle, [
        ("summary", "Summary per algorithm", summary_html),
        ("charts", "Charts", f'<div class="charts">{charts_html}</div>'),
        ("worst", f"Worst {len(worst)} intents by implementation shortfall", worst_html),
        ("plans", "Plans of the worst intents", plans_html),
    ])


CSV_HEADER = ("figure", "series", "key", "metric", "value")


def csv_rows(data: ReportData) -> list[tuple[str, str, str, str, str]]:
    """The figures of the page in long form: one number per row, exact Decimals as text."""
    rows: list[tuple[str, str, str, str, str]] = []
    for alg, stats in data.summary().items():
        rows += [("summary", alg, "", metric, _csv(v)) for metric, v in stats.items()]
    for alg, pts in data.shortfall_by_algorithm().items():
        rows += [("shortfall", alg, intent_id, "shortfall_bps", _csv(v)) for intent_id, v in pts]
    for alg, pts in data.savings().items():
        for intent_id, est, real in pts:
            rows += [("savings", alg, intent_id, "estimated_savings_vs_worst_venue_bps", _csv(est)),
                     ("savings", alg, intent_id, "realized_savings_vs_worst_venue_bps", _csv(real))]
    for venue, bins in data.venue_bins().items():
        for b in bins:
            key = _utc(b.start_ms)
            rows += [("venue_over_time", venue, key, "legs", str(b.legs)), ("venue_over_time", venue, key, "fill_rate", _csv(b.fill_rate)),
                     ("venue_over_time", venue, key, "latency_p50_ms", _csv(b.latency_p50_ms))]
    for venue, (qty, share) in data.venue_share().items():
        rows += [("venue_share", venue, "", "filled_notional", _csv(qty)), ("venue_share", venue, "", "share", _csv(share))]
    for rank, res in enumerate(data.worst(), start=1):
        t = res.tca
        rows += [("worst", res.algorithm.value, res.intent_id, metric, _csv(v)) for metric, v in (
            ("rank", rank), ("shortfall_bps", t.shortfall_bps), ("slippage_bps", t.slippage_bps),
            ("realized_savings_vs_worst_venue_bps", t.realized_savings_vs_worst_venue_bps), ("fill_rate", t.fill_rate))]
    return rows


def _csv(value) -> str:
    if value is None:
        return ""
    return format(value, "f") if isinstance(value, Decimal) else str(value)


def render_csv(rows: Iterable[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    writer.writerows([*map(_text_cell, row[:-1]), row[-1]] for row in rows)
    return buf.getvalue()


#: What a spreadsheet takes for the start of a formula ("CSV injection", OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(text: str) -> str:
    """A text cell (intent ids are client input) that a spreadsheet shows as text, never runs:
    one that would start a formula gets a leading apostrophe. The value column, numbers
    (negative ones too), is left as it is."""
    return "'" + text if text.startswith(_FORMULA_START) else text
