"""Training many nets at once: :func:`train_many`, and the fused loop it runs them in.

A seed study, an ensemble or a degradation sweep trains many nets of one
architecture on one dataset. One at a time they leave a GPU mostly idle (a
ResNet-20 step at batch 128 is hundreds of small kernels). :func:`train_many`
trains them as one :class:`~residuals.nets.fused.FusedResNet` (HFTA, Wang et
al. 2021): every member gets exactly the training :func:`residuals.train.train`
would give it alone --

* its own data order and augmentation, from its own generator seeded with its
  ``TrainConfig.seed``, drawn in the same order as the one-net trainer draws them;
* its own BatchNorm statistics (per-member channels of one BatchNorm);
* its own SGD: learning rate, schedule, warm-up (the paper's error-triggered
  warm-up switches per member), momentum and weight decay, as vectors over the
  members applied to one flat buffer of all parameters;
* its own loss and error records, evaluation and checkpoint, in the one-net
  trainer's checkpoint format: a fused run resumes unfused and the other way round.

Within float rounding: the grouped convolutions, the batched linear head and the
vectorised optimiser round differently from the one-net kernels, so weights
agree to about 1e-6 relative after one step and drift apart as chaotically as
SGD amplifies any perturbation (the tests state the tolerance).

A member whose training loss turns non-finite is recorded as diverged (its last
checkpoint holds its state at that epoch, as the one-net trainer's does) and
frozen: its parameters and momentum are zeroed and its learning rate masked to
0, so it computes finite zeros while the others go on.

The step never waits for the device, as in :mod:`residuals.train`: one host
read per epoch. On CUDA the full-batch step is captured as one CUDA graph.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from residuals.data import AUGMENTATIONS, ImageData
from residuals.device import resolve_amp, resolve_device
from residuals.nets.fused import fusable
from residuals.nets.models import ResNet
from residuals.train.checkpoint import _check_compatible, load_checkpoint
from residuals.train.config import (
    EpochRecord,
    TrainConfig,
    TrainError,
    TrainResult,
    steps_per_epoch,
)
from residuals.train.fused_loop import Member, finished, run_fused, warmup_switch
from residuals.train.loop import train

__all__ = ["FUSE_CPU", "SHARED_FIELDS", "fuse_groups", "train_fused", "train_many"]

#: TrainConfig fields every member of a fused model shares (one step, one device, one precision).
SHARED_FIELDS = (
    "epochs",
    "batch_size",
    "eval_batch_size",
    "amp",
    "channels_last",
    "compile",
    "cuda_graph",
    "device",
)
#: Whether :func:`train_many` (and ``--fuse auto``) fuses on a CPU. Measured on a shared 2-core
#: CPU, one thread per process (benchmarks/README.md, "Fused training"): N = 1, 2, 4 fused
#: ResNet-20s on 8x8 images trained at 0.92-1.03x the images/s of one net at a time, and the
#: digits sweep took 0.99-1.10x as long fused: no gain, so not by default.
FUSE_CPU = False

EpochCallback = Callable[[int, EpochRecord], None]


# --------------------------------------------------------------------------- API
def train_many(
    models: Sequence[ResNet],
    data: ImageData,
    configs: TrainConfig | Sequence[TrainConfig],
    *,
    checkpoint_paths: Sequence[str | os.PathLike | None] | None = None,
    resume: bool = False,
    fuse: bool | None = None,
    max_members: int | None = None,
    on_epoch: EpochCallback | None = None,
) -> list[TrainResult]:
    """Train every model of ``models`` on ``data``, fused where they can share one model.

    Parameters
    ----------
    models : ResNets (or their plain twins), each initialised by the caller; trained in
        place and moved to the device, as :func:`residuals.train.train` does.
    data : the dataset all of them train on.
    configs : one :class:`TrainConfig` for all, or one per model (seeds, learning
        rates, schedules, warm-ups and weight decay may differ; the fields in
        :data:`SHARED_FIELDS` must not, within a fused group).
    checkpoint_paths : one per model (None: no checkpoint), written after every epoch in
        :func:`residuals.train.train`'s format.
    resume : continue each model from its checkpoint, if it exists; finished runs are
        returned as they are. Members resumed at different epochs train in separate groups.
    fuse : True: fuse every group that can be fused; False: one model at a time with
        :func:`residuals.train.train`; None: fuse on CUDA, and on a CPU if :data:`FUSE_CPU`.
    max_members : the most members in one fused model (None: no limit); more are split
        into several fused models, trained one after another.
    on_epoch : called as ``on_epoch(i, record)`` after model ``i``'s epoch is checkpointed.

    Returns
    -------
    One :class:`TrainResult` per model, in order.

    Example::

        models = [cifar_resnet(20, in_channels=1) for seed in range(8)]   # seed each one
        configs = [TrainConfig(epochs=15, seed=s, device="cuda") for s in range(8)]
        results = train_many(models, load_dataset("fashion-mnist"), configs)
    """
    n = len(models)
    cfgs = list(configs) if isinstance(configs, Sequence) else [configs] * n
    paths = list(checkpoint_paths) if checkpoint_paths is not None else [None] * n
    if len(cfgs) != n or len(paths) != n:
        raise ValueError(
            f"train_many: {n} models need as many configs and checkpoint paths, got "
            f"{len(cfgs)} and {len(paths)}"
        )
    if max_members is not None and max_members < 1:
        raise ValueError(f"max_members must be at least 1, got {max_members}")
    device = resolve_device(cfgs[0].device) if cfgs else "cpu"
    if fuse is None:
        fuse = torch.device(device).type == "cuda" or FUSE_CPU
    results: list[TrainResult | None] = [None] * n

    def callback(i: int) -> Callable[[EpochRecord], None] | None:
        return None if on_epoch is None else (lambda record: on_epoch(i, record))

    groups = fuse_groups(models, cfgs, max_members=max_members) if fuse else [[i] for i in range(n)]
    for group in groups:
        if len(group) == 1:
            i = group[0]
            results[i] = train(
                models[i],
                data,
                cfgs[i],
                checkpoint_path=paths[i],
                resume=resume,
                on_epoch=callback(i),
            )
            continue
        done = train_fused(
            [models[i] for i in group],
            data,
            [cfgs[i] for i in group],
            checkpoint_paths=[paths[i] for i in group],
            resume=resume,
            on_epoch=None if on_epoch is None else _reindexed(on_epoch, group),
        )
        for i, result in zip(group, done):
            results[i] = result
    return results  # type: ignore[return-value]


def _reindexed(on_epoch: EpochCallback, group: list[int]) -> EpochCallback:
    """``on_epoch`` for a group's members: their index in the group -> their index in all."""
    return lambda k, record: on_epoch(group[k], record)


