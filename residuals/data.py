"""Image classification data, held on the training device as uint8 tensors.

Three datasets, from small to the paper's:

* ``digits`` -- scikit-learn's embedded 8x8 handwritten digits (1797 images,
  1 channel, 10 classes; no download). The 0..16 pixel values are rescaled to
  0..255. The train/test split is fixed: a stratified 1347/450 split,
  ``sklearn.model_selection.train_test_split(test_size=450, stratify=y,
  random_state=0)``.
* ``fashion-mnist`` -- Zalando's 28x28 grey-scale clothes (60000/10000), the
  official IDX ``.gz`` files, md5-verified.
* ``cifar10`` -- Krizhevsky's 32x32 colour images (50000/10000), the official
  python tarball, md5-verified and extracted safely (no member may leave the
  target folder; links and devices are refused).

Files are looked for, in this order, in ``data_dir`` (the CLI's
``--data-dir``), in ``$RESIDUALS_DATA``, and in the user cache
(``$XDG_CACHE_HOME/residuals``, else ``~/.cache/residuals``), each both in
``<root>/<dataset>/`` and in ``<root>/`` itself. Missing files are downloaded
into ``<first root>/<dataset>/``: to a temporary file, md5-checked, then
atomically renamed, so a bad or partial download never sits where a good file
is expected.

Images stay uint8 ``(N, C, H, W)`` on the device. :func:`normalize` and
:func:`random_crop_flip` are batched tensor operations on that device, run per
mini-batch by the trainer: no host round trip, no per-sample Python loop.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

__all__ = [
    "DATASETS",
    "AUGMENTATIONS",
    "DatasetError",
    "DatasetSpec",
    "ImageData",
    "RemoteFile",
    "augment_batch",
    "crop_padding",
    "data_roots",
    "default_data_dir",
    "fetch_url",
    "load_dataset",
    "md5sum",
    "normalize",
    "random_crop_flip",
    "resolve_device",
]

AUGMENTATIONS = ("none", "crop-flip")


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
    reader: Callable[["DatasetSpec", list[Path], Path, bool], _Arrays]
    files: tuple[RemoteFile, ...] = ()
    members: tuple[tuple[str, str], ...] = ()
    folder: str = ""  # the folder an archive extracts to
    homepage: str = ""


# --------------------------------------------------------------------------- locations


def default_data_dir() -> Path:
    """``$RESIDUALS_DATA``, else ``$XDG_CACHE_HOME/residuals``, else ``~/.cache/residuals``."""
    env = os.environ.get("RESIDUALS_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "residuals"
    return Path.home() / ".cache" / "residuals"


def data_roots(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Where datasets are looked for, in order: ``data_dir``, ``$RESIDUALS_DATA``, the user cache.

    The first root is where downloads go.
    """
    roots: list[Path] = []
    if data_dir is not None:
        roots.append(Path(data_dir).expanduser())
    env = os.environ.get("RESIDUALS_DATA")
    if env:
        roots.append(Path(env).expanduser())
    xdg = os.environ.get("XDG_CACHE_HOME")
    roots.append(Path(xdg).expanduser() / "residuals" if xdg else Path.home() / ".cache" / "residuals")
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


def _search_dirs(spec: DatasetSpec, roots: list[Path]) -> list[Path]:
    """``<root>/<dataset>/`` then ``<root>/`` for each root."""
    return [d for r in roots for d in (r / spec.name, r)]


