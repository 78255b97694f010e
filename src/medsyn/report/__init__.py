"""The report stage: one self-contained report.html and a summary.md, built from a run folder's files."""

from medsyn.report.html import build_report

__all__ = ["build_report"]