def fuse_groups(
    models: Sequence[ResNet],
    configs: Sequence[TrainConfig],
    *,
    max_members: int | None = None,
) -> list[list[int]]:
    """Indices of ``models`` that can share a fused model, in groups of at most ``max_members``.

    Two models share a group when their architectures differ at most in ``skip``
    (with option-A shortcuts) and their configs agree on :data:`SHARED_FIELDS`.
    """
    keyed: dict[tuple, list[int]] = {}
    for i, (model, cfg) in enumerate(zip(models, configs)):
        arch = (
            dataclasses.replace(model.config, skip=True, name="")
            if isinstance(model, ResNet)
            else ("unfusable", i)
        )
        keyed.setdefault((arch, *(getattr(cfg, f) for f in SHARED_FIELDS)), []).append(i)
    groups = []
    for members in keyed.values():
        if len(members) > 1 and fusable([models[i].config for i in members]) is not None:
            groups += [[i] for i in members]
            continue
        size = max_members or len(members)
        groups += [members[j : j + size] for j in range(0, len(members), size)]
    return groups


# --------------------------------------------------------------------------- the fused loop
def train_fused(
    models: Sequence[ResNet],
    data: ImageData,
    configs: Sequence[TrainConfig],
    *,
    checkpoint_paths: Sequence[str | os.PathLike | None] | None = None,
    resume: bool = False,
    on_epoch: EpochCallback | None = None,
) -> list[TrainResult]:
    """Train ``models`` as one :class:`FusedResNet`; see :func:`train_many` for the parameters.

    Raises :class:`TrainError` where they cannot be fused (the message says why).
    """
    n = len(models)
    paths = [Path(p) if p is not None else None for p in (checkpoint_paths or [None] * n)]
    device = resolve_device(configs[0].device)
    cfgs = [dataclasses.replace(c, device=device) if c.device != device else c for c in configs]
    _check_fusable(models, cfgs)
    cfg0 = cfgs[0]
    if data.device != torch.empty(0, device=device).device:
        data = data.to(device)
    cuda = torch.device(device).type == "cuda"
    spe = steps_per_epoch(len(data.train_y), cfg0.batch_size)
    amp = resolve_amp(cfg0.amp, device, torch.get_num_threads())
    members = [
        Member(
            cfg=c,
            path=p,
            augment=_augment(c, data),
            history=[],
            generator=_generator(device, c.seed),
        )
        for c, p in zip(cfgs, paths)
    ]
    momentum: list[list[torch.Tensor] | None] = [None] * n
    schedule_states: list[dict | None] = [None] * n
    for k, (m, model) in enumerate(zip(members, models)):
        model.to(device)
        if resume and m.path is not None and m.path.exists():
            state = load_checkpoint(m.path)
            _check_compatible(state, m.cfg, data, m.path)
            model.load_state_dict(state["model"])
            m.generator.set_state(state["rng"]["data"])
            m.history = [EpochRecord(**r) for r in state["history"]]
            m.diverged = bool(state["diverged"])
            m.resumed_from = len(m.history)
            if cfg0.amp is None and "amp" in state:
                amp_k = bool(state["amp"])
                if k and amp_k != amp:
                    raise TrainError(
                        f"{m.path} trained in {'bf16' if amp_k else 'fp32'}, the "
                        "other members in the other precision; set TrainConfig.amp"
                    )
                amp = amp_k
            momentum[k] = [
                s["momentum_buffer"] for _, s in sorted(state["optimizer"]["state"].items())
            ]
            schedule_states[k] = state["schedule"]
            m.switch = warmup_switch(m.cfg, int(state["schedule"]["switch_iteration"]))
    start = {len(m.history) for m in members if not finished(m)}
    if len(start) > 1:
        raise TrainError(
            f"the members resume at different epochs ({sorted(start)}); train them "
            "with train_many, which groups them by epoch"
        )
    live = [k for k, m in enumerate(members) if not finished(m)]
    if live:
        run_fused(
            models,
            data,
            members,
            live,
            momentum,
            schedule_states,
            spe=spe,
            amp=amp,
            cuda=cuda,
            on_epoch=on_epoch,
        )
    return [
        TrainResult(
            history=m.history,
            diverged=m.diverged,
            model=models[k],
            iterations=len(m.history) * spe,
            resumed_from_epoch=m.resumed_from,
            amp=amp,
            replicas=1,
            warmup_end_iteration=m.switch,
        )
        for k, m in enumerate(members)
    ]


