"""Former home of the run-folder layer, now :mod:`residuals.runs`; re-exported for old imports."""

from residuals.runs import DEFAULT_ROOT, STATUSES, BrokenRun, RunDir, environment_info, now_iso

__all__ = ["RunDir", "BrokenRun", "environment_info", "now_iso", "DEFAULT_ROOT", "STATUSES"]
