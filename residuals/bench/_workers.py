"""Worker processes shared by the benches: a spawned pool whose workers ignore Ctrl-C (the
parent handles it and stops them), die with their parent however it dies, and run a fixed
number of torch threads each; :func:`run_pool` submits calls to it and hands their results
back, and stops the workers on Ctrl-C, SIGTERM or an error without ever hanging."""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from typing import Any, TypeVar

__all__ = ["die_with_parent", "run_pool", "spawn_pool", "stop_workers"]

K = TypeVar("K")
POLL_S = 0.25  # how often run_pool looks for a noted Ctrl-C (and calls its poll)

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


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[Callable[[], bool]]:
    """Ctrl-C (and SIGTERM, where a handler already turns it into an exception, as the CLI's
    does) only *noted* while the block runs; yields a function that says whether one came.

    Raised where it lands, a KeyboardInterrupt can split ``concurrent.futures``' own lock
    handling: ``wait`` acquires every future's lock in turn, and an interrupt between two
    acquires leaves the first held for ever; the pool's manager thread then blocks on it
    while the main thread, stopping the pool, waits for that thread (a hang seen in a test
    of Ctrl-C). The caller raises KeyboardInterrupt itself, at a point of its choosing.
    Off the main thread (where signals cannot be handled) the block runs as it is.
    """
    came: list[int] = []

    def note(signum: int, frame: object) -> None:
        came.append(signum)

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            current = signal.getsignal(sig)
            if callable(current):  # Python's Ctrl-C handler, or the CLI's SIGTERM one
                previous[sig] = signal.signal(sig, note)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield lambda: bool(came)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def run_pool(
    pool: Executor,
    calls: Mapping[K, tuple[Callable[..., Any], tuple]],
    on_result: Callable[[K, Any], None],
    *,
    poll: Callable[[], None] | None = None,
    wait_at_end: bool = True,
) -> None:
    """Run ``fn(*args)`` for each ``key: (fn, args)`` of ``calls`` in ``pool`` and call
    ``on_result(key, result)`` in this process as each finishes (a worker's exception is
    raised here); ``poll()`` runs every :data:`POLL_S` seconds and at the end (progress
    that workers send on a queue of their own).

    Ctrl-C or SIGTERM while it runs: the results already finished are handed over, the
    workers are stopped (what each wrote atomically stays), and KeyboardInterrupt is
    raised; the same stop on any error. At the end the pool is shut down, waiting for its
    workers' exit only with ``wait_at_end``.
    """
    with deferred_interrupts() as interrupted:
        try:
            pending = {pool.submit(fn, *args): key for key, (fn, args) in calls.items()}
            while pending:
                finished, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                if poll is not None:
                    poll()
                for future in finished:
                    on_result(pending.pop(future), future.result())
                if interrupted():
                    raise KeyboardInterrupt
            if poll is not None:
                poll()
        except BaseException:
            if isinstance(pool, ProcessPoolExecutor):
                stop_workers(pool)
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    pool.shutdown(wait=wait_at_end)
