"""A residual network trained stage by stage, like a booster.

Friedman's gradient boosting (2001, Algorithm 1) builds ``F_M = F_0 + sum_m nu h_m``
one stage at a time: stage ``m`` is fitted to the negative gradient of the loss at
``F_{m-1}`` while every earlier stage stays as it was. A ResNet has the same
shape in feature space, ``x_{m+1} = act(shortcut(x_m) + F_m(x_m))``, but is
trained end to end. :func:`train_stagewise` trains it the boosting way:

    for m in 0 .. M-1:                                   # one block per stage
        freeze the stem and blocks 0..m-1 (no gradients; BN in eval mode)
        zero the last BN of block m, so F_m = 0: the model is the model so far
        minimise  CE(y, head(x_M^(m)))  over block m and the head (and the stem at m = 0)
        where x_M^(m) is the net with blocks m+1..M-1 deleted (each one's bypass:
        act(shortcut(x)), Veit et al. 2016's lesion)

The *model after m stages* is therefore exactly the final network with its
later blocks deleted, the lesion that :meth:`residuals.core.Stagewise.lesioned_states`
measures on every model: the stagewise net's staged curve, its lesions and its
stage contributions go through the same code as every other family.

The head is shared, not one per block. Relation to the two algorithms:

* Friedman's Algorithm 1: the earlier stages are frozen, and the new stage
  starts at zero, where the gradient that reaches its output is the loss's
  negative gradient at the model so far (the pseudo-residual, carried back
  through the head); SGD on the block then fits it, over several epochs rather
  than one least-squares fit. Re-fitting the head at every stage plays the role
  of the line search (``rho_m``), but as a matrix for every class and over the
  whole model's features, so it also re-weights what earlier stages built (a
  "totally corrective" step, which Algorithm 1 does not take).
* BoostResNet (Huang et al., ICML 2018): also trains one residual block at a
  time with earlier blocks frozen, but gives each block an auxiliary linear
  classifier of its own and fits it with a multi-class boosting loss that
  re-weights the training examples by the earlier blocks' margins
  ("telescoping sum boosting"); only the last classifier predicts. Here the
  loss is the network's own cross-entropy on unweighted examples, and one head
  serves every stage, so the trained net is an ordinary ResNet (same
  ``state_dict``) whose truncations are the staged models.

Stages train with the project's trainer (:func:`residuals.train.train`, one
call per stage, each with its own per-epoch checkpoint), so CUDA graphs, bf16
and CPU replicas work here as they do end to end.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from residuals.data import ImageData
from residuals.train.checkpoint import load_checkpoint
from residuals.train.config import TrainConfig
from residuals.train.loop import train

if TYPE_CHECKING:
    from residuals.nets.models import ResNet

__all__ = [
    "StageModel",
    "StageRecord",
    "StagewiseResult",
    "check_stagewise",
    "train_stagewise",
    "zero_branch",
]


class StageModel(nn.Module):
    """The network as stage ``m`` trains it: the stem and blocks ``< m`` frozen,
    block ``m`` trained, blocks ``> m`` deleted (bypassed), the shared head trained.

    Frozen parts stay in eval mode whatever ``train(mode)`` is asked (BatchNorm
    keeps its running statistics), take no gradients and run under ``no_grad``.
    ``state_dict`` is the whole network's (keys prefixed ``net.``).
    """

    def __init__(self, net: ResNet, m: int):
        super().__init__()
        if not 0 <= m < net.n_stages_:
            raise ValueError(
                f"stage {m} is not a block of {net.name or 'the net'} (0..{net.n_stages_ - 1})"
            )
        self.net, self.m = net, m
        trained = [net.blocks[m], net.head] + ([net.stem] if m == 0 else [])
        for p in net.parameters():
            p.requires_grad_(False)
        for module in trained:
            for p in module.parameters():
                p.requires_grad_(True)

    def frozen(self) -> list[nn.Module]:
        net = self.net
        return ([net.stem, *net.blocks[: self.m]] if self.m > 0 else []) + list(
            net.blocks[self.m + 1 :]
        )

    def train(self, mode: bool = True) -> StageModel:
        super().train(mode)
        for module in self.frozen():
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        with torch.no_grad() if self.m > 0 else contextlib.nullcontext():
            h = net.stem(x)
            for block in net.blocks[: self.m]:
                h = block(h)
        h = net.blocks[self.m](h)
        later: list[Any] = list(net.blocks[self.m + 1 :])
        for block in later:
            h = block.bypass(h)
        return net.head(h)


@dataclass
class StageRecord:
    """One stage of stagewise training: the model so far, measured after it."""

    stage: int  # 0-based block index
    epochs: int
    train_loss: float  # running values over the stage's last epoch
    train_error: float
    test_loss: float  # on the evaluation split, with blocks > stage deleted
    test_error: float
    seconds: float  # training time of the stage, evaluation excluded
    diverged: bool


@dataclass
class StagewiseResult:
    model: ResNet
    stages: list[StageRecord]
    diverged: bool  # a stage's loss went non-finite; later stages were not trained

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.stages)


def check_stagewise(net: ResNet) -> None:
    """Raise ``ValueError`` unless ``net`` can be trained stage by stage.

    Deleted later blocks must pass their input on without parameters, and a new
    block must start as its own bypass: a residual net with parameter-free
    shortcuts (option A) and a last layer to zero.
    """
    if not net.skip:
        raise ValueError(
            "stagewise training needs identity paths: a plain block cannot start "
            "as the identity, so build a residual net (skip=True)"
        )
    blocks: list[Any] = list(net.blocks)
    for i, block in enumerate(blocks):
        if block.shortcut is not None and any(True for _ in block.shortcut.parameters()):
            raise ValueError(
                f"block {i} has a projection shortcut (option B): a deleted later "
                "block would carry untrained parameters; use shortcut='A'"
            )


def train_stagewise(
    net: ResNet,
    data: ImageData,
    cfg: TrainConfig,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    on_stage: Callable[[StageRecord], None] | None = None,
) -> StagewiseResult:
    """Train ``net`` one block at a time (see the module docstring); return its stages.

    Parameters
    ----------
    net : a residual :class:`~residuals.nets.models.ResNet` with option-A shortcuts,
        initialised by the caller (seed it). Trained in place.
    data : as for :func:`residuals.train.train`.
    cfg : the recipe of *one stage*: ``cfg.epochs`` epochs per block, its own
        warm-up and schedule; stage ``m`` draws its data order from ``cfg.seed + m``.
    checkpoint_dir : per-stage checkpoints and ``stages.json`` (the finished
        stages' records); an interrupted run continues from them bit for bit (on
        the CPU). Only the last finished stage's checkpoint and the running one
        are kept.
    on_stage : called with each finished stage's :class:`StageRecord`.
    """
    check_stagewise(net)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    records = _load_records(folder)
    if folder is not None and records:  # the network after the last finished stage
        state = load_checkpoint(_stage_path(folder, len(records) - 1))["model"]
        StageModel(net, len(records) - 1).load_state_dict(state)
    for m in range(len(records), net.n_stages_):
        if records and records[-1].diverged:
            break
        path = _stage_path(folder, m) if folder is not None else None
        resume = path is not None and path.exists()
        if not resume:
            zero_branch(net.blocks[m])  # F_m = 0: the model so far
        result = train(
            StageModel(net, m),
            data,
            replace(cfg, seed=cfg.seed + m),
            checkpoint_path=path,
            resume=resume,
        )
        last = result.history[-1]
        record = StageRecord(
            stage=m,
            epochs=len(result.history),
            train_loss=last.train_loss,
            train_error=last.train_error,
            test_loss=last.test_loss,
            test_error=last.test_error,
            seconds=sum(r.seconds for r in result.history),
            diverged=result.diverged,
        )
        records.append(record)
        if folder is not None:
            _save_records(folder, records)
            if m > 0:
                _stage_path(folder, m - 1).unlink(missing_ok=True)
        if on_stage is not None:
            on_stage(record)
    for p in net.parameters():
        p.requires_grad_(True)
    return StagewiseResult(model=net, stages=records, diverged=any(r.diverged for r in records))


def zero_branch(block: Any) -> None:
    """Zero the last layer of ``block``'s residual function (weight and any bias), so
    that ``F(x) = 0`` and the block is its own bypass until it trains."""
    last: Any = block.last_layer()
    nn.init.zeros_(last.weight)
    if getattr(last, "bias", None) is not None:
        nn.init.zeros_(last.bias)


def _stage_path(folder: Path, m: int) -> Path:
    return folder / f"stage{m:03d}.pt"


def _load_records(folder: Path | None) -> list[StageRecord]:
    if folder is None or not (folder / "stages.json").is_file():
        return []
    with open(folder / "stages.json") as f:
        return [StageRecord(**r) for r in json.load(f)]


def _save_records(folder: Path, records: list[StageRecord]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "stages.json.tmp"
    tmp.write_text(json.dumps([asdict(r) for r in records], indent=1))
    os.replace(tmp, folder / "stages.json")
