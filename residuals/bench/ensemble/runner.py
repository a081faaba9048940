"""Training and measuring every model of a ``bench ensemble`` run, and its tables.

Tables written to the run folder (tidy, one observation per row; see
:mod:`residuals.bench.ensemble.measure` for what is measured):

* ``lesions.csv``: ``model, family, seed, dropped, stage, draw, test_error``;
* ``staged.csv``: test error with the first ``kept`` stages kept, per model and ``curve``
  (``truncated``: the trained model cut; ``training``: the stagewise net as it was built);
* ``contributions.csv``: ``||correction|| / ||base||`` per stage;
* ``models.csv``: one row per (family, seed): errors, stages, learned numbers, times.

``models.csv`` is written last after every model and is the record of what finished: a
resumed run skips those models and drops any other rows of unfinished ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from residuals.bench.ensemble.measure import measure
from residuals.bench.ensemble.verdict import Verdict, ensemble_verdict

__all__ = ["fit_and_measure", "load_data", "plan", "run", "run_bench"]


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
) -> dict[str, pd.DataFrame]:
    """Train one model and measure it; return its rows of every table."""
    import torch

    start = time.perf_counter()
    data = load_data(cfg, device, data_dir)
    request = FitRequest(
        config=cfg,
        data=data,
        seed=seed,
        device=device,
        checkpoint_dir=Path(run_path) / "checkpoints" / f"{family}-seed{seed}",
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
    )
    return ensemble_verdict(tables.frames["lesions"])


def run(
    config: EnsembleConfig | None = None,
    *,
    out: str | Path = "reports",
    device: str = "auto",
    jobs: int | None = None,
    resume: str | Path | None = None,
    data_dir: str | None = None,
    echo: Callable[[str], None] = print,
    report: bool = True,
):
    """``residuals bench ensemble`` as a library function; returns ``(run folder, verdict)``.

    Creates a run folder under ``out`` (or continues the folder ``resume`` with its saved
    configuration and device), loads the data (downloading it if needed) and runs every
    family's check before any training, trains and measures every model
    (:func:`run_bench`), records the verdict in meta.json and builds the HTML report.

    Raises ``ValueError`` for a configuration or data the families cannot take (before
    anything is written), :class:`residuals.device.DeviceError`,
    :class:`residuals.data.DatasetError`, :class:`residuals.runs.BrokenRun` for a
    ``resume`` folder that is not a run; ``KeyboardInterrupt`` and errors during training
    mark the folder ``interrupted`` / ``failed`` (with the command that resumes it) and
    propagate.
    """
    from residuals.bench.degradation import default_jobs
    from residuals.device import resolve_device
    from residuals.runs import RunDir

    run_dir = None
    if resume is not None:
        run_dir = RunDir(resume)
        meta = run_dir.read_meta()
        if meta.get("bench") != "ensemble":
            raise ValueError(f"{resume} is a {meta.get('bench')!r} run, not an ensemble run")
        config = EnsembleConfig.from_dict(meta["config"])
        device = (meta.get("machine") or {}).get("device") or device
        if meta.get("status") == "complete":
            echo(f"{resume} is already complete: {meta.get('headline')}")
            return run_dir, ensemble_verdict(run_dir.read_table("lesions"))
    config = config if config is not None else PRESETS[DEFAULT_PRESET]
    device = resolve_device(device)
    jobs = max(1, int(jobs or default_jobs(device)))
    # workers load their own copy; this one checks the data (and downloads it) up front
    data = load_data(config, device if jobs == 1 else "cpu", data_dir, download=True)
    check_families(config.families, config, data)
    if run_dir is None:
        run_dir = RunDir.create(
            out, bench="ensemble", dataset=config.dataset, config=config.to_dict(), device=device
        )
    else:
        run_dir.update_meta(status="running")
    tasks = len(plan(config))
    run_dir.update_meta(jobs=min(jobs, tasks))
    echo(f"run folder: {run_dir.path}")
    echo(
        f"{tasks} models ({', '.join(config.families)} x {config.seeds} seed"
        f"{'s' * (config.seeds > 1)}) on {config.dataset}, ResNet-{config.depth}, on {device}, "
        f"{min(jobs, tasks)} at a time"
    )
    resume_command = f"residuals bench ensemble --resume {run_dir.path}"
    try:
        verdict = run_bench(run_dir, config, device=device, jobs=jobs, data_dir=data_dir, echo=echo)
    except KeyboardInterrupt:
        run_dir.finish("interrupted", resume_command=resume_command)
        echo(
            f"\nInterrupted: measured models and checkpoints are kept. Continue with: "
            f"{resume_command}"
        )
        raise
    except BaseException as e:
        run_dir.finish("failed", error=f"{type(e).__name__}: {e}", resume_command=resume_command)
        raise
    run_dir.finish(
        "complete",
        headline=verdict.headline,
        verdict=verdict.reproduced,
        verdict_notes=list(verdict.notes),
    )
    echo("")
    echo(verdict.headline)
    if report:
        _build_report(run_dir, echo)
    return run_dir, verdict


def _build_report(run_dir, echo: Callable[[str], None]) -> None:
    """Write the HTML report; the tables are safe whatever happens here."""
    from residuals.report.html import build_report

    try:
        echo(f"report: {build_report(run_dir.path)}")
    except Exception as e:  # noqa: BLE001 - the page can be rebuilt from the tables
        echo(
            f"warning: the HTML report could not be built ({type(e).__name__}: {e}); rebuild "
            f"it with: residuals report build {run_dir.path}"
        )
