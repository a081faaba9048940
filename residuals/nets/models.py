"""Residual networks and their plain twins, with an explicit registry.

Two families, both built by one class, :class:`ResNet`, from a typed
:class:`ResNetConfig`:

* **CIFAR nets** (He et al. 2015, Sec. 4.2): a 3x3 conv with 16 filters, then
  three stages of ``n`` blocks on feature maps of 32/16/8 pixels with 16/32/64
  filters, global average pooling and a linear classifier. Depth ``6n + 2``
  (20, 32, 44, 56, 110, 1202). Option A shortcuts, so the plain net has exactly
  the residual net's parameters. Pre-activation (He et al. 2016) variants use
  the same layout; their bottleneck versions have depth ``9n + 2`` (164, 1001).
* **ImageNet-style nets** ResNet-18/34/50 (He et al. 2015, Table 1) as d2l
  adapts them to small images (Dive into Deep Learning, Sec. 8.6: ResNet-18 on
  Fashion-MNIST): any number of input channels and classes, four stages of
  64/128/256/512 filters (x4 for the bottleneck ResNet-50), option B
  projections where the shape changes.

The stem is an explicit choice, ``stem="imagenet" | "small"``:

* ``"imagenet"`` (default for ResNet-18/34/50, as in the paper, torchvision and
  d2l): 7x7/2 conv with 64 filters, BN, ReLU, 3x3/2 max-pool. It divides the
  resolution by 4 before the first block, which is what d2l does (it resizes
  Fashion-MNIST to 96x96). On 28x28 input the last stage sees 1x1 maps.
* ``"small"`` (the CIFAR nets' stem, recommended for 8x8 to 32x32 inputs
  without resizing): 3x3/1 conv, BN, ReLU, no pooling.

Pre-activation nets have no BN-ReLU in the ``"small"`` stem (the first block
begins with BN-ReLU) and a final BN-ReLU in the head (He et al. 2016).

Initialisation (He et al. 2015, Sec. 3.4, citing He et al. 2015b): convolutions
Kaiming normal with ``fan_out``; BN weight 1, bias 0; the linear layer keeps
PyTorch's default. The last BN of each branch is *not* zeroed unless
``zero_init_residual=True`` (Goyal et al. 2017): zeroing it would make every
residual block start as the identity, and the plain-versus-residual comparison
would no longer be the paper's. ``init="xavier"`` is d2l's ``train_ch6``
initialisation instead (Xavier uniform on every conv and linear weight).

Options of every builder, kept in the config: the ``activation`` (``"relu"``,
``"elu"``, ``"gelu"``: every activation of the stem, the blocks and a
pre-activation head) and the ``head``:

* ``"linear"`` (default): global average pooling, flatten, linear (after a final
  BN-activation for pre-activation nets);
* ``"conv"``: the TensorFlow article's head (seed 000): a 3x3 conv to
  ``num_classes`` channels, BN, and the mean over space (no BN-activation in front).

The builders and the registry of names are in :mod:`residuals.nets.registry`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from residuals.core import StageStep, Stagewise
from residuals.nets.blocks import ACTIVATIONS, BLOCKS, SHORTCUTS, conv3x3, make_activation

__all__ = [
    "CIFAR_BOTTLENECK_DEPTHS",
    "CIFAR_DEPTHS",
    "HEADS",
    "IMAGENET_DEPTHS",
    "IMAGENET_LAYOUTS",
    "INITS",
    "STEMS",
    "ClassifierHead",
    "ConvHead",
    "ResNet",
    "ResNetConfig",
    "SpatialMean",
]

#: Depths of the paper's CIFAR-10 nets (Table 6), all of the form 6n + 2.
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
#: Depths of the pre-activation bottleneck CIFAR nets (He et al. 2016, Table 3), 9n + 2.
CIFAR_BOTTLENECK_DEPTHS = (164, 1001)
#: ImageNet-style layouts (He et al. 2015, Table 1): depth -> blocks per stage.
IMAGENET_LAYOUTS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
IMAGENET_DEPTHS = tuple(IMAGENET_LAYOUTS)
STEMS = ("small", "imagenet")
HEADS = ("linear", "conv")
INITS = ("he", "xavier")


@dataclass(frozen=True)
class ResNetConfig:
    """Everything that defines a network's architecture (picklable, JSON-able via ``asdict``)."""

    stage_blocks: tuple[int, ...]  # blocks per stage, e.g. (9, 9, 9) for ResNet-56
    widths: tuple[int, ...]  # output channels of each stage's blocks, e.g. (16, 32, 64)
    block: str = "basic"  # "basic" | "bottleneck" | "preact" | "preact_bottleneck"
    skip: bool = True  # identity paths on (residual) or off (plain)
    shortcut: str = "A"  # where shapes change: "A" zero-padding, "B" 1x1 conv + BN
    stem: str = "small"  # "small": 3x3/1 conv; "imagenet": 7x7/2 conv + 3x3/2 max-pool
    stem_width: int = 16  # output channels of the stem conv
    in_channels: int = 3  # image channels (1 for MNIST-like data)
    num_classes: int = 10
    zero_init_residual: bool = False  # zero each branch's last layer (Goyal et al. 2017)
    activation: str = "relu"  # "relu" | "elu" | "gelu": every activation of the net
    head: str = "linear"  # "linear": pool + linear; "conv": conv3x3 + BN + spatial mean
    stem_norm: bool | None = None  # BN-activation after the "small" stem's conv;
    #                                None: yes unless pre-activation (the first block has it)
    stem_activation: str | None = None  # None: ``activation``
    init: str = "he"  # "he": Kaiming normal (fan_out) convs; "xavier": d2l's Xavier uniform
    name: str = ""  # registry name, e.g. "resnet56"; informative only

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(
                f"shortcut must be one of {SHORTCUTS} ('A': zero-padding, "
                f"'B': 1x1 projection), got {self.shortcut!r}"
            )
        if self.stem not in STEMS:
            raise ValueError(
                f"stem must be one of {STEMS} ('small': 3x3 stride-1 conv for 8x8 "
                f"to 32x32 inputs, 'imagenet': 7x7/2 conv + max-pool), got {self.stem!r}"
            )
        for field, value, options in (
            ("activation", self.activation, tuple(ACTIVATIONS)),
            ("head", self.head, HEADS),
            ("init", self.init, INITS),
        ):
            if value not in options:
                raise ValueError(f"{field} must be one of {', '.join(options)}, got {value!r}")
        if self.stem_activation is not None and self.stem_activation not in ACTIVATIONS:
            raise ValueError(
                f"stem_activation must be None or one of {', '.join(ACTIVATIONS)}, "
                f"got {self.stem_activation!r}"
            )
        if not self.stage_blocks or len(self.stage_blocks) != len(self.widths):
            raise ValueError(
                f"stage_blocks {self.stage_blocks} and widths {self.widths} must be "
                f"non-empty and of the same length (one entry per stage)"
            )
        if any(int(n) < 1 for n in self.stage_blocks):
            raise ValueError(f"every stage needs at least one block, got {self.stage_blocks}")
        expansion = BLOCKS[self.block].expansion
        if any(int(w) < 1 or int(w) % expansion for w in self.widths):
            raise ValueError(
                f"widths must be positive multiples of {expansion} for {self.block!r} "
                f"blocks, got {self.widths}"
            )
        for field, value in (
            ("stem_width", self.stem_width),
            ("in_channels", self.in_channels),
            ("num_classes", self.num_classes),
        ):
            if int(value) < 1:
                raise ValueError(f"{field} must be a positive integer, got {value}")
        if self.zero_init_residual and not self.skip:
            raise ValueError(
                "zero_init_residual=True with skip=False would zero every block's "
                "output of a plain net; use it only for residual nets"
            )
        object.__setattr__(self, "stage_blocks", tuple(int(n) for n in self.stage_blocks))
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))

    @property
    def preact(self) -> bool:
        return self.block.startswith("preact")

    @property
    def depth(self) -> int:
        """Weighted layers on the main path: stem conv + branch convs + the classifier."""
        convs_per_block = 3 if self.block.endswith("bottleneck") else 2
        return 1 + convs_per_block * sum(self.stage_blocks) + 1


