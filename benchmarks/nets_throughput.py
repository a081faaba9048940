"""Training throughput of the nets: the project's trainer against the tutorial loop.

Measures images/s of one training step loop for each model, two ways, side by
side in the same process, on the same model, batch size and data shape
(CIFAR-shaped 3x32x32 synthetic uint8 images, 10 classes, crop-flip
augmentation in both):

``reference``
    The typical tutorial loop (PyTorch "Training a classifier" / d2l style): a
    ``torch.utils.data.DataLoader`` over a ``Dataset`` whose ``__getitem__``
    transforms one image at a time on the CPU in Python (random crop with 4
    pixels of zero padding, horizontal flip, uint8 -> float / 255, normalize),
    ``num_workers=0`` and 2 (``--workers``; speedups are over 0), the model in
    fp32 and NCHW, plain ``torch.optim.SGD``, and ``loss.item()`` every step.
``project``
    :func:`residuals.train.train` with its defaults: data and augmentation on
    the device, channels_last, no per-step host sync; on a multi-core CPU the
    batch split between data-parallel model replicas of one thread each
    (:mod:`residuals.replicas`); bf16 autocast on CUDA and on CPUs with native
    bf16 (AVX512-BF16, AMX) where each replica runs one thread (fp32 on other CPUs).

Each loop runs one untimed warm-up round, then ``--repeats`` timed rounds of
``--steps`` steps (a round is one pass over ``steps * batch`` images). The
rounds are interleaved: the trainer's epoch ``k``, then round ``k`` of each
reference loop, then a probe of the machine's limits, so load that drifts on a
shared machine hits all alike. Reported: the median images/s with min-max, the
ratio of the medians (``speedup``) and the median of the per-round ratios
(``speedup_paired``). Timing: CUDA events around the round (after a
synchronize) on a GPU, ``perf_counter`` on the CPU; the trainer's own epoch
clock works the same way.

How close to the machine's limits: the achieved FLOP/s (counted FLOPs of a step,
see :func:`count_flops`) against a measured matmul peak at the loop's precision,
and the bytes/s of an unfused-traffic estimate (see :func:`count_traffic`)
against a measured copy bandwidth; the ceilings are the best seen over the run
(:class:`LimitProbe`). Also the tutorial's data pipeline alone (ms per batch),
and on CUDA the peak memory of each loop and a check that ResNet-1202 trains at
batch 128.

``--ablation`` measures the trainer with each speed switch (channels_last, amp,
compile, replicas; cuda_graph on CUDA) flipped from its default, and the defaults twice (their difference is
the noise), all their epochs interleaved.

Run::

    python benchmarks/nets_throughput.py                    # CPU: resnet20 + resnet56
    python benchmarks/nets_throughput.py --device cuda      # GPU, adds the ResNet-1202 check
    python benchmarks/nets_throughput.py --ablation         # + trainer switches on/off

Results: a printed table, and ``<out>/nets_throughput*.csv`` plus
``<out>/nets_throughput.json`` (machine, versions, date, config, all tables).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import residuals  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

# isort: split
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

if TYPE_CHECKING:
    import pandas as pd

    from residuals.data import ImageData
    from residuals.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import (  # noqa: E402
    Spread,
    copy_bandwidth,
    device_label,
    format_si,
    matmul_peak,
    run_benchmark,
    spread,
    synchronize,
    time_block,
)

IMAGE_SHAPE = (3, 32, 32)  # CIFAR-10: channels, height, width
NUM_CLASSES = 10
CROP_PAD = 4  # pixels of zero padding of the random crop (He et al. 2015, Sec. 4.2)
# CIFAR-10 training-set statistics, as the tutorials hard-code them
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ThroughputConfig:
    """What to measure. Steps and repeats are small by default so a CPU run takes minutes."""

    models: tuple[str, ...] = ("resnet20", "resnet56")
    batch_size: int = 128  # images per step (the paper's)
    steps: int = 10  # steps per timed round
    repeats: int = 5  # timed rounds per loop (after one warm-up round)
    workers: tuple[int, ...] = (0, 2)  # DataLoader workers of the reference loop; the first is
    #                                    the baseline of the speedups (the tutorials' default 0)
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None: torch's default, one per core)
    lr: float = 0.1  # the paper's SGD settings, same in both loops
    momentum: float = 0.9
    weight_decay: float = 1e-4
    ablation: bool = False  # trainer switches on/off
    ablation_models: tuple[str, ...] = ("resnet20", "resnet56")
    big_model: str | None = None  # e.g. "resnet1202": trains at big_batch? (None: skip)
    big_batch: int = 128
    big_steps: int = 10
    big_lr: float = 0.01  # He et al. 2015, Sec. 4.2: ResNet-110/1202 start at lr 0.01
    limit_repeats: int = 5  # repeats of each machine-limit measurement
    matmul_n: int | None = None  # matmul size of the peak (None: 8192 on GPU, 2048 on CPU)
    copy_mib: int | None = None  # copied buffer, MiB (None: 1024 on GPU, 256 on CPU)
    seed: int = 0
    out: Path = Path("benchmarks/results")

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        for name in ("batch_size", "steps", "repeats", "big_batch", "big_steps", "limit_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if any(w < 0 for w in self.workers):
            raise ValueError(f"workers must be >= 0, got {self.workers}")
        if not self.models:
            raise ValueError("give at least one model")


# ============================================================== cost of a step
def count_flops(
    model: nn.Module, image_shape: tuple[int, int, int] = IMAGE_SHAPE
) -> tuple[float, float]:
    """``(forward FLOPs, forward + backward FLOPs)`` per image, from the conv and linear layers.

    Analytic, read off the layers with forward hooks while one image goes
    through a CPU copy of the model (the model itself is untouched):

    * a convolution costs ``out.numel() * in_channels / groups * kh * kw`` MACs,
      a linear layer ``out.numel() * in_features``; 2 FLOPs per MAC;
    * backward costs twice the forward (the input gradient and the weight
      gradient are each one such product), except for a layer whose input needs
      no gradient (the first conv, fed the data): there only the weight gradient.

    BN, ReLU, pooling and the additions are not counted (well under 1%). The 41M
    FLOPs quoted for ResNet-20 follow the paper's convention that a FLOP is a
    multiply-add (He et al. 2015, Sec. 3.3): compare them with ``forward / 2``.
    :class:`torch.utils.flop_counter.FlopCounterMode` gives the same numbers
    (checked in the tests) but dispatches every op through Python, 100x slower
    on ResNet-1202.
    """
    net = copy.deepcopy(model).cpu().float().eval()
    fwd = bwd = 0

    def hook(module, inputs, out):
        nonlocal fwd, bwd
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs = out.numel() * module.in_channels // module.groups * kh * kw
        else:
            macs = out.numel() * module.in_features
        fwd += macs
        bwd += macs * (2 if inputs[0].requires_grad else 1)

    handles = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        net(torch.zeros(1, *image_shape))
    finally:
        for h in handles:
            h.remove()
    return 2.0 * fwd, 2.0 * (fwd + bwd)


def count_flops_dispatch(
    model: nn.Module, image_shape: tuple[int, int, int] = IMAGE_SHAPE
) -> tuple[float, float]:
    """The same as :func:`count_flops`, counted by torch's ``FlopCounterMode`` (slow; a check)."""
    net = copy.deepcopy(model).cpu().float().train()
    x = torch.zeros(2, *image_shape)  # 2: BN in training mode needs more than one value
    with FlopCounterMode(display=False) as fwd:
        net(x)
    with FlopCounterMode(display=False) as both:
        F.cross_entropy(net(x), torch.zeros(2, dtype=torch.long)).backward()
    return fwd.get_total_flops() / 2, both.get_total_flops() / 2


