"""Horizontal fusion: N nets of one architecture as one model (HFTA).

Wang et al. 2021 ("Horizontally Fused Training Array", MLSys) train many jobs
of the same model as one: every convolution of the N members becomes one
grouped convolution, every BatchNorm one BatchNorm over the members' channels
(so each member keeps its own statistics), every linear layer one batched
matrix product. Small nets that leave a GPU idle one at a time then fill it.

Layout. Member ``n``'s activations are channels ``n*C .. (n+1)*C - 1`` of one
``(B, N*C, H, W)`` tensor, and member ``n`` sees only its own mini-batch: the
input is ``(N, B, C, H, W)``, one batch per member (or ``(B, C, H, W)``, the
same batch for all, as in evaluation). A grouped convolution with ``N``
groups computes

    y[:, n*Co:(n+1)*Co] = conv(x[:, n*Ci:(n+1)*Ci], W_n)

so no member reads another's parameters or images, and BatchNorm's per-channel
statistics over ``(B, H, W)`` are each member's own. Every parameter is
stored with a leading member axis, ``(N, *shape)``, under the name it has in a
:class:`~residuals.nets.models.ResNet`: ``state_dict()[k][n]`` is member ``n``'s
``state_dict()[k]`` (:meth:`FusedResNet.member_state_dict`).

Plain and residual members. A plain block is its residual twin without the
addition, so members of one depth may differ in ``skip``. With option-A
(parameter-free) shortcuts a block computes

    out = act(F(x) + g * shortcut(x)),   g = 1 on a residual member's channels, 0 on a plain one's

and ``F(x) + 0 * s == F(x)`` exactly for finite ``s``: the plain member gets
its own forward and (as the gate's zeros stop the shortcut's gradient) its own
backward.

Losses. The fused forward returns ``(N, B, classes)`` logits; training on the
*sum* of the members' mean losses gives each member exactly the gradient of its
own loss, since no parameter is shared.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from residuals.nets.blocks import ShortcutA, _Block
from residuals.nets.models import ClassifierHead, ConvHead, ResNet, SpatialMean

__all__ = [
    "FusedBatchNorm2d",
    "FusedBlock",
    "FusedConv2d",
    "FusedLinear",
    "FusedResNet",
    "FusedShortcutA",
    "FusionError",
    "fusable",
]


class FusionError(ValueError):
    """The models cannot be fused; the message says what differs."""


def _stack(tensors: Sequence[Any]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors])


class FusedConv2d(nn.Module):
    """N ``nn.Conv2d`` of one shape as one grouped convolution.

    ``weight``: ``(N, out, in / groups, kh, kw)``. Shapes: ``(B, N*in, H, W) -> (B, N*out, H', W')``.
    """

    def __init__(self, convs: Sequence[nn.Conv2d]):
        super().__init__()
        c = convs[0]
        self.n = len(convs)
        self.in_channels, self.out_channels = c.in_channels, c.out_channels
        self.stride, self.padding, self.dilation = c.stride, c.padding, c.dilation
        self.groups = c.groups * self.n
        self.weight = nn.Parameter(_stack([m.weight for m in convs]))
        self.bias = nn.Parameter(_stack([m.bias for m in convs])) if c.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.flatten(0, 1)
        b = self.bias.flatten() if self.bias is not None else None
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return (
            f"members={self.n}, {self.in_channels}, {self.out_channels}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class FusedBatchNorm2d(nn.Module):
    """N ``nn.BatchNorm2d`` of ``C`` channels as one over ``N*C``: each member's own statistics.

    Parameters and running statistics are ``(N, C)``; ``num_batches_tracked`` is ``(N,)``.
    """

    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

    def __init__(self, norms: Sequence[nn.BatchNorm2d]):
        super().__init__()
        b = norms[0]
        if not (b.affine and b.track_running_stats) or b.momentum is None:
            raise FusionError(
                "fusing BatchNorm needs affine=True, track_running_stats=True and "
                "a momentum (not the cumulative average)"
            )
        self.n, self.num_features = len(norms), b.num_features
        self.eps, self.momentum = b.eps, float(b.momentum)
        self.weight = nn.Parameter(_stack([m.weight for m in norms]))
        self.bias = nn.Parameter(_stack([m.bias for m in norms]))
        self.register_buffer("running_mean", _stack([m.running_mean for m in norms]))
        self.register_buffer("running_var", _stack([m.running_var for m in norms]))
        self.register_buffer("num_batches_tracked", _stack([m.num_batches_tracked for m in norms]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.num_batches_tracked.add_(1)
        # flatten() of the contiguous (N, C) buffers is a view: the running statistics are
        # updated in place, member n's in row n
        return F.batch_norm(
            x,
            self.running_mean.flatten(),
            self.running_var.flatten(),
            self.weight.flatten(),
            self.bias.flatten(),
            self.training,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return f"members={self.n}, {self.num_features}, eps={self.eps}, momentum={self.momentum}"


class FusedLinear(nn.Module):
    """N ``nn.Linear`` as one batched matrix product. Shapes: ``(B, N*in) -> (N, B, out)``."""

    def __init__(self, linears: Sequence[nn.Linear]):
        super().__init__()
        first = linears[0]
        if first.bias is None:
            raise FusionError("fusing a linear layer needs a bias (every ResNet head has one)")
        self.n, self.in_features, self.out_features = (
            len(linears),
            first.in_features,
            first.out_features,
        )
        self.weight = nn.Parameter(_stack([m.weight for m in linears]))  # (N, out, in)
        self.bias = nn.Parameter(_stack([m.bias for m in linears]))  # (N, out)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.reshape(h.shape[0], self.n, self.in_features).transpose(0, 1)  # (N, B, in)
        return torch.baddbmm(self.bias.unsqueeze(1), h, self.weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"members={self.n}, {self.in_features}, {self.out_features}"


class FusedShortcutA(nn.Module):
    """Option-A shortcut (subsample, zero-pad the new channels) of each member's channel group."""

    def __init__(self, shortcut: ShortcutA, n: int):
        super().__init__()
        self.n, self.in_ch, self.stride = n, shortcut.in_ch, shortcut.stride
        self.pad_before, self.pad_after = shortcut.pad_before, shortcut.pad_after

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        x = x.unflatten(1, (self.n, self.in_ch))  # (B, N, C, H, W)
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after)).flatten(1, 2)


