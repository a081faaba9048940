"""Running ``bench ensemble``'s models in this process or in worker processes.

With ``jobs == 1`` every (family, seed) trains here, in order. With ``jobs > 1``
they go to ``jobs`` spawned workers (:mod:`residuals.bench._workers`) with
``cores // jobs`` torch threads each; results come back to this process, which
alone writes the tables. The fit functions travel with the tasks (pickled by
reference), so a family registered by an importable module works in workers
too. An exception or Ctrl-C stops the workers at once; the nets' last
checkpoints stay.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["run_tasks"]


def _work(task, cfg, device, run_path, data_dir, fit, progress=None):
    from residuals.bench.ensemble.runner import fit_and_measure

    family, seed = task
    frames = fit_and_measure(
        family,
        seed,
        cfg,
        device=device,
        run_path=run_path,
        data_dir=data_dir,
        fit=fit,
        progress=progress or _print,
    )
    return task, frames


def _print(line: str) -> None:
    """A worker's progress line, on the terminal the workers share with the parent."""
    print(line, flush=True)


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
    echo: Callable[[str], None] | None = None,
) -> None:
    """Fit and measure every task; call ``on_result(task, frames)`` as each one finishes.
    Progress lines go to ``echo`` in this process, to the shared terminal from workers."""
    from residuals.bench._workers import run_pool, spawn_pool
    from residuals.bench.degradation import worker_threads

    jobs = max(1, min(int(jobs), len(todo)))
    if jobs == 1:
        for task in todo:
            on_result(*_work(task, cfg, device, run_path, data_dir, fits[task[0]], echo))
        return
    pool = spawn_pool(jobs, worker_threads(jobs))
    calls = {
        i: (_work, (t, cfg, device, run_path, data_dir, fits[t[0]])) for i, t in enumerate(todo)
    }
    # every result in, the workers' interpreters exit while the caller writes the report
    run_pool(pool, calls, lambda _, result: on_result(*result), wait_at_end=False)
