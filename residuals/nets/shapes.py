"""Shapes through a net, computed without arithmetic (on PyTorch's ``meta`` device).

* :func:`layer_shapes` is d2l's shape-printing loop (Sec. 8.6)::

      X = torch.rand(size=(1, 1, 224, 224))
      for layer in net:
          X = layer(X)
          print(layer.__class__.__name__, 'output shape:\\t', X.shape)

  as a table, for any iterable net (``nn.Sequential`` or :class:`~residuals.nets.ResNet`).
* :func:`check_input_size` says whether a net can take square images of a given size:
  every layer that downsamples (a stride above 1) must see a map of at least 2x2, or the
  rest of the net runs on 1x1 maps (a stride that does nothing; d2l's ResNet-18 on 8x8
  digits), and no layer may fail. The error names the layer and the smallest size that
  works.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import cast

import torch
from torch import nn

__all__ = ["InputSizeError", "check_input_size", "layer_shapes", "min_input_size"]

MAX_SIZE = 4096  # the largest side the search for a working size tries
SMALL_IMAGES_NET = "resnet20"  # the net the error points to for small images (CIFAR-style)


class InputSizeError(ValueError):
    """A net cannot take images of this size; the message says which size it can take."""


def _on_meta(model: nn.Module) -> nn.Module:
    """A copy of ``model`` on the meta device, in eval mode (BN with running statistics)."""
    return copy.deepcopy(model).to("meta").eval()


def layer_shapes(
    model: nn.Module, input_shape: tuple[int, ...]
) -> list[tuple[str, tuple[int, ...]]]:
    """``(layer class name, output shape)`` for each layer of iterable ``model`` on an input of
    ``input_shape`` (e.g. ``(1, 1, 224, 224)``), in order: the rows d2l's loop prints."""
    net = _on_meta(model)
    x = torch.empty(input_shape, device="meta")
    rows = []
    for layer in cast(Iterable[nn.Module], net):
        x = layer(x)
        rows.append((type(layer).__name__, tuple(x.shape)))
    return rows


def _strided(module: nn.Module) -> bool:
    stride = getattr(module, "stride", 1)
    return (
        isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))
        and (max(stride) if isinstance(stride, tuple) else stride) > 1
    )


def _first_problem(
    net: nn.Module, names: dict[nn.Module, str], in_channels: int, size: int
) -> str | None:
    """Why ``net`` (on meta) cannot take ``size`` x ``size`` images, or None."""
    problems: list[str] = []

    def hook(module: nn.Module, inputs: tuple) -> None:
        h, w = inputs[0].shape[-2:]
        if min(h, w) < 2 and not problems:
            problems.append(
                f"its layer {names[module]} ({type(module).__name__}, stride "
                f"{module.stride}) gets a {h}x{w} map"
            )

    handles = [m.register_forward_pre_hook(hook) for m in names]
    try:
        net(torch.empty(2, in_channels, size, size, device="meta"))
    except (RuntimeError, ValueError) as e:
        return f"it fails: {str(e).splitlines()[0]}"
    finally:
        for h in handles:
            h.remove()
    return problems[0] if problems else None


def _prepared(model: nn.Module) -> tuple[nn.Module, dict[nn.Module, str]]:
    net = _on_meta(model)
    return net, {m: name for name, m in net.named_modules() if _strided(m)}


def min_input_size(model: nn.Module, in_channels: int) -> int | None:
    """The smallest side of square images ``model`` can take (see the module docstring), or
    None if none up to :data:`MAX_SIZE` works."""
    net, names = _prepared(model)
    lo, hi = 1, 1
    while _first_problem(net, names, in_channels, hi) is not None:
        if hi >= MAX_SIZE:
            return None
        lo, hi = hi + 1, min(2 * hi, MAX_SIZE)
    while lo < hi:  # the smallest working size in [lo, hi]; sizes above a working one work
        mid = (lo + hi) // 2
        if _first_problem(net, names, in_channels, mid) is None:
            hi = mid
        else:
            lo = mid + 1
    return hi


def check_input_size(model: nn.Module, in_channels: int, size: int, *, name: str = "") -> None:
    """Raise :class:`InputSizeError` if ``model`` cannot take ``in_channels`` x ``size`` x ``size``
    images; the message names the layer and the smallest size that works."""
    net, names = _prepared(model)
    problem = _first_problem(net, names, in_channels, size)
    if problem is None:
        return
    smallest = min_input_size(model, in_channels)
    label = repr(name or getattr(model, "name", "") or type(model).__name__)
    if smallest:
        fix = (
            f"it needs images of at least {smallest}x{smallest}: pass a larger --resize "
            f"(resize={smallest} or more)"
        )
        if _small_images_net_takes(in_channels, size):
            fix += f" or pick a net for small images (a CIFAR-style net such as {SMALL_IMAGES_NET})"
    else:
        fix = f"no size up to {MAX_SIZE} works"
    raise InputSizeError(f"model {label} cannot take {size}x{size} images: {problem}; {fix}")


def _small_images_net_takes(in_channels: int, size: int) -> bool:
    """Whether :data:`SMALL_IMAGES_NET` takes ``size`` x ``size`` images (else pointing to it
    would not help, e.g. for a CIFAR net itself on 2x2 images)."""
    from residuals.nets.registry import build_model

    with torch.device("meta"):
        small = build_model(SMALL_IMAGES_NET, in_channels=in_channels)
    return _first_problem(*_prepared(small), in_channels, size) is None
