"""The bench as one library call: :func:`run` makes (or reopens) a run folder, measures every
case, records the headline and builds the report::

    from residuals.bench import boosting
    result = boosting.run(boosting.PRESETS["quick"].replace(datasets=("diabetes",)))
    result.headline

The command line (``residuals bench boosting``) only builds the config and prints.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from residuals.bench.boosting.cases import PRESETS, BoostingBenchConfig, iter_cases
from residuals.bench.boosting.measure import (
    BenchTables,
    ProgressCallback,
    load_tables,
    run_benchmark,
)
from residuals.runs import BrokenRun, RunDir

__all__ = ["BENCH", "BoostingResult", "run", "run_label"]

BENCH = "boosting"


@dataclass
class BoostingResult:
    """What :func:`run` returns."""

    run: RunDir
    config: BoostingBenchConfig
    tables: BenchTables
    headline: str
    verdict: bool | None
    report: Path | None = None  # the HTML page, when it was built


def run_label(cfg: BoostingBenchConfig) -> str:
    """``quick`` or ``full`` when ``cfg`` runs a preset's cases (whatever its trees), else
    ``custom``: the ``dataset`` part of the run folder's name."""
    what = ("datasets", "sizes", "losses", "methods", "full_losses")
    for name, preset in PRESETS.items():
        if all(getattr(cfg, k) == getattr(preset, k) for k in what):
            return name
    return "custom"


def _open_resume(path: str | os.PathLike) -> tuple[RunDir, BoostingBenchConfig]:
    run_dir = RunDir(path)
    try:
        meta = run_dir.read_meta()
    except BrokenRun as e:
        raise ValueError(str(e)) from None
    if meta.get("bench") != BENCH:
        raise ValueError(f"{path} is a {meta.get('bench')!r} run, not a boosting run")
    return run_dir, BoostingBenchConfig.from_dict(meta["config"])


def run(
    config: BoostingBenchConfig | None = None,
    *,
    out: str | os.PathLike = "reports",
    device: str | None = None,
    jobs: int = 1,
    resume: str | os.PathLike | None = None,
    name: str | None = None,
    html: bool = True,
    progress: ProgressCallback | None = None,
    echo: Callable[[str], None] | None = None,
    command: str | None = None,
    started: Callable[[RunDir], None] | None = None,
) -> BoostingResult:
    """Measure ``config`` (default: the ``quick`` preset) into a new run folder under ``out``.

    Parameters
    ----------
    device : where our hist mode runs, ``"auto"``, ``"cpu"`` or ``"cuda[:i]"`` (default: the
        config's); exact mode and scikit-learn always run on the CPU.
    jobs : cases measured at once, each in its own process (default 1: timings on a quiet
        machine).
    resume : a run folder to continue: its finished cases are kept, the rest measured.
    name : the run folder's name (default ``<time>-boosting-<quick|full|custom>``).
    html : build index.html; without it the headline is still rendered into meta.json.
    progress : called with ``(kind, message)`` as cases and fits finish.
    echo : where the run's description goes (the folder, what it measures).
    command : the command line recorded in meta.json (default: this process's arguments).
    started : called with the run folder once it exists (before any fit).

    Raises ``ValueError`` for a config with no cases or a bad setting,
    :class:`~residuals.device.DeviceError` for a device that is not here. An error or
    ``KeyboardInterrupt`` marks the folder ``failed`` or ``interrupted``, keeps the tables
    measured so far, and propagates.
    """
    from residuals.device import resolve_device

    previous = None
    if resume is not None:
        run_dir, saved = _open_resume(resume)
        if config is not None and config != saved:
            raise ValueError("resume continues a run with its saved configuration; pass no config")
        config, previous = saved, load_tables(run_dir)
    config = config if config is not None else PRESETS["quick"]
    config = dataclasses.replace(config, device=resolve_device(device or config.device)).validate()
    if not any(True for _ in iter_cases(config)):
        raise ValueError(
            "no case to run: none of the chosen losses applies to the chosen datasets "
            "(regression: squared_error, absolute_error, huber, quantile; "
            "binary: log_loss, exponential; multiclass: log_loss)"
        )
    import residuals.boosting._kernels  # noqa: F401  (so the run's record says which loops hist runs)

    if resume is None:
        run_dir = RunDir.create(
            out,
            bench=BENCH,
            dataset=run_label(config),
            config=config.as_dict(),
            device=config.device,
            name=name,
            command=command,
        )
    # one process at a time in the folder (RunInUse for a second resume of it)
    with run_dir.lock():
        return _measure(
            run_dir,
            config,
            resume=resume,
            previous=previous,
            jobs=jobs,
            html=html,
            progress=progress,
            echo=echo,
            started=started,
        )


def _measure(
    run_dir: RunDir,
    config: BoostingBenchConfig,
    *,
    resume,
    previous,
    jobs: int,
    html: bool,
    progress,
    echo,
    started,
) -> BoostingResult:
    if resume is not None:
        run_dir.update_meta(status="running")
    if started is not None:
        started(run_dir)
    if echo is not None:
        echo(f"run folder: {run_dir.path}")
        echo(
            f"{len(list(iter_cases(config)))} cases x {len(config.methods)} methods, "
            f"{config.n_estimators} trees of depth {config.max_depth}, {config.threads} "
            f"thread(s), hist on {config.device}"
        )
    try:
        tables = run_benchmark(config, run_dir, progress=progress, jobs=jobs, tables=previous)
    except KeyboardInterrupt:
        run_dir.finish("interrupted")
        _build(run_dir, html)
        raise
    except Exception:
        run_dir.finish("failed")
        raise
    if html:
        run_dir.finish("complete")
        report = _build(run_dir, html)  # renders, and records the headline in meta.json
        meta = run_dir.read_meta()
    else:
        from residuals.bench.boosting.report import render

        content = render(run_dir)
        meta = run_dir.finish(
            "complete", headline=content.headline, verdict=content.verdict, summary=content.summary
        )
        report = None
    return BoostingResult(
        run_dir, config, tables, meta.get("headline") or "", meta.get("verdict"), report
    )


def _build(run_dir: RunDir, html: bool) -> Path | None:
    """Build index.html (and the runs index beside it); its path, or None without ``html``."""
    if not html:
        return None
    from residuals.report.html import build_report

    return build_report(run_dir.path)
