"""The sweep over ``torchrun``'s ranks (several machines, or several GPUs without workers).

``torchrun --nnodes M --nproc_per_node G -m residuals bench degradation ...`` starts the
same command in ``M * G`` processes. They join one gloo process group (they exchange only
small Python objects; every rank trains alone) and split the work:

* rank 0 creates (or reopens) the run folder and holds it for the whole job: it alone writes
  ``meta.json``, the tables and the report. The others work inside the folder under rank 0's
  hold, writing only their own runs' checkpoints (``checkpoints/<run>.pt``);
* a **shared filesystem** is required: every rank must see the folder rank 0 made (checked
  at once; a rank that does not see it stops every rank with the reason);
* rank 0 plans the jobs of the runs not yet finished (one run each, or fused runs, see
  :mod:`~residuals.bench.degradation.fusion`); they are dealt round-robin over the ranks in
  the planner's order, longest first (:func:`residuals.distributed.share`), so the job names
  are those of a one-process sweep. Each rank trains its share on its own GPU
  (``cuda:<LOCAL_RANK>``, its worker processes included) or with its share of the cores;
* rank 0 records its own runs as they finish; the others send theirs when their share is
  done (one gather, which may wait up to :data:`SHARE_WAIT` for the slowest rank: shares
  take different times), and rank 0 adds them to the tables and writes the report.

A rank that dies makes ``torchrun`` stop the others (SIGTERM, which the command treats as an
interrupt): every rank loses at most the unfinished epochs of the runs it was training,
since every epoch of every run is checkpointed. A run that finished on a rank whose rows
never reached rank 0 has a finished checkpoint, so ``--resume`` (with any number of ranks,
or none) only re-measures its probes. The tables of a sweep are the same whatever the number
of ranks: each run trains alone, in the same arithmetic (tested with 2 gloo ranks).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from residuals import distributed
from residuals.distributed import local_first  # the sweep's data loading, via this module
from residuals.runs import BrokenRun, RunDir

__all__ = [
    "SHARE_WAIT",
    "Collected",
    "gather",
    "group",
    "local_first",
    "shared_folder",
    "with_rank",
]

T = TypeVar("T")

SHARE_WAIT = datetime.timedelta(days=7)  # a rank done with its share waits this long for the rest

_WAIT_GROUP: Any = None  # the gloo group of the final gather, with its long timeout


@contextlib.contextmanager
def group() -> Iterator[bool]:
    """Join ``torchrun``'s process group (gloo) for the sweep; yields whether there is one of
    two or more ranks. Without a launcher (or with one rank) it does nothing."""
    global _WAIT_GROUP
    import torch.distributed as dist

    with distributed.process_group("cpu", backend="gloo"):
        several = distributed.world_size() > 1
        if several and _WAIT_GROUP is None:
            _WAIT_GROUP = dist.new_group(backend="gloo", timeout=SHARE_WAIT)
        try:
            yield several
        finally:
            if several and dist.is_initialized():
                dist.destroy_process_group(_WAIT_GROUP)
            _WAIT_GROUP = None


def with_rank(echo: Callable[[str], None]) -> Callable[[str], None]:
    """``echo`` that prefixes ``[rank r/W]`` on ranks other than 0 (torchrun merges outputs)."""
    if distributed.world_size() == 1 or distributed.is_rank0():
        return echo
    prefix = f"[rank {distributed.rank()}/{distributed.world_size()}] "
    return lambda line: echo(prefix + line)


def shared_folder(make: Callable[[], tuple[RunDir, T]]) -> tuple[RunDir, T]:
    """``make()`` on rank 0 (it creates or reopens the run folder and returns it with what the
    other ranks need, e.g. the recorded config); every rank gets the folder and that value.
    Every rank checks that it sees the folder: a shared filesystem is required."""
    path, value = distributed.from_rank0(lambda: _path_and(make()))
    run = RunDir(path)

    def visible() -> None:
        try:
            run.read_meta()
        except BrokenRun as e:
            raise BrokenRun(
                f"rank {distributed.rank()} on {os.uname().nodename} cannot read the run folder "
                f"{path} that rank 0 created ({e}). Under torchrun every rank writes its runs' "
                "checkpoints into that folder: put --out (or --resume) on a filesystem that "
                "every machine mounts at the same path"
            ) from None

    distributed.check_all(visible)
    return run, value


def _path_and(made: tuple[RunDir, T]) -> tuple[str, T]:
    run, value = made
    return str(run.path), value


class Collected:
    """The tables' stand-in on ranks other than 0: finished runs are kept for :func:`gather`."""

    def __init__(self) -> None:
        self.outcomes: list[Any] = []

    def add(self, outcome: Any) -> None:
        self.outcomes.append(outcome)


def gather(tables: Any, runs: Callable[[], Any]) -> Any:
    """Send every rank's finished runs to rank 0, which adds them to ``tables``; returns
    ``runs()`` (rank 0's ``runs.csv`` after that) on every rank. Without ranks: ``runs()``."""
    if distributed.world_size() == 1:
        return runs()
    import torch.distributed as dist

    mine = tables.outcomes if isinstance(tables, Collected) else []
    everyone: list[Any] | None = (
        [None] * distributed.world_size() if distributed.is_rank0() else None
    )
    dist.gather_object(mine, everyone, dst=0, group=_WAIT_GROUP)
    if everyone is not None:
        for outcomes in everyone:
            for outcome in outcomes:
                tables.add(outcome)
    return distributed.from_rank0(runs)
