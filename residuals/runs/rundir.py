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
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from residuals.runs.atomic import atomic_write
from residuals.runs.environment import environment_info, now_iso

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RunDir", "BrokenRun", "DEFAULT_ROOT", "STATUSES"]

DEFAULT_ROOT = Path("reports")
STATUSES = ("running", "complete", "interrupted", "failed")


class BrokenRun(Exception):
    """A run folder that cannot be read (missing or corrupt meta.json)."""


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
        atomic_write(self.meta_path, json.dumps(meta, indent=2, default=str) + "\n")

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

    def write_table(self, df: "pd.DataFrame", name: str = "results") -> Path:
        return atomic_write(self.table_path(name), df.to_csv(index=False))

    def has_table(self, name: str = "results") -> bool:
        return self.table_path(name).is_file()

    def read_table(self, name: str = "results") -> "pd.DataFrame":
        path = self.table_path(name)
        if not path.is_file():
            raise BrokenRun(f"{self.path}: {path.name} is missing")
        import pandas as pd

        return pd.read_csv(path)

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def html_path(self) -> Path:
        return self.path / "index.html"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