def _augment(cfg: TrainConfig, data: ImageData) -> str:
    named = {None: data.augment, True: "crop-flip", False: "none"}
    augment = cfg.augment if isinstance(cfg.augment, str) else named[cfg.augment]
    if augment not in AUGMENTATIONS:
        raise TrainError(f"dataset {data.name!r} names an unknown augmentation {augment!r}")
    return str(augment)


def _generator(device: str, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _check_fusable(models: Sequence[ResNet], cfgs: Sequence[TrainConfig]) -> None:
    if not models:
        raise TrainError("train_fused needs at least one model")
    for f in SHARED_FIELDS:
        values = {getattr(c, f) for c in cfgs}
        if len(values) > 1:
            raise TrainError(
                f"fused members must share TrainConfig.{f}, got {sorted(map(str, values))}"
            )
    if any(c.optimizer != "sgd" for c in cfgs):
        raise TrainError(
            "a fused model trains its members with SGD (MemberSGD); set "
            "TrainConfig.optimizer='sgd' or train the nets one by one"
        )
    if cfgs[0].compile:
        raise TrainError("a fused model is not compiled; set TrainConfig.compile=False")
    if any(c.replicas not in (None, 1) for c in cfgs):
        raise TrainError(
            "a fused model trains its members on one batch each, without CPU replicas; "
            "leave TrainConfig.replicas unset (None) or 1"
        )
    if cfgs[0].cuda_graph and torch.device(cfgs[0].device).type != "cuda":
        raise TrainError(
            f"cuda_graph=True needs a CUDA device, but the run is on {cfgs[0].device!r}"
        )
    if not all(isinstance(m, ResNet) for m in models):
        raise TrainError("only residuals.nets.ResNet models can be fused")
    why = fusable([m.config for m in models])
    if why:
        raise TrainError(f"these models cannot be fused: {why}")
