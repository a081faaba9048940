"""The bench as one library call: :func:`run` checks a sweep, makes (or reopens) its run folder,
trains every run, decides the verdict and builds the report::

    from residuals.bench import degradation
    result = degradation.run(degradation.configure("digits", epochs=6), out="reports")
    result.verdict.headline

Everything the command line does beyond parsing and printing happens here, so a notebook gets
the same run folder, the same checks and the same verdict as ``residuals bench degradation``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from residuals.bench.degradation import ranks
from residuals.bench.degradation.config import DegradationConfig, RunSpec, fix_numerics, plan_runs
from residuals.bench.degradation.fusion import resolve_fuse
from residuals.bench.degradation.sweep import (
    cuda_mps_running,
    default_jobs,
    run_sweep,
    worker_threads,
)
from residuals.bench.degradation.training import load_data
from residuals.bench.degradation.verdict import Verdict, degradation_verdict
from residuals.runs import BrokenRun, RunDir, typed_command

__all__ = ["BENCH", "DegradationResult", "SweepError", "open_resume", "resume_command", "run"]

BENCH = "degradation"


class SweepError(ValueError):
    """A sweep that cannot start (a bad option, a run folder that cannot be resumed);
    ``option`` names the setting at fault, e.g. ``"depths"``, when there is one."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


@dataclass
class DegradationResult:
    """What :func:`run` returns: the run folder, its tables and the measured verdict."""

    run: RunDir
    config: DegradationConfig
    verdict: Verdict
    runs: pd.DataFrame  # runs.csv: one row per (variant, depth, seed)
    device: str | None  # where it trained (None: a complete run reopened)
    jobs: int = 0  # runs trained at once (0: none trained by this call)
    precision: str = ""  # e.g. "bf16 autocast" or "fp32, 2 data-parallel replicas of ..."
    report: Path | None = None  # the HTML page, when it was built
    already_complete: bool = False  # resume of a finished run folder: nothing was trained


def open_resume(path: str | os.PathLike) -> tuple[RunDir, DegradationConfig, dict]:
    """A degradation run folder to continue: ``(run, its config, its meta.json)``."""
    run = RunDir(path)
    try:
        meta = run.read_meta()
    except BrokenRun as e:
        raise SweepError(str(e), "resume") from None
    if meta.get("bench") != BENCH:
        raise SweepError(f"{path} is a {meta.get('bench')!r} run, not a degradation run", "resume")
    try:
        cfg = DegradationConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise SweepError(f"{path}: meta.json has no usable config ({e})", "resume") from None
    return run, cfg, meta


def check(cfg: DegradationConfig, device: str) -> None:
    """Everything that can fail before training: dataset name, every net, every run's recipe."""
    from residuals.data import DATASETS
    from residuals.nets import build_model

    if cfg.dataset not in DATASETS:
        raise SweepError(
            f"unknown dataset {cfg.dataset!r}; choose from {', '.join(DATASETS)}", "dataset"
        )
    for spec in (RunSpec(v, d, 0) for d in cfg.depths for v in cfg.variants):
        try:
            build_model(spec.registry_name)
        except ValueError as e:
            raise SweepError(str(e), "depths") from None
    for depth in sorted(set(cfg.depths)):
        try:
            cfg.train_config(depth, 0, device)
        except ValueError as e:
            raise SweepError(f"invalid training option: {e}") from None


def describe_precision(cfg: DegradationConfig, device: str, jobs: int) -> str:
    """The arithmetic the runs will use, as the trainer resolves it for ``jobs`` workers."""
    from residuals.device import resolve_replicas_amp

    threads = worker_threads(jobs) if jobs > 1 else None  # None: this process's
    replicas, threads_each, amp = resolve_replicas_amp(
        cfg.train_config(cfg.depths[0], 0, device), threads=threads
    )
    text = "bf16 autocast" if amp else "fp32"
    if replicas > 1:
        text += (
            f", {replicas} data-parallel replicas of {threads_each} "
            f"thread{'s' * (threads_each > 1)}"
        )
    return text


