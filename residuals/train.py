"""The trainer: SGD on uint8 images that live on the device.

He et al. 2015 (sec. 4.2) train CIFAR-10 ResNets with SGD, momentum 0.9,
weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k and 48k of 64k
iterations; ResNet-110 is first warmed up at lr 0.01 "until the training error
is below 80% (about 400 iterations)". :class:`TrainConfig` holds these, plus a
cosine schedule and a linear warm-up (the default: measured on digits, without
it resnet-56 stalled at 4-48% training error in 2 of 3 seeds).

The step loop never waits for the device: the permutation is drawn by a
seeded device generator, batches are indexed, augmented and normalised on the
device, the learning rate is a device tensor set from a precomputed
per-iteration table (so the paper's error-triggered warm-up needs no host
round trip either), and loss and error counts are accumulated in device
tensors and read once per epoch. That one read is also where a non-finite loss
marks the run as diverged.

On CUDA the step (forward, loss, backward, optimiser step and the running sums)
is captured once as a CUDA graph after a few eager warm-up steps and replayed
for every full batch: at batch 128 a ResNet-56 step is hundreds of small
kernels, and launching them one by one from Python costs more than running
them. Selecting, augmenting and normalising the batch and setting the learning
rate stay eager (a handful of kernels) and write into the graph's static input.
A partial last batch runs eagerly.

On a multi-core CPU the batch is split, by default, between data-parallel
replicas of the model that run one thread each (:mod:`residuals.replicas`):
one join per step instead of one per operator. Their BatchNorm layers
normalise their own shards, as on the paper's two GPUs.

Every epoch ends with an atomic checkpoint (temporary file, then
``os.replace``) holding model, optimiser, schedule and RNG states and the
history; ``resume=True`` continues from it bit for bit (on the CPU; cuDNN may
pick different kernels on a GPU) and returns a finished run without redoing it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from residuals.data import AUGMENTATIONS, ImageData, augment_batch, normalize, resolve_device
from residuals.replicas import MIN_SHARD, Replicas

__all__ = [
    "EpochRecord",
    "LRSchedule",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "cpu_has_native_bf16",
    "evaluate",
    "load_checkpoint",
    "resolve_amp",
    "resolve_device",
    "resolve_replicas",
    "resolve_replicas_amp",
    "steps_per_epoch",
    "train",
]

CHECKPOINT_FORMAT = 1
SCHEDULES = ("cosine", "step")
WARMUPS = ("linear", "paper", "none")
PAPER_WARMUP_ERROR = 0.8  # He et al. 2015: warm up "until the training error is below 80%"
PAPER_WARMUP_FACTOR = 0.1  # ... "we use 0.01" = lr / 10
STEP_MILESTONES = (0.5, 0.75)  # fractions of training: the paper's 32k and 48k of 64k iterations
STEP_FACTOR = 0.1


class TrainError(RuntimeError):
    """Training cannot go on; the message says why and what to change."""


@dataclass
class TrainConfig:
    """How to train. Units in the comments; validated on construction."""

    epochs: int = 12
    batch_size: int = 128  # images per step
    lr: float = 0.1  # peak learning rate (paper: 0.1)
    momentum: float = 0.9
    weight_decay: float = 1e-4  # L2 on every parameter, as in the paper
    schedule: Literal["cosine", "step"] = "cosine"  # step: /10 at 50% and 75% of the iterations
    warmup: Literal["linear", "paper", "none"] = "linear"  # paper: lr/10 until training error < 80%
    warmup_epochs: float = 2.0  # linear warm-up length, epochs
    augment: bool | str | None = None  # None: the dataset's default (crop-flip on CIFAR-10);
    #                                    True / "crop-flip": pad-crop-flip; False / "none": off
    eval_batch_size: int = 1024  # images per evaluation batch
    amp: bool | None = None  # bf16 autocast; None: on for CUDA, and for 1-thread training on
    #                          CPUs with native bf16 (see resolve_amp); False: always fp32
    channels_last: bool = True  # NHWC memory format for model and batches
    compile: bool = False  # torch.compile (measured here: costs more than a whole run on the CPU)
    cuda_graph: bool | None = None  # capture the training step as one CUDA graph; None: on for
    #                                 CUDA unless compile is on; needs a CUDA device
    replicas: int | None = None  # CPU data parallelism: model copies that each train on their
    #                              share of every batch, in threads of their own; 1: off;
    #                              None: one per torch thread (see resolve_replicas)
    seed: int = 0  # seeds the data order and augmentation (not the model's initialisation)
    device: str = "cpu"  # "cpu", "cuda[:i]" or "auto"

    def __post_init__(self) -> None:
        def integer(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"TrainConfig.{name} must be an integer >= {low}, got {v!r}")

        def number(name: str, low: float, high: float = math.inf, *, open_low: bool = False) -> None:
            v = getattr(self, name)
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > low if open_low else v >= low) and v < high)
            if not ok:
                bound = f"{'>' if open_low else '>='} {low}" + (f" and < {high}" if high < math.inf else "")
                raise ValueError(f"TrainConfig.{name} must be a finite number {bound}, got {v!r}")

        def choice(name: str, options: tuple) -> None:
            v = getattr(self, name)
            # `1 in (True,)` holds in Python: a number is not a switch
            if v not in options or (isinstance(v, (int, float)) and not isinstance(v, bool)):
                raise ValueError(f"TrainConfig.{name} must be one of {options}, got {v!r}")

        integer("epochs", 1)
        integer("batch_size", 1)
        integer("eval_batch_size", 1)
        integer("seed", 0)
        number("lr", 0.0, open_low=True)
        number("momentum", 0.0, 1.0)
        number("weight_decay", 0.0)
        number("warmup_epochs", 0.0)
        choice("schedule", SCHEDULES)
        choice("warmup", WARMUPS)
        choice("augment", (None, True, False, *AUGMENTATIONS))
        choice("amp", (None, True, False))
        choice("channels_last", (True, False))
        choice("compile", (True, False))
        choice("cuda_graph", (None, True, False))
        if self.replicas is not None:
            integer("replicas", 1)
            if self.batch_size < MIN_SHARD * self.replicas:
                raise ValueError(f"TrainConfig.replicas={self.replicas} needs batch_size >= "
                                 f"{MIN_SHARD * self.replicas} ({MIN_SHARD} images per replica for "
                                 f"BatchNorm), got {self.batch_size}")
            if self.replicas > 1 and self.compile:
                raise ValueError("TrainConfig.replicas > 1 cannot be combined with compile=True; "
                                 "leave replicas unset (None) to train one compiled model")
        if self.warmup == "linear" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must be shorter than "
                             f"epochs ({self.epochs}); use warmup='none' to train without warm-up")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"TrainConfig.device must be a string like 'cpu', 'cuda', 'cuda:0' "
                             f"or 'auto', got {self.device!r}")


@dataclass
class EpochRecord:
    """One epoch. Training numbers are running values over the epoch (the paper's curves)."""

    epoch: int  # 1-based
    train_loss: float  # mean cross-entropy over the epoch's steps, nats
    train_error: float  # fraction of the epoch's training images misclassified (while training)
    test_loss: float  # on the evaluation split (test or val), nats
    test_error: float
    lr: float  # learning rate of the epoch's last step
    seconds: float  # training time of the epoch, evaluation excluded
    images_per_s: float  # training images per second


@dataclass
class TrainResult:
    history: list[EpochRecord]
    diverged: bool
    model: nn.Module
    interrupted: bool = False
    iterations: int = 0  # optimiser steps taken
    warmup_end_iteration: int | None = None  # paper warm-up: first iteration at the full lr
    resumed_from_epoch: int = 0  # epochs already in the checkpoint when this call started
    amp: bool = False  # whether it trained in bf16 autocast (cfg.amp as resolved, or as resumed)
    replicas: int = 1  # data-parallel model copies it trained with (cfg.replicas as resolved)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps per epoch: full batches plus the last partial one (unless it would be one image,
    which BatchNorm cannot normalise in training mode)."""
    full, rest = divmod(n_train, batch_size)
    steps = full + (1 if rest >= 2 else 0)
    if steps == 0:
        raise TrainError(f"{n_train} training image(s) cannot make a batch of at least 2 images")
    return steps


# --------------------------------------------------------------------------- schedule


class LRSchedule:
    """Per-iteration learning rate, kept in a device tensor that the optimiser reads.

    ``at(it, warmed)`` is the closed form, ``it`` counting from 0:

    * linear warm-up over ``W = round(warmup_epochs * steps_per_epoch)``
      iterations: ``lr * (it + 1) / W`` for ``it < W``;
    * cosine: ``lr * (1 + cos(pi * (it - W) / (T - W))) / 2`` for ``it >= W``
      (``T`` total iterations), the peak at ``W`` and near 0 at ``T - 1``;
    * step: ``lr * 0.1**k``, ``k`` the number of milestones (50% and 75% of
      ``T``) reached, times the linear warm-up factor;
    * paper warm-up (He et al. 2015, sec. 4.2): the schedule above with no
      linear ramp, times 0.1 until the running training error of the current
      epoch first falls below 80%, and times 1 from the next iteration on.

    The paper's switch is evaluated on the device (:meth:`observe`), so it
    costs no synchronisation.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.total = cfg.epochs * steps_per_epoch
        self.warmup_iters = (min(self.total - 1, max(1, round(cfg.warmup_epochs * steps_per_epoch)))
                             if cfg.warmup == "linear" and cfg.warmup_epochs > 0 else 0)
        self.milestones = tuple(round(f * self.total) for f in STEP_MILESTONES)
        self.paper = cfg.warmup == "paper"
        self.table = torch.tensor([self.at(i) for i in range(self.total)], dtype=torch.float32,
                                  device=device)
        self.lr = torch.zeros((), dtype=torch.float32, device=device)  # read by the optimiser
        self.warmed = torch.tensor(not self.paper, device=device)
        self.switch_iteration = torch.tensor(-1, dtype=torch.int64, device=device)

    def at(self, it: int, warmed: bool = True) -> float:
        """Learning rate of iteration ``it`` (0-based), in closed form."""
        cfg, w, t = self.cfg, self.warmup_iters, self.total
        if cfg.schedule == "cosine":
            lr = cfg.lr if it < w else cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (it - w) / (t - w)))
        else:
            lr = cfg.lr * STEP_FACTOR ** sum(it >= m for m in self.milestones)
        if it < w:
            lr *= (it + 1) / w
        if self.paper and not warmed:
            lr *= PAPER_WARMUP_FACTOR
        return lr

    def set(self, it: int) -> torch.Tensor:
        """Write iteration ``it``'s rate into :attr:`lr` (device ops only) and return it."""
        if self.paper:
            factor = torch.where(self.warmed, 1.0, PAPER_WARMUP_FACTOR)
            torch.mul(self.table[it], factor, out=self.lr)
        else:
            self.lr.copy_(self.table[it])
        return self.lr

    def observe(self, it: int, errors: torch.Tensor, seen: int) -> None:
        """Paper warm-up: after iteration ``it``, ``errors`` of the epoch's ``seen`` images were wrong."""
        if not self.paper:
            return
        below = errors < PAPER_WARMUP_ERROR * seen
        first = below & ~self.warmed
        self.switch_iteration.copy_(torch.where(first, it + 1, self.switch_iteration))
        self.warmed |= below

    def state_dict(self) -> dict[str, object]:
        return {"warmed": bool(self.warmed), "switch_iteration": int(self.switch_iteration)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.warmed.fill_(bool(state["warmed"]))
        self.switch_iteration.fill_(int(state["switch_iteration"]))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- evaluation


CPU_BF16_FEATURES = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute in bf16 natively
CPUINFO = Path("/proc/cpuinfo")  # the fallback's source of CPU flags (Linux)


@functools.lru_cache(maxsize=None)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16).

    Where it has not, oneDNN emulates bf16 and autocast can be slower than fp32, so
    the trainer's default keeps fp32 there (ARM's bf16 is not measured: fp32 too).
    Read from ``torch.cpu.get_capabilities()`` (torch >= 2.10), else ``/proc/cpuinfo``.
    """
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is not None:
        caps = get()
        return any(bool(caps.get(f, False)) for f in CPU_BF16_FEATURES)
    try:
        flags = CPUINFO.read_text().split()
    except OSError:
        return False
    return any(f in flags for f in CPU_BF16_FEATURES)


def resolve_amp(amp: bool | None, device: str, threads: int | None = None) -> bool:
    """Whether training on ``device`` runs in bf16 autocast: ``amp`` if given; by default
    (None) on CUDA, and on a CPU with native bf16 (:func:`cpu_has_native_bf16`) when torch
    runs one thread (``threads``; default ``torch.get_num_threads()``); fp32 elsewhere.

    Measured on a shared 2-core AMD EPYC with AVX512-BF16 (benchmarks/README.md, "Nets"):
    with one thread, bf16 autocast trained ResNet-20/56 1.5-1.6x faster than fp32, steadily.
    With two threads it was 1.4-1.6x faster while the other core was free, but when another
    process held it, oneDNN's bf16 backward convolution waited for the descheduled thread
    (76.8 ms a call against 14.7 ms in fp32, ResNet-20) and bf16 trained 1.2-3.9x slower
    than fp32. The degradation sweep's CPU workers run one thread each.
    """
    if amp is not None:
        return amp
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    threads = torch.get_num_threads() if threads is None else threads
    return kind == "cpu" and cpu_has_native_bf16() and threads == 1


AUTO_MIN_SHARD = 32  # images of a batch per replica, at least, for replicas=None to add one


def resolve_replicas(replicas: int | None, device: str, batch_size: int, *, compile: bool = False,
                     threads: int | None = None) -> tuple[int, int]:
    """``(replicas, torch threads per replica)`` for training on ``device`` at ``batch_size``.

    ``replicas`` if given. By default (None), on the CPU, one per torch thread
    (``threads``; default ``torch.get_num_threads()``, one per core), as long
    as each replica gets at least :data:`AUTO_MIN_SHARD` images of a batch
    (batch 128: at most 4); one on CUDA and with ``compile``. The threads are
    shared out, ``threads // replicas`` each (at least 1). See
    :mod:`residuals.replicas`: measured on a shared 2-core CPU, two one-thread
    replicas trained ResNet-20/56 faster than one model on two threads, and
    they let bf16 run where its two-thread kernels stall (:func:`resolve_amp`).
    """
    threads = torch.get_num_threads() if threads is None else threads
    if replicas is None:
        if torch.device(device).type != "cpu" or compile:
            replicas = 1
        else:
            replicas = max(1, min(threads, batch_size // AUTO_MIN_SHARD))
    return replicas, max(1, threads // replicas)


def resolve_replicas_amp(cfg: TrainConfig, *, threads: int | None = None) -> tuple[int, int, bool]:
    """``(replicas, torch threads per replica, amp)`` that :func:`train` picks for ``cfg`` (its
    device resolved) with ``threads`` torch threads (default: this process's): the precision's
    default follows the threads per replica."""
    replicas, threads_each = resolve_replicas(cfg.replicas, cfg.device, cfg.batch_size,
                                              compile=cfg.compile, threads=threads)
    return replicas, threads_each, resolve_amp(cfg.amp, cfg.device, threads_each)


def _autocast(device: str, amp: bool, *, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device``'s type when ``amp``; ``cache=False`` inside a CUDA-graph
    capture (autocast's weight-cast cache cannot outlive it)."""
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=amp, cache_enabled=cache)


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor, *,
             batch_size: int = 1024, amp: bool = False, channels_last: bool = False
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
        xb = normalize(x[i:i + batch_size], mean, std, channels_last=channels_last)
        yb = y[i:i + batch_size]
        with _autocast(str(x.device), amp):
            logits = model(xb)
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        wrong += (logits.argmax(1) != yb).sum()
    total, errors = torch.stack([loss_sum, wrong.double()]).tolist()
    return total / n, errors / n


