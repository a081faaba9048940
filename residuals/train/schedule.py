"""The learning-rate schedule: a per-iteration table on the device (cosine, step or constant,
linear or paper warm-up), so the training loop never waits for the host to set a rate."""

from __future__ import annotations

import math

import torch

from residuals.train.config import (
    PAPER_WARMUP_ERROR,
    PAPER_WARMUP_FACTOR,
    STEP_FACTOR,
    STEP_MILESTONES,
    TrainConfig,
)

__all__ = ["LRSchedule"]


class LRSchedule:
    """Per-iteration learning rate, kept in a device tensor that the optimiser reads.

    ``at(it, warmed)`` is the closed form, ``it`` counting from 0:

    * linear warm-up over ``W = round(warmup_epochs * steps_per_epoch)``
      iterations: ``lr * (it + 1) / W`` for ``it < W``;
    * cosine: ``lr * (1 + cos(pi * (it - W) / (T - W))) / 2`` for ``it >= W``
      (``T`` total iterations), the peak at ``W`` and near 0 at ``T - 1``;
    * step: ``lr * 0.1**k``, ``k`` the number of milestones (50% and 75% of
      ``T``) reached, times the linear warm-up factor;
    * constant: ``lr`` (d2l's ``train_ch6``), times the linear warm-up factor;
    * paper warm-up (He et al. 2015, sec. 4.2): the schedule above with no
      linear ramp, times 0.1 until the running training error of the current
      epoch first falls below 80%, and times 1 from the next iteration on.

    The paper's switch is evaluated on the device (:meth:`observe`), so it
    costs no synchronisation.

    ``T`` is ``cfg.epochs`` times the steps per epoch. A run resumed with more epochs
    builds its schedule for the new total: the iterations already taken keep the rates
    they had, the rest follow the new plan (constant stays constant; the cosine is the
    cosine over the new ``T``, so the rate steps up at the resume to where that longer
    curve is; the step milestones move to 50% and 75% of the new ``T``). The trainer
    records each plan in the checkpoint and in :attr:`TrainResult.plans`.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, device: str | torch.device = "cpu"):
        self.cfg = cfg
        self.total = cfg.epochs * steps_per_epoch
        self.warmup_iters = (
            min(self.total - 1, max(1, round(cfg.warmup_epochs * steps_per_epoch)))
            if cfg.warmup == "linear" and cfg.warmup_epochs > 0
            else 0
        )
        self.milestones = tuple(round(f * self.total) for f in STEP_MILESTONES)
        self.paper = cfg.warmup == "paper"
        self.table = torch.tensor(
            [self.at(i) for i in range(self.total)], dtype=torch.float32, device=device
        )
        self.lr = torch.zeros((), dtype=torch.float32, device=device)  # read by the optimiser
        self.warmed = torch.tensor(not self.paper, device=device)
        self.switch_iteration = torch.tensor(-1, dtype=torch.int64, device=device)

    def at(self, it: int, warmed: bool = True) -> float:
        """Learning rate of iteration ``it`` (0-based), in closed form."""
        cfg, w, t = self.cfg, self.warmup_iters, self.total
        if cfg.schedule == "cosine":
            lr = cfg.lr if it < w else cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (it - w) / (t - w)))
        elif cfg.schedule == "constant":
            lr = cfg.lr
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
        self.switch_iteration.fill_(int(state["switch_iteration"]))  # type: ignore[call-overload]
