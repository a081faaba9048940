"""Residual blocks and their plain twins.

He et al. 2015, "Deep Residual Learning for Image Recognition", eq. (1)-(2)::

    y = act(F(x, {W_i}) + shortcut(x))

Every block here is written so that this equation is visible in ``forward``:
``self.branch`` is the residual function ``F`` (ending in its last BN for the
post-activation blocks), ``self.shortcut`` is the identity path and
``self.skip`` switches that path on or off. A *plain* block (``skip=False``) is
the same block with the identity path removed, nothing else: same branch, same
parameters (with option A), same activation. That is the paper's "plain"
baseline of Fig. 4 and Table 2.

Shortcuts where the shape changes (Sec. 3.3):

* option ``"A"``: :class:`ShortcutA`, subsample by the stride and zero-pad the
  new channels. No parameters, so a residual net and its plain twin have the
  same parameter count (the paper's CIFAR-10 nets, Sec. 4.2);
* option ``"B"``: :class:`ShortcutB`, a 1x1 convolution with the stride plus BN
  (the paper's ImageNet nets; d2l's ``use_1x1conv``).

Where the shape does not change the shortcut is ``nn.Identity`` under both
options. A plain block has no shortcut at all (``self.shortcut is None``).

Pre-activation blocks (He et al. 2016, "Identity Mappings in Deep Residual
Networks", Fig. 4(e)) move BN and ReLU in front of each convolution, so that
nothing follows the addition (``self.act`` is ``nn.Identity``).

The activation is an option of every block, ``activation="relu" | "elu" |
"gelu"`` (:data:`ACTIVATIONS`): ReLU is the papers' choice; ELU (Clevert et al.
2016) is what the TensorFlow article this project grew from uses in its
BN-ELU-conv blocks; GELU (Hendrycks and Gimpel 2016) is today's common choice.

All modules are ordinary ``nn.Module`` trees (no lambdas, no closures): models
pickle, deep-copy, ``torch.compile`` and load each other's ``state_dict``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "BLOCKS",
    "SHORTCUTS",
    "BasicBlock",
    "BottleneckBlock",
    "PreActBlock",
    "PreActBottleneckBlock",
    "ShortcutA",
    "ShortcutB",
    "bn_relu_conv",
    "conv1x1",
    "conv3x3",
    "conv_bn",
    "make_activation",
    "make_shortcut",
    "pad_shortcut",
]

SHORTCUTS = ("A", "B")

#: Activation functions by the name blocks, configs and the command line use.
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def make_activation(name: str, *, inplace: bool = False) -> nn.Module:
    """A fresh activation module; ``inplace`` where the input is a fresh tensor no one else reads
    (GELU has no in-place form)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {name!r}")
    cls = ACTIVATIONS[name]
    return cls(inplace=inplace) if cls is not nn.GELU else cls()


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BN always follows or precedes it)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=1, stride=stride, bias=False)


def conv_bn(conv: nn.Conv2d, *, relu: bool, activation: str = "relu") -> list[nn.Module]:
    """Post-activation unit: ``conv``, BN (and, when ``relu``, the activation, in place on
    BN's fresh output)."""
    layers = [conv, nn.BatchNorm2d(conv.out_channels)]
    return layers + [make_activation(activation, inplace=True)] if relu else layers


def bn_relu_conv(conv: nn.Conv2d, activation: str = "relu") -> list[nn.Module]:
    """Pre-activation unit (He et al. 2016): BN, the activation (ReLU), then ``conv``."""
    return [nn.BatchNorm2d(conv.in_channels), make_activation(activation, inplace=True), conv]