def run(
    config: DegradationConfig | None = None,
    *,
    out: str | os.PathLike = "reports",
    device: str | None = None,
    jobs: int | None = None,
    fuse: str | bool | None = None,
    resume: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    html: bool = True,
    echo: Callable[[str], None] = print,
    warn: Callable[[str], None] | None = None,
    command: str | None = None,
    started: Callable[[RunDir], None] | None = None,
) -> DegradationResult:
    """Run the degradation sweep ``config`` into a new run folder under ``out``.

    Parameters
    ----------
    config : the sweep (default: the ``digits`` preset); with ``resume``, the folder's own
        config is used and ``config`` must be None or equal to it.
    device : ``"auto"`` (default), ``"cpu"`` or ``"cuda[:i]"``; with ``resume``, the device
        the run started on unless given.
    jobs : runs trained at once, each in its own process (default: one per core on the CPU,
        :data:`~residuals.bench.degradation.sweep.CUDA_JOBS` on a GPU).
    fuse : ``"on"``/``True``: the runs of each depth train as fused jobs
        (:mod:`~residuals.bench.degradation.fusion`), ``jobs`` of them at once; ``"off"``/``False``:
        one run per job; ``"auto"``/None: on CUDA, and on a CPU where measured faster.
    resume : an interrupted run folder to continue: finished runs are skipped, unfinished
        ones continue from their checkpoints. A complete one is returned as it is.
    data_dir : where the dataset files are (see :mod:`residuals.data`).
    html : build the run's HTML report at the end.
    echo, warn : where progress lines and warnings go (``warn`` defaults to ``echo``).
    command : the command line recorded in meta.json (default: this process's arguments).
    started : called with the run folder once it exists (before any training).

    Raises :class:`SweepError` for a sweep that cannot start, :class:`DeviceError
    <residuals.device.DeviceError>`, :class:`DatasetError <residuals.data.DatasetError>`;
    an error or ``KeyboardInterrupt`` during training marks the folder ``failed`` or
    ``interrupted`` (with the command that resumes it) and propagates.

    Under ``torchrun`` every rank calls it: rank 0 owns the folder, the runs are split over
    the ranks (:mod:`residuals.bench.degradation.ranks`), and every rank returns the result.
    """
    with ranks.group():
        return _run(
            config,
            out=out,
            device=device,
            jobs=jobs,
            fuse=fuse,
            resume=resume,
            data_dir=data_dir,
            html=html,
            echo=ranks.with_rank(echo),
            warn=warn,
            command=command,
            started=started,
        )


def _run(
    config, *, out, device, jobs, fuse, resume, data_dir, html, echo, warn, command, started
) -> DegradationResult:
    from residuals.device import resolve_device
    from residuals.distributed import check_all, local_device

    run_dir: RunDir | None = None
    if resume is not None:
        run_dir, saved, meta = check_all(lambda: open_resume(resume))
        if config is not None and config != saved:
            raise SweepError(
                "resume continues a run with its saved configuration; pass no "
                "config (or start a new run)",
                "resume",
            )
        config = saved
        if meta.get("status") == "complete":
            runs = run_dir.read_table("runs") if run_dir.has_table("runs") else pd.DataFrame()
            verdict = Verdict(
                meta.get("verdict"),
                meta.get("headline") or "",
                tuple(meta.get("verdict_notes") or ()),
            )
            return DegradationResult(run_dir, config, verdict, runs, None, already_complete=True)
        device = device or (meta.get("machine") or {}).get("device") or "auto"
    config = config if config is not None else DegradationConfig()
    device = resolve_device(device or "auto")
    check(config, device)
    asked, device = device, local_device(device)  # under torchrun: this rank's GPU
    n_jobs = int(jobs) if jobs is not None else default_jobs(device)
    fused = resolve_fuse(fuse, device)
    data_dir = str(data_dir) if data_dir is not None else None
    # in-process runs keep this copy on their device; workers load their own. Loading here
    # (with downloads and checksums) stops a data problem before any training.
    ranks.local_first(
        lambda: load_data(config, device if n_jobs == 1 else "cpu", data_dir, download=True)
    )

    n_runs = len(plan_runs(config))
    n_at_once = min(n_jobs, n_runs)
    threads = worker_threads(n_jobs) if n_at_once > 1 else None  # None: this process's
    # what changes a run's numbers (precision, CPU replicas) is fixed in the run's recorded
    # config when it starts, so that a resume under another --jobs trains the same nets
    config = (
        fix_numerics(config, device, threads=threads)
        if run_dir is None
        else _fix_resumed_numerics(run_dir, config, device, threads)
    )
    # under torchrun, rank 0 alone creates or reopens the folder and takes its lock, which it
    # holds for the whole job; the other ranks never take it (they would find it held) and
    # work inside the folder under rank 0's hold, with rank 0's config (see .ranks)
    held: list = []  # rank 0's hold on the folder (residuals.runs.lock), released at the end

    def open_folder() -> tuple[RunDir, DegradationConfig]:
        if run_dir is None:
            try:
                made = RunDir.create(
                    out,
                    bench=BENCH,
                    dataset=config.dataset,
                    config=config.to_dict(),
                    device=asked,
                    command=command,
                )
            except OSError as e:
                raise SweepError(f"cannot create a run folder under {out}: {e}", "out") from None
            held.append(made.lock().acquire())
            return made, config
        held.append(run_dir.lock().acquire())  # RunInUse: another process works in it
        run_dir.update_meta(
            status="running", resumed_command=command or typed_command(), config=config.to_dict()
        )
        return run_dir, config

    try:
        run_dir, config = ranks.shared_folder(open_folder)  # rank 0's folder and config
        return _train(
            run_dir,
            config,
            device=device,
            n_jobs=n_jobs,
            n_runs=n_runs,
            fused=fused,
            data_dir=data_dir,
            html=html,
            echo=echo,
            warn=warn,
            started=started,
        )
    finally:
        for lock in held:
            lock.release()


