"""Worker processes shared by the benches: a spawned pool whose workers ignore Ctrl-C (the
parent handles it and stops them) and run a fixed number of torch threads each."""

from __future__ import annotations

import multiprocessing as mp
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable

__all__ = ["spawn_pool", "stop_workers"]


def _init(threads: int, init: Callable[..., None] | None, args: tuple) -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it (and stops the
    # workers), so a worker never dies half-way through writing a file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    if init is not None:
        init(*args)


def spawn_pool(jobs: int, threads: int, init: Callable[..., None] | None = None,
               args: tuple[Any, ...] = ()) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes with ``threads`` torch threads each; ``init(*args)``
    runs once in each (spawn: forking after torch has started threads is unsafe)."""
    return ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                               initializer=_init, initargs=(threads, init, args))


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now (what each wrote atomically stays)."""
    if hasattr(pool, "terminate_workers"):   # Python >= 3.14
        pool.terminate_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.join(timeout=10)
