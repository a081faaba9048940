"""Helpers shared by the trainer's tests (test_train.py, test_replicas.py): a small model and
comparisons of histories and weights. Their fixtures (``digits``, ``one_thread``) are in conftest.py."""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from residuals.train import EpochRecord

TIMING = {"seconds", "images_per_s"}


def small_cnn(seed: int = 0) -> nn.Module:
    """Two conv-BatchNorm-ReLU layers and a linear head, for 1-channel images."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def stop_after(epoch: int):
    """An ``on_epoch`` that interrupts training (as Ctrl-C does) once ``epoch`` is recorded."""

    def on_epoch(record: EpochRecord) -> None:
        if record.epoch == epoch:
            raise KeyboardInterrupt

    return on_epoch


def untimed(history: list[EpochRecord]) -> list[dict]:
    return [{k: v for k, v in asdict(r).items() if k not in TIMING} for r in history]


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def host_reads(monkeypatch) -> list[str]:
    """A list that collects the name of every read of a tensor's value from Python (``item``,
    ``tolist``, ``bool``, ...): each one waits for the device."""
    reads: list[str] = []
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            reads.append(_name)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    return reads