class ClassifierHead(nn.Module):
    """Global average pooling, flatten, linear (after a final BN-ReLU for pre-activation nets).

    Shapes: ``(N, C, H, W) -> (N, num_classes)``.
    """

    def __init__(
        self, in_ch: int, num_classes: int, *, preact: bool = False, activation: str = "relu"
    ):
        super().__init__()
        self.norm = (
            nn.Sequential(nn.BatchNorm2d(in_ch), make_activation(activation, inplace=True))
            if preact
            else nn.Identity()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.norm(h))))

    def layers(self) -> list[nn.Module]:
        """The head as a sequence of layers (the final BN-activation only where there is one)."""
        norm = [] if isinstance(self.norm, nn.Identity) else [self.norm]
        return [*norm, self.pool, self.flatten, self.fc]


class SpatialMean(nn.Module):
    """``(N, C, H, W) -> (N, C)``: the mean over space (TensorFlow's ``reduce_mean(x, [1, 2])``)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h.mean(dim=(2, 3))


class ConvHead(nn.Module):
    """The TensorFlow article's head: 3x3 conv to ``num_classes`` channels, BN, mean over space.

    ``slim.conv2d(x, C, [3, 3], normalizer_fn=slim.batch_norm, activation_fn=None)`` then
    ``tf.reduce_mean(top, [1, 2])`` (seed 000). The article then applies a softmax and feeds
    that to ``softmax_cross_entropy_with_logits``, a second softmax; these are the logits.

    Shapes: ``(N, C, H, W) -> (N, num_classes)``.
    """

    def __init__(self, in_ch: int, num_classes: int):
        super().__init__()
        self.conv = conv3x3(in_ch, num_classes)
        self.bn = nn.BatchNorm2d(num_classes)
        self.mean = SpatialMean()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mean(self.bn(self.conv(h)))

    def layers(self) -> list[nn.Module]:
        return [self.conv, self.bn, self.mean]


def _make_head(cfg: ResNetConfig, in_ch: int) -> ClassifierHead | ConvHead:
    if cfg.head == "conv":
        return ConvHead(in_ch, cfg.num_classes)
    return ClassifierHead(in_ch, cfg.num_classes, preact=cfg.preact, activation=cfg.activation)


def _make_stem(cfg: ResNetConfig) -> nn.Sequential:
    act = make_activation(cfg.stem_activation or cfg.activation, inplace=True)
    if cfg.stem == "imagenet":
        return nn.Sequential(
            nn.Conv2d(
                cfg.in_channels, cfg.stem_width, kernel_size=7, stride=2, padding=3, bias=False
            ),
            nn.BatchNorm2d(cfg.stem_width),
            act,
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    norm = not cfg.preact if cfg.stem_norm is None else cfg.stem_norm
    if not norm:  # a pre-activation net's first block starts with BN-activation
        return nn.Sequential(conv3x3(cfg.in_channels, cfg.stem_width))
    return nn.Sequential(
        conv3x3(cfg.in_channels, cfg.stem_width), nn.BatchNorm2d(cfg.stem_width), act
    )


class ResNet(nn.Module, Stagewise):
    """A residual network, or its plain twin, as ``head(blocks(stem(x)))``.

    Parameters
    ----------
    config : ResNetConfig
        The architecture. Use :func:`cifar_resnet`, :func:`imagenet_resnet` or
        :func:`build_model` rather than writing one by hand.

    Attributes
    ----------
    stem : nn.Sequential
    blocks : nn.ModuleList
        All blocks, flat and in order (stage 1's first block is ``blocks[0]``).
    head : ClassifierHead or ConvHead
    block_stage : tuple of int
        The network stage (1-based: 1..3 for CIFAR nets, 1..4 for ImageNet-style
        ones) each block belongs to.

    Shapes: ``forward``: ``(N, in_channels, H, W) -> (N, num_classes)`` logits;
    ``forward_features``: ``-> (N, C_last, H', W')``, the last block's output.

    Iterating yields the layers in forward order, as ``nn.Sequential`` does: the
    stem, one ``nn.Sequential`` per stage, then the head's layers, so that
    ``for layer in net: x = layer(x)`` computes ``net(x)`` (d2l's shape loop).

    Notes
    -----
    As a :class:`residuals.core.Stagewise` model each *block* is one stage
    (``n_stages_ == len(blocks)``); the state is the feature map. For block
    ``m``, ``_stage_step`` returns ``base = shortcut(h)`` (zeros for a plain
    block), ``correction = branch(h)`` (the residual function after its last
    BN) and ``state = act(base + correction)``, the block's output; with
    ``drop=True`` the block is lesioned, ``state = block.bypass(h)`` (Veit et
    al. 2016): ``act(shortcut(h))`` in a residual block, the block taken out
    of the chain in a plain one (see :meth:`residuals.nets.blocks._Block.bypass`).
    So ``stage_contributions(x)`` is ``||F(x)|| / ||shortcut(x)||`` per block
    (``inf`` for plain blocks), ``drop_stages(x, {m, ...})`` is the last
    block's output with those blocks removed, and ``lesion_predictions`` scores
    lesions by the head's class.

    These methods run under ``torch.no_grad``. They use the model's current
    mode: call ``model.eval()`` first to measure a trained net with its
    running BN statistics (in train mode BN normalises with the batch's
    statistics and updates the running ones).
    """

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        block_cls = BLOCKS[config.block]
        self.stem = _make_stem(config)
        blocks, block_stage = [], []
        in_ch = config.stem_width
        for s, (n, width) in enumerate(zip(config.stage_blocks, config.widths)):
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                blocks.append(
                    block_cls(
                        in_ch,
                        width,
                        stride,
                        skip=config.skip,
                        shortcut=config.shortcut,
                        activation=config.activation,
                    )
                )
                block_stage.append(s + 1)
                in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.block_stage = tuple(block_stage)
        self.head = _make_head(config, in_ch)
        self.reset_parameters()

    # ------------------------------------------------------------------ setup
    def reset_parameters(self) -> None:
        """He et al. init: Kaiming normal (fan_out) convs, BN (1, 0); optional zero-init residual."""
        xavier = self.config.init == "xavier"
        for mod in self.modules():
            if xavier and isinstance(mod, (nn.Conv2d, nn.Linear)):
                if isinstance(mod, nn.Linear):
                    mod.reset_parameters()  # the bias keeps PyTorch's default, as in d2l
                nn.init.xavier_uniform_(mod.weight)  # d2l's train_ch6 init_weights
            elif isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, nn.BatchNorm2d):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Linear):
                mod.reset_parameters()
        if self.config.zero_init_residual:
            for block in self.blocks:
                nn.init.zeros_(block.last_layer().weight)

    @property
    def skip(self) -> bool:
        return self.config.skip

    @property
    def depth(self) -> int:
        return self.config.depth

    @property
    def name(self) -> str:
        return self.config.name

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def __iter__(self) -> Iterator[nn.Module]:
        """The stem, one ``nn.Sequential`` per stage (sharing the blocks), the head's layers."""
        yield self.stem
        for stage in sorted(set(self.block_stage)):
            yield nn.Sequential(*(b for b, s in zip(self.blocks, self.block_stage) if s == stage))
        yield from self.head.layers()

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{self.name or 'ResNet'} expects images of shape (N, {self.config.in_channels}, H, W), "
                f"got {tuple(x.shape)}; build the model with in_channels={x.shape[1] if x.ndim == 4 else '?'}"
                f" or reshape the input"
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output, ``(N, C_last, H', W')``: the state after the last stage."""
        self._check_input(x)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, ``(N, num_classes)``."""
        return self.head(self.forward_features(x))

    # ------------------------------------------------------------------ Stagewise
    @property
    def n_stages_(self) -> int:
        return len(self.blocks)

    def _prepare(self, X: Any) -> torch.Tensor:
        """``X`` as a tensor on the model's device, checked once for every stage."""
        p = next(self.parameters())
        X = (
            X.to(p.device)
            if torch.is_tensor(X)
            else torch.as_tensor(X, dtype=p.dtype, device=p.device)
        )
        self._check_input(X)
        return X

    @torch.no_grad()
    def _initial_state(self, P: torch.Tensor) -> torch.Tensor:
        return self.stem(P)

    @torch.no_grad()
    def _stage_step(self, m: int, state: torch.Tensor, P: Any, *, drop: bool = False) -> StageStep:
        block = self.blocks[m]
        correction = block.branch(state)
        base = block.shortcut(state) if block.skip else torch.zeros_like(correction)
        new_state = block.bypass(state) if drop else block.act(base + correction)
        return StageStep(base=base, correction=correction, state=new_state)

    @torch.no_grad()
    def _drop_step(self, m: int, state: torch.Tensor, P: Any) -> torch.Tensor:
        return self.blocks[m].bypass(state)

    @torch.no_grad()
    def _predict_state(self, state: torch.Tensor) -> torch.Tensor:
        """The class index the head predicts from a final state, ``(N,)``."""
        return self.head(state).argmax(1)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"name={c.name!r}, depth={c.depth}, block={c.block!r}, skip={c.skip}, "
            f"shortcut={c.shortcut!r}, stem={c.stem!r}, activation={c.activation!r}, "
            f"head={c.head!r}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (for run metadata)."""
        return asdict(self.config)