class _Traffic(TorchDispatchMode):
    """Sums the bytes of every tensor argument and result of every non-view ATen op."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not func.is_view:
            for t in tree_flatten((args, kwargs, out))[0]:
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
        return out


def count_traffic(
    model: nn.Module,
    batch_size: int,
    *,
    device: torch.device | str,
    amp_dtype: torch.dtype | None = None,
    image_shape: tuple[int, int, int] = IMAGE_SHAPE,
) -> float:
    """Bytes moved by one eager training step: an estimate, by this method.

    Every ATen op of the step (forward, cross-entropy, backward, SGD update with
    momentum and weight decay) reads each of its tensor arguments once and writes
    each of its results once; views are free. That is an *unfused* step with no
    cache reuse between ops, what eager PyTorch moves at least. A fused
    (compiled) step moves less, so bytes/s against this count is an *effective*
    bandwidth. Counted with a ``TorchDispatchMode`` on one real step of a deep
    copy of ``model`` (``model`` is untouched), at the loop's precision
    (``amp_dtype`` autocast or fp32), after one uncounted step that allocates the
    momentum buffers.
    """
    device = torch.device(device)
    net = copy.deepcopy(model).to(device).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    x = torch.randn(batch_size, *image_shape, device=device)
    y = torch.randint(0, NUM_CLASSES, (batch_size,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None
        ):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    step()
    counter = _Traffic()
    with counter:
        step()
    return float(counter.bytes)


# ====================================================== the reference (tutorial) loop
class TutorialDataset(torch.utils.data.Dataset):
    """A CIFAR-style dataset with torchvision-like per-sample transforms, by hand.

    ``__getitem__(i)`` does what ``Compose([RandomCrop(32, padding=4),
    RandomHorizontalFlip(), ToTensor(), Normalize(mean, std)])`` does, one image
    at a time in Python on the CPU: this per-sample work is what the tutorial
    loop pays for. ``images``: uint8 ``(N, C, H, W)`` on the CPU; ``labels`` int64 ``(N,)``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        pad: int = CROP_PAD,
    ):
        self.images, self.labels, self.pad = images.cpu(), labels.cpu(), pad
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]  # (C, H, W) uint8
        _, h, w = img.shape
        p = self.pad
        padded = F.pad(img, (p, p, p, p))  # RandomCrop(padding=4): zeros
        top = int(torch.randint(0, 2 * p + 1, (1,)))
        left = int(torch.randint(0, 2 * p + 1, (1,)))
        img = padded[:, top : top + h, left : left + w]
        if torch.rand(1).item() < 0.5:  # RandomHorizontalFlip
            img = img.flip(-1)
        x = img.float().div(255.0)  # ToTensor
        x = (x - self.mean) / self.std  # Normalize
        return x, int(self.labels[i])


@dataclass
class LoopResult:
    """What one loop measured: seconds per timed round, and proof that it trained."""

    loop: str
    round_seconds: list[float]
    images_per_round: int
    first_loss: float
    last_loss: float
    params_changed: bool
    peak_memory_bytes: float = math.nan
    workers: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> Spread:
        return spread(self.round_seconds).inverted(self.images_per_round)


