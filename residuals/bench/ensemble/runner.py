"""Training and measuring every model of a ``bench ensemble`` run, and its tables.

Tables written to the run folder (tidy, one observation per row; see
:mod:`residuals.bench.ensemble.measurement` for what is measured):

* ``lesions.csv``: ``model, family, seed, dropped, stage, draw, test_error``;
* ``staged.csv``: test error with the first ``kept`` stages kept, per model and ``curve``
  (``truncated``: the trained model cut; ``training``: the stagewise net as it was built);
* ``contributions.csv``: ``||correction|| / ||base||`` per stage;
* ``models.csv``: one row per (family, seed): errors, stages, learned numbers, times.

``models.csv`` is written last after every model and is the record of what finished: a
resumed run skips those models and drops any other rows of unfinished ones.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from residuals.bench.ensemble.config import (
    DEFAULT_PRESET,
    KEYS,
    PRESETS,
    TABLES,
    EnsembleConfig,
)
from residuals.bench.ensemble.families import FAMILIES, FitRequest, check_families, fit_family
from residuals.bench.ensemble.measurement import measure
from residuals.bench.ensemble.verdict import Verdict, ensemble_verdict
from residuals.runs import BrokenRun, RunDir, typed_command

__all__ = [
    "BENCH",
    "EnsembleError",
    "EnsembleResult",
    "fit_and_measure",
    "load_data",
    "open_resume",
    "plan",
    "resume_command",
    "run",
    "run_bench",
]

BENCH = "ensemble"  # meta.json's "bench"


# --------------------------------------------------------------------------- data
_DATA_CACHE: dict[tuple, object] = {}


def load_data(
    cfg: EnsembleConfig, device: str, data_dir: str | None = None, *, download: bool = False
):
    """The run's dataset on ``device``, loaded once per process: seeded subsets of
    ``train_size`` training and ``test_size`` test images when asked (every class keeps
    its share in expectation; the booster's check says so if one is left out)."""
    from residuals.data import load_dataset

    key = (cfg.dataset, str(device), data_dir, cfg.train_size, cfg.test_size)
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        data = load_dataset(cfg.dataset, data_dir=data_dir, device=device, download=download)
        data.train_x, data.train_y = _subset(data.train_x, data.train_y, cfg.train_size, 0)
        data.test_x, data.test_y = _subset(data.test_x, data.test_y, cfg.test_size, 1)
        data.extra.update(train_size=len(data.train_y), test_size=len(data.test_y))
        _DATA_CACHE[key] = data
    return _DATA_CACHE[key]


def _subset(x, y, size: int | None, seed: int):
    """``size`` of the images, drawn without replacement (seeded), in their original order."""
    import torch

    if size is None or size >= len(y):
        return x, y
    g = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(y), generator=g)[:size].sort().values.to(y.device)
    return x[keep], y[keep]


# --------------------------------------------------------------------------- one model
def plan(cfg: EnsembleConfig) -> list[tuple[str, int]]:
    """Every (family, seed) of the run, seed by seed."""
    return [(family, seed) for seed in range(cfg.seeds) for family in cfg.families]