# --------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: object, path: Path) -> None:
    """Write ``obj`` to a temporary file beside ``path``, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint written by :func:`train` (tensors are loaded onto the CPU)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, ...
        raise TrainError(f"cannot read checkpoint {path}: {e}. Delete it or train with "
                         "resume=False to start over.") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a residuals training checkpoint (format "
                         f"{CHECKPOINT_FORMAT}); delete it or train with resume=False")
    return state


def _data_signature(data: ImageData) -> dict[str, object]:
    return {"name": data.name, "split": data.split, "n_train": len(data.train_y),
            "n_eval": len(data.test_y), "augment": data.augment}


def _check_compatible(state: dict, cfg: TrainConfig, data: ImageData, path: Path) -> None:
    saved, now = state["config"], asdict(cfg)
    diff = [f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now"
            for k in now if saved.get(k) != now[k]]
    sig = _data_signature(data)
    diff += [f"data {k}: {state['data'].get(k)!r} in the checkpoint, {v!r} now"
             for k, v in sig.items() if state["data"].get(k) != v]
    if diff:
        raise TrainError(f"checkpoint {path} was written by a different run, so it cannot be "
                         "resumed exactly:\n  " + "\n  ".join(diff)
                         + "\nUse the same settings, another checkpoint path, or resume=False.")


def _rng_state(device: str, data_gen: torch.Generator) -> dict[str, object]:
    state: dict[str, object] = {"torch": torch.get_rng_state(), "data": data_gen.get_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def _set_rng_state(state: dict, device: str, data_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    data_gen.set_state(state["data"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


# --------------------------------------------------------------------------- training


class _EpochClock:
    """Training time of one epoch: CUDA events on a GPU, perf_counter on the CPU."""

    def __init__(self, device: str):
        self.cuda = torch.device(device).type == "cuda"

    def start(self) -> None:
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
            return self._start.elapsed_time(self._end) / 1000.0
        return self._t1 - self._t0


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
    return TrainError(f"out of GPU memory with batch size {cfg.batch_size} (evaluation batch "
                      f"{cfg.eval_batch_size}) on {cfg.device}: try a smaller --batch-size, e.g. "
                      f"{max(1, cfg.batch_size // 2)}. ({str(e).splitlines()[0] if str(e) else e!r})")


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
    replicas: Replicas | None = None  # CPU data parallelism (None: the model alone)

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

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The normalised, augmented images (B, C, H, W) and labels (B,) of indices ``idx``."""
        data = self.data
        xb = augment_batch(data.train_x.index_select(0, idx), self.augment, generator=self.generator)
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

    def forward_backward(self, net: nn.Module, xb: torch.Tensor, yb: torch.Tensor, weight: float,
                         *, capturing: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Backpropagate ``weight`` times the mean cross-entropy of ``net`` on (xb, yb) (``weight``:
        the batch's share, for a replica's shard); return (mean loss, wrong count), on the device."""
        with _autocast(str(xb.device), self.amp, cache=not capturing):
            logits = net(xb)
        if logits.shape != (len(yb), self.data.num_classes):  # metadata only: no sync
            raise TrainError(f"the model returns logits of shape {tuple(logits.shape)} for a "
                             f"batch of {len(yb)}; dataset {self.data.name!r} needs "
                             f"({len(yb)}, {self.data.num_classes})")
        loss = F.cross_entropy(logits.float(), yb)
        (loss if weight == 1.0 else loss * weight).backward()
        return loss.detach(), (logits.detach().argmax(1) != yb).sum()

    def graphed_step(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """A full-batch step through the CUDA graph: warm up, capture once, then replay."""
        if self.graph is not None:
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
            warnings.warn(f"capturing the training step as a CUDA graph failed, so training goes "
                          f"on without it (slower, same results): {str(e).splitlines()[0]}",
                          RuntimeWarning, stacklevel=2)
            self.cuda_graph, self.static = False, None
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.graph = graph

    def epoch(self, epoch: int) -> int:
        """Train one epoch (0-based); sums stay on the device. Returns the images seen."""
        cfg, data, device = self.cfg, self.data, str(self.data.device)
        self.net.train()
        self.loss_sum.zero_()
        self.wrong.zero_()
        seen = 0
        perm = torch.randperm(len(data.train_y), device=device, generator=self.generator)
        for step in range(self.steps):
            it = epoch * self.steps + step
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb, yb = self.batch(idx)
            self.schedule.set(it)
            if self.cuda_graph and len(idx) == cfg.batch_size:
                self.graphed_step(xb, yb)
            else:
                self.step(xb, yb)
            seen += len(idx)
            self.schedule.observe(it, self.wrong, seen)
        return seen

    def evaluate(self) -> tuple[float, float]:
        return evaluate(self.net, self.data.test_x, self.data.test_y, self.mean, self.std,
                        batch_size=self.cfg.eval_batch_size, amp=self.amp,
                        channels_last=self.cfg.channels_last)

    def checkpoint(self, model: nn.Module, history: list[EpochRecord], *, finished: bool,
                   diverged: bool) -> dict[str, object]:
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


def train(model: nn.Module, data: ImageData, cfg: TrainConfig, *,
          checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
          on_epoch: Callable[[EpochRecord], None] | None = None) -> TrainResult:
    """Train ``model`` on ``data`` with SGD; return the per-epoch history.

    Parameters
    ----------
    model : a classifier mapping normalised ``(N, C, H, W)`` float images to
        ``(N, num_classes)`` logits; moved to ``cfg.device`` (and to
        channels_last) in place. Its initialisation is the caller's (seed it).
    data : uint8 images; moved to the device once if they are not there.
    checkpoint_path : written atomically after every epoch.
    resume : continue from ``checkpoint_path`` if it exists (a finished run is
        returned as it is); the configuration and data must be the same.
    on_epoch : called with each new :class:`EpochRecord`, after its checkpoint.

    A non-finite training loss ends the run with ``diverged=True``.
    ``KeyboardInterrupt`` propagates; the last complete checkpoint is kept.
    """
    device = resolve_device(cfg.device)
    if device != cfg.device:
        cfg = dataclasses.replace(cfg, device=device)
    if data.device != torch.empty(0, device=device).device:
        data = data.to(device)
    cuda = torch.device(device).type == "cuda"
    augment = {None: data.augment, True: "crop-flip", False: "none"}.get(cfg.augment, cfg.augment)
    if augment not in AUGMENTATIONS:
        raise TrainError(f"dataset {data.name!r} names an unknown augmentation {augment!r}")
    path = Path(checkpoint_path) if checkpoint_path is not None else None

    spe = steps_per_epoch(len(data.train_y), cfg.batch_size)
    model.to(device=device, memory_format=torch.channels_last if cfg.channels_last
             else torch.contiguous_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay, fused=cuda or None,
                                foreach=None if cuda else True)
    schedule = LRSchedule(cfg, spe, device)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed)

    history: list[EpochRecord] = []
    diverged = False
    if cuda and cfg.replicas not in (None, 1):
        raise TrainError(f"replicas={cfg.replicas} splits batches between CPU threads, but the "
                         f"run is on {device!r}; leave replicas unset (None) on a GPU")
    threads = torch.get_num_threads()
    n_replicas, threads_each, amp = resolve_replicas_amp(cfg, threads=threads)
    if resume and path is not None and path.exists():
        state = load_checkpoint(path)
        _check_compatible(state, cfg, data, path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        _set_rng_state(state["rng"], device, generator)
        history = [EpochRecord(**r) for r in state["history"]]
        diverged = bool(state["diverged"])
        if cfg.amp is None and "amp" in state:
            # the default precision depends on the thread count; keep the run's own, so a
            # resume under another thread count goes on exactly as it started
            amp = bool(state["amp"])
        if cfg.replicas is None:
            # likewise the replicas (a checkpoint without the field had none)
            n_replicas, threads_each = resolve_replicas(int(state.get("replicas", 1)), device,
                                                        cfg.batch_size, threads=threads)
        if state["finished"]:
            return _result(history, diverged, model, schedule, len(history) * spe, len(history), amp,
                           n_replicas)
    resumed_from = len(history)
    for group in optimizer.param_groups:
        group["lr"] = schedule.lr  # the optimiser reads the device tensor the schedule writes

    if cfg.cuda_graph and not cuda:
        raise TrainError(f"cuda_graph=True needs a CUDA device, but the run is on {device!r}; "
                         "leave cuda_graph unset (None) to use graphs wherever CUDA is used")
    replicas = Replicas(model, n_replicas, threads_each) if n_replicas > 1 else None
    loop = _Loop(net=torch.compile(model) if cfg.compile else model, optimizer=optimizer,
                 schedule=schedule, data=data, cfg=cfg, steps=spe, augment=augment,
                 amp=amp, generator=generator,
                 cuda_graph=cuda and not cfg.compile if cfg.cuda_graph is None else cfg.cuda_graph,
                 replicas=replicas)
    clock = _EpochClock(device)
    oom: TrainError | None = None
    try:
        with _cudnn_benchmark(device), (replicas or contextlib.nullcontext()):
            for epoch in range(len(history), cfg.epochs):
                clock.start()
                with replicas.threads() if replicas is not None else contextlib.nullcontext():
                    seen = loop.epoch(epoch)
                clock.stop()
                # the epoch's one synchronisation
                total_loss, total_wrong, lr = torch.stack(
                    [loop.loss_sum, loop.wrong.double(), schedule.lr.double()]).tolist()
                seconds = clock.seconds()
                train_loss = total_loss / seen
                diverged = not math.isfinite(train_loss)
                test_loss, test_error = loop.evaluate()
                record = EpochRecord(epoch=epoch + 1, train_loss=train_loss,
                                     train_error=total_wrong / seen, test_loss=test_loss,
                                     test_error=test_error, lr=lr, seconds=seconds,
                                     images_per_s=seen / seconds if seconds > 0 else math.inf)
                history.append(record)
                if path is not None:
                    _atomic_save(loop.checkpoint(model, history, diverged=diverged,
                                                 finished=diverged or epoch + 1 == cfg.epochs), path)
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
    return _result(history, diverged, model, schedule, len(history) * spe, resumed_from, amp,
                   n_replicas)


def _result(history: list[EpochRecord], diverged: bool, model: nn.Module, schedule: LRSchedule,
            iterations: int, resumed_from: int, amp: bool, replicas: int) -> TrainResult:
    switch = int(schedule.switch_iteration) if schedule.paper else None
    return TrainResult(history=history, diverged=diverged, model=model, iterations=iterations,
                       warmup_end_iteration=switch if switch is not None and switch >= 0 else None,
                       resumed_from_epoch=resumed_from, amp=amp, replicas=replicas)
