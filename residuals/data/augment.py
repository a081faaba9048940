"""Batch transforms on the device: normalisation, the paper's pad-crop-flip augmentation and
resizing, one batched tensor operation each (no per-sample Python loop, no host round trip)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from residuals.data.spec import AUGMENTATIONS

__all__ = [
    "AUGMENTATIONS",
    "augment_batch",
    "crop_flip",
    "crop_flip_draws",
    "crop_padding",
    "normalize",
    "random_crop_flip",
    "resize_images",
]


def _per_channel(
    v: Sequence[float] | torch.Tensor, x: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=dtype, device=x.device)  # no copy if already a matching tensor
    return t.reshape(1, -1, 1, 1)


def normalize(
    x: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> torch.Tensor:
    """``(x / 255 - mean) / std`` for a uint8 batch ``(N, C, H, W)``, on ``x``'s device.

    ``mean``/``std`` are per channel in [0, 1] units. Pass them as tensors on
    ``x``'s device in a hot loop: a Python tuple costs a host-to-device copy
    per call.
    """
    if x.dim() != 4:
        raise ValueError(f"normalize expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    mean_t, std_t = _per_channel(mean, x, dtype), _per_channel(std, x, dtype)
    if mean_t.shape[1] != x.shape[1] or std_t.shape[1] != x.shape[1]:
        raise ValueError(
            f"mean/std have {mean_t.shape[1]}/{std_t.shape[1]} channels, the batch has {x.shape[1]}"
        )
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = x.to(dtype=dtype, memory_format=fmt)
    return out.div_(255.0).sub_(mean_t).div_(std_t)


def random_crop_flip(
    x: torch.Tensor, pad: int = 4, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The paper's augmentation (He et al. 2015, sec. 4.2), batched on ``x``'s device.

    Each image is zero-padded by ``pad`` pixels on every side, a random window
    of the original size is cropped from it, and it is flipped horizontally
    with probability 1/2. One gather, no per-sample loop. ``x``: ``(N, C, H, W)``
    of any dtype; ``generator`` must live on ``x``'s device.
    """
    if x.dim() != 4:
        raise ValueError(
            f"random_crop_flip expects a batch (N, C, H, W), got shape {tuple(x.shape)}"
        )
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    return crop_flip(x, pad, *crop_flip_draws(x.shape[0], pad, x.device, generator))


def crop_flip_draws(
    n: int, pad: int, device: str | torch.device, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The random part of :func:`random_crop_flip` for ``n`` images: row and column offsets
    ``(n, 1)`` in ``[0, 2 * pad]`` and flips ``(n, 1)`` (bool), drawn in that order."""
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=device, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=device, generator=generator)
    flip = torch.randint(0, 2, (n, 1), device=device, generator=generator).bool()
    return dy, dx, flip


def crop_flip(
    x: torch.Tensor, pad: int, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor
) -> torch.Tensor:
    """The deterministic part of :func:`random_crop_flip`: crop each zero-padded image at
    ``(dy, dx)`` and flip it where ``flip`` (``dy = dx = pad``, no flip: the image itself)."""
    n, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    hp, wp = h + 2 * pad, w + 2 * pad
    rows = dy + torch.arange(h, device=dev)  # (N, H) rows of the padded image
    cols = dx + torch.arange(w, device=dev)  # (N, W) its columns
    cols = torch.where(flip, cols.flip(1), cols)
    # flat index into each padded (Hp*Wp) plane: one gather for the whole batch
    index = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.reshape(n, c, hp * wp).gather(2, index).view(n, c, h, w)


def crop_padding(image_size: int) -> int:
    """Padding of the crop augmentation: the paper's 4 pixels at 32, scaled (1 at 8, 4 at 28)."""
    return max(1, round(image_size / 8))


def augment_batch(
    x: torch.Tensor, augment: str, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Apply the named augmentation (one of :data:`AUGMENTATIONS`) to a uint8 batch."""
    if augment == "none":
        return x
    if augment == "crop-flip":
        return random_crop_flip(x, crop_padding(x.shape[-1]), generator=generator)
    raise ValueError(f"unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}")


RESIZE_CHUNK = 4096  # images resized at once (bounds the float copy: 4096 x 96 x 96 x 4 B = 151 MB)


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` resized to ``(N, C, size, size)``, uint8, on ``x``'s device.

    Bilinear, with antialiasing when shrinking (what ``torchvision.transforms.Resize``
    does to a tensor or PIL image), rounded back to 0..255; d2l's ``resize=96`` for
    Fashion-MNIST. Done once, when the data is loaded, in chunks of
    :data:`RESIZE_CHUNK` images.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"resize must be a positive number of pixels, got {size!r}")
    if x.dim() != 4:
        raise ValueError(f"resize_images expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if tuple(x.shape[-2:]) == (size, size):
        return x
    out = torch.empty((*x.shape[:2], size, size), dtype=torch.uint8, device=x.device)
    shrink = size < max(x.shape[-2:])
    for i in range(0, len(x), RESIZE_CHUNK):
        chunk = x[i : i + RESIZE_CHUNK].float()
        big = torch.nn.functional.interpolate(
            chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )
        out[i : i + RESIZE_CHUNK] = big.round_().clamp_(0, 255).to(torch.uint8)
    return out
