"""The training loop: :func:`train` reads top to bottom, :class:`_Loop` holds what every step
needs, :func:`evaluate` measures a model on uint8 images. See :mod:`residuals.train` for how
the loop avoids host round trips, CUDA graphs and CPU replicas."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from residuals.data import AUGMENTATIONS, ImageData, augment_batch, normalize
from residuals.device import autocast as _autocast
from residuals.device import resolve_device, resolve_replicas, resolve_replicas_amp
from residuals.replicas import Replicas
from residuals.train import parallel
from residuals.train.checkpoint import (
    CHECKPOINT_FORMAT,
    _check_compatible,
    _data_signature,
    _rng_state,
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

if TYPE_CHECKING:
    from residuals.distributed import DataParallel

__all__ = ["evaluate", "train"]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    *,
    batch_size: int = 1024,
    amp: bool = False,
    channels_last: bool = False,
) -> tuple[float, float]:
    """Mean cross-entropy (nats) and error rate of ``model`` on uint8 images ``x`` (N, C, H, W).

    Runs in eval mode, in large batches, with one host synchronisation at the end.
    The model is left in eval mode.
    """
    model.eval()
    n = len(y)
    if n == 0:
        return math.nan, math.nan
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for i in range(0, n, batch_size):
        xb = normalize(x[i : i + batch_size], mean, std, channels_last=channels_last)
        yb = y[i : i + batch_size]
        with _autocast(str(x.device), amp):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        wrong += (logits.argmax(1) != yb).sum()
    total, errors = torch.stack([loss_sum, wrong.double()]).tolist()
    return total / n, errors / n


class _EpochClock:
    """Training time of one epoch: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"
        self.excluded = 0.0  # seconds inside the epoch that were not training (checkpoints)
        self.before = 0.0  # seconds of the epoch trained before a resume within it

    def start(self, before: float = 0.0) -> None:
        self.excluded, self.before = 0.0, before
        if self.cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            self._end.record()
        else:
            self._t1 = time.perf_counter()

    def seconds(self) -> float:
        """Call after the epoch's one synchronisation."""
        if self.cuda:
            self._end.synchronize()
            elapsed = self._start.elapsed_time(self._end) / 1000.0
        else:
            elapsed = self._t1 - self._t0
        return self.before + elapsed - self.excluded

    def so_far(self) -> float:
        """Training seconds of the epoch up to now (synchronises with the device)."""
        self.stop()
        return self.seconds()


@contextlib.contextmanager
def _cudnn_benchmark(device: str) -> Iterator[None]:
    if torch.device(device).type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def _oom_error(cfg: TrainConfig, e: BaseException) -> TrainError:
    return TrainError(
        f"out of GPU memory with batch size {cfg.batch_size} (evaluation batch "
        f"{cfg.eval_batch_size}) on {cfg.device}: try a smaller --batch-size, e.g. "
        f"{max(1, cfg.batch_size // 2)}. ({str(e).splitlines()[0] if str(e) else e!r})"
    )


GRAPH_WARMUP_STEPS = 3  # eager full-batch steps (on a side stream) before the capture


