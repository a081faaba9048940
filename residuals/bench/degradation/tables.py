"""The sweep's three tables on disk, checked before they are trusted.

``runs.csv`` is the record of what finished: one complete row per (variant, depth, seed).
``results.csv`` holds each finished run's epochs and ``probes.csv`` its blocks. They are
rewritten atomically after every finished run, ``runs.csv`` last, so an interrupted sweep
leaves rows of unfinished runs at most in the other two (dropped on loading).

A resume trusts them only after :func:`check_tables`: the columns are there, every
``runs.csv`` row is complete (a half-written row would otherwise count as a finished run
with empty fields), and every finished run has all of its epochs and its probes. A table
cut mid-row, emptied, or edited into inconsistency is a :class:`TableError` that names
the file and the runs concerned -- never a sweep that skips runs it no longer has results
for, or a report drawn from part of them. The report renderer applies the same check.
"""

from __future__ import annotations

import pandas as pd

from residuals.bench.degradation.config import (
    RESULT_TABLES,
    RUN_KEYS,
    DegradationConfig,
    model_label,
)
from residuals.runs import BrokenRun, RunDir

__all__ = ["REQUIRED", "SweepTables", "TableError", "check_tables", "load_tables"]

# the columns every saved table must have, and those of them that must hold a number in
# every row of a finished run (NaN is allowed elsewhere: a diverged run's loss, its probes)
REQUIRED = {
    "runs": (*RUN_KEYS, "model", "status", "epochs", "final_train_error", "final_test_error"),
    "results": (*RUN_KEYS, "model", "epoch", "train_error", "test_error"),
    "probes": (*RUN_KEYS, "block", "response_std"),
}
# columns that may be empty in a finished run's row (a diverged run's losses and probes are
# NaN); every other column of every row must hold a value
MAY_BE_EMPTY = frozenset(
    {
        "train_loss",
        "test_loss",
        "response_std",
        "response_mean",
        "input_grad_norm",
        "param_grad_norm",
        "input_norm",
        "probe_loss",
    }
)
STATUSES = ("complete", "diverged")
_NUMERIC = (
    "depth",
    "seed",
    "epochs",
    "epoch",
    "block",
    "final_train_error",
    "final_test_error",
    "train_error",
    "test_error",
)
_HINT = (
    "Restore the file, or delete the damaged runs' rows from runs.csv: --resume then "
    "redoes them from their checkpoints (finished ones are not retrained)."
)


class TableError(BrokenRun):
    """A saved table is damaged or disagrees with the others."""


def _label(v, d, s) -> str:
    return f"{model_label(str(v), int(d))} seed {int(s)}"


def _listing(keys) -> str:
    keys = sorted(keys)
    text = ", ".join(_label(*k) for k in keys[:6])
    return text + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")


def _empty_cells(df: pd.DataFrame) -> pd.Series:
    """Rows with an empty cell where a value must be (a row cut short is one)."""
    return df[[c for c in df.columns if c not in MAY_BE_EMPTY]].isna().any(axis=1)


def _check_ends(run: RunDir, name: str) -> None:
    """Every table is written whole, ending in a newline; a file that does not was cut."""
    path = run.table_path(name)
    try:
        with open(path, "rb") as f:
            f.seek(-1, 2)
            last = f.read(1)
    except OSError:  # missing (checked elsewhere) or empty
        return
    if last != b"\n":
        raise TableError(
            f"{run.path}: {name}.csv does not end with a whole row (cut short?). {_HINT}"
        )


def load_tables(run: RunDir) -> dict[str, pd.DataFrame]:
    """The three tables as saved (empty frames for those not written yet), each read with
    its required columns (:class:`BrokenRun` for a file that is empty, binary or lacks one)."""
    return {
        name: run.read_table(name, columns=REQUIRED[name], numeric=_NUMERIC)
        if run.has_table(name)
        else pd.DataFrame()
        for name in RESULT_TABLES
    }


