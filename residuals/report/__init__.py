"""Run folders and their self-contained HTML reports."""

from residuals.report.content import Figure, ReportContent, Table
from residuals.runs import BrokenRun, RunDir

__all__ = ["Figure", "ReportContent", "Table", "BrokenRun", "RunDir"]
