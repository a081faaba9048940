"""The optimisers the trainer offers, built so that the loop never waits for the host.

``TrainConfig.optimizer``:

* ``"sgd"``: SGD with momentum ``momentum`` and L2 weight decay ``weight_decay`` added to
  the gradient (He et al. 2015, Sec. 3.4: momentum 0.9, decay 1e-4; d2l's ``train_ch6``:
  no momentum, no decay);
* ``"adam"``: Adam (Kingma and Ba 2015) with ``betas = (momentum, 0.999)`` and
  ``eps = 1e-8``, TensorFlow's ``AdamOptimizer`` defaults (seed 000) when ``momentum`` is
  0.9; ``weight_decay`` is added to the gradient (L2), as PyTorch's Adam does;
* ``"adamw"``: Adam with decoupled weight decay (Loshchilov and Hutter 2019): each step
  shrinks the weights by ``lr * weight_decay``.

The learning rate is the schedule's device tensor (:class:`~residuals.train.LRSchedule`),
set into every parameter group, so no step reads it on the host: SGD uses the fused kernel
on CUDA and the foreach one on the CPU (as before Adam was offered, so SGD runs are the
same); Adam and AdamW use the fused kernels, whose step counters live on the device (safe
to capture in a CUDA graph).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from residuals.train.config import OPTIMIZERS

__all__ = ["ADAM_BETA2", "ADAM_EPS", "OPTIMIZERS", "make_optimizer"]

ADAM_BETA2 = 0.999  # Kingma and Ba 2015; TensorFlow's and PyTorch's default
ADAM_EPS = 1e-8


def make_optimizer(
    params: Iterable[torch.nn.Parameter],
    name: str,
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
    cuda: bool,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (one of :data:`OPTIMIZERS`) over ``params`` (see the module
    docstring for what ``momentum`` and ``weight_decay`` mean for each)."""
    if name == "sgd":
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            fused=cuda or None,
            foreach=None if cuda else True,
        )
    if name in ("adam", "adamw"):
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(
            params,
            lr=lr,
            betas=(momentum, ADAM_BETA2),
            eps=ADAM_EPS,
            weight_decay=weight_decay,
            fused=True,
        )
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")
