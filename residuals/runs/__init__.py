"""Run folders: the layer below both the benches and the reports.

* :mod:`residuals.runs.rundir` -- :class:`RunDir`, a run's folder (meta.json, tidy tables);
* :mod:`residuals.runs.atomic` -- :func:`atomic_write`, the one atomic-write helper;
* :mod:`residuals.runs.lock` -- :class:`RunLock`, one process at a time in a run folder;
* :mod:`residuals.runs.environment` -- the environment record written into meta.json;
* :mod:`residuals.runs.registry` -- which renderer turns a bench's run folder into a report.

Nothing here imports a bench, the report builder, torch or pandas at import time.
"""

from residuals.runs.atomic import atomic_write, atomic_write_text
from residuals.runs.environment import environment_info, now_iso, register_machine_fact
from residuals.runs.lock import RunInUse, RunLock
from residuals.runs.registry import RENDERERS, get_renderer, register_renderer
from residuals.runs.rundir import DEFAULT_ROOT, STATUSES, BrokenRun, RunDir, typed_command

__all__ = [
    "DEFAULT_ROOT",
    "RENDERERS",
    "STATUSES",
    "BrokenRun",
    "RunDir",
    "RunInUse",
    "RunLock",
    "atomic_write",
    "atomic_write_text",
    "environment_info",
    "get_renderer",
    "now_iso",
    "register_machine_fact",
    "register_renderer",
    "typed_command",
]
