"""How to train and what training returns: :class:`TrainConfig` (validated on construction),
:class:`EpochRecord`, :class:`TrainResult`, :class:`TrainError`, and the schedule's constants
(He et al. 2015, sec. 4.2). No torch import here, so commands read configs cheaply."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from residuals.data.spec import AUGMENTATIONS

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "EpochRecord",
    "StepProgress",
    "StepTrace",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "steps_per_epoch",
]

SCHEDULES = ("cosine", "step", "constant")
OPTIMIZERS = ("sgd", "adam", "adamw")  # built by residuals.train.optim
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
    momentum: float = 0.9  # SGD's momentum; Adam's beta1 (see residuals.train.optim)
    weight_decay: float = 1e-4  # L2 on every parameter, as in the paper (AdamW: decoupled)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    schedule: Literal["cosine", "step", "constant"] = "cosine"  # step: /10 at 50% and 75% of
    #                                                             the iterations
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
    sync_bn: bool = False  # under torchrun: SyncBatchNorm over the global batch (GPUs only);
    #                        False: each rank's BatchNorm normalises its shard, as in the paper
    seed: int = 0  # seeds the data order and augmentation (not the model's initialisation)
    device: str = "cpu"  # "cpu", "cuda[:i]" or "auto"

    def __post_init__(self) -> None:
        def integer(name: str, low: int) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"TrainConfig.{name} must be an integer >= {low}, got {v!r}")

        def number(
            name: str, low: float, high: float = math.inf, *, open_low: bool = False
        ) -> None:
            v = getattr(self, name)
            ok = (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
                and (v > low if open_low else v >= low)
                and v < high
            )
            if not ok:
                bound = f"{'>' if open_low else '>='} {low}" + (
                    f" and < {high}" if high < math.inf else ""
                )
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
        choice("optimizer", OPTIMIZERS)
        choice("warmup", WARMUPS)
        choice("augment", (None, True, False, *AUGMENTATIONS))
        choice("amp", (None, True, False))
        choice("channels_last", (True, False))
        choice("compile", (True, False))
        choice("cuda_graph", (None, True, False))
        choice("sync_bn", (True, False))
        if self.replicas is not None:
            from residuals.replicas import MIN_SHARD  # imports torch: only when replicas are set

            integer("replicas", 1)
            if self.batch_size < MIN_SHARD * self.replicas:
                raise ValueError(
                    f"TrainConfig.replicas={self.replicas} needs batch_size >= "
                    f"{MIN_SHARD * self.replicas} ({MIN_SHARD} images per replica for "
                    f"BatchNorm), got {self.batch_size}"
                )
            if self.replicas > 1 and self.sync_bn:
                raise ValueError(
                    "TrainConfig.sync_bn normalises over the whole batch, replicas "
                    "split it: leave replicas unset (None) or 1 with sync_bn=True"
                )
            if self.replicas > 1 and self.compile:
                raise ValueError(
                    "TrainConfig.replicas > 1 cannot be combined with compile=True; "
                    "leave replicas unset (None) to train one compiled model"
                )
        if self.warmup == "linear" and self.warmup_epochs >= self.epochs:
            raise ValueError(
                f"TrainConfig.warmup_epochs ({self.warmup_epochs}) must be shorter than "
                f"epochs ({self.epochs}); use warmup='none' to train without warm-up"
            )
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(
                f"TrainConfig.device must be a string like 'cpu', 'cuda', 'cuda:0' "
                f"or 'auto', got {self.device!r}"
            )


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
    plans: list[dict] = field(default_factory=list)  # the schedule's plans: {"from_epoch",
    #                                                  "epochs"}, one more per resume that
    #                                                  asked for more epochs


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Steps per epoch: full batches plus the last partial one (unless it would be one image,
    which BatchNorm cannot normalise in training mode)."""
    full, rest = divmod(n_train, batch_size)
    steps = full + (1 if rest >= 2 else 0)
    if steps == 0:
        raise TrainError(f"{n_train} training image(s) cannot make a batch of at least 2 images")
    return steps


@dataclass
class StepTrace:
    """One epoch's steps, read from the device once, at the end of the epoch (``on_steps``).

    ``iteration`` counts optimiser steps from 0 over the whole run; ``loss`` is each step's
    mean cross-entropy (nats), ``error`` the fraction of its batch misclassified, ``lr`` the
    rate it stepped with. After a resume within an epoch, the steps before the resume come
    from the checkpoint.
    """

    epoch: int  # 1-based, as in EpochRecord
    iteration: list[int]
    loss: list[float]
    error: list[float]
    lr: list[float]


@dataclass
class StepProgress:
    """Where an epoch is, handed to ``on_step`` after every step (one object, updated in place).

    Reading :meth:`running_loss` synchronises with the device; call it sparingly (a
    progress bar does, a few times a second).
    """

    epoch: int = 0  # 0-based
    step: int = 0  # 0-based, the step just taken
    steps: int = 0  # per epoch
    seen: int = 0  # images of this epoch so far
    loss_sum: object = None  # the device's running sum of loss * batch size

    def running_loss(self) -> float:
        """The epoch's mean training loss so far (nats)."""
        return float(self.loss_sum) / max(1, self.seen)  # type: ignore[arg-type]