def check_tables(
    run: RunDir, frames: dict[str, pd.DataFrame], cfg: DegradationConfig | None = None
) -> None:
    """Raise :class:`TableError` unless every finished run in ``runs.csv`` is complete in
    all three tables (and, given ``cfg``, is a run of its plan)."""
    runs = frames["runs"]
    if runs.empty:
        return
    where = f"{run.path}: runs.csv"
    _check_ends(run, "runs")
    missing = _empty_cells(runs)
    if missing.any():
        rows = [i + 2 for i in runs.index[missing]]  # + header, 1-based: the line in the file
        raise TableError(
            f"{where} has incomplete rows (line {', '.join(map(str, rows[:6]))}): a "
            f"row cut short is not a finished run. {_HINT}"
        )
    bad = runs[~runs["status"].isin(STATUSES)]
    if not bad.empty:
        raise TableError(
            f"{where} has a status other than {' or '.join(STATUSES)} "
            f"({', '.join(map(repr, sorted(set(map(str, bad['status'])))))}). {_HINT}"
        )
    keys = [tuple(k) for k in runs[RUN_KEYS].itertuples(index=False)]
    twice = {k for k in keys if keys.count(k) > 1}
    if twice:
        raise TableError(f"{where} lists {_listing(twice)} more than once. {_HINT}")
    if cfg is not None:
        from residuals.bench.degradation.config import plan_runs

        planned = {(s.variant, s.depth, s.seed) for s in plan_runs(cfg)}
        stray = {k for k in keys if (str(k[0]), int(k[1]), int(k[2])) not in planned}
        if stray:
            raise TableError(
                f"{where} lists {_listing(stray)}, not runs of this sweep's config. {_HINT}"
            )
    epochs = {k: int(n) for k, n in zip(keys, runs["epochs"])}
    for name in ("results", "probes"):
        df = frames[name]
        if df.empty:
            raise TableError(
                f"{run.path}: {name}.csv is missing or empty, but runs.csv lists "
                f"{len(keys)} finished run(s). {_HINT}"
            )
        _check_ends(run, name)
        gaps = _empty_cells(df)
        if gaps.any():
            rows = [i + 2 for i in df.index[gaps]]
            raise TableError(
                f"{run.path}: {name}.csv has incomplete rows (line "
                f"{', '.join(map(str, rows[:6]))}): cut short? {_HINT}"
            )
        if name == "results":  # epochs 1..n, each once, n from runs.csv
            seen = df.groupby(RUN_KEYS)["epoch"].agg(lambda e: sorted(e.astype(int)))
            short = {k for k in keys if seen.get(k, []) != list(range(1, epochs[k] + 1))}
            what = "not exactly their epochs (runs.csv's epochs column)"
        else:
            counts = df.groupby(RUN_KEYS).size()
            short = {k for k in keys if counts.get(k, 0) == 0}
            what = "no probes"
        if short:
            raise TableError(f"{run.path}: {name}.csv has {what} for {_listing(short)}. {_HINT}")


class SweepTables:
    """The sweep's three tables, checked on loading and re-written (atomically) after every
    finished run, ``runs.csv`` last (the commit). Rows of the other tables whose run is not
    in ``runs.csv`` (a sweep stopped between two writes) are dropped on loading, so a
    resumed run never appears twice."""

    def __init__(self, run: RunDir, cfg: DegradationConfig | None = None):
        self.run = run
        frames = load_tables(run)
        check_tables(run, frames, cfg)
        done = (
            frames["runs"][RUN_KEYS] if not frames["runs"].empty else pd.DataFrame(columns=RUN_KEYS)
        )
        for name in ("results", "probes"):
            if not frames[name].empty:
                frames[name] = frames[name].merge(done, on=RUN_KEYS, how="inner")
        self.frames = frames

    def finished(self) -> set[tuple[str, int, int]]:
        """(variant, depth, seed) of the runs in ``runs.csv``."""
        runs = self.frames["runs"]
        if runs.empty:
            return set()
        return {(str(v), int(d), int(s)) for v, d, s in runs[RUN_KEYS].itertuples(index=False)}

    def add(self, outcome) -> None:
        new = {
            "results": outcome.history,
            "probes": outcome.probes,
            "runs": pd.DataFrame([outcome.summary]),
        }  # runs.csv last: the commit
        for name, rows in new.items():
            old = self.frames[name]
            df = rows if old.empty else pd.concat([old, rows], ignore_index=True)
            sort = [c for c in [*RUN_KEYS, "epoch", "block"] if c in df.columns]
            self.frames[name] = df.sort_values(sort, ignore_index=True)
            self.run.write_table(self.frames[name], name)
