"""Builders of residual nets and the registry of their names.

* :func:`cifar_resnet`: the paper's CIFAR nets (depth ``6n + 2``, or ``9n + 2`` with
  bottleneck blocks), and their plain and pre-activation variants;
* :func:`imagenet_resnet`: ResNet-18/34/50/101/152, as d2l adapts them to small images;
* :func:`d2l_resnet18` and :func:`tf_preact_resnet`: the nets of the two articles this
  project grew from;
* :data:`MODELS` and :func:`build_model`: names to nets. Every builder names its nets so
  that ``build_model(net.name)`` builds the same net again.

Two nets of the articles this project grew from are registered by name:

* ``"d2l-resnet18"``: d2l's ResNet-18 for Fashion-MNIST resized to 96x96 (1
  channel, 10 classes; stem b1, stages b2-b5), Xavier-initialised as
  ``train_ch6`` does. Iterating over a :class:`ResNet` yields its stem, one
  ``nn.Sequential`` per stage and the head's layers, so the article's
  shape-printing loop runs as written (:func:`residuals.nets.layer_shapes`).
  Its convolutions have no bias (BN follows each, so a bias would be
  cancelled) and its 1x1 projections have a BN (the paper's option B): 11.18M
  parameters against d2l's 11,178,378 (11,175,370 here).
* ``"tf-preact-elu"``: the TensorFlow article's ``resnet(X, 3, 64, C, 5)``: a
  3x3 conv stem with 64 filters, BN and ReLU (slim's defaults), five
  pre-activation BN-ELU-conv blocks of width 64 at full resolution, and the conv
  head.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from functools import partial
from typing import Any

from residuals.nets.blocks import BLOCKS
from residuals.nets.models import (
    CIFAR_BOTTLENECK_DEPTHS,
    CIFAR_DEPTHS,
    IMAGENET_DEPTHS,
    IMAGENET_LAYOUTS,
    ResNet,
    ResNetConfig,
)

__all__ = [
    "MODELS",
    "build_model",
    "cifar_resnet",
    "d2l_resnet18",
    "imagenet_resnet",
    "model_name",
    "tf_preact_resnet",
]


# ---------------------------------------------------------------------- builders
def _valid_cifar_depths(block: str) -> str:
    if block.endswith("bottleneck"):
        return (
            "depth must be 9n+2 for bottleneck blocks; valid: "
            f"{', '.join(map(str, CIFAR_BOTTLENECK_DEPTHS))} (any 9n+2 >= 11)"
        )
    return (
        f"depth must be 6n+2; valid: {', '.join(map(str, CIFAR_DEPTHS))} "
        "(any 6n+2 >= 8: 8, 14, 20, 26, ...)"
    )


def cifar_resnet(
    depth: int,
    *,
    skip: bool = True,
    block: str = "basic",
    shortcut: str = "A",
    width: int = 16,
    name: str = "",
    **options: Any,
) -> ResNet:
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
    name : str
        Default: the name :func:`build_model` builds this net from (e.g.
        ``"preresnet1001"``, or ``"resnet56-bottleneck"`` where ``"resnet56"``
        means the basic-block net).
    **options
        Any other :class:`~residuals.nets.models.ResNetConfig` field:
        ``in_channels`` (3), ``num_classes`` (10), ``activation`` ("relu",
        "elu", "gelu"), ``head`` ("linear", "conv"), ``init`` ("he", "xavier"),
        ``zero_init_residual`` (False).

    Raises
    ------
    ValueError
        If ``depth`` is not of the required form; the message lists valid depths.
    """
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {sorted(BLOCKS)}, got {block!r}")
    per_block = 9 if block.endswith("bottleneck") else 6
    if (
        isinstance(depth, bool)
        or not isinstance(depth, int)
        or depth < per_block + 2
        or (depth - 2) % per_block
    ):
        raise ValueError(f"invalid CIFAR ResNet depth {depth!r}: {_valid_cifar_depths(block)}")
    n = (depth - 2) // per_block
    expansion = BLOCKS[block].expansion
    cfg = ResNetConfig(
        stage_blocks=(n, n, n),
        widths=tuple(width * k * expansion for k in (1, 2, 4)),
        block=block,
        skip=skip,
        shortcut=shortcut,
        stem="small",
        stem_width=width,
        name=name or _cifar_name(depth, skip, block),
        **options,
    )
    return ResNet(cfg)