def pad_shortcut(x: torch.Tensor, out_ch: int, stride: int) -> torch.Tensor:
    """Option A's map: every ``stride``-th pixel, then zero channels up to ``out_ch``
    (half before, half after the input's, as in the reference CIFAR code)."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = out_ch - x.shape[1]
    # F.pad pads the last dims first: (W_lo, W_hi, H_lo, H_hi, C_lo, C_hi).
    return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2)) if extra else x


class ShortcutA(nn.Module):
    """Option A: parameter-free identity with zero-padding (He et al. 2015, Sec. 3.3).

    Subsamples by ``stride`` (takes every ``stride``-th pixel, as a strided 1x1
    identity would) and appends ``out_ch - in_ch`` zero channels, split evenly
    before and after the input channels as in the reference CIFAR code.

    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, ceil(H / stride), ceil(W / stride))``.
    Memory format and dtype of the input are preserved (``F.pad`` keeps
    channels_last), and there is no Python loop over channels.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        if out_ch < in_ch:
            raise ValueError(
                f"option A shortcut can only add channels (zero-padding), got in_ch={in_ch} > "
                f"out_ch={out_ch}; use shortcut='B' (1x1 projection) to reduce channels"
            )
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        extra = out_ch - in_ch
        self.pad_before, self.pad_after = extra // 2, extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pad_shortcut(x, self.out_ch, self.stride)

    def extra_repr(self) -> str:
        return f"{self.in_ch}, {self.out_ch}, stride={self.stride}"


class ShortcutB(nn.Sequential):
    """Option B: projection ``W_s x`` as a 1x1 convolution with stride, then BN (eq. 2)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv = conv1x1(in_ch, out_ch, stride)
        self.bn = nn.BatchNorm2d(out_ch)


def make_shortcut(in_ch: int, out_ch: int, stride: int, option: str) -> nn.Module:
    """The identity path of a residual block: ``nn.Identity`` unless the shape changes."""
    if option not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {option!r}")
    if in_ch == out_ch and stride == 1:
        return nn.Identity()
    if option == "A":
        return ShortcutA(in_ch, out_ch, stride)
    return ShortcutB(in_ch, out_ch, stride)


class _Block(nn.Module):
    """Common forward of every block: ``act(F(x) + shortcut(x))``, or ``act(F(x))`` when plain.

    Subclasses set ``self.branch`` (the residual function ``F``) and
    ``self.act``; this class sets ``self.shortcut`` and ``self.skip``.

    Attributes
    ----------
    in_ch, out_ch, stride : int
        Input channels, output channels and stride of the block (the spatial
        size shrinks by ``stride``).
    skip : bool
        Whether the identity path is there (residual) or not (plain).
    shortcut : nn.Module or None
        ``nn.Identity``, :class:`ShortcutA` or :class:`ShortcutB`; ``None`` in
        a plain block (no identity path, no projection parameters).
    """

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int,
        skip: bool,
        shortcut: str,
        activation: str = "relu",
    ):
        super().__init__()
        self.activation = activation
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        if out_ch % self.expansion:
            raise ValueError(
                f"{type(self).__name__} out_ch must be a multiple of its expansion "
                f"{self.expansion}, got {out_ch}"
            )
        # Validate the option even for plain blocks, so that a typo never passes silently.
        if shortcut not in SHORTCUTS:
            raise ValueError(
                f"shortcut must be one of {SHORTCUTS} ('A': zero-padding, "
                f"'B': 1x1 projection), got {shortcut!r}"
            )
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.skip = bool(skip)
        self.shortcut_option = shortcut
        self.shortcut = make_shortcut(in_ch, out_ch, stride, shortcut) if self.skip else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.branch(x)
        if self.skip:
            out = out + self.shortcut(x)
        return self.act(out)

    def bypass(self, x: torch.Tensor) -> torch.Tensor:
        """The block deleted at test time (Veit et al. 2016): what passes on without ``F``.

        A residual block keeps its identity path, ``act(shortcut(x))``; where the shape
        changes that is the shortcut it was trained with (option A's subsample and zero
        channels, or option B's projection), as Veit et al. keep the downsampling
        blocks' shortcuts. A plain block has no path to keep, so it is taken out of the
        chain: ``x`` goes on unchanged where the shape allows, else through the
        parameter-free option-A map its residual twin would use (subsample, zero
        channels), then ``act``. (``act(x) == x`` after a post-activation block's ReLU.)
        """
        if self.skip:
            return self.act(self.shortcut(x))
        if self.out_ch < self.in_ch:
            raise ValueError(
                f"a plain {type(self).__name__} from {self.in_ch} to {self.out_ch} "
                "channels cannot be bypassed without parameters"
            )
        return self.act(pad_shortcut(x, self.out_ch, self.stride))

    def last_layer(self) -> nn.Module:
        """The branch's last layer: its last BN (post-activation) or conv (pre-activation).

        Its output is the residual function's output ``F(x)``; ``zero_init_residual``
        zeroes its weight so that every residual block starts as the identity.
        """
        return self.branch[-1]

    def extra_repr(self) -> str:
        return f"skip={self.skip}, shortcut={self.shortcut_option!r}"


class BasicBlock(_Block):
    """Two 3x3 convolutions (He et al. 2015, Fig. 2 / Fig. 5 left).

    ``branch = conv3x3(stride)-BN-ReLU-conv3x3-BN``; output ``ReLU(branch(x) + shortcut(x))``.

    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, H / stride, W / stride)``.
    """

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        skip: bool = True,
        shortcut: str = "A",
        activation: str = "relu",
    ):
        super().__init__(in_ch, out_ch, stride, skip, shortcut, activation)
        act = activation
        self.branch = nn.Sequential(
            *conv_bn(conv3x3(in_ch, out_ch, stride), relu=True, activation=act),
            *conv_bn(conv3x3(out_ch, out_ch), relu=False, activation=act),
        )
        self.act = make_activation(act)


class BottleneckBlock(_Block):
    """1x1 reduce, 3x3, 1x1 expand (He et al. 2015, Fig. 5 right); expansion 4.

    ``out_ch`` is the block's output width, ``out_ch // 4`` the bottleneck
    width. As in torchvision ("ResNet v1.5") the stride sits on the 3x3 conv.

    Shapes: ``(N, in_ch, H, W) -> (N, out_ch, H / stride, W / stride)``.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        skip: bool = True,
        shortcut: str = "A",
        activation: str = "relu",
    ):
        super().__init__(in_ch, out_ch, stride, skip, shortcut, activation)
        act = activation
        mid = out_ch // self.expansion
        self.branch = nn.Sequential(
            *conv_bn(conv1x1(in_ch, mid), relu=True, activation=act),
            *conv_bn(conv3x3(mid, mid, stride), relu=True, activation=act),
            *conv_bn(conv1x1(mid, out_ch), relu=False, activation=act),
        )
        self.act = make_activation(act)


