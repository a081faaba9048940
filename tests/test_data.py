"""Datasets on the device: registry, files (IDX, CIFAR tarball), checksums, safe extraction,
downloads, splits, normalisation and augmentation. Everything runs offline on small files
written here in the official formats."""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import residuals.data as rdata
from residuals.data import (
    DATASETS,
    DatasetError,
    ImageData,
    RemoteFile,
    augment_batch,
    crop_padding,
    data_roots,
    default_data_dir,
    load_dataset,
    md5sum,
    normalize,
    random_crop_flip,
    resolve_device,
)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test may see or fill the real user cache."""
    monkeypatch.delenv("RESIDUALS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def offline(url, dest, timeout=60.0):
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(rdata.files, "fetch_url", offline)
    return calls


# --------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_and_fixed_stratified_split():
    d = load_dataset("digits")
    assert d.train_x.shape == (1347, 1, 8, 8) and d.test_x.shape == (450, 1, 8, 8)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.train_x.device.type == "cpu"
    assert (d.in_channels, d.num_classes, d.image_size) == (1, 10, 8)
    assert d.split == "test" and d.augment == "none"
    assert int(d.train_x.max()) == 255 and int(d.train_x.min()) == 0
    # stratified: every class has 43..46 test images (450 / 10, rounded by class size)
    counts = torch.bincount(d.test_y, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 46
    # fixed: the same split every time
    again = load_dataset("digits")
    assert torch.equal(again.test_x, d.test_x) and torch.equal(again.train_y, d.train_y)
    # mean/std per channel in [0, 1] units, measured on the training images
    x = d.train_x.double() / 255
    assert d.mean[0] == pytest.approx(float(x.mean()), abs=1e-12)
    assert d.std[0] == pytest.approx(float(x.std(unbiased=False)), abs=1e-12)


def test_val_split_holds_out_training_images_stratified():
    full = load_dataset("digits")
    d = load_dataset("digits", val_size=200, seed=3)
    assert d.split == "val"
    assert len(d.train_y) == 1147 and len(d.test_y) == 200
    counts = torch.bincount(d.test_y, minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21
    # the held-out images are training images, not test images, and disjoint from the rest
    as_rows = lambda x: {bytes(r) for r in x.reshape(len(x), -1).numpy()}  # noqa: E731
    assert as_rows(d.test_x) <= as_rows(full.train_x)
    assert torch.equal(
        torch.sort(torch.cat([d.train_y, d.test_y])).values, torch.sort(full.train_y).values
    )
    # seeded
    assert torch.equal(load_dataset("digits", val_size=200, seed=3).test_x, d.test_x)
    assert not torch.equal(load_dataset("digits", val_size=200, seed=4).test_x, d.test_x)


@pytest.mark.parametrize("val_size", [0, -3, 1347, 5000])
def test_val_split_sizes_out_of_range(val_size):
    with pytest.raises(DatasetError, match=f"val_size={val_size}"):
        load_dataset("digits", val_size=val_size)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist")
    for name in ("digits", "fashion-mnist", "cifar10"):
        assert name in str(e.value)


def test_imagedata_to_and_repr():
    d = load_dataset("digits")
    moved = d.to("cpu")
    assert torch.equal(moved.train_x, d.train_x) and moved.classes == d.classes
    assert "digits" in repr(d) and "1347" in repr(d) and "tensor(" not in repr(d)


# --------------------------------------------------------------------------- locations


def test_cache_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "residuals"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_data_dir() == tmp_path / "xdg" / "residuals"
    monkeypatch.setenv("RESIDUALS_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    assert data_roots(tmp_path / "cli") == [
        tmp_path / "cli",
        tmp_path / "env",
        tmp_path / "xdg" / "residuals",
    ]
    assert data_roots() == [tmp_path / "env", tmp_path / "xdg" / "residuals"]


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not supported|unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="no CUDA GPU"):
            load_dataset("digits", device="cuda:0")


# --------------------------------------------------------------------------- fashion-mnist (IDX)


def _idx_gz(path: Path, array: np.ndarray, magic: int) -> None:
    header = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fmnist(tmp_path, monkeypatch):
    """Small official-format IDX files in a 'server' folder, with the spec pointing at their md5s."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": (rng.integers(0, 256, (30, 28, 28)), 2051),
        "train-labels-idx1-ubyte.gz": (np.arange(30) % 10, 2049),
        "t10k-images-idx3-ubyte.gz": (rng.integers(0, 256, (12, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte.gz": (np.arange(12) % 10, 2049),
    }
    server = tmp_path / "server"
    server.mkdir()
    for name, (a, magic) in arrays.items():
        _idx_gz(server / name, a, magic)
    spec = DATASETS["fashion-mnist"]
    files = tuple(
        RemoteFile(f.name, md5sum(server / f.name), "https://example.org/fm/" + f.name)
        for f in spec.files
    )
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(spec, files=files))
    return server, {k: a for k, (a, _) in arrays.items()}


def test_fashion_mnist_reads_official_idx_files(fake_fmnist, tmp_path):
    server, arrays = fake_fmnist
    d = load_dataset("fashion-mnist", data_dir=server, download=False)
    assert d.train_x.shape == (30, 1, 28, 28) and d.test_x.shape == (12, 1, 28, 28)
    assert d.train_x.dtype == torch.uint8 and d.test_y.dtype == torch.int64
    np.testing.assert_array_equal(d.train_x[:, 0].numpy(), arrays["train-images-idx3-ubyte.gz"])
    np.testing.assert_array_equal(d.test_y.numpy(), arrays["t10k-labels-idx1-ubyte.gz"])
    assert d.classes[0] == "T-shirt/top" and d.num_classes == 10


def test_files_found_in_env_dir_under_dataset_folder(
    fake_fmnist, tmp_path, monkeypatch, no_network
):
    server, _ = fake_fmnist
    root = tmp_path / "env"
    (root / "fashion-mnist").mkdir(parents=True)
    for p in server.iterdir():
        (root / "fashion-mnist" / p.name).write_bytes(p.read_bytes())
    monkeypatch.setenv("RESIDUALS_DATA", str(root))
    assert load_dataset("fashion-mnist").train_x.shape[0] == 30
    assert no_network == []  # nothing was downloaded


def test_fake_download_lands_verified_in_data_dir(fake_fmnist, tmp_path, monkeypatch):
    server, _ = fake_fmnist
    fetched = []

    def fake_fetch(url, dest, timeout=60.0):
        fetched.append(url)
        Path(dest).write_bytes((server / url.rsplit("/", 1)[1]).read_bytes())

    monkeypatch.setattr(rdata.files, "fetch_url", fake_fetch)
    target = tmp_path / "mine"
    d = load_dataset("fashion-mnist", data_dir=target)
    assert len(fetched) == 4 and d.train_x.shape[0] == 30
    assert sorted(p.name for p in (target / "fashion-mnist").iterdir()) == sorted(
        p.name for p in server.iterdir()
    )  # no temporary files left
    load_dataset("fashion-mnist", data_dir=target)
    assert len(fetched) == 4  # second load: found, not downloaded again


def test_bad_download_is_not_left_in_place(fake_fmnist, tmp_path, monkeypatch):
    monkeypatch.setattr(
        rdata.files, "fetch_url", lambda url, dest, timeout=60.0: Path(dest).write_bytes(b"junk")
    )
    target = tmp_path / "mine"
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_dir=target)
    msg = str(e.value)
    expected = DATASETS["fashion-mnist"].files[0].md5
    assert "checksum mismatch" in msg and expected in msg
    assert __import__("hashlib").md5(b"junk").hexdigest() in msg
    assert "train-images-idx3-ubyte.gz" in msg
    assert list((target / "fashion-mnist").iterdir()) == []