def imagenet_resnet(
    depth: int,
    *,
    skip: bool = True,
    preact: bool = False,
    shortcut: str = "B",
    stem: str = "imagenet",
    width: int = 64,
    name: str = "",
    **options: Any,
) -> ResNet:
    """ResNet-18/34/50/101/152 (He et al. 2015, Table 1), any input channels and classes.

    Basic blocks for 18 and 34, bottleneck blocks (expansion 4) for 50 and up;
    stages of ``width * (1, 2, 4, 8)`` filters. ``stem="imagenet"`` (default)
    is the paper's and d2l's 7x7/2 conv + 3x3/2 max-pool; ``stem="small"`` a
    3x3/1 conv without pooling, for 8x8 to 32x32 inputs. The default
    ``shortcut="B"`` projects where the shape changes, as the paper does for
    these nets; a plain twin has no projections (fewer parameters).
    ``options`` as in :func:`cifar_resnet`.
    """
    if depth not in IMAGENET_LAYOUTS:
        raise ValueError(
            f"invalid ImageNet-style ResNet depth {depth!r}: valid: "
            f"{', '.join(map(str, IMAGENET_DEPTHS))}"
        )
    bottleneck = depth >= 50
    block = ("preact_" if preact else "") + ("bottleneck" if bottleneck else "basic")
    block = "preact" if block == "preact_basic" else block
    expansion = BLOCKS[block].expansion
    cfg = ResNetConfig(
        stage_blocks=IMAGENET_LAYOUTS[depth],
        widths=tuple(width * k * expansion for k in (1, 2, 4, 8)),
        block=block,
        skip=skip,
        shortcut=shortcut,
        stem=stem,
        stem_width=width,
        name=name or _prefix(skip, preact) + str(depth),
        **options,
    )
    return ResNet(cfg)


def d2l_resnet18(*, in_channels: int = 1, num_classes: int = 10, **kwargs: Any) -> ResNet:
    """d2l's ResNet-18 (Dive into Deep Learning, Sec. 8.6; seed 001) for 96x96 Fashion-MNIST.

    ``b1`` = 7x7/2 conv with 64 filters, BN, ReLU, 3x3/2 max-pool; ``b2``-``b5`` =
    two residual blocks each of 64, 128, 256, 512 filters (1x1 projections where the
    shape changes); global average pooling, flatten, linear; Xavier-initialised as
    ``train_ch6`` does. On a ``(1, 1, 224, 224)`` input the stages give the article's
    shapes, 64x56x56, 64x56x56, 128x28x28, 256x14x14, 512x7x7. ``kwargs`` go to
    :func:`imagenet_resnet`.
    """
    kwargs.setdefault("init", "xavier")
    kwargs.setdefault("name", "d2l-resnet18")
    return imagenet_resnet(18, in_channels=in_channels, num_classes=num_classes, **kwargs)


def tf_preact_resnet(
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    width: int = 64,
    num_blocks: int = 5,
    activation: str = "elu",
    head: str = "conv",
    name: str = "tf-preact-elu",
    **kwargs: Any,
) -> ResNet:
    """The TensorFlow article's ``resnet(X_input, 3, 64, C, 5)`` (seed 000).

    ``conv_0``: 3x3 conv with ``width`` filters, BN and ReLU (slim's default
    activation); ``num_blocks`` pre-activation blocks ``x + conv(ELU(BN(conv(ELU(BN(x))))))``
    of ``width`` filters at the input's resolution; ``conv_top``: the conv head
    (:class:`ConvHead`). ``kwargs`` go to :class:`ResNetConfig` (e.g. ``init``).
    """
    cfg = ResNetConfig(
        stage_blocks=(num_blocks,),
        widths=(width,),
        block="preact",
        skip=True,
        shortcut="A",
        stem="small",
        stem_width=width,
        in_channels=in_channels,
        num_classes=num_classes,
        activation=activation,
        head=head,
        stem_norm=True,
        stem_activation="relu",
        name=name,
        **kwargs,
    )
    return ResNet(cfg)