class PreActBlock(_Block):
    """Pre-activation basic block (He et al. 2016, Fig. 1(b) / 4(e)).

    ``branch = BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3``; output
    ``branch(x) + shortcut(x)`` with nothing after the addition
    (``self.act`` is ``nn.Identity``). The shortcut sees the raw input ``x``.
    A net of these blocks needs a final BN-ReLU before pooling (the model's head
    adds it).
    """

    expansion = 1

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        skip: bool = True,
        shortcut: str = "A",
        activation: str = "relu",
    ):
        super().__init__(in_ch, out_ch, stride, skip, shortcut, activation)
        act = activation
        self.branch = nn.Sequential(
            *bn_relu_conv(conv3x3(in_ch, out_ch, stride), act),
            *bn_relu_conv(conv3x3(out_ch, out_ch), act),
        )
        self.act = nn.Identity()


class PreActBottleneckBlock(_Block):
    """Pre-activation bottleneck (He et al. 2016; their ResNet-164/1001 on CIFAR).

    ``branch = BN-ReLU-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1``, output
    width ``out_ch`` = 4 x the bottleneck width, nothing after the addition.
    """

    expansion = 4

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        stride: int = 1,
        *,
        skip: bool = True,
        shortcut: str = "A",
        activation: str = "relu",
    ):
        super().__init__(in_ch, out_ch, stride, skip, shortcut, activation)
        act = activation
        mid = out_ch // self.expansion
        self.branch = nn.Sequential(
            *bn_relu_conv(conv1x1(in_ch, mid), act),
            *bn_relu_conv(conv3x3(mid, mid, stride), act),
            *bn_relu_conv(conv1x1(mid, out_ch), act),
        )
        self.act = nn.Identity()


#: Block types by the name used in configs and builders.
BLOCKS: dict[str, type[_Block]] = {
    "basic": BasicBlock,
    "bottleneck": BottleneckBlock,
    "preact": PreActBlock,
    "preact_bottleneck": PreActBottleneckBlock,
}
