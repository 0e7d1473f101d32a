"""Reports rendered from results files and run directories: comparison tables (CSV, Markdown,
JSON), metric figures, threshold sensitivity and the self-contained HTML run report."""

from hazardseg.reports.compare import Comparison, Sensitivity, write_comparison, write_sensitivity
from hazardseg.reports.html import build_report, build_report_html

__all__ = [
    "Comparison",
    "Sensitivity",
    "build_report",
    "build_report_html",
    "write_comparison",
    "write_sensitivity",
]