class FusedBlock(nn.Module):
    """N blocks: ``act(F(x) + g * shortcut(x))`` with the gate ``g`` per member (1 residual, 0 plain)."""

    def __init__(self, blocks: Sequence[Any]):
        super().__init__()
        first = blocks[0]
        self.n, self.out_ch = len(blocks), first.out_ch
        skips = [b.skip for b in blocks]
        self.branch = _fuse([b.branch for b in blocks])
        self.act = _fuse([b.act for b in blocks])
        with_shortcut = [b for b in blocks if b.skip]
        self.all_skip, self.any_skip = all(skips), any(skips)
        if self.any_skip:
            if not self.all_skip and any(
                next(b.shortcut.parameters(), None) is not None for b in with_shortcut
            ):
                raise FusionError(
                    "plain and residual members can share a fused model only with "
                    "parameter-free (option A) shortcuts"
                )
            self.shortcut = _fuse([b.shortcut for b in with_shortcut], n=self.n)
        gate = torch.tensor(skips, dtype=torch.float32).repeat_interleave(self.out_ch)
        self.register_buffer("gate", gate.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.all_skip:
            out = out + self.shortcut(x)
        elif self.any_skip:
            out = out + self.shortcut(x) * self.gate.to(out.dtype)
        return self.act(out)


_STATELESS = (
    nn.ReLU,
    nn.ELU,
    nn.GELU,
    nn.Identity,
    nn.MaxPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Flatten,
    SpatialMean,
)
# the same container, children fused (ShortcutB is a Sequential: its names are kept)
_CONTAINERS = (nn.Sequential, ClassifierHead, ConvHead)


def _fuse(modules: Sequence[Any], *, n: int | None = None) -> nn.Module:
    """The fused counterpart of ``modules`` (one per member, the same type and shapes)."""
    first = modules[0]
    n = len(modules) if n is None else n
    kinds = {type(m) for m in modules}
    if len(kinds) != 1:
        raise FusionError(f"members differ in layer type: {sorted(k.__name__ for k in kinds)}")
    if isinstance(first, nn.Conv2d):
        shapes = {(m.weight.shape, m.stride, m.padding, m.dilation, m.groups) for m in modules}
        if len(shapes) != 1:
            raise FusionError(f"members' convolutions differ: {sorted(map(str, shapes))}")
        return FusedConv2d(modules)
    if isinstance(first, nn.BatchNorm2d):
        return FusedBatchNorm2d(modules)
    if isinstance(first, nn.Linear):
        return FusedLinear(modules)
    if isinstance(first, ShortcutA):
        return FusedShortcutA(first, n)
    if isinstance(first, _Block):
        return FusedBlock(modules)
    if isinstance(first, _STATELESS):
        return copy.deepcopy(first)
    if isinstance(first, _CONTAINERS):  # the same container, its children fused
        fused = copy.copy(first)
        fused._modules = {
            name: _fuse([m._modules[name] for m in modules], n=n) for name in first._modules
        }
        return fused
    raise FusionError(f"cannot fuse a {type(first).__name__}")


def fusable(configs: Sequence) -> str | None:
    """Why ResNet configs ``configs`` cannot share a fused model, or None if they can.

    They can when they are equal but for ``skip`` and ``name``; members that differ
    in ``skip`` need option-A shortcuts (or none at all).
    """
    first = replace(configs[0], skip=True, name="", zero_init_residual=False)
    for c in configs[1:]:
        if replace(c, skip=True, name="", zero_init_residual=False) != first:
            return f"architectures differ: {configs[0]} vs {c}"
    skips = {c.skip for c in configs}
    if len(skips) > 1 and first.shortcut != "A":
        return "plain and residual members need option-A shortcuts to share a fused model"
    return None


class FusedResNet(nn.Module):
    """N :class:`ResNet` members of one architecture (``skip`` may differ) trained as one model.

    Parameters
    ----------
    models : the members, in order; their current weights and BatchNorm statistics
        become the fused model's (the models themselves are not modified or kept).

    Attributes
    ----------
    n : int
        The number of members.
    configs : tuple of ResNetConfig
        Each member's architecture (they differ at most in ``skip``).
    channels_last : bool
        Whether :meth:`fuse_input` lays the activations out channels_last (NHWC).

    Shapes: ``forward``: ``(N, B, C, H, W)`` (a batch per member) or ``(B, C, H, W)`` (one
    batch for all) ``-> (N, B, num_classes)`` logits.
    """

    def __init__(self, models: Sequence[ResNet]):
        super().__init__()
        if not models:
            raise FusionError("give at least one model to fuse")
        if not all(isinstance(m, ResNet) for m in models):
            raise FusionError(
                "only residuals.nets.ResNet models (and their plain twins) can be fused"
            )
        why = fusable([m.config for m in models])
        if why:
            raise FusionError(why)
        self.configs = tuple(m.config for m in models)
        self.n = len(models)
        self.in_channels = models[0].config.in_channels
        self.stem = _fuse([m.stem for m in models])
        self.blocks = nn.ModuleList(
            FusedBlock([m.blocks[i] for m in models]) for i in range(len(models[0].blocks))
        )
        self.head = _fuse([m.head for m in models])
        self.channels_last = False  # the activations' memory format (set by the trainer)
        device = next(models[0].parameters()).device
        self.to(device)

    def fuse_input(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, B, C, H, W)`` or ``(B, C, H, W)`` images -> the fused layout ``(B, N*C, H, W)``,
        channels_last if :attr:`channels_last` (one copy either way)."""
        if x.dim() == 4:
            x = x.unsqueeze(0).expand(self.n, *x.shape)
        if x.dim() != 5 or x.shape[0] != self.n or x.shape[2] != self.in_channels:
            raise ValueError(
                f"a fused model of {self.n} members expects images of shape "
                f"({self.n}, B, {self.in_channels}, H, W) or (B, {self.in_channels}, "
                f"H, W), got {tuple(x.shape)}"
            )
        n, b, c, h, w = x.shape
        if self.channels_last:  # (B, H, W, N, C) in memory
            return x.permute(1, 3, 4, 0, 2).reshape(b, h, w, n * c).permute(0, 3, 1, 2)
        return x.transpose(0, 1).reshape(b, n * c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(self.fuse_input(x))
        for block in self.blocks:
            h = block(h)
        logits = self.head(h)  # (N, B, K) from a linear head; (B, N*K) from a conv head
        return logits if logits.dim() == 3 else logits.unflatten(1, (self.n, -1)).transpose(0, 1)

    # ------------------------------------------------------------------ members
    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k``'s weights and statistics, as its own :class:`ResNet`'s ``state_dict``."""
        return {name: t[k].clone() for name, t in self.state_dict().items()}

    def load_member_state_dict(self, k: int, state: dict[str, torch.Tensor]) -> None:
        """Put a :class:`ResNet` ``state_dict`` into member ``k`` (keys and shapes must match)."""
        own = self.state_dict(keep_vars=True)
        missing, unexpected = (
            sorted(set(own) - set(state)),
            sorted(set(state) - set(own)),
        )
        if missing or unexpected:
            raise FusionError(
                f"member state does not fit: missing {missing}, unexpected {unexpected}"
            )
        with torch.no_grad():
            for name, t in own.items():
                t[k].copy_(state[name])

    def member(self, k: int) -> ResNet:
        """Member ``k`` as a stand-alone :class:`ResNet` (a copy, on the fused model's device)."""
        model = ResNet(self.configs[k])
        model.load_state_dict(self.member_state_dict(k))
        return model.to(next(self.parameters()).device)

    def extra_repr(self) -> str:
        skips = "".join("R" if c.skip else "P" for c in self.configs)
        return f"members={self.n} ({skips}), depth={self.configs[0].depth}"