@dataclass
class _Loop:
    """What one training run needs on every step; its :meth:`epoch` is the hot loop."""

    net: nn.Module  # the model, or its compiled wrapper
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    data: ImageData
    cfg: TrainConfig
    steps: int  # per epoch
    augment: str
    amp: bool
    generator: torch.Generator  # data order and augmentation, on the device
    cuda_graph: bool = False  # capture full-batch steps as one CUDA graph
    replicas: Replicas | DataParallel | None = None  # data parallelism (None: the model alone)
    trace: bool = False  # keep each step's running sums on the device (StepTrace)
    on_step: Callable[[StepProgress], None] | None = None
    every: int = 0  # mid-epoch checkpoints: after every ``every`` optimiser steps (0: none)
    save_partial: Callable[[dict], None] | None = None  # writes a mid-epoch checkpoint

    def __post_init__(self) -> None:
        dev = self.data.device
        self.mean = torch.tensor(self.data.mean, dtype=torch.float32, device=dev)
        self.std = torch.tensor(self.data.std, dtype=torch.float32, device=dev)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
        self.wrong = torch.zeros((), dtype=torch.int64, device=dev)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: tuple[torch.Tensor, torch.Tensor] | None = None  # the graph's (x, y)
        self.warmup_left = GRAPH_WARMUP_STEPS
        self.side_stream = torch.cuda.Stream(dev) if self.cuda_graph else None
        # after step k: the running loss sum, wrong count and the step's rate (if traced)
        n = self.steps if self.trace or self.every else 0
        self.trace_sum = torch.zeros(n, dtype=torch.float64, device=dev)
        self.trace_wrong = torch.zeros(n, dtype=torch.int64, device=dev)
        self.trace_lr = torch.zeros(n, dtype=torch.float32, device=dev)
        self.progress = StepProgress(steps=self.steps, loss_sum=self.loss_sum)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised, augmented images (B, C, H, W) and labels (B,) of indices ``idx``."""
        data = self.data
        xb = augment_batch(
            data.train_x.index_select(0, idx), self.augment, generator=self.generator
        )
        xb = normalize(xb, self.mean, self.std, channels_last=self.cfg.channels_last)
        return xb, data.train_y.index_select(0, idx)

    def step(self, xb: torch.Tensor, yb: torch.Tensor, *, capturing: bool = False) -> None:
        """One SGD step on (xb, yb); the loss and error sums are added on the device.

        Gradients are overwritten, not accumulated: set to None before the
        eager backward, and written fresh into the graph's own buffers by the
        captured one. With replicas, each computes its shard's share of the
        gradient in its own thread and they are summed into the model's.
        """
        if not capturing:
            self.optimizer.zero_grad(set_to_none=True)
        if self.replicas is None:
            shards = [(self.forward_backward(self.net, xb, yb, 1.0, capturing=capturing), len(yb))]
        else:
            shards = self.replicas.forward_backward(self.forward_backward, xb, yb)
        self.optimizer.step()
        if self.replicas is not None:
            self.replicas.after_step()
        for (loss, wrong), n in shards:
            self.loss_sum += loss * n
            self.wrong += wrong

    def forward_backward(
        self,
        net: nn.Module,
        xb: torch.Tensor,
        yb: torch.Tensor,
        weight: float,
        *,
        capturing: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backpropagate ``weight`` times the mean cross-entropy of ``net`` on (xb, yb) (``weight``:
        the batch's share, for a replica's shard); return (mean loss, wrong count), on the device."""
        with _autocast(str(xb.device), self.amp, cache=not capturing):
            logits = net(xb)
        if logits.shape != (len(yb), self.data.num_classes):  # metadata only: no sync
            raise TrainError(
                f"the model returns logits of shape {tuple(logits.shape)} for a "
                f"batch of {len(yb)}; dataset {self.data.name!r} needs "
                f"({len(yb)}, {self.data.num_classes})"
            )
        loss = F.cross_entropy(logits.float(), yb)
        (loss if weight == 1.0 else loss * weight).backward()
        return loss.detach(), (logits.detach().argmax(1) != yb).sum()

    def graphed_step(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """A full-batch step through the CUDA graph: warm up, capture once, then replay."""
        assert self.side_stream is not None  # made when cuda_graph is on
        if self.graph is not None:
            assert self.static is not None
            self.static[0].copy_(xb)
            self.static[1].copy_(yb)
            self.graph.replay()
            return
        current = torch.cuda.current_stream(xb.device)
        self.side_stream.wait_stream(current)
        with torch.cuda.stream(self.side_stream):
            if self.warmup_left > 0:
                # the first steps, eager on a side stream: cuDNN picks its kernels, the
                # optimiser creates its momentum buffers, autograd its stream state
                self.step(xb, yb)
                self.warmup_left -= 1
            else:
                self.capture(xb, yb)
        current.wait_stream(self.side_stream)
        if self.graph is not None:
            self.graph.replay()  # the capture recorded this step's work without running it
        elif not self.cuda_graph:
            self.step(xb, yb)  # the capture failed: this step, and the rest, eagerly

    def capture(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """Record one step on static copies of (xb, yb); on failure, warn and go on eagerly."""
        self.static = (xb.clone(), yb.clone())
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        try:
            # thread_local: the capture checks this thread's CUDA calls only (the mode the
            # GPU tests ran with); the trainer itself never runs on several threads
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self.step(*self.static, capturing=True)
        except TrainError:
            raise
        except RuntimeError as e:
            warnings.warn(
                f"capturing the training step as a CUDA graph failed, so training goes "
                f"on without it (slower, same results): {str(e).splitlines()[0]}",
                RuntimeWarning,
                stacklevel=2,
            )
            self.cuda_graph, self.static = False, None
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.graph = graph

    def epoch(self, epoch: int, partial: dict | None = None) -> int:
        """Train one epoch (0-based); sums stay on the device. Returns the images seen.

        ``partial``: the state of a mid-epoch checkpoint of this epoch (:meth:`partial_state`):
        the epoch goes on from the step after it, with the same order of images.
        """
        cfg, data, device = self.cfg, self.data, str(self.data.device)
        self.net.train()
        if partial is None:
            self.loss_sum.zero_()
            self.wrong.zero_()
            first, seen = 0, 0
            perm = torch.randperm(len(data.train_y), device=device, generator=self.generator)
        else:
            first, seen, perm = (
                int(partial["step"]),
                int(partial["seen"]),
                partial["perm"].to(device),
            )
            self.loss_sum.fill_(float(partial["loss_sum"]))
            self.wrong.fill_(int(partial["wrong"]))
            for buf, key in (
                (self.trace_sum, "sum"),
                (self.trace_wrong, "wrong"),
                (self.trace_lr, "lr"),
            ):
                if len(buf):
                    buf[:first] = torch.as_tensor(partial["trace"][key], dtype=buf.dtype)
        self.perm = perm
        for step in range(first, self.steps):
            it = epoch * self.steps + step
            idx = perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            xb, yb = self.batch(idx)
            self.schedule.set(it)
            if self.cuda_graph and len(idx) == cfg.batch_size:
                self.graphed_step(xb, yb)
            else:
                self.step(xb, yb)
            seen += len(idx)
            self.schedule.observe(it, self.wrong, seen)
            if len(self.trace_sum):  # three small copies on the device, no synchronisation
                self.trace_sum[step] = self.loss_sum
                self.trace_wrong[step] = self.wrong
                self.trace_lr[step] = self.schedule.lr
            if self.on_step is not None:
                p = self.progress
                p.epoch, p.step, p.seen = epoch, step, seen
                self.on_step(p)
            if (
                self.save_partial
                and self.every
                and (it + 1) % self.every == 0
                and step + 1 < self.steps
            ):
                self.save_partial(self.partial_state(epoch, step + 1, seen))
        return seen

    def partial_state(self, epoch: int, step: int, seen: int) -> dict:
        """What a mid-epoch checkpoint adds: where in the epoch it is and its running sums."""
        return {
            "epoch": epoch,
            "step": step,
            "seen": seen,
            "perm": self.perm.cpu(),
            "loss_sum": float(self.loss_sum),
            "wrong": int(self.wrong),
            "trace": {
                "sum": self.trace_sum[:step].tolist(),
                "wrong": self.trace_wrong[:step].tolist(),
                "lr": self.trace_lr[:step].tolist(),
            },
        }

    def step_trace(self, epoch: int) -> StepTrace:
        """The epoch's steps, from the device's running sums (one read)."""
        sums = self.trace_sum.tolist()
        wrong = self.trace_wrong.tolist()
        n = len(self.data.train_y)
        bs = self.cfg.batch_size
        sizes = [min(bs, n - k * bs) for k in range(self.steps)]
        loss = [(s - p) / b for s, p, b in zip(sums, [0.0, *sums[:-1]], sizes)]
        error = [(w - p) / b for w, p, b in zip(wrong, [0, *wrong[:-1]], sizes)]
        first = epoch * self.steps
        return StepTrace(
            epoch=epoch + 1,
            iteration=list(range(first, first + self.steps)),
            loss=loss,
            error=error,
            lr=self.trace_lr.tolist(),
        )

    def evaluate(self) -> tuple[float, float]:
        return evaluate(
            self.net,
            self.data.test_x,
            self.data.test_y,
            self.mean,
            self.std,
            batch_size=self.cfg.eval_batch_size,
            amp=self.amp,
            channels_last=self.cfg.channels_last,
        )

    def checkpoint(
        self, model: nn.Module, history: list[EpochRecord], *, finished: bool, diverged: bool
    ) -> dict[str, object]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": asdict(self.cfg),
            "data": _data_signature(self.data),
            "model": model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": {"iteration": len(history) * self.steps, **self.schedule.state_dict()},
            "rng": _rng_state(str(self.data.device), self.generator),
            "history": [asdict(r) for r in history],
            "finished": finished,
            "diverged": diverged,
            "amp": self.amp,  # the precision resolved from cfg.amp (None resolves by threads)
            "replicas": 1 if self.replicas is None else self.replicas.n,  # cfg.replicas resolved
            "torch": str(torch.__version__),
        }


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
    clock = _EpochClock(device)
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

    loop = _Loop(
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
        with _cudnn_benchmark(device), replicas or contextlib.nullcontext():
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
        oom = _oom_error(cfg, e)  # raised below, once the traceback (and its tensors) is gone
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