def _fix_resumed_numerics(
    run_dir: RunDir, cfg: DegradationConfig, device: str, threads: int | None
) -> DegradationConfig:
    """A folder from before the precision and replicas were fixed in its config: take them
    from the runs it finished (when all alike), else fix them now, once, for the rest."""
    if cfg.train.replicas is not None and cfg.train.amp is not None:
        return cfg
    try:
        done = run_dir.read_table("runs") if run_dir.has_table("runs") else None
    except BrokenRun:  # a damaged table: the sweep's own check says what is wrong with it
        done = None
    if done is not None and not done.empty and {"replicas", "precision"} <= set(done.columns):
        replicas, precision = set(done["replicas"].dropna()), set(done["precision"].dropna())
        if len(replicas) == 1 and len(precision) == 1:
            return cfg.replace(replicas=int(replicas.pop()), amp=precision.pop() == "bf16")
    return fix_numerics(cfg, device, threads=threads)


def _train(
    run_dir: RunDir,
    config: DegradationConfig,
    *,
    device: str,
    n_jobs: int,
    n_runs: int,
    fused: bool,
    data_dir,
    html: bool,
    echo,
    warn,
    started,
) -> DegradationResult:
    from residuals.distributed import is_rank0, world_size

    if started is not None:
        started(run_dir)
    precision = describe_precision(config, device, n_jobs)
    n_at_once = min(n_jobs, n_runs)
    if is_rank0():
        run_dir.update_meta(
            precision=precision,
            jobs=n_at_once,
            fuse=fused,
            ranks=world_size(),
            cuda_mps=device.startswith("cuda") and cuda_mps_running(),
        )
    echo(f"run folder: {run_dir.path}")
    echo(
        f"{n_runs} runs ({', '.join(config.variants)} x depths "
        f"{', '.join(map(str, config.depths))} x {config.seeds} seed{'s' * (config.seeds > 1)}), "
        f"{config.train.epochs} epochs each, on {device} ({precision}), {n_at_once} at a time"
        f"{' (runs of a depth fused)' if fused else ''}"
    )

    resume_cmd = resume_command(run_dir)
    try:
        runs = run_sweep(
            run_dir, config, device=device, jobs=n_jobs, data_dir=data_dir, fuse=fused, echo=echo
        )
    except KeyboardInterrupt:
        if is_rank0():
            _record_end(run_dir, "interrupted", warn or echo, resume_command=resume_cmd)
        raise
    except Exception as e:
        if is_rank0():
            _record_end(
                run_dir,
                "failed",
                warn or echo,
                error=f"{type(e).__name__}: {e}",
                resume_command=resume_cmd,
            )
        raise

    verdict = degradation_verdict(runs)
    result = DegradationResult(run_dir, config, verdict, runs, device, n_at_once, precision)
    if not is_rank0():  # rank 0 writes the end of the run and its report
        return result
    run_dir.finish(
        "complete",
        headline=verdict.headline,
        verdict=verdict.reproduced,
        verdict_notes=list(verdict.notes),
    )
    if html:
        result.report = _build_report(run_dir, warn or echo)
    return result


def _record_end(run_dir: RunDir, status: str, warn: Callable[[str], None], **changes) -> None:
    """Mark the run interrupted or failed in meta.json; on a full disk (the likely cause of
    the failure) say that it could not be recorded instead of failing a second time."""
    try:
        run_dir.finish(status, **changes)
    except OSError as e:
        warn(
            f"warning: could not record the run as {status} in {run_dir.meta_path} "
            f"({e.strerror or e}); it stays marked running"
        )


def resume_command(run_dir: RunDir) -> str:
    """The command that continues ``run_dir``."""
    return f"residuals bench degradation --resume {shlex.quote(str(run_dir.path))}"


def _build_report(run_dir: RunDir, echo: Callable[[str], None]) -> Path | None:
    """Build the HTML page; on failure say so (the results are safe) and return None."""
    try:
        from residuals.report.html import build_report
    except ImportError as e:
        echo(
            f"warning: the HTML report builder is not available ({e}); "
            f"the results are saved in {run_dir.path}"
        )
        return None
    try:
        return build_report(run_dir.path)
    except Exception as e:  # the results are safe; the page can be rebuilt from them
        echo(
            f"warning: the HTML report could not be built ({type(e).__name__}: {e}); the "
            f"results are saved: residuals report build {shlex.quote(str(run_dir.path))}"
        )
        return None
