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
would no longer be the paper's.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Callable

import torch
from torch import nn

from residuals.core import StageStep, Stagewise
from residuals.nets.blocks import BLOCKS, SHORTCUTS, conv3x3

__all__ = [
    "CIFAR_DEPTHS",
    "IMAGENET_DEPTHS",
    "MODELS",
    "STEMS",
    "ClassifierHead",
    "ResNet",
    "ResNetConfig",
    "build_model",
    "cifar_resnet",
    "imagenet_resnet",
    "model_name",
]

#: Depths of the paper's CIFAR-10 nets (Table 6), all of the form 6n + 2.
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)
#: Depths of the pre-activation bottleneck CIFAR nets (He et al. 2016, Table 3), 9n + 2.
CIFAR_BOTTLENECK_DEPTHS = (164, 1001)
#: ImageNet-style layouts (He et al. 2015, Table 1): depth -> blocks per stage.
IMAGENET_LAYOUTS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
                    101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
IMAGENET_DEPTHS = tuple(IMAGENET_LAYOUTS)
STEMS = ("small", "imagenet")


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
    name: str = ""  # registry name, e.g. "resnet56"; informative only

    def __post_init__(self):
        if self.block not in BLOCKS:
            raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {self.block!r}")
        if self.shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of {SHORTCUTS} ('A': zero-padding, "
                             f"'B': 1x1 projection), got {self.shortcut!r}")
        if self.stem not in STEMS:
            raise ValueError(f"stem must be one of {STEMS} ('small': 3x3 stride-1 conv for 8x8 "
                             f"to 32x32 inputs, 'imagenet': 7x7/2 conv + max-pool), got {self.stem!r}")
        if not self.stage_blocks or len(self.stage_blocks) != len(self.widths):
            raise ValueError(f"stage_blocks {self.stage_blocks} and widths {self.widths} must be "
                             f"non-empty and of the same length (one entry per stage)")
        if any(int(n) < 1 for n in self.stage_blocks):
            raise ValueError(f"every stage needs at least one block, got {self.stage_blocks}")
        expansion = BLOCKS[self.block].expansion
        if any(int(w) < 1 or int(w) % expansion for w in self.widths):
            raise ValueError(f"widths must be positive multiples of {expansion} for {self.block!r} "
                             f"blocks, got {self.widths}")
        for field, value in (("stem_width", self.stem_width), ("in_channels", self.in_channels),
                             ("num_classes", self.num_classes)):
            if int(value) < 1:
                raise ValueError(f"{field} must be a positive integer, got {value}")
        if self.zero_init_residual and not self.skip:
            raise ValueError("zero_init_residual=True with skip=False would zero every block's "
                             "output of a plain net; use it only for residual nets")
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

    def __init__(self, in_ch: int, num_classes: int, *, preact: bool = False):
        super().__init__()
        self.norm = (nn.Sequential(nn.BatchNorm2d(in_ch), nn.ReLU(inplace=True))
                     if preact else nn.Identity())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.norm(h))))


