"""Best-execution reports: pure rendering of decoded records into one offline HTML page
(charts embedded as PNG data URIs) plus a CSV of the same figures.

``write_report(results, plans, out_dir)`` is the entry point for callers that already hold
the records (``sor demo``); ``sor report`` reads them from Kafka or JSON lines first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from worker.report.data import ReportData, build
from worker.report.html import csv_rows, render, render_csv

__all__ = ["ReportData", "build", "write_report", "write_data"]

REPORT_NAME = "sor-report"


def write_data(data: ReportData, html_path: Path, source: str = "") -> tuple[Path, Path]:
    """Write the page to ``html_path`` and the CSV beside it (same name, ``.csv``)."""
    html_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = html_path.with_suffix(".csv")
    html_path.write_text(render(data, source), encoding="utf-8")
    csv_path.write_text(render_csv(csv_rows(data)), encoding="utf-8")
    return html_path, csv_path


def write_report(results: Iterable[Any] | Mapping[str, Any], plans: Iterable[Any] | Mapping[str, Any], out_dir: Path,
                 source: str = "") -> Path:
    """Write ``sor-report.html`` and ``sor-report.csv`` into ``out_dir``; returns the HTML path.

    ``results`` and ``plans`` are decoded JSON dicts (or JSON bytes, or the models), as a
    list or as a dict keyed by intent id (``sor demo``'s collector holds them that way).
    """
    html_path, _ = write_data(build(results, plans), Path(out_dir) / f"{REPORT_NAME}.html", source)
    return html_path
