"""Datasets on the training device: :class:`ImageData` (uint8 tensors plus their channel
statistics) and :func:`load_dataset`, which finds, reads and optionally splits a dataset."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from residuals.data.augment import resize_images
from residuals.data.files import _search_dirs, data_roots
from residuals.data.readers import DATASETS
from residuals.data.spec import DatasetError
from residuals.device import resolve_device

__all__ = ["ImageData", "load_dataset"]


@dataclass(repr=False)
class ImageData:
    """A classification dataset on one device.

    ``train_x``/``test_x`` are uint8 ``(N, C, H, W)``, ``train_y``/``test_y``
    int64 ``(N,)``, all on the training device. ``mean``/``std`` are per
    channel in [0, 1] units, measured on ``train_x``. ``split`` is ``"test"``
    when ``test_*`` is the official test set and ``"val"`` when it is a
    held-out part of the training set (the test set then is not loaded).
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    split: str = "test"
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: str | torch.device) -> ImageData:
        """The same data on ``device`` (no copy when it is already there)."""
        move = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")}
        return ImageData(
            name=self.name,
            classes=list(self.classes),
            mean=self.mean,
            std=self.std,
            augment=self.augment,
            split=self.split,
            extra=dict(self.extra),
            **move,
        )

    def __repr__(self) -> str:
        return (
            f"ImageData({self.name!r}, train={tuple(self.train_x.shape)}, "
            f"{self.split}={tuple(self.test_x.shape)}, classes={self.num_classes}, "
            f"device={self.device}, augment={self.augment!r})"
        )


def _channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std in [0, 1] units, from a 256-bin histogram per channel."""
    means, stds = [], []
    levels = np.arange(256, dtype=np.float64) / 255.0
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].ravel(), minlength=256).astype(np.float64)
        n = counts.sum()
        mean = float(counts @ levels / n)
        var = float(counts @ (levels - mean) ** 2 / n)
        means.append(mean)
        stds.append(max(var, 1e-12) ** 0.5)
    return tuple(means), tuple(stds)


def _channel_stats_on_device(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`_channel_stats` of a uint8 tensor, counted where it lives (one histogram each)."""
    counts = (
        torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256) for c in range(x.shape[1])])
        .cpu()
        .numpy()
        .astype(np.float64)
    )
    levels = np.arange(256, dtype=np.float64) / 255.0
    n = counts.sum(axis=1)
    means = counts @ levels / n
    var = (counts * (levels[None, :] - means[:, None]) ** 2).sum(axis=1) / n
    return tuple(map(float, means)), tuple(float(max(v, 1e-12) ** 0.5) for v in var)


def _holdout(y: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(train, val) indices of the training set, and whether the split is stratified.

    Stratified by class when every class can be split (at least 2 images each
    and room for every class on both sides), else uniformly at random; both
    seeded.
    """
    from sklearn.model_selection import train_test_split

    n = len(y)
    if not 0 < val_size < n:
        raise DatasetError(
            f"val_size={val_size} must be between 1 and {n - 1} (the training set has {n} images)"
        )
    _, counts = np.unique(y, return_counts=True)
    stratified = counts.min() >= 2 and len(counts) <= val_size <= n - len(counts)
    tr, va = train_test_split(
        np.arange(n), test_size=val_size, random_state=seed, stratify=y if stratified else None
    )
    return np.sort(tr), np.sort(va), bool(stratified)


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    download: bool = True,
    val_size: int | None = None,
    seed: int = 0,
    resize: int | None = None,
) -> ImageData:
    """Load a dataset onto ``device`` as uint8 tensors.

    Parameters
    ----------
    name : one of :data:`DATASETS`.
    data_dir : where to look first and download to (see the module docstring).
    device : ``"cpu"``, ``"cuda[:i]"`` or ``"auto"``.
    download : fetch missing files (md5-verified) when online.
    val_size : hold out this many training images (stratified by class, seeded
        by ``seed``; uniformly at random when too few images per class) as the
        evaluation split instead of the test set, which is then not loaded.
        The paper's 45k/5k CIFAR-10 split is ``val_size=5000``.
    resize : resize every image to ``resize`` x ``resize`` pixels on ``device``
        (:func:`~residuals.data.augment.resize_images`; d2l trains its ResNet-18 on
        Fashion-MNIST at 96); the channel statistics are those of the resized images.
    """
    if name not in DATASETS:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}"
        )
    spec = DATASETS[name]
    dev = resolve_device(device)
    roots = data_roots(data_dir)
    arrays = spec.reader(spec, _search_dirs(spec, roots), roots[0] / spec.name, download)
    train_x, train_y, test_x, test_y = arrays
    split = "test"
    extra: dict[str, object] = {"n_train_full": len(train_y), "n_test": len(test_y)}
    if val_size is not None:
        tr, va, extra["val_stratified"] = _holdout(train_y, int(val_size), seed)
        train_x, train_y, test_x, test_y = train_x[tr], train_y[tr], train_x[va], train_y[va]
        split = "val"
        extra["val_seed"] = seed
    mean, std = _channel_stats(train_x)

    def put(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    images = {"train_x": put(train_x), "test_x": put(test_x)}
    if resize is not None:
        extra["resize"] = resize
        extra["original_size"] = int(train_x.shape[-1])
        images = {k: resize_images(v, resize) for k, v in images.items()}
        mean, std = _channel_stats_on_device(images["train_x"])
    return ImageData(
        name=name,
        train_y=put(train_y),
        test_y=put(test_y),
        **images,
        classes=list(spec.classes),
        mean=mean,
        std=std,
        augment=spec.augment,
        split=split,
        extra=extra,
    )
