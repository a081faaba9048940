"""Worker processes shared by the benches: a spawned pool whose workers ignore Ctrl-C (the
parent handles it and stops them), die with their parent however it dies, and run a fixed
number of torch threads each."""

from __future__ import annotations

import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["die_with_parent", "spawn_pool", "stop_workers"]

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_S = 1.0  # the fallback's check of the parent, seconds


def die_with_parent(parent: int) -> None:
    """Make this worker exit promptly when ``parent`` (the bench's process) dies, however it
    dies: a ``kill -9`` or the OOM killer gives it no chance to stop its workers, and an
    orphaned worker would go on training -- holding its memory, and writing checkpoints while
    a later ``--resume`` works in the same folder.

    On Linux the kernel sends SIGKILL when the parent exits (``prctl(PR_SET_PDEATHSIG)``,
    called through ctypes); everywhere, a daemon thread also checks every
    :data:`PARENT_POLL_S` seconds that the parent is still this process's parent and kills
    the process if not. A worker killed this way leaves its last per-epoch checkpoint whole
    (files are written to a temporary and renamed); the temporary of an unfinished write is
    removed when the run folder is next locked (:mod:`residuals.runs.lock`).
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the watch below still works
            pass
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_S)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init(threads: int, parent: int, init: Callable[..., None] | None, args: tuple) -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it (and stops the
    # workers), so a worker never dies half-way through writing a file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)
    if init is not None:
        init(*args)


def spawn_pool(
    jobs: int, threads: int, init: Callable[..., None] | None = None, args: tuple[Any, ...] = ()
) -> ProcessPoolExecutor:
    """``jobs`` spawned worker processes with ``threads`` torch threads each; ``init(*args)``
    runs once in each (spawn: forking after torch has started threads is unsafe)."""
    return ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=mp.get_context("spawn"),
        initializer=_init,
        initargs=(threads, os.getpid(), init, args),
    )


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Stop every worker now (what each wrote atomically stays)."""
    if hasattr(pool, "terminate_workers"):  # Python >= 3.14
        pool.terminate_workers()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.join(timeout=10)