def _param_snapshot(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _changed(model: nn.Module, before: list[torch.Tensor]) -> bool:
    return any(
        not torch.equal(p.detach().cpu(), b.cpu()) for p, b in zip(model.parameters(), before)
    )


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        synchronize(device)
        return float(torch.cuda.max_memory_allocated(device))
    return math.nan  # no allocator statistics on the CPU


class TutorialLoop:
    """The tutorial loop, one round (a shuffled pass of the DataLoader) at a time.

    ``images`` uint8 ``(steps * batch, C, H, W)``, ``labels`` int64: kept on the
    CPU, as the tutorial's dataset is; each batch is copied to the device in the
    loop body. :meth:`timed_round` returns the seconds of one round (CUDA events
    on a GPU; the ``loss.item()`` of every step synchronises anyway).
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        cfg: ThroughputConfig,
        *,
        workers: int = 0,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
    ):
        self.device = torch.device(cfg.device)
        self.workers = workers
        self.loader = torch.utils.data.DataLoader(
            TutorialDataset(images, labels, mean, std),
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=workers,
            drop_last=True,
            persistent_workers=workers > 0,
        )
        self.model = model.to(self.device)
        self.criterion = nn.CrossEntropyLoss()
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        self.before = _param_snapshot(self.model)
        self.losses: list[float] = []
        self.round_seconds: list[float] = []  # timed rounds only

    @property
    def images_per_round(self) -> int:
        return len(self.loader) * self.loader.batch_size

    def _round(self) -> None:
        model, optimizer, criterion, device = (
            self.model,
            self.optimizer,
            self.criterion,
            self.device,
        )
        model.train()
        for inputs, targets in self.loader:  # the tutorial's loop body, verbatim
            inputs, targets = inputs.to(device), targets.to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = criterion(outputs, targets)
            loss.backward()
            optimizer.step()
            self.losses.append(loss.item())  # running_loss += loss.item()

    def loader_seconds_per_step(self, repeats: int) -> Spread:
        """Seconds per batch of the data pipeline alone: a pass of the DataLoader, no model.

        What the tutorial loop pays before the model sees a batch (with
        ``num_workers=0``, on the critical path of every step).
        """
        seconds = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _batch in self.loader:
                pass
            seconds.append(time.perf_counter() - t0)
        return spread(seconds).scaled(1.0 / len(self.loader))

    def warmup(self) -> None:
        """One untimed round (first-call kernel selection, worker start-up)."""
        self._round()

    def timed_round(self) -> float:
        with time_block(self.device) as t:
            self._round()
        self.round_seconds.append(t.seconds)
        return t.seconds

    def result(self, peak_memory_bytes: float = math.nan) -> LoopResult:
        return LoopResult(
            "reference",
            list(self.round_seconds),
            self.images_per_round,
            self.losses[0],
            self.losses[-1],
            _changed(self.model, self.before),
            peak_memory_bytes,
            workers=self.workers,
        )


def reference_loop(
    model: nn.Module, data, cfg: ThroughputConfig, *, workers: int = 0
) -> LoopResult:
    """The tutorial loop alone: one warm-up round, then ``cfg.repeats`` timed rounds.

    On CUDA the peak memory of these rounds is recorded.
    """
    device = torch.device(cfg.device)
    _reset_peak(device)
    loop = TutorialLoop(
        model, data.train_x, data.train_y, cfg, workers=workers, mean=data.mean, std=data.std
    )
    loop.warmup()
    for _ in range(cfg.repeats):
        loop.timed_round()
    return loop.result(_peak(device))


# ============================================================ the project's trainer
def synthetic_data(
    n: int, device: str, seed: int = 0, image_shape: tuple[int, int, int] = IMAGE_SHAPE
) -> ImageData:
    """``n`` uniform-noise uint8 images with random labels (10 classes), for throughput only.

    Default shape CIFAR-10's. ``mean``/``std`` are the CIFAR-10 statistics the
    tutorials hard-code for 3 channels, else those of uniform noise; both loops
    normalise with them. The evaluation split is the first 256 images.
    """
    from residuals.data import ImageData

    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *image_shape), dtype=torch.uint8, generator=g)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    c = image_shape[0]
    mean, std = (CIFAR_MEAN, CIFAR_STD) if c == 3 else ((0.5,) * c, (0.2887,) * c)
    n_test = min(n, 256)
    return ImageData(
        name="synthetic",
        train_x=x.to(device),
        train_y=y.to(device),
        test_x=x[:n_test].to(device),
        test_y=y[:n_test].to(device),
        classes=[str(i) for i in range(NUM_CLASSES)],
        mean=mean,
        std=std,
        augment="crop-flip",
    )


def project_config(cfg: ThroughputConfig, **switches) -> TrainConfig:
    """The trainer's config for a throughput run: its defaults (or ``switches``), our batch
    size and SGD settings, ``1 + cfg.repeats`` epochs (the first is the warm-up), no lr warm-up."""
    from residuals.train import TrainConfig

    return TrainConfig(
        epochs=1 + cfg.repeats,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        warmup="none",
        augment="crop-flip",
        seed=cfg.seed,
        device=cfg.device,
        **switches,
    )


def project_loop(
    model: nn.Module, data, tcfg: TrainConfig, *, on_epoch: Callable | None = None
) -> LoopResult:
    """Time :func:`residuals.train.train` for ``tcfg.epochs`` epochs over ``data``.

    The first epoch is the warm-up (cuDNN autotuning; compilation when
    ``compile`` is on); the trainer's own training time of each later epoch
    (CUDA events / perf_counter, evaluation excluded) is a timed round.
    ``on_epoch`` is passed to the trainer: it runs between epochs, outside
    their clock, which is where :func:`side_by_side` runs the reference loop.
    On CUDA the peak memory of the whole call is recorded.
    """
    from residuals.train import train

    if tcfg.epochs < 2:
        raise ValueError("project_loop needs at least 2 epochs: a warm-up and a timed one")
    device = torch.device(tcfg.device)
    before = _param_snapshot(model)
    _reset_peak(device)
    result = train(model, data, tcfg, on_epoch=on_epoch)
    history = result.history
    return LoopResult(
        "project",
        [rec.seconds for rec in history[1:]],
        len(data.train_y),
        history[0].train_loss,
        history[-1].train_loss,
        _changed(model, before),
        _peak(device),
        extra={
            "warmup_s": history[0].seconds,
            "diverged": result.diverged,
            "replicas": result.replicas,
            "amp": result.amp,
        },
    )


def side_by_side(
    base: nn.Module, data, cfg: ThroughputConfig, *, between: Callable[[int], None] | None = None
) -> list[LoopResult]:
    """The reference loop(s) and the trainer on copies of ``base``, rounds interleaved.

    Epoch ``k`` of the trainer is followed by round ``k`` of each reference loop
    (round 1 being the warm-up), then by ``between(k)`` (the machine-limit
    probe), so a change of machine load during the measurement hits every loop
    alike. Returns the reference results (one per ``cfg.workers``) then the
    project's. Peak memory is left out here (the loops share the device); see
    :func:`peak_memory`.
    """
    refs = [
        TutorialLoop(
            copy.deepcopy(base),
            data.train_x,
            data.train_y,
            cfg,
            workers=w,
            mean=data.mean,
            std=data.std,
        )
        for w in cfg.workers
    ]

    def after_epoch(record) -> None:
        for loop in refs:
            if record.epoch == 1:
                loop.warmup()
            else:
                loop.timed_round()
        if between is not None:
            between(record.epoch)

    project = project_loop(copy.deepcopy(base), data, project_config(cfg), on_epoch=after_epoch)
    results = [loop.result() for loop in refs] + [project]
    for loop, res in zip(refs, results):
        res.extra["loader_s_per_step"] = loop.loader_seconds_per_step(cfg.repeats).median
    return results


def peak_memory(base: nn.Module, data, cfg: ThroughputConfig) -> tuple[float, float]:
    """CUDA only: peak allocated bytes of (reference, project), each loop alone on the device.

    One round of each on a fresh copy of ``base`` (weights, gradients,
    momentum, activations, data). NaN on the CPU.
    """
    device = torch.device(cfg.device)
    if device.type != "cuda":
        return math.nan, math.nan
    one = dataclasses.replace(cfg, repeats=1)
    torch.cuda.empty_cache()
    ref = reference_loop(copy.deepcopy(base), data, one, workers=0)
    torch.cuda.empty_cache()
    proj = project_loop(copy.deepcopy(base), data, project_config(one))
    torch.cuda.empty_cache()
    return ref.peak_memory_bytes, proj.peak_memory_bytes


def project_amp_dtype(cfg: ThroughputConfig, **switches) -> torch.dtype | None:
    """The autocast dtype the trainer uses with :func:`project_config`'s settings: bf16 where
    :func:`residuals.device.resolve_replicas_amp` says (its ``amp=None`` default: CUDA, and
    CPUs with native bf16 when each of the trainer's replicas runs one thread), else None."""
    from residuals.device import resolve_replicas_amp

    return torch.bfloat16 if resolve_replicas_amp(project_config(cfg, **switches))[2] else None


# ================================================================ machine limits
def machine_limits(
    device: torch.device, repeats: int = 5, matmul_n: int | None = None, copy_mib: int | None = None
) -> pd.DataFrame:
    """Measured ceilings, median with min-max: matmul FLOP/s per precision, copy bytes/s.

    On CUDA: fp32 (TF32 off), tf32 and bf16; on the CPU: fp32 and bf16 (what
    ``amp`` would compute in there).
    """
    import pandas as pd

    rows = []

    def add(quantity: str, precision: str, s: Spread, unit: str) -> None:
        rows.append(
            dict(
                quantity=quantity,
                precision=precision,
                median=s.median,
                min=s.min,
                max=s.max,
                repeats=s.n,
                unit=unit,
            )
        )

    def peak(precision: str, dtype: torch.dtype) -> None:
        add("matmul", precision, matmul_peak(device, dtype, n=matmul_n, repeats=repeats), "FLOP/s")

    if device.type == "cuda":
        tf32 = torch.backends.cuda.matmul.allow_tf32
        try:
            torch.backends.cuda.matmul.allow_tf32 = False
            peak("fp32", torch.float32)
            torch.backends.cuda.matmul.allow_tf32 = True
            peak("tf32", torch.float32)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    else:
        peak("fp32", torch.float32)
    peak("bf16", torch.bfloat16)
    nbytes = copy_mib << 20 if copy_mib else None
    add("copy", "bytes", copy_bandwidth(device, nbytes=nbytes, repeats=repeats), "B/s")
    return pd.DataFrame(rows)


class LimitProbe:
    """Measures the machine's limits again and again during a run; keeps every measurement.

    On a shared machine the ceilings sag whenever a neighbour computes, so they
    are measured at the start, after every round of every model (one repeat
    each, beside the rounds it is compared with) and at the end; the ceiling
    used is the best of all (:func:`add_limit_fractions`).
    """

    def __init__(self, device: torch.device, cfg: ThroughputConfig):
        self.device, self.cfg = device, cfg
        self.frames: list = []

    def __call__(self, when: str, repeats: int = 1) -> None:
        cfg = self.cfg
        self.frames.append(
            machine_limits(self.device, repeats, cfg.matmul_n, cfg.copy_mib).assign(when=when)
        )

    def table(self) -> pd.DataFrame:
        import pandas as pd

        return pd.concat(self.frames, ignore_index=True)


def _compute_precision(device: torch.device, amp_dtype: torch.dtype | None) -> str:
    """The matmul peak a loop is held against: bf16 under autocast; on CUDA fp32 convs run as
    TF32 (cuDNN's default, ``torch.backends.cudnn.allow_tf32``)."""
    if amp_dtype is not None:
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, str(amp_dtype))
    if device.type == "cuda" and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return "fp32"


# ======================================================================= the run
def _row(
    model_name: str,
    res: LoopResult,
    cfg: ThroughputConfig,
    flops: tuple[float, float],
    traffic: float,
    precision: str,
) -> dict:
    ips = res.images_per_s
    fwd, train_flops = flops
    return dict(
        model=model_name,
        loop=res.loop,
        workers=res.workers if res.workers is not None else "",
        batch_size=cfg.batch_size,
        steps=cfg.steps,
        repeats=len(res.round_seconds),
        images_per_s=ips.median,
        images_per_s_min=ips.min,
        images_per_s_max=ips.max,
        forward_macs_per_image=fwd / 2,
        train_flops_per_image=train_flops,
        achieved_flops_s=train_flops * ips.median,
        precision=precision,
        replicas=res.extra.get("replicas", 1),  # the trainer's CPU data parallelism; 1: one model
        bytes_per_step=traffic,
        achieved_bytes_s=traffic / cfg.batch_size * ips.median,
        data_s_per_step=res.extra.get("loader_s_per_step", math.nan),  # reference: DataLoader alone
        peak_memory_bytes=res.peak_memory_bytes,
        first_loss=res.first_loss,
        last_loss=res.last_loss,
        params_changed=res.params_changed,
    )


def _speedups(rows: list[dict], results: list[LoopResult]) -> None:
    """Speedup of each loop over the first (the tutorial loop, ``num_workers=0``).

    ``speedup``: the ratio of median images/s. ``speedup_paired*``: median, min
    and max of the per-round ratios, round ``k`` of one loop against round ``k``
    of the other, which ran right beside it: robust to load that drifts.
    """

    def rates(res: LoopResult) -> list[float]:
        return [res.images_per_round / t for t in res.round_seconds]

    base = rates(results[0])
    for row, res in zip(rows, results):
        row["speedup"] = row["images_per_s"] / rows[0]["images_per_s"]
        s = spread([r / b for r, b in zip(rates(res), base)])
        row.update(speedup_paired=s.median, speedup_paired_min=s.min, speedup_paired_max=s.max)


def measure_model(name: str, cfg: ThroughputConfig, probe: LimitProbe | None = None) -> list[dict]:
    """Both loops (the reference once per worker count) on one model, with the speedups.

    ``probe``, if given, measures the machine's limits after every round.
    """
    from residuals.nets import build_model

    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    base = build_model(name, in_channels=IMAGE_SHAPE[0], num_classes=NUM_CLASSES)
    flops = count_flops(base)
    data = synthetic_data(cfg.steps * cfg.batch_size, cfg.device, cfg.seed)
    ref_mem, proj_mem = peak_memory(base, data, cfg)
    between = (lambda k: probe(f"{name} round {k}")) if probe is not None else None
    results = side_by_side(base, data, cfg, between=between)
    traffic_fp32 = count_traffic(base, cfg.batch_size, device=device)
    amp = project_amp_dtype(cfg)
    traffic_amp = (
        traffic_fp32
        if amp is None
        else count_traffic(base, cfg.batch_size, device=device, amp_dtype=amp)
    )
    rows = []
    for res in results:
        ours = res.loop == "project"
        res.peak_memory_bytes = proj_mem if ours else ref_mem
        rows.append(
            _row(
                name,
                res,
                cfg,
                flops,
                traffic_amp if ours else traffic_fp32,
                _compute_precision(device, amp if ours else None),
            )
        )
    _speedups(rows, results)
    return rows


def add_limit_fractions(results: pd.DataFrame, limits: pd.DataFrame) -> pd.DataFrame:
    """Achieved FLOP/s and bytes/s as fractions of the machine's ceilings.

    The ceiling is the best the machine showed in any limit measurement of the
    run (``max`` over all of :class:`LimitProbe`'s): a peak is what the machine
    *can* do, and on a shared machine the median sags with the load.
    """
    out = results.copy()
    best = limits.groupby(["quantity", "precision"])["max"].max()
    out["peak_flops_s"] = [best.get(("matmul", p), math.nan) for p in out["precision"]]
    out["flops_fraction"] = out["achieved_flops_s"] / out["peak_flops_s"]
    out["copy_bytes_s"] = best[("copy", "bytes")]
    out["bytes_fraction"] = out["achieved_bytes_s"] / out["copy_bytes_s"]
    return out


# cuda_graph: CUDA only; replicas: where the default trains several (a multi-core CPU)
ABLATION_SWITCHES = ("channels_last", "amp", "compile", "cuda_graph", "replicas")


def in_turn(jobs: list[Callable[[Callable], LoopResult]]) -> list[LoopResult]:
    """Run trainers epoch by epoch in turn: epoch 1 of each, then epoch 2 of each, ...

    ``jobs[i](on_epoch)`` runs one :func:`project_loop` that calls ``on_epoch``
    after every epoch. Each job runs in its own thread, but only one at a time:
    ``on_epoch`` hands the turn to the next job and waits for its own, so the
    epochs interleave as :func:`side_by_side`'s rounds do and load that drifts
    hits every job alike. A job that ends (or fails) leaves the rotation; the
    first exception is raised once all have ended.
    """
    cond = threading.Condition()
    active = list(range(len(jobs)))
    state = {"turn": 0}
    results: list = [None] * len(jobs)
    errors: list[BaseException] = []

    def wait(i: int) -> None:
        with cond:
            cond.wait_for(lambda: state["turn"] == i)

    def hand_on(i: int, *, leave: bool = False) -> None:
        with cond:
            k = active.index(i)
            if leave:
                active.remove(i)
            if active:
                state["turn"] = active[(k if leave else k + 1) % len(active)]
            cond.notify_all()

    def worker(i: int) -> None:
        wait(i)
        try:
            results[i] = jobs[i](lambda record: (hand_on(i), wait(i)))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)
        finally:
            hand_on(i, leave=True)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def ablation(cfg: ThroughputConfig) -> pd.DataFrame:
    """The trainer with its defaults, with each switch flipped, and with the defaults again.

    For each of ``cfg.ablation_models``. A switch left at ``None`` by the
    trainer's defaults (auto) is flipped against what it resolves to on this
    device. Defaults can move together: ``amp`` follows the threads per
    replica, and ``compile`` trains one model, so each row records the
    ``replicas`` and ``precision`` it trained with; where ``replicas=1`` also
    changes the precision, a ``replicas=1, amp=...`` row keeps the default's. One ``train`` call per setting (its first epoch the warm-up, which
    holds the compilation when ``compile`` is on), their epochs interleaved
    (:func:`in_turn`) on the CPU, one setting after another on CUDA. ``vs_defaults`` is against the mean of the two defaults
    rows; ``vs_defaults_paired*`` is the median (min, max) of the per-round
    ratios against the first defaults row, whose rounds ran next to them. The
    two defaults rows differ by the noise alone.
    """
    import pandas as pd

    from residuals.device import resolve_replicas_amp
    from residuals.nets import build_model
    from residuals.train import TrainConfig

    device = torch.device(cfg.device)
    defaults = TrainConfig()
    default_replicas, _, default_amp = resolve_replicas_amp(project_config(cfg))
    settings = [("defaults", {})]
    for switch in ABLATION_SWITCHES:
        if switch == "cuda_graph" and device.type != "cuda":
            continue
        value = getattr(defaults, switch)
        if switch == "amp" and value is None:
            value = default_amp
        if switch == "cuda_graph" and value is None:
            value = device.type == "cuda"
        if switch == "replicas":
            if default_replicas > 1:  # one model on all the threads, against the default's
                settings.append(("replicas=1", {"replicas": 1}))
                if resolve_replicas_amp(project_config(cfg, replicas=1))[2] != default_amp:
                    # amp's default follows the threads per replica: the replicas alone
                    settings.append(
                        (f"replicas=1, amp={default_amp}", {"replicas": 1, "amp": default_amp})
                    )
            continue
        settings.append((f"{switch}={not value}", {switch: not bool(value)}))
    settings.append(("defaults (again)", {}))  # the drift of the machine over the ablation
    data = synthetic_data(cfg.steps * cfg.batch_size, cfg.device, cfg.seed)
    frames = []
    for name in cfg.ablation_models:
        torch.manual_seed(cfg.seed)
        base = build_model(name, in_channels=IMAGE_SHAPE[0], num_classes=NUM_CLASSES)
        jobs = [
            lambda on_epoch, sw=switches, base=base: project_loop(
                copy.deepcopy(base), data, project_config(cfg, **sw), on_epoch=on_epoch
            )
            for _, switches in settings
        ]
        # On CUDA the settings run one after another, in this thread: CUDA-graph captures
        # from several live threads failed on an H100, and a dedicated GPU drifts little.
        results = in_turn(jobs) if device.type != "cuda" else [job(None) for job in jobs]
        rows = []
        for (label, _), res in zip(settings, results):
            ips = res.images_per_s
            paired = spread([d / s for s, d in zip(res.round_seconds, results[0].round_seconds)])
            rows.append(
                dict(
                    model=name,
                    setting=label,
                    batch_size=cfg.batch_size,
                    # what the setting resolved to (amp's default follows the threads
                    # per replica; compile trains one model)
                    replicas=res.extra["replicas"],
                    precision="bf16" if res.extra["amp"] else "fp32",
                    images_per_s=ips.median,
                    images_per_s_min=ips.min,
                    images_per_s_max=ips.max,
                    vs_defaults_paired=paired.median,
                    vs_defaults_paired_min=paired.min,
                    vs_defaults_paired_max=paired.max,
                    warmup_s=res.extra["warmup_s"],
                    last_loss=res.last_loss,
                    params_changed=res.params_changed,
                )
            )
        df = pd.DataFrame(rows)
        defaults_ips = df.loc[df["setting"].str.startswith("defaults"), "images_per_s"].mean()
        df["vs_defaults"] = df["images_per_s"] / defaults_ips
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def big_model_check(cfg: ThroughputConfig) -> pd.DataFrame:
    """Does ``cfg.big_model`` train at ``cfg.big_batch``? Peak memory, loss, images/s."""
    import pandas as pd

    from residuals.nets import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.big_model, in_channels=IMAGE_SHAPE[0], num_classes=NUM_CLASSES)
    small = dataclasses.replace(
        cfg, batch_size=cfg.big_batch, steps=cfg.big_steps, repeats=1, lr=cfg.big_lr
    )
    data = synthetic_data(small.steps * small.batch_size, cfg.device, cfg.seed)
    from residuals.train import TrainError

    try:
        res = project_loop(model, data, project_config(small))
    except TrainError as e:  # out of memory: say so in the table, do not hide it
        return pd.DataFrame(
            [
                dict(
                    model=cfg.big_model,
                    batch_size=small.batch_size,
                    steps=small.steps,
                    trained=False,
                    error=str(e).splitlines()[0],
                )
            ]
        )
    ips = res.images_per_s
    return pd.DataFrame(
        [
            dict(
                model=cfg.big_model,
                batch_size=small.batch_size,
                steps=small.steps,
                trained=bool(res.params_changed and math.isfinite(res.last_loss)),
                lr=small.lr,
                first_loss=res.first_loss,
                last_loss=res.last_loss,
                peak_memory_bytes=res.peak_memory_bytes,
                images_per_s=ips.median,
                parameters=sum(p.numel() for p in model.parameters()),
                error="",
            )
        ]
    )


