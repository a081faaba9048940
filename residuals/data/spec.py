"""What a dataset is: :class:`DatasetSpec` (how to find, verify and read it), its
:class:`RemoteFile` s, and :class:`DatasetError`, the one error of the data layer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["AUGMENTATIONS", "DatasetError", "DatasetSpec", "RemoteFile"]

AUGMENTATIONS = ("none", "crop-flip")  # names of the batch augmentations (residuals.data.augment)


class DatasetError(Exception):
    """A data problem; the message says what went wrong and what to do."""


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset: its name on disk, its md5 and where to download it."""

    name: str
    md5: str
    url: str


class _Arrays(NamedTuple):
    train_x: np.ndarray  # uint8 (N, C, H, W)
    train_y: np.ndarray  # int64 (N,)
    test_x: np.ndarray
    test_y: np.ndarray


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, verify and read one dataset.

    ``files`` are what is downloaded (md5 of each); ``members`` are the
    ``(name, md5)`` of the files inside an archive, checked after extraction
    (and when an already-extracted folder is found). Tests replace these tables
    to serve small files written in the official formats.
    """

    name: str
    in_channels: int
    image_size: int  # pixels, square
    classes: tuple[str, ...]
    augment: str  # the default augmentation, one of AUGMENTATIONS
    reader: Callable[[DatasetSpec, list[Path], Path, bool], _Arrays]
    files: tuple[RemoteFile, ...] = ()
    members: tuple[tuple[str, str], ...] = ()
    folder: str = ""  # the folder an archive extracts to
    homepage: str = ""