def test_local_checksum_mismatch_names_file_expected_and_got(fake_fmnist, no_network):
    server, _ = fake_fmnist
    bad = server / "t10k-labels-idx1-ubyte.gz"
    _idx_gz(bad, np.zeros(12), 2049)
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_dir=server)
    msg = str(e.value)
    spec_md5 = next(f.md5 for f in DATASETS["fashion-mnist"].files if f.name == bad.name)
    assert str(bad) in msg and spec_md5 in msg and md5sum(bad) in msg


def test_missing_files_without_network_say_what_where_and_url(fake_fmnist, tmp_path, no_network):
    server, _ = fake_fmnist
    target = tmp_path / "empty"
    (target).mkdir()
    (target / "train-images-idx3-ubyte.gz").write_bytes(
        (server / "train-images-idx3-ubyte.gz").read_bytes()
    )
    with pytest.raises(DatasetError) as e:
        load_dataset("fashion-mnist", data_dir=target)
    msg = str(e.value)
    assert no_network  # a download was tried
    for f in DATASETS["fashion-mnist"].files[1:]:
        assert f.name in msg and f.url in msg
    assert "train-images-idx3-ubyte.gz" not in msg.split("Missing files:")[1].split("Looked in:")[0]
    assert str(target / "fashion-mnist") in msg and str(target) in msg
    assert str(Path(os.environ["XDG_CACHE_HOME"]) / "residuals") in msg
    assert "network is unreachable" in msg
    # download=False: the same message, no attempt
    no_network.clear()
    with pytest.raises(DatasetError, match="download=False"):
        load_dataset("fashion-mnist", data_dir=target, download=False)
    assert no_network == []


