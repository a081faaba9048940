"""The trainer under ``torchrun``: what ``train(..., distributed=True)`` changes in a process
group of two or more ranks (:mod:`residuals.distributed` has the step and its reasoning).
Without ``distributed=True`` a process of a group trains alone, as the degradation sweep's
ranks each train their own runs.

* one model per rank, wrapped in ``DistributedDataParallel`` (:func:`data_parallel`); CPU
  replicas, ``torch.compile`` and CUDA graphs are off (each rank is one process per GPU or
  per CPU socket: start one rank per core rather than replicas);
* ``cfg.batch_size`` is the global batch: every rank trains on its share of it, so the data
  order, the schedule and every hyper-parameter are those of a single-process run;
* rank 0 alone reads the checkpoint (and sends it to the others) and writes it;
* a resume with another number of ranks is allowed when the BatchNorm groups do not change
  (:func:`check_resume`): with ``sync_bn`` (one group, the global batch) or a model without
  BatchNorm, at any number of ranks. Per-rank BatchNorm normalises ``batch_size / ranks``
  images, so another rank count would change the run's arithmetic and is refused, except
  between ``K`` ranks and one CPU process of ``K`` replicas, which split the batch alike.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from residuals import distributed
from residuals.device import resolve_amp
from residuals.train.checkpoint import load_checkpoint
from residuals.train.config import TrainConfig, TrainError

__all__ = ["check_resume", "data_parallel", "plan", "ranks", "read_resume", "writes"]


def ranks(on: bool) -> int:
    """The ranks one run trains over: the group's with ``distributed=True``, else 1."""
    return distributed.world_size() if on else 1


def plan(
    cfg: TrainConfig,
    device: str,
    replicas: int,
    threads_each: int,
    amp: bool,
    *,
    resumed: bool,
    world: int,
) -> tuple[int, int, bool]:
    """``(replicas, threads each, amp)`` of this process: unchanged alone (but one replica with
    ``sync_bn``), one model per rank over ``world`` ranks, in rank 0's precision."""
    if world == 1 and not (cfg.sync_bn and replicas > 1):
        return replicas, threads_each, amp
    bad = [
        name
        for name, on in (
            ("replicas > 1", cfg.replicas not in (None, 1)),
            ("compile=True", cfg.compile),
            ("cuda_graph=True", cfg.cuda_graph is True),
        )
        if on
    ]
    if world > 1 and bad:
        raise TrainError(
            f"{', '.join(bad)} cannot be used under torchrun (each rank trains one "
            "model eagerly; start one rank per core instead of CPU replicas): "
            "leave them unset"
        )
    threads = torch.get_num_threads()
    if not resumed or cfg.amp is not None:  # a resume keeps the run's own precision
        amp = resolve_amp(cfg.amp, device, threads)
    return 1, threads, distributed.broadcast_object(amp) if world > 1 else amp


def data_parallel(
    model: nn.Module, cfg: TrainConfig, device: str, n_train: int, world: int
) -> distributed.DataParallel | None:
    """The data-parallel step over ``world`` ranks; None for one."""
    if world == 1:
        return None
    last = n_train % cfg.batch_size or cfg.batch_size
    if cfg.sync_bn and last < world:
        raise TrainError(
            f"sync_bn: the epoch's last batch has {last} images, fewer than the "
            f"{world} ranks; choose a batch size that leaves at least {world}"
        )
    try:
        return distributed.DataParallel(model, device, sync_bn=cfg.sync_bn)
    except distributed.DistributedError as e:
        raise TrainError(str(e)) from None


def read_resume(path: os.PathLike, world: int) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None if there is none); over ranks, rank 0 reads it and
    sends it to the others, which need not see rank 0's disk."""

    def read() -> dict[str, Any] | None:
        return load_checkpoint(path) if os.path.exists(path) else None

    return distributed.from_rank0(read) if world > 1 else read()


def writes(world: int) -> bool:
    """Whether this process writes the run's checkpoints: alone, or rank 0 of the ranks."""
    return world == 1 or distributed.is_rank0()


def check_resume(state: dict, cfg: TrainConfig, model: nn.Module, device: str, world: int) -> None:
    """Refuse a resume whose number of ranks would change the BatchNorm groups (the module's
    rule). A checkpoint's ``replicas`` counts the model copies of all ranks: one process on
    the CPU resumes a 2-rank run with 2 replicas, exactly (the trainer reads them from it)."""
    if cfg.sync_bn or not distributed.has_batchnorm(model):
        return
    saved = int(state.get("replicas", 1))
    if world == 1 and (saved == 1 or torch.device(device).type == "cpu"):
        return
    if world != saved:
        raise TrainError(
            f"the checkpoint was trained with per-rank BatchNorm over {saved} shard(s) of each "
            f"batch; resuming with {world} rank(s) would normalise "
            f"{'the whole batch' if world == 1 else f'{world} shards'} and change the run's "
            f"arithmetic. Resume with {saved} ranks (torchrun --nproc_per_node {saved} ...), "
            "or train with sync_bn (--sync-bn, GPUs), whose statistics do not depend on it"
        )
