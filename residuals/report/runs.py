"""Run folders: where a benchmark keeps its tidy results and their metadata.

A run folder holds everything a report is made of, so the report can be
rebuilt at any time without retraining::

    reports/20261123-101500-degradation-digits/
        meta.json          # bench, dataset, config, command, versions, machine,
                           # git commit, start/end times, wall time, status, headline
        results.csv        # the bench's tidy results (one row per observation)
        <other>.csv        # further tidy tables the bench saves
        figures/<key>.png  # figures (pure functions of the tables)
        figures/<key>.csv  # the data behind each figure
        index.html         # the self-contained report

``status`` in meta.json is one of ``running``, ``complete``, ``interrupted``,
``failed``; a folder whose meta.json is missing or unreadable is *broken*.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["RunDir", "BrokenRun", "environment_info", "now_iso", "DEFAULT_ROOT"]

DEFAULT_ROOT = Path("reports")
STATUSES = ("running", "complete", "interrupted", "failed")


class BrokenRun(Exception):
    """A run folder that cannot be read (missing or corrupt meta.json)."""


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    commit = out.stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=5).stdout.strip()
    return commit + ("-dirty" if dirty else "")


def environment_info(device: str | None = None) -> dict[str, Any]:
    """Package versions and machine facts, for the record of a run."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for pkg in ("residuals", "scikit-learn", "torch", "numpy", "pandas", "matplotlib", "click"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    machine = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "device": device,
    }
    if "torch" in sys.modules:  # never import torch just to describe the machine
        torch = sys.modules["torch"]
        machine["torch_threads"] = torch.get_num_threads()
        if device and str(device).startswith("cuda") and torch.cuda.is_available():
            machine["gpu"] = torch.cuda.get_device_name(torch.device(device))
    kernels = sys.modules.get("residuals.boosting._kernels")
    if kernels is not None:  # which loops hist mode ran on the CPU (docs/boosting.md)
        machine["hist_cpu_loops"] = "C" if kernels.available() else "torch (C extension not built)"
    return {"versions": versions, "machine": machine, "git_commit": _git_commit()}


class RunDir:
    """One benchmark run's folder (see the module docstring for its layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ----------------------------------------------------------------- create
    @classmethod
    def create(cls, root: str | os.PathLike, bench: str, dataset: str, config: dict,
               *, command: str | None = None, device: str | None = None,
               name: str | None = None) -> "RunDir":
        """Make a new run folder under ``root`` and write its meta.json (status ``running``)."""
        root = Path(root)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = name or f"{stamp}-{bench}-{dataset}"
        path = root / base
        k = 1
        while path.exists():
            k += 1
            path = root / f"{base}-{k}"
        path.mkdir(parents=True)
        run = cls(path)
        meta = {
            "bench": bench,
            "dataset": dataset,
            "config": config,
            "command": command if command is not None else " ".join(["residuals", *sys.argv[1:]]),
            "started_at": now_iso(),
            "finished_at": None,
            "wall_s": None,
            "status": "running",
            "headline": None,
            **environment_info(device),
        }
        run.write_meta(meta)
        return run

    # ------------------------------------------------------------------- meta
    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def read_meta(self) -> dict:
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
        except FileNotFoundError as e:
            raise BrokenRun(f"{self.path}: no meta.json (not a run folder, or a run that never started)") from e
        except (OSError, json.JSONDecodeError) as e:
            raise BrokenRun(f"{self.path}: meta.json is unreadable ({e})") from e
        if not isinstance(meta, dict) or "bench" not in meta:
            raise BrokenRun(f"{self.path}: meta.json does not describe a run (no 'bench')")
        return meta

    @property
    def meta(self) -> dict:
        return self.read_meta()

    def write_meta(self, meta: dict) -> None:
        _atomic_write_text(self.meta_path, json.dumps(meta, indent=2, default=str) + "\n")

    def update_meta(self, **changes: Any) -> dict:
        meta = self.read_meta()
        meta.update(changes)
        self.write_meta(meta)
        return meta

    def finish(self, status: str = "complete", **changes: Any) -> dict:
        """Record the end: status, finish time and wall time (seconds since the start)."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        meta = self.read_meta()
        end = _dt.datetime.now(_dt.timezone.utc).astimezone()
        try:
            start = _dt.datetime.fromisoformat(meta["started_at"])
            wall = round((end - start).total_seconds(), 3)
        except (KeyError, TypeError, ValueError):
            wall = None
        meta.update(status=status, finished_at=end.isoformat(timespec="seconds"), wall_s=wall, **changes)
        self.write_meta(meta)
        return meta

    # ----------------------------------------------------------------- tables
    def table_path(self, name: str = "results") -> Path:
        return self.path / f"{name}.csv"

    def write_table(self, df: pd.DataFrame, name: str = "results") -> Path:
        path = self.table_path(name)
        tmp = path.with_suffix(".csv.tmp")
        df.to_csv(tmp, index=False)
        os.replace(tmp, path)
        return path

    def has_table(self, name: str = "results") -> bool:
        return self.table_path(name).is_file()

    def read_table(self, name: str = "results") -> pd.DataFrame:
        path = self.table_path(name)
        if not path.is_file():
            raise BrokenRun(f"{self.path}: {path.name} is missing")
        return pd.read_csv(path)

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def html_path(self) -> Path:
        return self.path / "index.html"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