# --------------------------------------------------------------------------- files


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def fetch_url(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Write the bytes at ``url`` to ``dest`` (network errors propagate as ``OSError``)."""
    request = urllib.request.Request(url, headers={"User-Agent": "residuals"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(dest, "wb") as out:
        while block := response.read(1 << 20):
            out.write(block)


def _checksum_error(path: Path, expected: str, got: str, what: str) -> DatasetError:
    return DatasetError(
        f"checksum mismatch for {what} {path}: expected md5 {expected}, got {got}. "
        "The file is corrupt or not the official one; delete it (it will be "
        "downloaded again) or replace it with the official file."
    )


def _verify(path: Path, expected: str) -> None:
    got = md5sum(path)
    if got != expected:
        raise _checksum_error(path, expected, got, "file")


def _download(remote: RemoteFile, dest_dir: Path) -> Path:
    """Download to a temporary file next to the target, md5-check, then rename atomically."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{remote.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        fetch_url(remote.url, tmp)
        got = md5sum(tmp)
        if got != remote.md5:
            raise DatasetError(
                f"checksum mismatch for the download of {remote.name} from {remote.url}: expected "
                f"md5 {remote.md5}, got {got}. It was discarded, nothing was written to "
                f"{dest_dir / remote.name}. The server may have sent an error page or a changed "
                f"file: try again later, or download it yourself and put it in {dest_dir}.")
        os.replace(tmp, dest_dir / remote.name)
    finally:
        tmp.unlink(missing_ok=True)
    return dest_dir / remote.name


def _missing_error(spec: DatasetSpec, missing: Sequence[RemoteFile], dirs: list[Path],
                   target: Path, reason: str) -> DatasetError:
    lines = [f"dataset {spec.name!r}: {reason}.", "Missing files:"]
    lines += [f"  {f.name} (md5 {f.md5}) from {f.url}" for f in missing]
    lines.append("Looked in:")
    lines += [f"  {d}" for d in dirs]
    lines.append(f"Download them and put them in {target} (or point --data-dir / "
                 "RESIDUALS_DATA at the folder that holds them).")
    if spec.members:
        lines.append("An already extracted folder works too: "
                     + ", ".join(n for n, _ in spec.members) + f" in <root>/{spec.folder}/.")
    return DatasetError("\n".join(lines))


def _find_or_download(spec: DatasetSpec, files: Sequence[RemoteFile], dirs: list[Path],
                      target: Path, download: bool) -> dict[str, Path]:
    """Path of each file: found (and md5-verified) or downloaded into ``target``."""
    found: dict[str, Path] = {}
    missing: list[RemoteFile] = []
    for f in files:
        path = next((d / f.name for d in dirs if (d / f.name).is_file()), None)
        if path is None:
            missing.append(f)
        else:
            _verify(path, f.md5)
            found[f.name] = path
    if missing and not download:
        raise _missing_error(spec, missing, dirs, target, "files not found and download=False")
    for i, f in enumerate(missing):
        try:
            found[f.name] = _download(f, target)
        except OSError as e:  # URLError is an OSError
            raise _missing_error(spec, missing[i:], dirs, target,
                                 f"could not download {f.url} ({e})") from e
    return found


# --------------------------------------------------------------------------- digits


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
        raise DatasetError(f"{path} is not an IDX file with magic number {magic}; "
                           "delete it and let it be downloaded again.")
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    data = np.frombuffer(raw, dtype=np.uint8, offset=header)
    if data.size != int(np.prod(shape)):
        raise DatasetError(f"{path}: header says shape {shape} but holds {data.size} bytes; "
                           "the file is truncated, delete it and let it be downloaded again.")
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
            raise DatasetError(f"{spec.name}: {what} images ({len(x)}) and labels ({len(y)}) "
                               "differ in number; the files do not belong together.")
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
                raise DatasetError(f"refusing to extract {archive}: member {m.name!r} would be "
                                   f"written outside {dest}. The archive is not the official one; "
                                   "delete it.")
            if not (m.isfile() or m.isdir()):
                raise DatasetError(f"refusing to extract {archive}: member {m.name!r} is a link or "
                                   "special file. The archive is not the official one; delete it.")
        root = dest.resolve()
        for m in members:
            out = (dest / m.name).resolve()
            if root not in out.parents and out != root:
                raise DatasetError(f"refusing to extract {archive}: member {m.name!r} resolves to "
                                   f"{out}, outside {dest}.")
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
    folder = next((d / spec.folder for d in dirs
                   if _cifar_folder_ok(d / spec.folder, spec.members)), None)
    if folder is None:
        tarball = _find_or_download(spec, spec.files, dirs, target, download)[spec.files[0].name]
        try:
            target.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=target, prefix=".extract-"))
        except OSError as e:
            raise DatasetError(f"cannot extract {tarball} into {target} ({e}); pass a writable "
                               "--data-dir or set RESIDUALS_DATA to one") from e
        try:
            _safe_extract(tarball, staging)
            if not _cifar_folder_ok(staging / spec.folder, spec.members):
                raise DatasetError(f"{tarball} does not contain {spec.folder}/ with the files "
                                   f"{[n for n, _ in spec.members]}; delete it.")
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
    return _Arrays(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                   test_x, test_y)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------- registry

_FMNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        name="digits", in_channels=1, image_size=8, classes=tuple(str(i) for i in range(10)),
        augment="none", reader=_read_digits,
        homepage="https://scikit-learn.org/stable/modules/generated/sklearn.datasets.load_digits.html",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", in_channels=1, image_size=28,
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        augment="none", reader=_read_idx_dataset,
        files=tuple(RemoteFile(n, m, _FMNIST_URL + n) for n, m in (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        )),
        homepage="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "cifar10": DatasetSpec(
        name="cifar10", in_channels=3, image_size=32,
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"),
        augment="crop-flip", reader=_read_cifar10,
        files=(RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", _CIFAR_URL),),
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


# --------------------------------------------------------------------------- ImageData


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

    def to(self, device: str | torch.device) -> "ImageData":
        """The same data on ``device`` (no copy when it is already there)."""
        move = {k: getattr(self, k).to(device) for k in ("train_x", "train_y", "test_x", "test_y")}
        return ImageData(name=self.name, classes=list(self.classes), mean=self.mean, std=self.std,
                         augment=self.augment, split=self.split, extra=dict(self.extra), **move)

    def __repr__(self) -> str:
        return (f"ImageData({self.name!r}, train={tuple(self.train_x.shape)}, "
                f"{self.split}={tuple(self.test_x.shape)}, classes={self.num_classes}, "
                f"device={self.device}, augment={self.augment!r})")


def resolve_device(device: str | torch.device) -> str:
    """``"auto"`` -> ``"cuda"`` if available else ``"cpu"``; a CUDA device without a GPU is an error."""
    name = str(device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda' or 'cuda:<index>'") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} was asked for but no CUDA GPU is available "
                             f"(torch {torch.__version__}); use --device cpu or --device auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist: {torch.cuda.device_count()} "
                             "CUDA device(s) are visible")
    elif dev.type != "cpu":
        raise ValueError(f"device {name!r} is not supported: use 'auto', 'cpu' or 'cuda[:i]'")
    return name


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


def _holdout(y: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(train, val) indices of the training set, and whether the split is stratified.

    Stratified by class when every class can be split (at least 2 images each
    and room for every class on both sides), else uniformly at random; both
    seeded.
    """
    from sklearn.model_selection import train_test_split

    n = len(y)
    if not 0 < val_size < n:
        raise DatasetError(f"val_size={val_size} must be between 1 and {n - 1} (the training set "
                           f"has {n} images)")
    _, counts = np.unique(y, return_counts=True)
    stratified = counts.min() >= 2 and len(counts) <= val_size <= n - len(counts)
    tr, va = train_test_split(np.arange(n), test_size=val_size, random_state=seed,
                              stratify=y if stratified else None)
    return np.sort(tr), np.sort(va), bool(stratified)


def load_dataset(name: str, *, data_dir: str | os.PathLike | None = None,
                 device: str | torch.device = "cpu", download: bool = True,
                 val_size: int | None = None, seed: int = 0) -> ImageData:
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
    """
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
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

    return ImageData(name=name, train_x=put(train_x), train_y=put(train_y), test_x=put(test_x),
                     test_y=put(test_y), classes=list(spec.classes), mean=mean, std=std,
                     augment=spec.augment, split=split, extra=extra)


# --------------------------------------------------------------------------- batch transforms


def _per_channel(v: Sequence[float] | torch.Tensor, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=dtype, device=x.device)  # no copy if already a matching tensor
    return t.reshape(1, -1, 1, 1)


def normalize(x: torch.Tensor, mean: Sequence[float] | torch.Tensor,
              std: Sequence[float] | torch.Tensor, *, dtype: torch.dtype = torch.float32,
              channels_last: bool = False) -> torch.Tensor:
    """``(x / 255 - mean) / std`` for a uint8 batch ``(N, C, H, W)``, on ``x``'s device.

    ``mean``/``std`` are per channel in [0, 1] units. Pass them as tensors on
    ``x``'s device in a hot loop: a Python tuple costs a host-to-device copy
    per call.
    """
    if x.dim() != 4:
        raise ValueError(f"normalize expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    mean_t, std_t = _per_channel(mean, x, dtype), _per_channel(std, x, dtype)
    if mean_t.shape[1] != x.shape[1] or std_t.shape[1] != x.shape[1]:
        raise ValueError(f"mean/std have {mean_t.shape[1]}/{std_t.shape[1]} channels, "
                         f"the batch has {x.shape[1]}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = x.to(dtype=dtype, memory_format=fmt)
    return out.div_(255.0).sub_(mean_t).div_(std_t)


def random_crop_flip(x: torch.Tensor, pad: int = 4, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's augmentation (He et al. 2015, sec. 4.2), batched on ``x``'s device.

    Each image is zero-padded by ``pad`` pixels on every side, a random window
    of the original size is cropped from it, and it is flipped horizontally
    with probability 1/2. One gather, no per-sample loop. ``x``: ``(N, C, H, W)``
    of any dtype; ``generator`` must live on ``x``'s device.
    """
    if x.dim() != 4:
        raise ValueError(f"random_crop_flip expects a batch (N, C, H, W), got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    n, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), device=dev, generator=generator)
    flip = torch.randint(0, 2, (n, 1), device=dev, generator=generator).bool()
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


def augment_batch(x: torch.Tensor, augment: str, *,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the named augmentation (one of :data:`AUGMENTATIONS`) to a uint8 batch."""
    if augment == "none":
        return x
    if augment == "crop-flip":
        return random_crop_flip(x, crop_padding(x.shape[-1]), generator=generator)
    raise ValueError(f"unknown augmentation {augment!r}; choose one of {AUGMENTATIONS}")
