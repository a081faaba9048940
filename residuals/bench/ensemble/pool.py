"""Running ``bench ensemble``'s models in this process or in worker processes.

With ``jobs == 1`` every (family, seed) trains here, in order. With ``jobs > 1``
they go to ``jobs`` spawned workers with ``cores // jobs`` torch threads each
(measured for the degradation sweep on a shared 2-core machine: two 1-thread
processes beat one 2-thread process); results come back to this process, which
alone writes the tables. The fit functions travel with the tasks (pickled by
reference), so a family registered by an importable module works in workers
too. Ctrl-C stops the workers at once; the nets' last checkpoints stay.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

__all__ = ["run_tasks", "worker_threads"]


def worker_threads(jobs: int) -> int:
    """Torch threads of each of ``jobs`` workers: the cores shared out, at least 1."""
    from residuals.bench.degradation import default_jobs

    return max(1, default_jobs("cpu") // jobs)


def _init_worker(threads: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    import torch

    torch.set_num_threads(threads)


def _work(task, cfg, device, run_path, data_dir, fit):
    from residuals.bench.ensemble.runner import fit_and_measure

    family, seed = task
    return task, fit_and_measure(
        family, seed, cfg, device=device, run_path=run_path, data_dir=data_dir, fit=fit
    )


def run_tasks(
    todo: list[tuple[str, int]],
    cfg,
    *,
    device: str,
    jobs: int,
    run_path: str,
    data_dir: str | None,
    on_result: Callable,
    fits: dict[str, Callable],
) -> None:
    """Fit and measure every task; call ``on_result(task, frames)`` as each one finishes."""
    jobs = max(1, min(int(jobs), len(todo)))
    if jobs == 1:
        for task in todo:
            on_result(*_work(task, cfg, device, run_path, data_dir, fits[task[0]]))
        return
    pool = ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(worker_threads(jobs),),
    )
    try:
        pending = {pool.submit(_work, t, cfg, device, run_path, data_dir, fits[t[0]]) for t in todo}
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                on_result(*future.result())  # re-raises a worker's exception
    except BaseException:
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            if proc.is_alive():
                proc.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=False)
