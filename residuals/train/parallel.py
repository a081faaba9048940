"""The trainer under ``torchrun``: what changes when a process group of two or more ranks is up
(:mod:`residuals.distributed` has the step itself and the reasoning).

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

__all__ = ["check_resume", "data_parallel", "plan", "read_resume"]


def plan(
    cfg: TrainConfig, device: str, replicas: int, threads_each: int, amp: bool, *, resumed: bool
) -> tuple[int, int, bool]:
    """``(replicas, threads each, amp)`` of this process: unchanged alone (one replica with
    ``sync_bn``), one model per rank under a process group, in rank 0's precision."""
    ranks = distributed.world_size()
    if ranks == 1 and not (cfg.sync_bn and replicas > 1):
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
    if ranks > 1 and bad:
        raise TrainError(
            f"{', '.join(bad)} cannot be used under torchrun (each rank trains one "
            "model eagerly; start one rank per core instead of CPU replicas): "
            "leave them unset"
        )
    threads = torch.get_num_threads()
    if not resumed or cfg.amp is not None:  # a resume keeps the run's own precision
        amp = resolve_amp(cfg.amp, device, threads)
    return 1, threads, distributed.broadcast_object(amp)


def data_parallel(
    model: nn.Module, cfg: TrainConfig, device: str, n_train: int
) -> distributed.DataParallel | None:
    """The data-parallel step over the ranks, or None without a process group of two or more."""
    ranks = distributed.world_size()
    if ranks == 1:
        return None
    last = n_train % cfg.batch_size or cfg.batch_size
    if cfg.sync_bn and last < ranks:
        raise TrainError(
            f"sync_bn: the epoch's last batch has {last} images, fewer than the "
            f"{ranks} ranks; choose a batch size that leaves at least {ranks}"
        )
    try:
        return distributed.DataParallel(model, device, sync_bn=cfg.sync_bn)
    except distributed.DistributedError as e:
        raise TrainError(str(e)) from None


def read_resume(path: os.PathLike) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (None if there is none), read by rank 0 and sent to all."""
    return distributed.from_rank0(lambda: load_checkpoint(path) if os.path.exists(path) else None)


def check_resume(state: dict, cfg: TrainConfig, model: nn.Module, device: str) -> None:
    """Refuse a resume whose number of ranks would change the BatchNorm groups (the module's
    rule). A checkpoint's ``replicas`` counts the model copies of all ranks: a single process
    on the CPU resumes a 2-rank run with 2 replicas, exactly (the trainer reads it)."""
    if cfg.sync_bn or not distributed.has_batchnorm(model):
        return
    saved = int(state.get("replicas", 1))
    ranks = distributed.world_size()
    if ranks == 1 and (saved == 1 or torch.device(device).type == "cpu"):
        return
    if ranks != saved:
        raise TrainError(
            f"the checkpoint was trained with per-rank BatchNorm over {saved} shards of each "
            f"batch; resuming with {ranks} rank(s) would normalise "
            f"{'the whole batch' if ranks == 1 else f'{ranks} shards'} and change the run's "
            f"arithmetic. Resume with {saved} ranks (torchrun --nproc_per_node {saved} ...), "
            "or train with sync_bn (--sync-bn, GPUs), whose statistics do not depend on it"
        )
