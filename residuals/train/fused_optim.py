"""Per-member optimisation state of a fused model: SGD and learning-rate schedules as vectors.

:class:`MemberSGD` is ``torch.optim.SGD`` (momentum, weight decay, dampening 0)
with a learning rate, momentum and weight decay per member; :class:`MemberSchedules`
holds every member's :class:`residuals.train.LRSchedule` table and the paper
warm-up's per-member switch. Both stay on the device: no host read per step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from residuals.nets.fused import FusedResNet
from residuals.train.config import PAPER_WARMUP_ERROR, PAPER_WARMUP_FACTOR, TrainConfig
from residuals.train.schedule import LRSchedule

__all__ = ["MemberSGD", "MemberSchedules"]


# --------------------------------------------------------------------------- per-member SGD
class MemberSGD:
    """SGD with momentum and weight decay, each a vector over the members, on one flat buffer.

    For member ``n`` with learning rate ``lr_n``, momentum ``mu_n`` and weight decay ``wd_n``
    (torch.optim.SGD's update, dampening 0, no Nesterov)::

        g = grad + wd_n * p;   buf = mu_n * buf + g;   p = p - lr_n * buf

    Every parameter of the fused model, ``(N, *shape)``, is a view of one flat buffer, and so
    is its gradient; the update is five element-wise operations over all of them, the
    per-member rates gathered once per step by a member index. A frozen member (``active``
    0) has its rate masked to 0 and its parameters and momentum zeroed.
    """

    def __init__(self, model: FusedResNet, cfgs: Sequence[TrainConfig]):
        params = list(model.parameters())
        dev = params[0].device
        self.n = model.n
        self.shapes = [p.shape[1:] for p in params]
        # convolution weights are laid out (out, kh, kw, in) when the activations are
        # channels_last, so that the grouped kernel reads channels_last weights, as one net does
        self.nhwc = [bool(model.channels_last) and len(shape) == 4 for shape in self.shapes]
        sizes = [p.numel() for p in params]
        self.flat = torch.cat(
            [
                (p.detach().permute(0, 1, 3, 4, 2) if nhwc else p.detach()).reshape(-1)
                for p, nhwc in zip(params, self.nhwc)
            ]
        )
        self.grad = torch.zeros_like(self.flat)
        self.buf = torch.zeros_like(self.flat)
        self.views: list[tuple[int, int]] = []  # (offset, numel per member) of each parameter
        offset = 0
        for i, (p, size) in enumerate(zip(params, sizes)):
            p.data = self._logical(self.flat[offset : offset + size], i, (self.n,))
            p.grad = self._logical(self.grad[offset : offset + size], i, (self.n,))
            self.views.append((offset, size // self.n))
            offset += size
        self.member_index = torch.cat(
            [torch.arange(self.n, device=dev).repeat_interleave(size // self.n) for size in sizes]
        )
        self.momentum = torch.tensor([c.momentum for c in cfgs], dtype=self.flat.dtype, device=dev)
        self.weight_decay = torch.tensor(
            [c.weight_decay for c in cfgs], dtype=self.flat.dtype, device=dev
        )
        self._per_element()

    def _logical(self, segment: torch.Tensor, i: int, lead: tuple[int, ...]) -> torch.Tensor:
        """Parameter ``i``'s ``segment`` of a flat buffer as a tensor of shape ``(*lead, *shape)``."""
        shape = self.shapes[i]
        if not self.nhwc[i]:
            return segment.view(*lead, *shape)
        out, inp, kh, kw = shape
        k = len(lead)
        return segment.view(*lead, out, kh, kw, inp).permute(*range(k), k, k + 3, k + 1, k + 2)

    def _per_element(self) -> None:
        self.momentum_e = self.momentum[self.member_index]
        self.weight_decay_e = self.weight_decay[self.member_index]

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the gradients in place (they are views of one buffer: never set to None)."""
        self.grad.zero_()

    def step(self, lr: torch.Tensor) -> None:
        """One update with the members' learning rates ``lr`` (``(N,)``, on the device)."""
        g = torch.addcmul(self.grad, self.weight_decay_e, self.flat)
        self.buf.mul_(self.momentum_e).add_(g)
        self.flat.sub_(lr[self.member_index] * self.buf)

    def member_slices(self, buffer: torch.Tensor, k: int) -> list[torch.Tensor]:
        """Member ``k``'s part of ``buffer`` (flat, e.g. :attr:`buf`), one tensor per parameter."""
        return [
            self._logical(buffer[o + k * size : o + (k + 1) * size], i, ())
            for i, (o, size) in enumerate(self.views)
        ]

    def load_momentum(self, k: int, buffers: Sequence[torch.Tensor]) -> None:
        for dst, src in zip(self.member_slices(self.buf, k), buffers, strict=True):
            dst.copy_(src)

    def freeze(self, k: int) -> None:
        """Member ``k`` stops training: rate masked (by the caller), state zeroed."""
        for buffer in (self.flat, self.buf):
            for t in self.member_slices(buffer, k):
                t.zero_()
        self.momentum[k] = 0.0
        self.weight_decay[k] = 0.0
        self._per_element()

    def state_dict(self, k: int, cfg: TrainConfig, lr: float) -> dict:
        """Member ``k``'s optimiser state in ``torch.optim.SGD.state_dict()`` form, as the
        one-net trainer checkpoints it."""
        buffers = [t.clone() for t in self.member_slices(self.buf, k)]
        group = {
            "lr": lr,
            "momentum": cfg.momentum,
            "dampening": 0,
            "weight_decay": cfg.weight_decay,
            "nesterov": False,
            "maximize": False,
            "foreach": None,
            "differentiable": False,
            "fused": None,
            "params": list(range(len(buffers))),
        }
        return {
            "state": {i: {"momentum_buffer": b} for i, b in enumerate(buffers)},
            "param_groups": [group],
        }


# --------------------------------------------------------------------------- per-member schedules
class MemberSchedules:
    """The members' :class:`LRSchedule` tables side by side, ``(N, iterations)``, and the
    paper warm-up's switch as a vector: member ``n`` runs at ``lr / 10`` until the running
    training error of its current epoch first falls below 80%. All on the device."""

    def __init__(
        self,
        cfgs: Sequence[TrainConfig],
        steps: int,
        device: str,
        states: Sequence[dict | None],
    ):
        schedules = [LRSchedule(c, steps, device) for c in cfgs]
        self.table = torch.stack([s.table for s in schedules])
        self.paper = torch.tensor([s.paper for s in schedules], device=device)
        self.warmed = ~self.paper
        self.switch_iteration = torch.full((len(cfgs),), -1, dtype=torch.int64, device=device)
        for k, state in enumerate(states):
            if state is not None:
                self.warmed[k] = bool(state["warmed"])
                self.switch_iteration[k] = int(state["switch_iteration"])
        self.active = torch.ones(len(cfgs), dtype=self.table.dtype, device=device)
        self.lr = torch.zeros(len(cfgs), dtype=self.table.dtype, device=device)

    def set(self, it: int) -> torch.Tensor:
        """Write iteration ``it``'s rates into :attr:`lr` (device ops only) and return it."""
        factor = torch.where(self.warmed, 1.0, PAPER_WARMUP_FACTOR)
        torch.mul(self.table[:, it] * factor, self.active, out=self.lr)
        return self.lr

    def observe(self, it: int, errors: torch.Tensor, seen: int) -> None:
        below = errors < PAPER_WARMUP_ERROR * seen
        first = below & ~self.warmed
        self.switch_iteration.copy_(torch.where(first, it + 1, self.switch_iteration))
        self.warmed |= below

    def state_dict(self, k: int) -> dict[str, object]:
        return {
            "warmed": bool(self.warmed[k]),
            "switch_iteration": int(self.switch_iteration[k]),
        }