def _prefix(skip: bool, preact: bool) -> str:
    return ("pre" if preact else "") + ("resnet" if skip else "plain")


def _cifar_block(preact: bool, depth: int) -> str | None:
    """The block a CIFAR name without a suffix means: the registry's (pre-activation 164 and 1001
    are He et al. 2016's bottleneck nets), else basic for 6n+2, else bottleneck for 9n+2."""
    if preact and depth in CIFAR_BOTTLENECK_DEPTHS:
        return "preact_bottleneck"
    kind = (
        "basic"
        if depth >= 8 and (depth - 2) % 6 == 0
        else ("bottleneck" if depth >= 11 and (depth - 2) % 9 == 0 else None)
    )
    if kind is None:
        return None
    return ("preact" if kind == "basic" else "preact_bottleneck") if preact else kind


def _cifar_name(depth: int, skip: bool, block: str) -> str:
    """The name :func:`build_model` builds this CIFAR net from: ``prefix + depth``, with a
    ``-basic`` / ``-bottleneck`` suffix where that name means another net (an ImageNet-style
    one, or the other block type)."""
    preact = block.startswith("preact")
    base = _prefix(skip, preact) + str(depth)
    if depth not in IMAGENET_LAYOUTS and _cifar_block(preact, depth) == block:
        return base
    return base + ("-bottleneck" if block.endswith("bottleneck") else "-basic")


def model_name(depth: int, skip: bool, *, preact: bool = False) -> str:
    """Registry name of a depth: ``(56, True) -> "resnet56"``, ``(56, False) -> "plain56"``.

    ``preact=True`` gives ``"preresnet56"`` / ``"preplain56"``. Raises
    ``ValueError`` for a depth that is neither a CIFAR depth (6n+2, or 9n+2 for
    pre-activation bottleneck nets) nor an ImageNet-style one.
    """
    ok = (
        isinstance(depth, int)
        and not isinstance(depth, bool)
        and (
            depth in IMAGENET_LAYOUTS
            or (depth >= 8 and (depth - 2) % 6 == 0)
            or (preact and depth in CIFAR_BOTTLENECK_DEPTHS)
        )
    )
    if not ok:
        raise ValueError(
            f"no model of depth {depth!r}: CIFAR nets have depth 6n+2 "
            f"({', '.join(map(str, CIFAR_DEPTHS))}, ...), ImageNet-style ones "
            f"{', '.join(map(str, IMAGENET_DEPTHS))}"
        )
    return _prefix(skip, preact) + str(depth)


#: The explicit registry: name -> builder taking ``in_channels``, ``num_classes`` and
#: the builder's other keyword arguments (``activation``, ``head``, ``shortcut``, ``stem``,
#: ``width``, ...).
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
    # He et al. 2016: pre-activation CIFAR nets (basic, and bottleneck for 164 and 1001).
    "preresnet20": partial(cifar_resnet, 20, skip=True, block="preact"),
    "preresnet56": partial(cifar_resnet, 56, skip=True, block="preact"),
    "preresnet110": partial(cifar_resnet, 110, skip=True, block="preact"),
    "preresnet164": partial(cifar_resnet, 164, skip=True, block="preact_bottleneck"),
    "preresnet1001": partial(cifar_resnet, 1001, skip=True, block="preact_bottleneck"),
    # He et al. 2015, Table 1, as d2l adapts them: option B, stem="imagenet" by default.
    "resnet18": partial(imagenet_resnet, 18, skip=True),
    "plain18": partial(imagenet_resnet, 18, skip=False),
    "resnet34": partial(imagenet_resnet, 34, skip=True),
    "plain34": partial(imagenet_resnet, 34, skip=False),
    "resnet50": partial(imagenet_resnet, 50, skip=True),
    "plain50": partial(imagenet_resnet, 50, skip=False),
    # The articles this project grew from (docs/recipes.md): 1 and 3 input channels by default.
    "d2l-resnet18": d2l_resnet18,
    "tf-preact-elu": tf_preact_resnet,
}