def test_idx_with_wrong_magic_or_truncated(tmp_path):
    p = tmp_path / "x.gz"
    _idx_gz(p, np.zeros((2, 28, 28)), 2049)
    with pytest.raises(DatasetError, match="magic number 2051"):
        rdata.read_idx(p, 2051)
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">4i", 2051, 5, 28, 28) + bytes(100))
    with pytest.raises(DatasetError, match="truncated"):
        rdata.read_idx(p, 2051)


# --------------------------------------------------------------------------- cifar10 (tarball)


def _cifar_tarball(
    path: Path, n_per_batch: int = 4, extra: dict[str, bytes] | None = None, seed: int = 0
) -> dict[str, np.ndarray]:
    """The official layout; keys as bytes, as Python 2's pickles load under encoding='bytes'."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    with tarfile.open(path, "w:gz") as tar:

        def add(name: str, payload: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))

        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
            y = list(rng.integers(0, 10, n_per_batch))
            arrays[name] = x
            arrays[name + "_labels"] = np.array(y)
            add(
                f"cifar-10-batches-py/{name}",
                pickle.dumps({b"batch_label": name.encode(), b"data": x, b"labels": y}),
            )
        add(
            "cifar-10-batches-py/batches.meta",
            pickle.dumps({b"label_names": [c.encode() for c in DATASETS["cifar10"].classes]}),
        )
        for name, payload in (extra or {}).items():
            add(name, payload)
    return arrays


def _member_md5s(tarball: Path, tmp: Path) -> tuple[tuple[str, str], ...]:
    out = tmp / "md5-scratch"
    with tarfile.open(tarball) as tar:
        tar.extractall(out, filter="data")
    return tuple(
        (n, md5sum(out / "cifar-10-batches-py" / n)) for n, _ in DATASETS["cifar10"].members
    )


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    server = tmp_path / "server"
    server.mkdir()
    tarball = server / "cifar-10-python.tar.gz"
    arrays = _cifar_tarball(tarball)
    spec = DATASETS["cifar10"]
    monkeypatch.setitem(
        DATASETS,
        "cifar10",
        dataclasses.replace(
            spec,
            files=(RemoteFile(tarball.name, md5sum(tarball), spec.files[0].url),),
            members=_member_md5s(tarball, tmp_path),
        ),
    )
    return tarball, arrays


def test_cifar_download_extract_and_load(fake_cifar, tmp_path, monkeypatch):
    tarball, arrays = fake_cifar
    fetched = []

    def fake_fetch(url, dest, timeout=60.0):
        fetched.append(url)
        Path(dest).write_bytes(tarball.read_bytes())

    monkeypatch.setattr(rdata.files, "fetch_url", fake_fetch)
    root = tmp_path / "data"
    d = load_dataset("cifar10", data_dir=root)
    assert fetched == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert d.train_x.shape == (20, 3, 32, 32) and d.test_x.shape == (4, 3, 32, 32)
    assert d.augment == "crop-flip" and d.in_channels == 3 and d.image_size == 32
    # batches concatenated in order 1..5, rows are (3, 32, 32) channel-major
    want = np.concatenate([arrays[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(d.train_x.numpy(), want)
    np.testing.assert_array_equal(d.test_y.numpy(), arrays["test_batch_labels"])
    assert len(d.mean) == len(d.std) == 3
    extracted = root / "cifar10" / "cifar-10-batches-py"
    assert extracted.is_dir()
    assert not [p for p in (root / "cifar10").iterdir() if p.name.startswith(".")]
    # the extracted folder is enough on its own (e.g. torchvision's), md5-checked
    (root / "cifar10" / tarball.name).unlink()
    assert torch.equal(load_dataset("cifar10", data_dir=root, download=False).train_x, d.train_x)
    (extracted / "test_batch").write_bytes(b"tampered")
    with pytest.raises(DatasetError, match="checksum mismatch.*test_batch"):
        load_dataset("cifar10", data_dir=root, download=False)


def test_cifar_val_split_is_the_papers_kind(fake_cifar):
    tarball, _ = fake_cifar
    d = load_dataset("cifar10", data_dir=tarball.parent, val_size=10)
    assert d.split == "val" and len(d.train_y) == 10 and len(d.test_y) == 10
    assert d.extra["val_stratified"] is False  # 20 images of 10 classes: some have only 1


def test_val_split_smaller_than_the_class_count_is_random():
    d = load_dataset("digits", val_size=5)
    assert len(d.test_y) == 5 and d.extra["val_stratified"] is False
    assert load_dataset("digits", val_size=200).extra["val_stratified"] is True


@pytest.mark.parametrize("member", ["../evil", "cifar-10-batches-py/../../evil", "/tmp/evil"])
def test_tarball_with_path_traversal_is_refused(tmp_path, monkeypatch, member):
    tarball = tmp_path / "server" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir()
    _cifar_tarball(tarball, extra={member: b"owned"})
    spec = DATASETS["cifar10"]
    monkeypatch.setitem(
        DATASETS,
        "cifar10",
        dataclasses.replace(
            spec, files=(RemoteFile(tarball.name, md5sum(tarball), spec.files[0].url),)
        ),
    )
    with pytest.raises(DatasetError, match="refusing to extract") as e:
        load_dataset("cifar10", data_dir=tarball.parent, download=False)
    assert member in str(e.value)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "server" / "evil").exists()
    assert not Path("/tmp/evil").exists() or Path("/tmp/evil").read_bytes() != b"owned"
    # nothing half-extracted is left behind
    assert not (tarball.parent / "cifar10" / "cifar-10-batches-py").exists()
    assert not [p for p in (tarball.parent / "cifar10").iterdir()]


def test_tarball_with_a_link_is_refused(tmp_path):
    tarball = tmp_path / "t.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(DatasetError, match="link or special file"):
        rdata.readers._safe_extract(tarball, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cifar_missing_message_mentions_extracted_folder(tmp_path, no_network):
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar10", data_dir=tmp_path / "none")
    msg = str(e.value)
    assert "cifar-10-python.tar.gz" in msg and "c58f30108f718f92721af3b95e74349a" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "cifar-10-batches-py" in msg


# --------------------------------------------------------------------------- batch transforms


def test_normalize_matches_formula_and_layout():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 6, 7), dtype=torch.uint8, generator=g)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = normalize(x, mean, std)
    ref = (x.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1).double()) / torch.tensor(
        std
    ).view(1, 3, 1, 1).double()
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-6, atol=1e-6)
    cl = normalize(x, torch.tensor(mean), torch.tensor(std), channels_last=True)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, out)
    assert normalize(x, mean, std, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="channels"):
        normalize(x, (0.5,) * 2, (0.5,) * 2)
    with pytest.raises(ValueError, match="batch"):
        normalize(x[0], mean, std)


def _reference_crop(x: torch.Tensor, pad: int) -> list[set[bytes]]:
    """Every crop/flip an image can become (slow reference, test only)."""
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    h, w = x.shape[-2:]
    options = []
    for img in padded:
        s = set()
        for dy in range(2 * pad + 1):
            for dx in range(2 * pad + 1):
                win = img[:, dy : dy + h, dx : dx + w]
                s.add(win.numpy().tobytes())
                s.add(win.flip(-1).numpy().tobytes())
        options.append(s)
    return options


def test_random_crop_flip_really_crops_and_flips_and_is_seeded():
    n = 64
    x = (torch.arange(n * 2 * 8 * 8) % 251 + 1).to(torch.uint8).view(n, 2, 8, 8)
    out = random_crop_flip(x, 2, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    options = _reference_crop(x, 2)
    assert all(o.numpy().tobytes() in s for o, s in zip(out, options))
    assert (out == 0).any()  # padding came in
    assert not torch.equal(out, x)
    # same seed, same result; another seed, another
    again = random_crop_flip(x, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert not torch.equal(out, random_crop_flip(x, 2, generator=torch.Generator().manual_seed(1)))
    # pad 0: each image is itself or its mirror, and both happen
    flips = random_crop_flip(x, 0, generator=torch.Generator().manual_seed(0))
    same = [torch.equal(f, i) for f, i in zip(flips, x)]
    mirrored = [torch.equal(f, i.flip(-1)) for f, i in zip(flips, x)]
    assert all(a or b for a, b in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54


def test_augment_batch_and_padding():
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    assert augment_batch(x, "none") is x
    assert (
        augment_batch(x, "crop-flip", generator=torch.Generator().manual_seed(0)).shape == x.shape
    )
    assert (crop_padding(32), crop_padding(28), crop_padding(8)) == (4, 4, 1)
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment_batch(x, "rotate")
    with pytest.raises(ValueError, match="pad"):
        random_crop_flip(x, -1)


def test_imagedata_is_constructible_by_hand():
    x = torch.zeros(4, 1, 5, 5, dtype=torch.uint8)
    d = ImageData(
        "tiny",
        x,
        torch.zeros(4, dtype=torch.int64),
        x,
        torch.zeros(4, dtype=torch.int64),
        ["a", "b"],
        (0.5,),
        (0.25,),
    )
    assert (d.in_channels, d.num_classes, d.image_size, d.split) == (1, 2, 5, "test")