def run(cfg: ThroughputConfig) -> dict[str, pd.DataFrame]:
    """Measure everything ``cfg`` asks for; returns the tables (see :func:`main` for saving)."""
    import pandas as pd

    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"--device {cfg.device}: no CUDA GPU is visible to torch {torch.__version__}"
        )
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    probe = LimitProbe(device, cfg)
    probe("start", repeats=cfg.limit_repeats)
    rows = [r for name in cfg.models for r in measure_model(name, cfg, probe)]
    probe("end", repeats=cfg.limit_repeats)
    tables = {}
    if cfg.big_model:
        tables["big_model"] = big_model_check(cfg)
    if cfg.ablation:
        tables["ablation"] = ablation(cfg)
    limits = probe.table()
    tables = {
        "results": add_limit_fractions(pd.DataFrame(rows), limits),
        "limits": limits,
        **tables,
    }
    tables["goals"] = check_goals(tables, device)
    return tables


# the issue's goals: (device type, model, minimum speedup of the trainer over the tutorial loop)
GOALS = (("cuda", "resnet56", 5.0), ("cpu", "resnet56", 1.5))


def check_goals(tables: dict, device: torch.device) -> pd.DataFrame:
    """Each goal ``pass`` / ``FAIL`` on this device, ``not measured`` elsewhere.

    The speedup is the trainer's median images/s over the tutorial loop's with
    ``num_workers=0`` (the first reference row); the paired speedup (the median of
    the per-round ratios) is recorded beside it. The CUDA goal is stated for one
    H100: the GPU's name is in the JSON beside it.
    """
    import pandas as pd

    res = tables["results"]
    rows = []
    for dev, model, minimum in GOALS:
        got = res[(res["model"] == model) & (res["loop"] == "project")]
        measured = dev == device.type and len(got) > 0
        speedup = float(got["speedup"].iloc[0]) if measured else math.nan
        paired = float(got["speedup_paired"].iloc[0]) if measured else math.nan
        status = ("pass" if speedup >= minimum else "FAIL") if measured else "not measured"
        rows.append(
            dict(
                goal=f"{model} trainer >= {minimum:g}x the tutorial loop on {dev}",
                device=dev,
                model=model,
                minimum=minimum,
                speedup=speedup,
                speedup_paired=paired,
                status=status,
            )
        )
    big = tables.get("big_model")
    if big is not None and device.type == "cuda":
        r = big.iloc[0]
        rows.append(
            dict(
                goal=f"{r['model']} trains at batch {r['batch_size']} on cuda",
                device="cuda",
                model=r["model"],
                minimum=math.nan,
                speedup=math.nan,
                status="pass" if r["trained"] else "FAIL",
            )
        )
    return pd.DataFrame(rows)