_PATTERN = re.compile(r"^(resnet|plain|preresnet|preplain)(\d+)(?:-(basic|bottleneck))?$")


def build_model(
    name: str,
    *,
    in_channels: int | None = None,
    num_classes: int | None = None,
    **kwargs: Any,
) -> ResNet:
    """Build a registered model by name, e.g. ``build_model("plain56", num_classes=100)``.

    Names not in :data:`MODELS` but of the form ``resnet{d}``, ``plain{d}``,
    ``preresnet{d}`` or ``preplain{d}`` build the CIFAR net of that depth when
    ``d = 6n + 2`` (``plain14``, ``resnet26``, ...: depth sweeps) or, failing
    that, the bottleneck net when ``d = 9n + 2`` (``preresnet1001``), or the
    ImageNet-style net for ``d`` in 101, 152 (and 18, 34, 50 with ``pre``). A
    ``-basic`` or ``-bottleneck`` suffix picks the CIFAR net with that block
    (``resnet50-basic`` is the 50-layer CIFAR net; ``resnet50`` the ImageNet-style
    bottleneck net). Every builder names its nets so that ``build_model(net.name)``
    builds the same net.

    ``in_channels`` and ``num_classes`` default to the builder's (3 and 10; 1 and
    10 for ``"d2l-resnet18"``). ``kwargs`` go to the builder (:func:`cifar_resnet`,
    :func:`imagenet_resnet`, :func:`d2l_resnet18`, :func:`tf_preact_resnet`), e.g.
    ``activation="elu"``, ``head="conv"``, ``shortcut="B"`` or ``stem="small"``;
    the name fixes depth and skip.

    Raises
    ------
    ValueError
        For an unknown name (the message suggests close names and lists the registered ones).
    TypeError
        If ``kwargs`` tries to change what the name fixes (``depth``, ``skip``, ``preact``,
        ``block``).
    """
    fixed = sorted({"depth", "skip", "preact", "block"} & set(kwargs))
    if fixed:
        raise TypeError(
            f"build_model({name!r}): the name fixes {', '.join(fixed)}; pick another "
            f"name (e.g. 'plain56' rather than skip=False) or call cifar_resnet / "
            f"imagenet_resnet directly"
        )
    if in_channels is not None:
        kwargs["in_channels"] = in_channels
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name in MODELS:
        return MODELS[name](**kwargs)
    match = _PATTERN.match(name) if isinstance(name, str) else None
    if match:
        prefix, depth, suffix = match.group(1), int(match.group(2)), match.group(3)
        skip, preact = prefix.endswith("resnet"), prefix.startswith("pre")
        if suffix is None and depth in IMAGENET_LAYOUTS:  # resnet101, plain152, preresnet18, ...
            return imagenet_resnet(depth, skip=skip, preact=preact, **kwargs)
        block = (
            _cifar_block(preact, depth)
            if suffix is None
            else (
                ("preact" if preact else "basic")
                if suffix == "basic"
                else ("preact_" if preact else "") + "bottleneck"
            )
        )
        if block is not None:
            return cifar_resnet(depth, skip=skip, block=block, **kwargs)
    close = difflib.get_close_matches(str(name), MODELS, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}.{hint} Registered: {', '.join(MODELS)} "
        f"(also resnet/plain/preresnet/preplain followed by any depth 6n+2 or 9n+2, "
        f"or by {', '.join(map(str, IMAGENET_DEPTHS))})"
    )
