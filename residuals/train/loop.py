"""The training loop: :func:`train` reads top to bottom, from the configuration to the
result, and drives a :class:`~residuals.train.steps.StepLoop` (what every step needs, in
:mod:`residuals.train.steps`, with :func:`evaluate`) epoch by epoch. See
:mod:`residuals.train` for how the loop avoids host round trips, CUDA graphs and CPU
replicas."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from residuals.data import AUGMENTATIONS, ImageData
from residuals.device import resolve_device, resolve_replicas, resolve_replicas_amp
from residuals.replicas import Replicas
from residuals.train import parallel
from residuals.train.checkpoint import (
    _check_compatible,
    _set_rng_state,
    save_checkpoint,
)
from residuals.train.config import (
    EpochRecord,
    StepProgress,
    StepTrace,
    TrainConfig,
    TrainError,
    TrainResult,
    steps_per_epoch,
)
from residuals.train.optim import make_optimizer
from residuals.train.schedule import LRSchedule
from residuals.train.steps import EpochClock, StepLoop, cudnn_benchmark, evaluate, oom_error

__all__ = ["evaluate", "train"]


def train(
    model: nn.Module,
    data: ImageData,
    cfg: TrainConfig,
    *,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    checkpoint_every: int | None = None,
    on_step: Callable[[StepProgress], None] | None = None,
    on_steps: Callable[[StepTrace], None] | None = None,
    distributed: bool = False,
) -> TrainResult:
    """Train ``model`` on ``data`` with ``cfg.optimizer``; return the per-epoch history.

    Parameters
    ----------
    model : a classifier mapping normalised ``(N, C, H, W)`` float images to
        ``(N, num_classes)`` logits; moved to ``cfg.device`` (and to
        channels_last) in place. Its initialisation is the caller's (seed it).
    data : uint8 images; moved to the device once if they are not there.
    checkpoint_path : written atomically after every epoch.
    resume : continue from ``checkpoint_path`` if it exists (a finished run is
        returned as it is); the configuration and data must be the same, except
        ``cfg.epochs``, which may grow: the run goes on to the new total with its
        schedule re-planned over it (:class:`LRSchedule`; each plan is recorded in
        :attr:`TrainResult.plans`).
    on_epoch : called with each new :class:`EpochRecord`, after its checkpoint.
    checkpoint_every : also checkpoint within epochs, after every this many optimiser
        steps (a resume then goes on from the step after it, bit for bit on the CPU).
    on_step : called after every step with a :class:`StepProgress` (a progress bar);
        it must not synchronise every step if the loop is to stay fast.
    on_steps : called at the end of every epoch with its :class:`StepTrace` (per-step
        loss, error and rate), before ``on_epoch``.
    distributed : train one model over every rank of the ``torch.distributed`` process group
        (started by ``torchrun``) with DistributedDataParallel: ``cfg.batch_size`` is the
        global batch, rank 0 alone reads and writes the checkpoint (see
        :mod:`residuals.train.parallel`). Without a group it changes nothing.

    A non-finite training loss ends the run with ``diverged=True``.
    ``KeyboardInterrupt`` propagates; the last complete checkpoint is kept.
    """
    device = resolve_device(cfg.device)
    if device != cfg.device:
        cfg = dataclasses.replace(cfg, device=device)
    if data.device != torch.empty(0, device=device).device:
        data = data.to(device)
    cuda = torch.device(device).type == "cuda"
    names: dict[object, object] = {None: data.augment, True: "crop-flip", False: "none"}
    augment = str(names.get(cfg.augment, cfg.augment))
    if augment not in AUGMENTATIONS:
        raise TrainError(f"dataset {data.name!r} names an unknown augmentation {augment!r}")
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    if checkpoint_every is not None and (checkpoint_every < 1 or path is None):
        raise TrainError(
            f"checkpoint_every={checkpoint_every!r} needs a checkpoint_path and a "
            "positive number of steps"
        )

    spe = steps_per_epoch(len(data.train_y), cfg.batch_size)
    model.to(
        device=device,
        memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format,
    )
    optimizer = make_optimizer(
        model.parameters(),
        cfg.optimizer,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        cuda=cuda,
    )
    schedule = LRSchedule(cfg, spe, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed)

    history: list[EpochRecord] = []
    diverged = False
    plans = [{"from_epoch": 0, "from_iteration": 0, "epochs": cfg.epochs}]
    partial: dict | None = None
    if cuda and cfg.replicas not in (None, 1):
        raise TrainError(
            f"replicas={cfg.replicas} splits batches between CPU threads, but the "
            f"run is on {device!r}; leave replicas unset (None) on a GPU"
        )
    threads = torch.get_num_threads()
    n_replicas, threads_each, amp = resolve_replicas_amp(cfg, threads=threads)
    world = parallel.ranks(distributed)
    state = parallel.read_resume(path, world) if resume and path is not None else None
    if state is not None:
        assert path is not None  # a state is read from the checkpoint path
        _check_compatible(state, cfg, data, path)
        parallel.check_resume(state, cfg, model, device, world)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"], device, generator)
        history = [EpochRecord(**r) for r in state["history"]]
        diverged = bool(state["diverged"])
        partial = state.get("partial")
        plans = state.get("plans") or [
            {"from_epoch": 0, "from_iteration": 0, "epochs": state["config"]["epochs"]}
        ]
        if cfg.epochs != plans[-1]["epochs"]:  # more epochs: the schedule is re-planned
            done = len(history) * spe + (int(partial["step"]) if partial else 0)
            plans.append({"from_epoch": len(history), "from_iteration": done, "epochs": cfg.epochs})
        if cfg.amp is None and "amp" in state:
            # the default precision depends on the thread count; keep the run's own, so a
            # resume under another thread count goes on exactly as it started
            amp = bool(state["amp"])
        if cfg.replicas is None:
            # likewise the replicas (a checkpoint without the field had none)
            n_replicas, threads_each = resolve_replicas(
                int(state.get("replicas", 1)), device, cfg.batch_size, threads=threads
            )
        if state["finished"] and (diverged or cfg.epochs == len(history)):
            return _result(
                history,
                diverged,
                model,
                schedule,
                len(history) * spe,
                len(history),
                amp,
                n_replicas,
                plans,
            )
    resumed_from = len(history)
    n_replicas, threads_each, amp = parallel.plan(
        cfg, device, n_replicas, threads_each, amp, resumed=state is not None, world=world
    )
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr  # the optimiser reads the device tensor the schedule writes

    if cfg.cuda_graph and not cuda:
        raise TrainError(
            f"cuda_graph=True needs a CUDA device, but the run is on {device!r}; "
            "leave cuda_graph unset (None) to use graphs wherever CUDA is used"
        )
    replicas = parallel.data_parallel(model, cfg, device, len(data.train_y), world) or (
        Replicas(model, n_replicas, threads_each) if n_replicas > 1 else None
    )
    n_replicas = replicas.n if replicas is not None else 1
    clock = EpochClock(device)
    writes = parallel.writes(world)  # rank 0 alone writes checkpoints

    def save(history: list[EpochRecord], *, finished: bool, partial: dict | None = None) -> None:
        state = loop.checkpoint(model, history, diverged=diverged, finished=finished)
        state.update(plans=plans, partial=partial)
        assert path is not None  # saves are only asked for with a checkpoint path
        save_checkpoint(state, path)

    def save_partial(where: dict) -> None:
        where["seconds"] = clock.so_far()  # synchronises: the queued steps are done
        t0 = time.perf_counter()
        save(history, finished=False, partial=where)
        clock.excluded += time.perf_counter() - t0  # the write is not training time

    loop = StepLoop(
        net=torch.compile(model) if cfg.compile else model,
        optimizer=optimizer,
        schedule=schedule,
        data=data,
        cfg=cfg,
        steps=spe,
        augment=augment,
        amp=amp,
        generator=generator,
        cuda_graph=(
            cuda and not cfg.compile and n_replicas == 1
            if cfg.cuda_graph is None
            else cfg.cuda_graph
        ),
        replicas=replicas,
        trace=on_steps is not None,
        on_step=on_step,
        every=checkpoint_every or 0 if writes else 0,
        save_partial=save_partial,
    )
    oom: TrainError | None = None
    try:
        with cudnn_benchmark(device), replicas or contextlib.nullcontext():
            for epoch in range(len(history), cfg.epochs):
                clock.start(before=float(partial["seconds"]) if partial else 0.0)
                with replicas.threads() if replicas is not None else contextlib.nullcontext():
                    seen = loop.epoch(epoch, partial)
                clock.stop()
                partial = None
                # the epoch's one synchronisation
                total_loss, total_wrong, lr = torch.stack(
                    [loop.loss_sum, loop.wrong.double(), schedule.lr.double()]
                ).tolist()
                seconds = clock.seconds()
                train_loss = total_loss / seen
                diverged = not math.isfinite(train_loss)
                test_loss, test_error = loop.evaluate()
                record = EpochRecord(
                    epoch=epoch + 1,
                    train_loss=train_loss,
                    train_error=total_wrong / seen,
                    test_loss=test_loss,
                    test_error=test_error,
                    lr=lr,
                    seconds=seconds,
                    images_per_s=seen / seconds if seconds > 0 else math.inf,
                )
                history.append(record)
                if path is not None and writes:
                    save(history, finished=diverged or epoch + 1 == cfg.epochs)
                if on_steps is not None:
                    on_steps(loop.step_trace(epoch))
                if on_epoch is not None:
                    on_epoch(record)
                if diverged:
                    break
    except torch.OutOfMemoryError as e:
        oom = oom_error(cfg, e)  # raised below, once the traceback (and its tensors) is gone
    if oom is not None:
        if cuda:
            torch.cuda.empty_cache()  # so a sweep can go on with the next run
        raise oom
    return _result(
        history, diverged, model, schedule, len(history) * spe, resumed_from, amp, n_replicas, plans
    )


def _result(
    history: list[EpochRecord],
    diverged: bool,
    model: nn.Module,
    schedule: LRSchedule,
    iterations: int,
    resumed_from: int,
    amp: bool,
    replicas: int,
    plans: list[dict],
) -> TrainResult:
    switch = int(schedule.switch_iteration) if schedule.paper else None
    return TrainResult(
        history=history,
        diverged=diverged,
        model=model,
        iterations=iterations,
        warmup_end_iteration=switch if switch is not None and switch >= 0 else None,
        resumed_from_epoch=resumed_from,
        amp=amp,
        replicas=replicas,
        plans=[dict(p) for p in plans],
    )
