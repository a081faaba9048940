"""Where dataset files live and how they arrive: the search roots, md5 checks, and
downloads that are md5-checked in a temporary file before an atomic rename."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from residuals.data.spec import DatasetError, DatasetSpec, RemoteFile

__all__ = ["data_roots", "default_data_dir", "fetch_url", "md5sum"]


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
    roots.append(
        Path(xdg).expanduser() / "residuals" if xdg else Path.home() / ".cache" / "residuals"
    )
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
                f"file: try again later, or download it yourself and put it in {dest_dir}."
            )
        os.replace(tmp, dest_dir / remote.name)
    finally:
        tmp.unlink(missing_ok=True)
    return dest_dir / remote.name


def _missing_error(
    spec: DatasetSpec, missing: Sequence[RemoteFile], dirs: list[Path], target: Path, reason: str
) -> DatasetError:
    lines = [f"dataset {spec.name!r}: {reason}.", "Missing files:"]
    lines += [f"  {f.name} (md5 {f.md5}) from {f.url}" for f in missing]
    lines.append("Looked in:")
    lines += [f"  {d}" for d in dirs]
    lines.append(
        f"Download them and put them in {target} (or point --data-dir / "
        "RESIDUALS_DATA at the folder that holds them)."
    )
    if spec.members:
        lines.append(
            "An already extracted folder works too: "
            + ", ".join(n for n, _ in spec.members)
            + f" in <root>/{spec.folder}/."
        )
    return DatasetError("\n".join(lines))


def _find_or_download(
    spec: DatasetSpec, files: Sequence[RemoteFile], dirs: list[Path], target: Path, download: bool
) -> dict[str, Path]:
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
            raise _missing_error(
                spec, missing[i:], dirs, target, f"could not download {f.url} ({e})"
            ) from e
    return found
