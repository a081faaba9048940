"""The three readers (scikit-learn's digits, IDX files, the CIFAR-10 python tarball) and the
registry :data:`DATASETS` that names them."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from residuals.data.files import _checksum_error, _find_or_download, md5sum
from residuals.data.spec import DatasetError, DatasetSpec, RemoteFile, _Arrays

__all__ = ["DATASETS", "read_idx"]


def _read_digits(spec: DatasetSpec, dirs: list[Path], target: Path, download: bool) -> _Arrays:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    # 0..16 -> 0..255, so every dataset is uint8 in the same units.
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (1797, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(x, y, test_size=450, stratify=y, random_state=0)
    return _Arrays(tr_x, tr_y, te_x, te_y)


# --------------------------------------------------------------------------- IDX (fashion-mnist)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read a gzipped IDX file (big-endian int32 header, then one byte per value)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = {2049: 1, 2051: 3}[magic]
    header = 4 * (1 + ndim)
    if len(raw) < header or struct.unpack(">i", raw[:4])[0] != magic:
        raise DatasetError(
            f"{path} is not an IDX file with magic number {magic}; "
            "delete it and let it be downloaded again."
        )
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise DatasetError(
            f"{path}: header says shape {shape} but holds {data.size} bytes; "
            "the file is truncated, delete it and let it be downloaded again."
        )
    return data.reshape(shape).copy()  # writable, owned by numpy


def _read_idx_dataset(spec: DatasetSpec, dirs: list[Path], target: Path, download: bool) -> _Arrays:
    paths = _find_or_download(spec, spec.files, dirs, target, download)
    tr_img, tr_lab, te_img, te_lab = (paths[f.name] for f in spec.files)
    train_x = read_idx(tr_img, 2051)[:, None]
    test_x = read_idx(te_img, 2051)[:, None]
    train_y = read_idx(tr_lab, 2049).astype(np.int64)
    test_y = read_idx(te_lab, 2049).astype(np.int64)
    for x, y, what in ((train_x, train_y, "train"), (test_x, test_y, "test")):
        if len(x) != len(y):
            raise DatasetError(
                f"{spec.name}: {what} images ({len(x)}) and labels ({len(y)}) "
                "differ in number; the files do not belong together."
            )
    return _Arrays(train_x, train_y, test_x, test_y)


# --------------------------------------------------------------------------- CIFAR-10


def _safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tarball's regular files under ``dest``; refuse anything that could escape it.

    Every member is checked before anything is written: absolute names, ``..``
    components, links, devices and fifos are refused.
    """
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for m in members:
            parts = PurePosixPath(m.name).parts
            if m.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise DatasetError(
                    f"refusing to extract {archive}: member {m.name!r} would be "
                    f"written outside {dest}. The archive is not the official one; "
                    "delete it."
                )
            if not (m.isfile() or m.isdir()):
                raise DatasetError(
                    f"refusing to extract {archive}: member {m.name!r} is a link or "
                    "special file. The archive is not the official one; delete it."
                )
        root = dest.resolve()
        for m in members:
            out = (dest / m.name).resolve()
            if root not in out.parents and out != root:
                raise DatasetError(
                    f"refusing to extract {archive}: member {m.name!r} resolves to "
                    f"{out}, outside {dest}."
                )
            if m.isdir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None  # regular file
            with src, open(out, "wb") as f:
                while block := src.read(1 << 20):
                    f.write(block)


def _cifar_folder_ok(folder: Path, members: Sequence[tuple[str, str]]) -> bool:
    """All members present; md5s are checked (raising on mismatch) only when they are."""
    if not all((folder / name).is_file() for name, _ in members):
        return False
    for name, md5 in members:
        got = md5sum(folder / name)
        if got != md5:
            raise _checksum_error(folder / name, md5, got, "extracted file")
    return True


def _unpickle(path: Path) -> dict[str, object]:
    # The official batches were pickled by Python 2: keys (and strings) come back as bytes.
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _read_cifar10(spec: DatasetSpec, dirs: list[Path], target: Path, download: bool) -> _Arrays:
    folder = next(
        (d / spec.folder for d in dirs if _cifar_folder_ok(d / spec.folder, spec.members)), None
    )
    if folder is None:
        tarball = _find_or_download(spec, spec.files, dirs, target, download)[spec.files[0].name]
        try:
            target.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target, prefix=".extract-"))
        except OSError as e:
            raise DatasetError(
                f"cannot extract {tarball} into {target} ({e}); pass a writable "
                "--data-dir or set RESIDUALS_DATA to one"
            ) from e
        try:
            _safe_extract(tarball, staging)
            if not _cifar_folder_ok(staging / spec.folder, spec.members):
                raise DatasetError(
                    f"{tarball} does not contain {spec.folder}/ with the files "
                    f"{[n for n, _ in spec.members]}; delete it."
                )
            folder = target / spec.folder
            if folder.exists():  # an incomplete earlier extraction in our own target
                _rmtree(folder)
            os.replace(staging / spec.folder, folder)
        finally:
            _rmtree(staging)

    def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
        d = _unpickle(folder / name)
        x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return x, np.asarray(d["labels"], dtype=np.int64)

    names = [n for n, _ in spec.members]
    train = [batch(n) for n in names if n.startswith("data_batch")]
    test_x, test_y = batch("test_batch")
    return _Arrays(
        np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]), test_x, test_y
    )


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- registry

_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        name="digits",
        in_channels=1,
        image_size=8,
        classes=tuple(str(i) for i in range(10)),
        augment="none",
        reader=_read_digits,
        homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        in_channels=1,
        image_size=28,
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        augment="none",
        reader=_read_idx_dataset,
        files=tuple(
            RemoteFile(n, m, _FMNIST_URL + n)
            for n, m in (
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            )
        ),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        in_channels=3,
        image_size=32,
        classes=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        augment="crop-flip",
        reader=_read_cifar10,
        files=(
            RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", _CIFAR_URL),
        ),
        # md5s of the extracted official files (the same table torchvision uses)
        members=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("test_batch", "40351d587109b95175f43aff81a1287e"),
            ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        ),
        folder="cifar-10-batches-py",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}
