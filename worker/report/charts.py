"""Static charts as PNG data URIs (matplotlib's Agg canvas: no display, no global pyplot state).

Why matplotlib and static PNGs: the page must open offline and stay one file. Plotly's
interactive charts would embed plotly.js (~4.5 MB minified) in every report (or need a CDN), while
a PNG chart is ~30-70 KB, renders identically in any browser, a mail client or a PDF
printer, and the CSV beside the page carries the exact numbers for anyone who wants to dig.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timezone
from decimal import Decimal
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

#: One color per algorithm, everywhere (the what-if page uses the same).
ALGORITHM_COLORS = {"sor": "#1f77b4", "split": "#ff7f0e", "best": "#2ca02c"}
_VENUE_PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
DPI = 100


def color_of(algorithm: str) -> str:
    return ALGORITHM_COLORS.get(algorithm, "#7f7f7f")


def venue_colors(venues: Sequence[str]) -> dict[str, str]:
    return {v: _VENUE_PALETTE[i % len(_VENUE_PALETTE)] for i, v in enumerate(sorted(venues))}


def new_figure(width: float = 9.0, height: float = 5.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_data_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (no metadata: same data, same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _floats(values: Sequence[Decimal]) -> list[float]:
    return [float(v) for v in values]  # drawing only: the CSV keeps the Decimals


def _empty(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def distribution(groups: dict[str, Sequence[Decimal]], title: str, ylabel: str, zero_line: bool = True) -> str:
    """Box plot per group with every point jittered on top; n and mean under each box."""
    fig = new_figure()
    ax = fig.add_subplot()
    names = [g for g, v in groups.items() if v]
    if not names:
        _empty(ax)
    else:
        data = [_floats(groups[g]) for g in names]
        box = ax.boxplot(data, patch_artist=True, widths=0.5, showfliers=False, medianprops={"color": "black"})
        for patch, name in zip(box["boxes"], names):
            patch.set_facecolor(color_of(name))
            patch.set_alpha(0.35)
        for i, (name, values) in enumerate(zip(names, data), start=1):
            n = len(values)
            xs = [i + 0.28 * (((k * 0.6180339887) % 1) - 0.5) for k in range(n)]  # deterministic jitter
            ax.scatter(xs, values, s=12, color=color_of(name), alpha=0.75, zorder=3, linewidths=0)
        ax.set_xticks(range(1, len(names) + 1),
                      [f"{g}\nn={len(groups[g])}, mean={sum(groups[g]) / len(groups[g]):.2f}" for g in names])
        if zero_line:
            ax.axhline(0, color="#999", linewidth=0.8, linestyle="--")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return to_data_uri(fig)


def realized_vs_estimated(points: dict[str, Sequence[tuple[Decimal, Decimal]]]) -> str:
    """Scatter of (estimated, realized) savings per algorithm with the y = x line."""
    fig = new_figure()
    ax = fig.add_subplot()
    every = [v for pts in points.values() for p in pts for v in p]
    if not every:
        _empty(ax)
    else:
        for name, pts in points.items():
            if pts:
                ax.scatter(_floats([p[0] for p in pts]), _floats([p[1] for p in pts]), s=18, alpha=0.7,
                           color=color_of(name), label=f"{name} (n={len(pts)})", linewidths=0)
        lo, hi = float(min(every)), float(max(every))
        pad = max(1.0, (hi - lo) * 0.05)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#999", linestyle="--", linewidth=0.8,
                label="realized = estimated")
        ax.legend(loc="upper left", fontsize=9)
    ax.set_title("Realized vs estimated saving against the worst single venue")
    ax.set_xlabel("estimated saving (bps, plan)")
    ax.set_ylabel("realized saving (bps, fills)")
    ax.grid(alpha=0.3)
    return to_data_uri(fig)


def venues_over_time(series: dict[str, list[tuple[int, Decimal, int | None]]]) -> str:
    """Two panels sharing the time axis: fill rate and p50 latency of each venue's legs."""
    fig = new_figure(9.0, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True)
    if not series:
        _empty(top)
        _empty(bottom)
    else:
        colors = venue_colors(list(series))
        for venue, points in series.items():
            when = [datetime.fromtimestamp(t / 1000, tz=timezone.utc) for t, _, _ in points]
            top.plot(when, [float(r) * 100 for _, r, _ in points], marker="o", markersize=3, color=colors[venue], label=venue)
            lat = [(w, ms) for w, (_, _, ms) in zip(when, points) if ms is not None]
            bottom.plot([w for w, _ in lat], [ms for _, ms in lat], marker="o", markersize=3, color=colors[venue], label=venue)
        locator = AutoDateLocator()
        bottom.xaxis.set_major_locator(locator)
        bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
        top.legend(loc="lower left", fontsize=8, ncol=min(5, len(series)))
    top.set_title("Per venue over time (UTC): fill rate and leg latency")
    top.set_ylabel("fill rate (% of leg qty)")
    top.set_ylim(-5, 105)
    bottom.set_ylabel("leg latency p50 (ms)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    return to_data_uri(fig)


def venue_share(shares: dict[str, tuple[Decimal, Decimal]]) -> str:
    """Horizontal bars: each venue's share of the filled quantity."""
    fig = new_figure(9.0, max(6.4, 0.55 * len(shares) + 1.2))  # as tall as the chart beside it
    ax = fig.add_subplot()
    if not shares:
        _empty(ax)
    else:
        names = list(shares)[::-1]
        colors = venue_colors(list(shares))
        pct = [float(shares[v][1]) * 100 for v in names]
        bars = ax.barh(names, pct, color=[colors[v] for v in names])
        for bar, v in zip(bars, names):
            ax.text(bar.get_width() + 0.5, bar.get_y() + bar.get_height() / 2, f"{shares[v][1] * 100:.1f}%  ({shares[v][0].normalize():f})",
                    va="center", fontsize=9)
        ax.set_xlim(0, max(pct) * 1.35 + 1)
    ax.set_title("Venue share of filled quantity")
    ax.set_xlabel("% of filled base quantity")
    ax.grid(axis="x", alpha=0.3)
    return to_data_uri(fig)


def bars(values: dict[str, Decimal], title: str, ylabel: str) -> str:
    """One bar per algorithm (the what-if page's unfilled quantity)."""
    fig = new_figure(9.0, 3.6)
    ax = fig.add_subplot()
    if not values:
        _empty(ax)
    else:
        names = list(values)
        heights = _floats([values[n] for n in names])
        drawn = ax.bar(names, heights, color=[color_of(n) for n in names], alpha=0.8)
        for bar, n in zip(drawn, names):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), f"{values[n].normalize():f}", ha="center", va="bottom", fontsize=9)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return to_data_uri(fig)