def fit_and_measure(
    family: str,
    seed: int,
    cfg: EnsembleConfig,
    *,
    device: str,
    run_path: str | Path,
    data_dir: str | None = None,
    fit: Callable | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """Train one model and measure it; return its rows of every table. ``progress`` gets a
    line per epoch (or stagewise block) while it trains."""
    import torch

    start = time.perf_counter()
    data = load_data(cfg, device, data_dir)
    request = FitRequest(
        config=cfg,
        data=data,
        seed=seed,
        device=device,
        checkpoint_dir=Path(run_path) / "checkpoints" / f"{family}-seed{seed}",
        progress=progress,
    )
    fitted = fit(request) if fit is not None else fit_family(family, request)
    fit_wall = time.perf_counter() - start
    t0 = time.perf_counter()
    frames = measure(
        fitted,
        data,
        draws=cfg.draws,
        points=cfg.points,
        seed=seed,
        family=family,
        batch_size=cfg.eval_batch_size,
        probe_images=cfg.probe_images,
    )
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    measure_s = time.perf_counter() - t0
    lesions = frames["lesions"]
    whole = float(lesions.loc[lesions["dropped"] == 0, "test_error"].iloc[0])
    frames["models"] = pd.DataFrame(
        [
            {
                "model": fitted.name,
                "family": family,
                "seed": seed,
                "n_stages": fitted.model.n_stages_,
                "stage_label": fitted.stage_label,
                "parameters": fitted.parameters,
                "status": "diverged" if fitted.diverged else "complete",
                "train_error": fitted.train_error,
                "test_error": whole,
                "train_s": round(fitted.train_s, 3),
                "fit_wall_s": round(fit_wall, 3),
                "measure_s": round(measure_s, 3),
                "device": str(device),
                "threads": torch.get_num_threads(),
            }
        ]
    )
    return frames


class _Tables:
    """The run's tables, re-written atomically after every finished model; ``models.csv``
    last, so rows of a model missing from it (a run stopped between writes) are dropped."""

    def __init__(self, run):
        self.run = run
        self.frames = {
            name: run.read_table(name) if run.has_table(name) else pd.DataFrame() for name in TABLES
        }
        models = self.frames["models"]
        done = models[KEYS] if not models.empty else pd.DataFrame(columns=KEYS)
        for name in TABLES[:-1]:
            if not self.frames[name].empty:
                self.frames[name] = self.frames[name].merge(done, on=KEYS, how="inner")

    def done(self) -> set[tuple[str, int]]:
        models = self.frames["models"]
        return (
            set()
            if models.empty
            else {(str(f), int(s)) for f, s in models[KEYS].itertuples(index=False)}
        )

    def add(self, frames: dict[str, pd.DataFrame]) -> None:
        for name in TABLES:
            old, new = self.frames[name], frames[name]
            df = new if old.empty else pd.concat([old, new], ignore_index=True)
            self.frames[name] = df
            self.run.write_table(df, name)


def run_bench(
    run,
    cfg: EnsembleConfig,
    *,
    device: str,
    jobs: int = 1,
    data_dir: str | None = None,
    echo: Callable[[str], None] = print,
) -> Verdict:
    """Train and measure every (family, seed) not yet in the run's ``models.csv``.

    ``jobs > 1`` trains that many models at once in spawned worker processes with
    ``cores // jobs`` torch threads each. Tables are written after every model, so
    an interrupted run keeps what finished and resumes from the nets' checkpoints.
    Returns the verdict on the finished models.
    """
    from residuals.bench.ensemble.pool import run_tasks

    tables = _Tables(run)
    done = tables.done()
    todo = [(f, s) for f, s in plan(cfg) if (f, s) not in done]
    if done:
        echo(f"resuming: {len(done)} of {len(done) + len(todo)} models already measured")
    total = len(done) + len(todo)

    def finished(task, frames) -> None:
        tables.add(frames)
        row = frames["models"].iloc[0]
        single = frames["lesions"].query("dropped == 1")["test_error"].mean()
        echo(
            f"[{len(tables.done())}/{total}] {row['model']} ({row['family']}) seed {row['seed']}:"
            f" test error {100 * row['test_error']:.1f}%, one stage deleted "
            f"{100 * single:.1f}% on average; trained in {row['train_s']:.1f} s, "
            f"measured in {row['measure_s']:.1f} s"
        )

    run_tasks(
        todo,
        cfg,
        device=device,
        jobs=jobs,
        run_path=str(run.path),
        data_dir=data_dir,
        on_result=finished,
        fits={f: FAMILIES[f] for f in cfg.families},
        echo=echo,
    )
    return ensemble_verdict(tables.frames["lesions"])


class EnsembleError(ValueError):
    """The run cannot start; ``option`` names the command-line option to change, if one."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


@dataclass
class EnsembleResult:
    """What :func:`run` did."""

    run: RunDir
    config: EnsembleConfig
    verdict: Verdict
    device: str | None = None
    jobs: int | None = None
    report: Path | None = None  # the HTML page, when built
    already_complete: bool = False  # resume of a complete run: nothing was done


def open_resume(path: str | os.PathLike) -> tuple[RunDir, EnsembleConfig, dict]:
    """The run folder ``path``, its saved configuration and meta.json."""
    run_dir = RunDir(path)
    try:
        meta = run_dir.read_meta()
    except BrokenRun as e:
        raise EnsembleError(str(e), "resume") from None
    if meta.get("bench") != BENCH:
        raise EnsembleError(f"{path} is a {meta.get('bench')!r} run, not an ensemble run", "resume")
    try:
        config = EnsembleConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise EnsembleError(f"{path}: meta.json has no usable config ({e})", "resume") from None
    return run_dir, config, meta


def resume_command(run_dir: RunDir) -> str:
    """The command that continues ``run_dir``."""
    return f"residuals bench ensemble --resume {shlex.quote(str(run_dir.path))}"


def run(
    config: EnsembleConfig | None = None,
    *,
    out: str | os.PathLike = "reports",
    device: str | None = None,
    jobs: int | None = None,
    resume: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    html: bool = True,
    echo: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    command: str | None = None,
    started: Callable[[RunDir], None] | None = None,
) -> EnsembleResult:
    """Train and measure every model of ``config`` into a new run folder under ``out``.

    Parameters
    ----------
    config : the run (default: the ``digits`` preset); with ``resume``, the folder's own
        config is used and ``config`` must be None or equal to it.
    device : ``"auto"`` (default), ``"cpu"`` or ``"cuda[:i]"``; with ``resume``, the device
        the run started on unless given.
    jobs : models trained at once, each in its own process (default: one per core on the
        CPU, :data:`~residuals.bench.degradation.sweep.CUDA_JOBS` on a GPU).
    resume : an interrupted run folder to continue: measured models are kept, unfinished
        nets continue from their checkpoints. A complete one is returned as it is.
    data_dir : where the dataset files are (see :mod:`residuals.data`).
    html : build the run's HTML report at the end.
    echo, warn : where progress lines and warnings go (``warn`` defaults to ``echo``).
    command : the command line recorded in meta.json (default: this process's arguments).
    started : called with the run folder once it exists (before any training).

    The data is loaded (downloaded if needed) and every family's check runs before the
    folder is made: :class:`EnsembleError` for a run that cannot start (a dataset the
    booster cannot take, an unknown dataset, a folder that cannot be made),
    :class:`DeviceError <residuals.device.DeviceError>`, :class:`DatasetError
    <residuals.data.DatasetError>`. An error or ``KeyboardInterrupt`` during training
    marks the folder ``failed`` or ``interrupted`` (with the command that resumes it) and
    propagates.
    """
    from residuals.bench.degradation import default_jobs
    from residuals.data import DATASETS
    from residuals.device import resolve_device

    run_dir: RunDir | None = None
    if resume is not None:
        run_dir, saved, meta = open_resume(resume)
        if config is not None and config != saved:
            raise EnsembleError(
                "resume continues a run with its saved configuration; pass no config (or "
                "start a new run)",
                "resume",
            )
        config = saved
        if meta.get("status") == "complete":
            verdict = Verdict(
                meta.get("verdict"),
                meta.get("headline") or "",
                tuple(meta.get("verdict_notes") or ()),
            )
            return EnsembleResult(run_dir, config, verdict, already_complete=True)
        device = device or (meta.get("machine") or {}).get("device")
    config = config if config is not None else PRESETS[DEFAULT_PRESET]
    if config.dataset not in DATASETS:
        raise EnsembleError(
            f"unknown dataset {config.dataset!r}; choose from {', '.join(DATASETS)}", "dataset"
        )
    device = resolve_device(device or "auto")
    n_jobs = max(1, int(jobs) if jobs is not None else default_jobs(device))
    data_dir = str(data_dir) if data_dir is not None else None
    # workers load their own copy; this one checks the data (and downloads it) up front
    data = load_data(config, device if n_jobs == 1 else "cpu", data_dir, download=True)
    try:
        check_families(config.families, config, data)
    except ValueError as e:
        raise EnsembleError(str(e)) from None

    if run_dir is None:
        try:
            run_dir = RunDir.create(
                out,
                bench=BENCH,
                dataset=config.dataset,
                config=config.to_dict(),
                device=device,
                command=command,
            )
        except OSError as e:
            raise EnsembleError(f"cannot create a run folder under {out}: {e}", "out") from None
    else:
        run_dir.update_meta(status="running", resumed_command=command or typed_command())
    if started is not None:
        started(run_dir)
    n_models = len(plan(config))
    n_at_once = min(n_jobs, n_models)
    run_dir.update_meta(jobs=n_at_once, results_table="lesions")  # the run index checks it
    echo(f"run folder: {run_dir.path}")
    echo(
        f"{n_models} models ({', '.join(config.families)} x {config.seeds} seed"
        f"{'s' * (config.seeds > 1)}) on {config.dataset}, ResNet-{config.depth}, on {device}, "
        f"{n_at_once} at a time"
    )
    resume_cmd = resume_command(run_dir)
    try:
        verdict = run_bench(
            run_dir, config, device=device, jobs=n_jobs, data_dir=data_dir, echo=echo
        )
    except KeyboardInterrupt:
        run_dir.finish("interrupted", resume_command=resume_cmd)
        raise
    except Exception as e:
        run_dir.finish("failed", error=f"{type(e).__name__}: {e}", resume_command=resume_cmd)
        raise
    run_dir.finish(
        "complete",
        headline=verdict.headline,
        verdict=verdict.reproduced,
        verdict_notes=list(verdict.notes),
    )
    result = EnsembleResult(run_dir, config, verdict, device, n_at_once)
    if html:
        result.report = _build_report(run_dir, warn or echo)
    return result


def _build_report(run_dir: RunDir, warn: Callable[[str], None]) -> Path | None:
    """Build the HTML page; on failure say so (the tables are safe) and return None."""
    from residuals.report.html import build_report

    try:
        return build_report(run_dir.path)
    except Exception as e:  # noqa: BLE001 - the page can be rebuilt from the tables
        warn(
            f"warning: the HTML report could not be built ({type(e).__name__}: {e}); rebuild "
            f"it with: residuals report build {shlex.quote(str(run_dir.path))}"
        )
        return None
