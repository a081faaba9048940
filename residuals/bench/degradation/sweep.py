"""The sweep: every planned run not yet finished, in this process or in worker processes
(one torch thread each), with the tables rewritten atomically after every finished run."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from queue import Empty
from typing import Any

import pandas as pd

from residuals.bench._workers import run_pool, spawn_pool
from residuals.bench.degradation import ranks
from residuals.bench.degradation.config import DegradationConfig, RunSpec, plan_runs
from residuals.bench.degradation.fusion import FusedJob, plan_jobs
from residuals.bench.degradation.progress import Progress
from residuals.bench.degradation.tables import SweepTables
from residuals.bench.degradation.training import RunOutcome, checkpoint_path, train_job
from residuals.device import spread_devices
from residuals.distributed import from_rank0, is_rank0, launch, share
from residuals.runs import RunDir

__all__ = ["CUDA_JOBS", "cuda_mps_running", "default_jobs", "run_sweep", "worker_threads"]

# --------------------------------------------------------------------------- the sweep
CUDA_JOBS = 4  # runs sharing one GPU; see default_jobs


def cuda_mps_running() -> bool:
    """Whether NVIDIA's MPS control daemon is up (its pipe in ``$CUDA_MPS_PIPE_DIRECTORY``)."""
    return (Path(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps")) / "control").exists()


def default_jobs(device: str) -> int:
    """Worker processes: one per core on the CPU (1 thread each; under torchrun the cores of
    the machine shared by its ranks), :data:`CUDA_JOBS` per GPU (a plain ``"cuda"`` spreads
    them over every visible GPU, see :func:`residuals.device.spread_devices`).

    A CIFAR-sized net at batch 128 leaves most of a big GPU idle, even with its
    step replayed as one CUDA graph: several processes (with NVIDIA's MPS daemon
    running, their kernels run concurrently) finish a sweep in about half the time
    of one run at a time; threads in one process failed to capture their graphs.
    Figures: benchmarks/README.md, "Figures behind the defaults".
    """
    if str(device).startswith("cuda"):
        return CUDA_JOBS * len(spread_devices(str(device)))  # on every visible GPU
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        cores = os.cpu_count() or 1
    info = launch()  # under torchrun the machine's cores are shared by its ranks
    return max(1, cores // (info.local_world_size if info is not None else 1))


def worker_threads(jobs: int) -> int:
    """Torch threads of each of ``jobs`` worker processes: the cores shared out, at least 1."""
    return max(1, default_jobs("cpu") // jobs)


# set in each worker process by _init_worker
_PROGRESS_QUEUE: Any = None
_WORKER_DEVICE: str | None = None


def _init_worker(queue, devices: list[str], counter) -> None:
    """Worker ``k`` (in start order) trains on ``devices[k mod len(devices)]``."""
    global _PROGRESS_QUEUE, _WORKER_DEVICE
    _PROGRESS_QUEUE = queue
    with counter.get_lock():
        k = counter.value
        counter.value += 1
    _WORKER_DEVICE = devices[k % len(devices)]
    if _WORKER_DEVICE.startswith("cuda:"):
        import torch

        torch.cuda.set_device(_WORKER_DEVICE)


def _worker_job(
    job: FusedJob, cfg: DegradationConfig, device: str, run_path: str, data_dir: str | None
) -> list[RunOutcome]:
    def report(spec, record) -> None:
        _PROGRESS_QUEUE.put((spec, _record_dict(record)))

    return train_job(
        job,
        cfg,
        device=_WORKER_DEVICE or device,
        run_path=run_path,
        data_dir=data_dir,
        on_epoch=report,
    )


def _record_dict(record) -> dict:
    return asdict(record) if hasattr(record, "__dataclass_fields__") else dict(record)


def run_sweep(
    run: RunDir,
    cfg: DegradationConfig,
    *,
    device: str,
    jobs: int = 1,
    data_dir: str | None = None,
    fuse: bool = False,
    echo: Callable[[str], None] = print,
) -> pd.DataFrame:
    """Train every run of ``cfg`` not yet in the run folder's ``runs.csv``; return ``runs.csv``.

    ``jobs == 1`` trains in this process (with torch's current thread count);
    ``jobs > 1`` trains in that many spawned worker processes with one torch thread
    each (more if there are more cores than jobs). With ``fuse``, the runs of each
    depth train as fused jobs (:mod:`residuals.bench.degradation.fusion`), one job
    per worker at a time. The tables are written after every finished job, so an
    interrupted sweep keeps everything that finished and the unfinished runs continue
    from their per-epoch checkpoints on the next call.
    Exceptions (including KeyboardInterrupt) stop the sweep and propagate.
    """
    planned = plan_runs(cfg)
    own = SweepTables(run, cfg)  # checked: a damaged table stops here (TableError)
    tables: SweepTables | ranks.Collected = own
    done = own.finished()
    todo = [s for s in planned if (s.variant, s.depth, s.seed) not in done]
    # under torchrun rank 0 plans the jobs and every rank takes its share (see .ranks)
    units = share(from_rank0(lambda: _plan(todo, cfg, device=device, jobs=jobs, fuse=fuse)))
    todo = [s for u in units for s in u.specs]
    if not is_rank0():
        tables = ranks.Collected()  # rank 0 writes the tables
    jobs = max(1, min(int(jobs), len(units))) if units else 1
    progress = Progress(todo, cfg, n_total=len(planned), jobs=jobs, echo=echo)
    partial = sum(checkpoint_path(run.path, s).is_file() for s in todo)
    if done or partial:
        echo(
            f"resuming: {len(done)} of {len(planned)} runs already finished, {partial} continue "
            f"from their checkpoints, {len(todo) - partial} start from scratch"
        )
    if fuse and units:
        echo(
            f"{len(todo)} runs in {len(units)} fused jobs of "
            f"{', '.join(str(len(u.specs)) for u in units)} members"
        )

    if jobs == 1:
        for job in units:
            for outcome in train_job(
                job,
                cfg,
                device=device,
                run_path=run.path,
                data_dir=data_dir,
                on_epoch=lambda s, r: progress.epoch(s, _record_dict(r)),
            ):
                tables.add(outcome)
                progress.finished(outcome)
    elif units:
        _run_parallel(
            units,
            cfg,
            run,
            device=device,
            jobs=jobs,
            data_dir=data_dir,
            tables=tables,
            progress=progress,
        )
    return ranks.gather(tables, lambda: own.frames["runs"])  # called on rank 0 only


def _plan(
    todo: list[RunSpec], cfg: DegradationConfig, *, device: str, jobs: int, fuse: bool
) -> list[FusedJob]:
    """The runs as jobs; fused jobs are sized by the GPU's free memory where there is one."""
    if not fuse:
        return plan_jobs(todo, cfg, fuse=False)
    from residuals.data.readers import DATASETS
    from residuals.device import resolve_amp

    spec = DATASETS[cfg.dataset]
    memory = None
    if str(device).startswith("cuda"):
        import torch

        memory = torch.cuda.mem_get_info(torch.device(device))[0]
    amp = resolve_amp(cfg.train.amp, device, 1)
    return plan_jobs(
        todo,
        cfg,
        fuse=True,
        image_shape=(spec.in_channels, spec.image_size, spec.image_size),
        num_classes=len(spec.classes),
        amp=amp,
        memory_bytes=memory,
        concurrent=max(1, jobs),
    )


def _run_parallel(units, cfg, run, *, device, jobs, data_dir, tables, progress) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    pool = spawn_pool(
        jobs, worker_threads(jobs), _init_worker, (queue, spread_devices(device), ctx.Value("i", 0))
    )

    def finished(_: int, outcomes: list[RunOutcome]) -> None:
        for outcome in outcomes:
            tables.add(outcome)
            progress.finished(outcome)

    run_pool(
        pool,
        {i: (_worker_job, (u, cfg, device, str(run.path), data_dir)) for i, u in enumerate(units)},
        finished,
        poll=lambda: _drain(queue, progress),
        # every result in, a worker's interpreter teardown (torch loaded) takes 1-3 s: the
        # workers exit while the caller writes the report; the interpreter joins them at exit
        wait_at_end=False,
    )


def _drain(queue, progress: Progress) -> None:
    while True:
        try:
            spec, record = queue.get_nowait()
        except Empty:
            return
        progress.epoch(spec, record)
