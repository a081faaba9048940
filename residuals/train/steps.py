"""The hot loop of one training run, and what the one-net and fused trainers share.

:class:`StepLoop` holds what every step needs and runs an epoch: the batch (indexed,
augmented and normalised on the device), the SGD step (alone, on CPU replicas or under
DistributedDataParallel), its capture as a CUDA graph, the running sums and per-step
trace on the device, mid-epoch checkpoint state and the checkpoint itself.
:func:`evaluate` measures a model on uint8 images; :class:`EpochClock` times an epoch,
:func:`cudnn_benchmark` and :func:`oom_error` wrap a run. :func:`residuals.train.loop.train`
drives one :class:`StepLoop` epoch by epoch; :mod:`residuals.train.fused_loop` extends it
with a member axis.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from residuals.data import ImageData, augment_batch, normalize
from residuals.device import autocast as _autocast
from residuals.replicas import Replicas
from residuals.train.checkpoint import (
    CHECKPOINT_FORMAT,
    _data_signature,
    _rng_state,
)
from residuals.train.config import (
    EpochRecord,
    StepProgress,
    StepTrace,
    TrainConfig,
    TrainError,
)
from residuals.train.schedule import LRSchedule

if TYPE_CHECKING:
    from residuals.distributed import DataParallel

__all__ = ["EpochClock", "StepLoop", "cudnn_benchmark", "evaluate", "oom_error"]


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


class EpochClock:
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
def cudnn_benchmark(device: str) -> Iterator[None]:
    if torch.device(device).type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def oom_error(cfg: TrainConfig, e: BaseException) -> TrainError:
    return TrainError(
        f"out of GPU memory with batch size {cfg.batch_size} (evaluation batch "
        f"{cfg.eval_batch_size}) on {cfg.device}: try a smaller --batch-size, e.g. "
        f"{max(1, cfg.batch_size // 2)}. ({str(e).splitlines()[0] if str(e) else e!r})"
    )


GRAPH_WARMUP_STEPS = 3  # eager full-batch steps (on a side stream) before the capture


@dataclass
class StepLoop:
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