def _make_stem(cfg: ResNetConfig) -> nn.Sequential:
    if cfg.stem == "imagenet":
        return nn.Sequential(
            nn.Conv2d(cfg.in_channels, cfg.stem_width, kernel_size=7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(cfg.stem_width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
    if cfg.preact:  # the first block starts with BN-ReLU
        return nn.Sequential(conv3x3(cfg.in_channels, cfg.stem_width))
    return nn.Sequential(conv3x3(cfg.in_channels, cfg.stem_width), nn.BatchNorm2d(cfg.stem_width),
                         nn.ReLU(inplace=True))


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
    head : ClassifierHead
    block_stage : tuple of int
        The network stage (1-based: 1..3 for CIFAR nets, 1..4 for ImageNet-style
        ones) each block belongs to.

    Shapes: ``forward``: ``(N, in_channels, H, W) -> (N, num_classes)`` logits;
    ``forward_features``: ``-> (N, C_last, H', W')``, the last block's output.

    Notes
    -----
    As a :class:`residuals.core.Stagewise` model each *block* is one stage
    (``n_stages_ == len(blocks)``); the state is the feature map. For block
    ``m``, ``_stage_step`` returns ``base = shortcut(h)`` (zeros for a plain
    block), ``correction = branch(h)`` (the residual function after its last
    BN) and ``state = act(base + correction)``, the block's output; with
    ``drop=True`` the block is lesioned, ``state = act(base)`` (Veit et al.
    2016). So ``stage_contributions(x)`` is ``||F(x)|| / ||shortcut(x)||`` per
    block (``inf`` for plain blocks) and ``drop_stage(x, m)`` is the last
    block's output with block ``m`` removed.

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
                blocks.append(block_cls(in_ch, width, stride, skip=config.skip,
                                        shortcut=config.shortcut))
                block_stage.append(s + 1)
                in_ch = width
        self.blocks = nn.ModuleList(blocks)
        self.block_stage = tuple(block_stage)
        self.head = ClassifierHead(in_ch, config.num_classes, preact=config.preact)
        self.reset_parameters()

    # ------------------------------------------------------------------ setup
    def reset_parameters(self) -> None:
        """He et al. init: Kaiming normal (fan_out) convs, BN (1, 0); optional zero-init residual."""
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
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

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"{self.name or 'ResNet'} expects images of shape (N, {self.config.in_channels}, H, W), "
                f"got {tuple(x.shape)}; build the model with in_channels={x.shape[1] if x.ndim == 4 else '?'}"
                f" or reshape the input")

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

    def _as_input(self, X: Any) -> torch.Tensor:
        p = next(self.parameters())
        if torch.is_tensor(X):
            return X.to(p.device)
        return torch.as_tensor(X, dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def _initial_state(self, X: Any) -> torch.Tensor:
        X = self._as_input(X)
        self._check_input(X)
        return self.stem(X)

    @torch.no_grad()
    def _stage_step(self, m: int, state: torch.Tensor, X: Any, *, drop: bool = False) -> StageStep:
        block = self.blocks[m]
        correction = block.branch(state)
        base = block.shortcut(state) if block.skip else torch.zeros_like(correction)
        new_state = block.act(base if drop else base + correction)
        return StageStep(base=base, correction=correction, state=new_state)

    def extra_repr(self) -> str:
        c = self.config
        return (f"name={c.name!r}, depth={c.depth}, block={c.block!r}, skip={c.skip}, "
                f"shortcut={c.shortcut!r}, stem={c.stem!r}")

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (for run metadata)."""
        return asdict(self.config)


# ---------------------------------------------------------------------- builders
def _valid_cifar_depths(block: str) -> str:
    if block.endswith("bottleneck"):
        return ("depth must be 9n+2 for bottleneck blocks; valid: "
                f"{', '.join(map(str, CIFAR_BOTTLENECK_DEPTHS))} (any 9n+2 >= 11)")
    return (f"depth must be 6n+2; valid: {', '.join(map(str, CIFAR_DEPTHS))} "
            "(any 6n+2 >= 8: 8, 14, 20, 26, ...)")


def cifar_resnet(depth: int, *, skip: bool = True, block: str = "basic", shortcut: str = "A",
                 in_channels: int = 3, num_classes: int = 10, width: int = 16,
                 zero_init_residual: bool = False, name: str = "") -> ResNet:
    """The paper's CIFAR-10 net of ``depth`` layers (He et al. 2015, Sec. 4.2).

    Parameters
    ----------
    depth : int
        ``6n + 2`` for basic/pre-activation blocks (``n`` blocks per stage),
        ``9n + 2`` for bottleneck blocks.
    skip : bool
        ``True`` for the residual net, ``False`` for its plain twin.
    block : {"basic", "bottleneck", "preact", "preact_bottleneck"}
    shortcut : {"A", "B"}
        Where shapes change: zero-padding (the paper's choice here) or projection.
    width : int
        Filters of the first stage; the stages have ``width * (1, 2, 4)``
        (times 4 at the output of bottleneck blocks).

    Raises
    ------
    ValueError
        If ``depth`` is not of the required form; the message lists valid depths.
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    per_block = 9 if block.endswith("bottleneck") else 6
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < per_block + 2 \
            or (depth - 2) % per_block:
        raise ValueError(f"invalid CIFAR ResNet depth {depth!r}: {_valid_cifar_depths(block)}")
    n = (depth - 2) // per_block
    expansion = BLOCKS[block].expansion
    cfg = ResNetConfig(stage_blocks=(n, n, n), widths=tuple(width * k * expansion for k in (1, 2, 4)),
                       block=block, skip=skip, shortcut=shortcut, stem="small", stem_width=width,
                       in_channels=in_channels, num_classes=num_classes,
                       zero_init_residual=zero_init_residual,
                       name=name or _default_name(depth, skip, block))
    return ResNet(cfg)


def imagenet_resnet(depth: int, *, skip: bool = True, preact: bool = False, shortcut: str = "B",
                    stem: str = "imagenet", in_channels: int = 3, num_classes: int = 10,
                    width: int = 64, zero_init_residual: bool = False, name: str = "") -> ResNet:
    """ResNet-18/34/50/101/152 (He et al. 2015, Table 1), any input channels and classes.

    Basic blocks for 18 and 34, bottleneck blocks (expansion 4) for 50 and up;
    stages of ``width * (1, 2, 4, 8)`` filters. ``stem="imagenet"`` (default)
    is the paper's and d2l's 7x7/2 conv + 3x3/2 max-pool; ``stem="small"`` a
    3x3/1 conv without pooling, for 8x8 to 32x32 inputs. The default
    ``shortcut="B"`` projects where the shape changes, as the paper does for
    these nets; a plain twin has no projections (fewer parameters).
    """
    if depth not in IMAGENET_LAYOUTS:
        raise ValueError(f"invalid ImageNet-style ResNet depth {depth!r}: valid: "
                         f"{', '.join(map(str, IMAGENET_DEPTHS))}")
    bottleneck = depth >= 50
    block = ("preact_" if preact else "") + ("bottleneck" if bottleneck else "basic")
    block = "preact" if block == "preact_basic" else block
    expansion = BLOCKS[block].expansion
    cfg = ResNetConfig(stage_blocks=IMAGENET_LAYOUTS[depth],
                       widths=tuple(width * k * expansion for k in (1, 2, 4, 8)),
                       block=block, skip=skip, shortcut=shortcut, stem=stem, stem_width=width,
                       in_channels=in_channels, num_classes=num_classes,
                       zero_init_residual=zero_init_residual,
                       name=name or _default_name(depth, skip, block))
    return ResNet(cfg)


def _default_name(depth: int, skip: bool, block: str) -> str:
    prefix = "resnet" if skip else "plain"
    return ("pre" + prefix if block.startswith("preact") else prefix) + str(depth)


def model_name(depth: int, skip: bool, *, preact: bool = False) -> str:
    """Registry name of a depth: ``(56, True) -> "resnet56"``, ``(56, False) -> "plain56"``.

    ``preact=True`` gives ``"preresnet56"`` / ``"preplain56"``. Raises
    ``ValueError`` for a depth that is neither a CIFAR depth (6n+2, or 9n+2 for
    pre-activation bottleneck nets) nor an ImageNet-style one.
    """
    ok = isinstance(depth, int) and not isinstance(depth, bool) and (
        depth in IMAGENET_LAYOUTS or (depth >= 8 and (depth - 2) % 6 == 0)
        or (preact and depth in CIFAR_BOTTLENECK_DEPTHS))
    if not ok:
        raise ValueError(f"no model of depth {depth!r}: CIFAR nets have depth 6n+2 "
                         f"({', '.join(map(str, CIFAR_DEPTHS))}, ...), ImageNet-style ones "
                         f"{', '.join(map(str, IMAGENET_DEPTHS))}")
    return _default_name(depth, skip, "preact" if preact else "basic")


#: The explicit registry: name -> builder taking ``in_channels``, ``num_classes`` and
#: the builder's other keyword arguments (``shortcut``, ``stem``, ``width``, ...).
MODELS: dict[str, Callable[..., ResNet]] = {
    # He et al. 2015, Sec. 4.2 / Table 6: CIFAR-10 nets, option A.
    "resnet20": partial(cifar_resnet, 20, skip=True),
    "plain20": partial(cifar_resnet, 20, skip=False),
    "resnet32": partial(cifar_resnet, 32, skip=True),
    "plain32": partial(cifar_resnet, 32, skip=False),
    "resnet44": partial(cifar_resnet, 44, skip=True),
    "plain44": partial(cifar_resnet, 44, skip=False),
    "resnet56": partial(cifar_resnet, 56, skip=True),
    "plain56": partial(cifar_resnet, 56, skip=False),
    "resnet110": partial(cifar_resnet, 110, skip=True),
    "plain110": partial(cifar_resnet, 110, skip=False),
    "resnet1202": partial(cifar_resnet, 1202, skip=True),
    "plain1202": partial(cifar_resnet, 1202, skip=False),
    # He et al. 2016: pre-activation CIFAR nets (basic, and bottleneck for 164).
    "preresnet20": partial(cifar_resnet, 20, skip=True, block="preact"),
    "preresnet56": partial(cifar_resnet, 56, skip=True, block="preact"),
    "preresnet110": partial(cifar_resnet, 110, skip=True, block="preact"),
    "preresnet164": partial(cifar_resnet, 164, skip=True, block="preact_bottleneck"),
    # He et al. 2015, Table 1, as d2l adapts them: option B, stem="imagenet" by default.
    "resnet18": partial(imagenet_resnet, 18, skip=True),
    "plain18": partial(imagenet_resnet, 18, skip=False),
    "resnet34": partial(imagenet_resnet, 34, skip=True),
    "plain34": partial(imagenet_resnet, 34, skip=False),
    "resnet50": partial(imagenet_resnet, 50, skip=True),
    "plain50": partial(imagenet_resnet, 50, skip=False),
}

_PATTERN = re.compile(r"^(resnet|plain|preresnet|preplain)(\d+)$")


def build_model(name: str, *, in_channels: int = 3, num_classes: int = 10, **kwargs: Any) -> ResNet:
    """Build a registered model by name, e.g. ``build_model("plain56", num_classes=100)``.

    Names not in :data:`MODELS` but of the form ``resnet{d}``, ``plain{d}``,
    ``preresnet{d}`` or ``preplain{d}`` build the CIFAR net of that depth when
    ``d = 6n + 2`` (``plain14``, ``resnet26``, ...: depth sweeps), or the
    ImageNet-style net for ``d`` in 101, 152 (and 18, 34, 50 with ``pre``).
    Note that 50 is both: ``"resnet50"`` is the ImageNet-style bottleneck net;
    the 50-layer CIFAR net is ``cifar_resnet(50)``.
    ``kwargs`` go to the builder (:func:`cifar_resnet` or
    :func:`imagenet_resnet`), e.g. ``shortcut="B"`` or ``stem="small"``; the
    name fixes depth and skip.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the registered names).
    TypeError
        If ``kwargs`` tries to change what the name fixes (``depth``, ``skip``, ``preact``).
    """
    fixed = sorted({"depth", "skip", "preact"} & set(kwargs))
    if fixed:
        raise TypeError(f"build_model({name!r}): the name fixes {', '.join(fixed)}; pick another "
                        f"name (e.g. 'plain56' rather than skip=False) or call cifar_resnet / "
                        f"imagenet_resnet directly")
    if name in MODELS:
        return MODELS[name](in_channels=in_channels, num_classes=num_classes, **kwargs)
    match = _PATTERN.match(name) if isinstance(name, str) else None
    if match:
        prefix, depth = match.group(1), int(match.group(2))
        skip, preact = prefix.endswith("resnet"), prefix.startswith("pre")
        if depth in IMAGENET_LAYOUTS:  # resnet101, plain152, preresnet18, ...
            return imagenet_resnet(depth, skip=skip, preact=preact, in_channels=in_channels,
                                   num_classes=num_classes, **kwargs)
        return cifar_resnet(depth, skip=skip, block="preact" if preact else "basic",
                            in_channels=in_channels, num_classes=num_classes, **kwargs)
    close = difflib.get_close_matches(str(name), MODELS, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} Registered: {', '.join(MODELS)} "
                     f"(also resnet/plain/preresnet/preplain followed by any depth 6n+2, "
                     f"or by {', '.join(map(str, IMAGENET_DEPTHS))})")