# ======================================================================== output
def print_tables(tables: dict, info: dict) -> None:
    print(f"\nnets throughput -- {info['date']} -- {device_label(info)}")
    lim = tables["limits"].groupby(["quantity", "precision", "unit"], sort=False)
    for (quantity, precision, unit), g in lim:
        print(
            f"  limit: {quantity} {precision}: median {format_si(g['median'].median())}{unit}, "
            f"best {format_si(g['max'].max())}{unit} ({len(g)} measurements, start to end)"
        )
    print(
        f"\n{'model':<11}{'loop':<10}{'wrk':>4}{'images/s [min-max]':>26}{'x ref':>7}{'paired':>7}"
        f"{'FLOP/s':>9}{'%peak':>7}{'B/s':>9}{'%copy':>7}{'peak mem':>10}{'data ms/step':>13}"
    )
    for r in tables["results"].itertuples():
        mem = format_si(r.peak_memory_bytes) + (
            "B" if r.peak_memory_bytes == r.peak_memory_bytes else ""
        )
        ips = f"{r.images_per_s:.1f} [{r.images_per_s_min:.1f}-{r.images_per_s_max:.1f}]"
        print(
            f"{r.model:<11}{r.loop:<10}{str(r.workers):>4}{ips:>26}{r.speedup:>7.2f}"
            f"{r.speedup_paired:>7.2f}"
            f"{format_si(r.achieved_flops_s):>9}{100 * r.flops_fraction:>6.1f}%"
            f"{format_si(r.achieved_bytes_s):>9}{100 * r.bytes_fraction:>6.1f}%{mem:>10}"
            f"{(f'{1e3 * r.data_s_per_step:.1f}' if r.data_s_per_step == r.data_s_per_step else ''):>13}"
        )
    if "big_model" in tables:
        for r in tables["big_model"].itertuples():
            if r.error:
                print(f"\n{r.model} at batch {r.batch_size}: did NOT train: {r.error}")
            else:
                print(
                    f"\n{r.model} at batch {r.batch_size}, lr {r.lr:g}: trained={r.trained}, loss "
                    f"{r.first_loss:.3f} -> {r.last_loss:.3f}, peak memory {format_si(r.peak_memory_bytes)}B, "
                    f"{r.images_per_s:.1f} images/s"
                )
    print()
    for r in tables["goals"].itertuples():
        got = (
            f" (measured {r.speedup:.2f}x; paired rounds {r.speedup_paired:.2f}x)"
            if r.speedup == r.speedup
            else ""
        )
        print(f"goal: {r.goal}: {r.status}{got}")
    if "ablation" in tables:
        print("\nablation (the project's trainer):")
        for r in tables["ablation"].itertuples():
            print(
                f"  {r.model} {r.setting:<24} {r.precision} x{r.replicas} {r.images_per_s:8.1f} images/s "
                f"[{r.images_per_s_min:.1f}-{r.images_per_s_max:.1f}]  x{r.vs_defaults:.2f}"
                f"  paired x{r.vs_defaults_paired:.2f} [{r.vs_defaults_paired_min:.2f}-"
                f"{r.vs_defaults_paired_max:.2f}]  (warm-up epoch {r.warmup_s:.1f} s)"
            )


