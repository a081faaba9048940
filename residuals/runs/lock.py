"""One process at a time in a run folder.

A bench holds its run folder's lock from the moment it starts (or resumes) the run until it
has written the report: a second ``--resume`` of the same folder, started by mistake in
another terminal or by a job scheduler's retry, stops at once with "in use by PID ...",
instead of training every unfinished run a second time and racing the first process over
the same checkpoints and tables.

The lock is an advisory ``flock`` on ``<run>/.lock`` (which records the holder's PID and
host): the kernel releases it when the holder exits, however it exits -- ``kill -9`` and
the OOM killer included -- so a crashed run never leaves a stale lock behind. Worker
processes do not inherit it (they are spawned, not forked, and exit with their parent;
see :mod:`residuals.bench.degradation.sweep`). Where ``fcntl`` is missing (Windows)
the lock is a no-op.

On taking the lock, temporary files that a killed writer left behind (``.<name>.<pid>.
<thread>.<hex>.tmp``, see :mod:`residuals.runs.atomic`) are removed: nobody else can be
writing them while we hold the lock.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "RunInUse", "RunLock"]

LOCK_FILE = ".lock"

fcntl: Any
try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class RunInUse(RuntimeError):
    """Another process holds the run folder's lock."""


# folders this process holds (resolved path -> holders): taking a lock this process already
# holds succeeds, as when a bench that holds its run folder builds the folder's report
_HELD: dict[Path, int] = {}


class RunLock:
    """``with RunLock(path):`` -- hold ``path``'s lock, or raise :class:`RunInUse` at once."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None
        self._nested = False

    def acquire(self) -> RunLock:
        if self._fd is not None or self._nested or fcntl is None:
            return self
        key = self.folder.resolve()
        if _HELD.get(key):
            _HELD[key] += 1
            self._nested = True
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunInUse(
                f"{self.folder} is in use by {holder}: a run folder is worked on by "
                f"one process at a time. Wait for it to finish (or stop it), then "
                f"try again."
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self._fd = fd
        _HELD[key] = 1
        remove_stale_temporaries(self.folder)
        return self

    def release(self) -> None:
        key = self.folder.resolve()
        if self._nested:
            self._nested = False
            _HELD[key] -= 1
            return
        if self._fd is None:
            return
        _HELD.pop(key, None)
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        except OSError:  # a full or read-only disk: the lock goes with the descriptor anyway
            pass
        os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None or self._nested

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the atomic writers' temporary files under ``folder`` (one level of sub-folders,
    e.g. ``checkpoints/``); call only while holding the folder's lock."""
    removed = []
    for d in (folder, *(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())):
        for p in d.glob(".*.tmp"):
            try:
                p.unlink()
                removed.append(p)
            except OSError:
                pass
    return removed
