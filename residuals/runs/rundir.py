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
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from residuals.runs.atomic import atomic_write
from residuals.runs.environment import environment_info, now_iso
from residuals.runs.lock import RunInUse, RunLock

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["RunDir", "BrokenRun", "RunInUse", "DEFAULT_ROOT", "STATUSES"]


def typed_command() -> str:
    """This process's command as typed (``residuals ...``, shell-quoted): what a run folder
    records and a resume hint repeats."""
    return " ".join(["residuals", *map(shlex.quote, sys.argv[1:])])


DEFAULT_ROOT = Path("reports")
STATUSES = ("running", "complete", "interrupted", "failed")


class BrokenRun(Exception):
    """A run folder that cannot be read (missing or corrupt meta.json or tables)."""


# meta.json fields that every reader relies on, and the JSON types they may have (or null)
META_TYPES: dict[str, tuple[type, ...]] = {
    "bench": (str,),
    "dataset": (str,),
    "config": (dict,),
    "command": (str,),
    "started_at": (str,),
    "finished_at": (str,),
    "wall_s": (int, float),
    "status": (str,),
    "headline": (str,),
    "verdict": (bool,),
    "summary": (str,),
    "git_commit": (str,),
}
_TYPE_NAMES = {
    str: "a string",
    dict: "an object",
    int: "a number",
    float: "a number",
    bool: "true or false",
    list: "a list",
}


def _json_type(value: Any) -> str:
    for t in (bool, str, dict, list, int, float):
        if isinstance(value, t):
            return _TYPE_NAMES[t]
    return type(value).__name__


class RunDir:
    """One benchmark run's folder (see the module docstring for its layout)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # ----------------------------------------------------------------- create
    @classmethod
    def create(
        cls,
        root: str | os.PathLike,
        bench: str,
        dataset: str,
        config: dict,
        *,
        command: str | None = None,
        device: str | None = None,
        name: str | None = None,
    ) -> RunDir:
        """Make a new run folder under ``root`` and write its meta.json (status ``running``)."""
        root = Path(root)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = name or f"{stamp}-{bench}-{dataset}"
        root.mkdir(parents=True, exist_ok=True)
        k = 1
        while True:  # mkdir is the atomic claim: two processes never get one folder
            path = root / (base if k == 1 else f"{base}-{k}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                k += 1
        run = cls(path)
        meta = {
            "bench": bench,
            "dataset": dataset,
            "config": config,
            "command": command if command is not None else typed_command(),
            "started_at": now_iso(),
            "finished_at": None,
            "wall_s": None,
            "status": "running",
            "headline": None,
            **environment_info(device),
        }
        run.write_meta(meta)
        return run

    def lock(self) -> RunLock:
        """The folder's lock (``with run.lock(): ...``; see :mod:`residuals.runs.lock`):
        :class:`RunInUse` at once when another process holds it."""
        return RunLock(self.path)

    # ------------------------------------------------------------------- meta
    @property
    def meta_path(self) -> Path:
        return self.path / "meta.json"

    def read_meta(self) -> dict:
        """meta.json as a dict; :class:`BrokenRun` (with the reason) when it is missing, not
        UTF-8 JSON, or holds a field of the wrong type (see :data:`META_TYPES`)."""
        try:
            raw = self.meta_path.read_bytes()
        except FileNotFoundError as e:
            raise BrokenRun(
                f"{self.path}: no meta.json (not a run folder, or a run that never started)"
            ) from e
        except OSError as e:
            raise BrokenRun(f"{self.path}: meta.json is unreadable ({e})") from e
        try:
            meta = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise BrokenRun(
                f"{self.path}: meta.json is unreadable (not UTF-8 text: byte "
                f"{e.object[e.start]:#04x} at offset {e.start})"
            ) from e
        except ValueError as e:  # json.JSONDecodeError
            raise BrokenRun(f"{self.path}: meta.json is unreadable ({e})") from e
        except RecursionError as e:
            raise BrokenRun(f"{self.path}: meta.json is unreadable (nested too deeply)") from e
        if not isinstance(meta, dict) or "bench" not in meta:
            raise BrokenRun(f"{self.path}: meta.json does not describe a run (no 'bench')")
        for key, types in META_TYPES.items():
            value = meta.get(key)
            if value is not None and not isinstance(value, types):
                raise BrokenRun(
                    f"{self.path}: meta.json field {key!r} is {_json_type(value)}, "
                    f"expected {' or '.join(dict.fromkeys(_TYPE_NAMES[t] for t in types))}"
                )
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
        end = _dt.datetime.now(_dt.UTC).astimezone()
        try:
            start = _dt.datetime.fromisoformat(meta["started_at"])
            wall = round((end - start).total_seconds(), 3)
        except (KeyError, TypeError, ValueError):
            wall = None
        meta.update(
            status=status, finished_at=end.isoformat(timespec="seconds"), wall_s=wall, **changes
        )
        self.write_meta(meta)
        return meta

    # ----------------------------------------------------------------- tables
    def table_path(self, name: str = "results") -> Path:
        return self.path / f"{name}.csv"

    def write_table(self, df: pd.DataFrame, name: str = "results") -> Path:
        return atomic_write(self.table_path(name), df.to_csv(index=False))

    def has_table(self, name: str = "results") -> bool:
        return self.table_path(name).is_file()

    def read_table(
        self,
        name: str = "results",
        *,
        columns: tuple[str, ...] | list[str] = (),
        numeric: tuple[str, ...] = (),
    ) -> pd.DataFrame:
        """A saved table; :class:`BrokenRun` (with the reason) when it is missing, empty, not
        a CSV, lacks one of ``columns``, or holds something other than numbers (or blanks)
        in one of the ``numeric`` columns."""
        import pandas as pd

        path = self.table_path(name)
        if not path.is_file():
            raise BrokenRun(f"{self.path}: {path.name} is missing")
        try:
            df = pd.read_csv(path)
        except pd.errors.EmptyDataError as e:
            raise BrokenRun(f"{self.path}: {path.name} is empty") from e
        except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise BrokenRun(
                f"{self.path}: {path.name} is not a readable CSV table "
                f"({type(e).__name__}: {first})"
            ) from e
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise BrokenRun(f"{self.path}: {path.name} lacks the column(s) {', '.join(missing)}")
        for c in numeric:  # blanks are allowed (NaN), and so is a table with no rows
            if (
                c in df.columns
                and not pd.api.types.is_numeric_dtype(df[c])
                and (df[c].notna() & pd.to_numeric(df[c], errors="coerce").isna()).any()
            ):
                raise BrokenRun(
                    f"{self.path}: {path.name} column {c!r} holds something other than numbers"
                )
        return df

    @property
    def figures_dir(self) -> Path:
        return self.path / "figures"

    @property
    def html_path(self) -> Path:
        return self.path / "index.html"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