def parse_args(argv: list[str] | None = None) -> ThroughputConfig:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = ThroughputConfig()
    p.add_argument(
        "--models", nargs="+", default=list(d.models), help="model names (default: %(default)s)"
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--steps", type=int, default=d.steps, help="steps per timed round")
    p.add_argument("--repeats", type=int, default=d.repeats, help="timed rounds per loop")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=list(d.workers),
        help="DataLoader workers of the reference loop, one measurement each",
    )
    p.add_argument("--device", default=d.device, help="cpu, cuda or cuda:<i>")
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch CPU threads for every loop (default: torch's, one per core)",
    )
    p.add_argument("--ablation", action="store_true", help="also time each trainer switch on/off")
    p.add_argument(
        "--ablation-models",
        nargs="+",
        default=list(d.ablation_models),
        help="models of the ablation (default: %(default)s)",
    )
    p.add_argument(
        "--big-model",
        default=None,
        help="check that this model trains at --big-batch (default on CUDA: resnet1202)",
    )
    p.add_argument("--no-big-model", action="store_true", help="skip that check")
    p.add_argument("--big-batch", type=int, default=d.big_batch)
    p.add_argument(
        "--big-steps",
        type=int,
        default=d.big_steps,
        help="steps per epoch of that check (2 epochs)",
    )
    p.add_argument(
        "--big-lr",
        type=float,
        default=d.big_lr,
        help="learning rate of that check (the paper's warm-up lr)",
    )
    p.add_argument(
        "--limit-repeats",
        type=int,
        default=d.limit_repeats,
        help="repeats of each machine-limit measurement",
    )
    p.add_argument("--matmul-n", type=int, default=None, help="matmul size of the FLOP/s peak")
    p.add_argument(
        "--copy-mib", type=int, default=None, help="buffer size of the copy bandwidth, MiB"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", type=Path, default=d.out, help="results folder (default: %(default)s)")
    a = p.parse_args(argv)
    big = a.big_model
    if big is None and a.device.startswith("cuda"):
        big = "resnet1202"
    if a.no_big_model:
        big = None
    return ThroughputConfig(
        models=tuple(a.models),
        batch_size=a.batch_size,
        steps=a.steps,
        repeats=a.repeats,
        workers=tuple(a.workers),
        device=a.device,
        threads=a.threads,
        ablation=a.ablation,
        ablation_models=tuple(a.ablation_models),
        big_model=big,
        big_batch=a.big_batch,
        big_steps=a.big_steps,
        big_lr=a.big_lr,
        limit_repeats=a.limit_repeats,
        matmul_n=a.matmul_n,
        copy_mib=a.copy_mib,
        seed=a.seed,
        out=a.out,
    )


def main(argv: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """Parse arguments, measure, print, save; returns the tables."""
    return run_benchmark("nets_throughput", parse_args(argv), run, print_tables)


if __name__ == "__main__":
    main()
