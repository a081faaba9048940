"""The measurements: every method on each case of a config, the tidy tables saved after each case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from residuals.bench.boosting.cases import (
    EXPECTED_TO_MATCH,
    NOT_EXPECTED_NOTE,
    PARITY_PAIRS,
    BoostingBenchConfig,
    Case,
    Split,
    iter_cases,
    load_split,
)
from residuals.bench.boosting.fitting import (
    FAST_FIT_REPEATS,
    FAST_FIT_S,
    make_estimator,
    method_unsupported,
    staged_raw,
    timed_fit,
)
from residuals.bench.boosting.metrics import (
    METRIC_NAMES,
    max_abs_diff,
    paired_gap,
    pointwise_metric,
    stage_metrics,
)

__all__ = [
    "BenchTables",
    "ProgressCallback",
    "case_id",
    "finished_cases",
    "load_tables",
    "run_benchmark",
    "run_case",
]


# ---------------------------------------------------------------------------- the run


@dataclass
class BenchTables:
    """The run's tidy tables, as they grow case by case."""

    results: list[dict] = field(default_factory=list)
    staged: list[dict] = field(default_factory=list)
    parity: list[dict] = field(default_factory=list)
    contributions: list[dict] = field(default_factory=list)
    hist_gap: list[dict] = field(default_factory=list)

    def frames(self) -> dict[str, pd.DataFrame]:
        cols = {
            "results": RESULT_COLUMNS,
            "staged": STAGED_COLUMNS,
            "parity": PARITY_COLUMNS,
            "contributions": CONTRIBUTION_COLUMNS,
            "hist_gap": HIST_GAP_COLUMNS,
        }
        return {name: pd.DataFrame(getattr(self, name), columns=c) for name, c in cols.items()}

    def save(self, run) -> None:
        for name, df in self.frames().items():
            run.write_table(df, name)


CASE_COLUMNS = ["dataset", "size", "task", "loss"]
RESULT_COLUMNS = [
    *CASE_COLUMNS,
    "method",
    "status",
    "message",
    "n_train",
    "n_test",
    "n_features",
    "n_classes",
    "n_estimators",
    "max_depth",
    "device",
    "threads",
    "fit_s",
    "fit_repeats",
    "metric",
    "train_loss",
    "test_loss",
]
STAGED_COLUMNS = [*CASE_COLUMNS, "method", "split", "stage", "loss_value", "residual_rms"]
PARITY_COLUMNS = [
    *CASE_COLUMNS,
    "method",
    "reference",
    "n_stages",
    "max_abs_diff",
    "first_diff_stage",
    "test_loss",
    "reference_test_loss",
]
HIST_GAP_COLUMNS = [
    *CASE_COLUMNS,
    "n_test",
    "metric",
    "exact_test_loss",
    "hist_test_loss",
    "gap",
    "rel_gap",
    "gap_se",
]
CONTRIBUTION_COLUMNS = [
    *CASE_COLUMNS,
    "method",
    "stage",
    "correction_norm",
    "base_norm",
    "ratio",
    "correction_rms",
]

# progress events: (kind, message) with kind in {"case", "fit", "skip", "error", "parity"}
ProgressCallback = Callable[[str, str], None]


def _case_key(case: Case) -> dict:
    return {"dataset": case.dataset, "size": case.size, "task": case.task, "loss": case.loss}


def run_case(
    case: Case,
    data: Split,
    cfg: BoostingBenchConfig,
    tables: BenchTables,
    progress: ProgressCallback,
) -> None:
    """Fit every method on one case and append its rows to ``tables``."""
    key = _case_key(case)
    classes = np.unique(data.y_train)
    y_tr = np.searchsorted(classes, data.y_train) if case.task != "regression" else data.y_train
    y_te = np.searchsorted(classes, data.y_test) if case.task != "regression" else data.y_test
    base_row = {
        **key,
        "n_train": data.n_train,
        "n_test": int(data.X_test.shape[0]),
        "n_features": data.n_features,
        "n_classes": data.n_classes,
        "n_estimators": cfg.n_estimators,
        "max_depth": cfg.max_depth,
        "threads": cfg.threads,
        "metric": METRIC_NAMES[case.loss],
    }
    fitted: dict[str, Any] = {}
    final_test: dict[str, float] = {}
    test_rows: dict[str, np.ndarray] = {}  # per-row final test loss
    for method in cfg.methods:
        device = cfg.device if method == "ours-hist" else "cpu"
        row = {**base_row, "method": method, "device": device, "status": "ok", "message": ""}
        reason = method_unsupported(method, case)
        if reason:
            tables.results.append({**row, "status": "unsupported", "message": reason})
            progress("skip", f"  {method:<13} unsupported: {reason}")
            continue
        try:
            est = make_estimator(method, case, cfg)
            times = [timed_fit(est, data.X_train, data.y_train, device)]
            while (
                times[0] < FAST_FIT_S and len(times) < FAST_FIT_REPEATS
            ):  # a fast fit: its median of 3
                est = make_estimator(method, case, cfg)
                times.append(timed_fit(est, data.X_train, data.y_train, device))
            row["fit_s"], row["fit_repeats"] = float(np.median(times)), len(times)
            finals = {}
            for split, X, y in (("train", data.X_train, y_tr), ("test", data.X_test, y_te)):
                for m, raw in enumerate(staged_raw(est, X, case.task), start=1):
                    value, rms = stage_metrics(y, raw, case.loss, case.task)
                    tables.staged.append(
                        {
                            **key,
                            "method": method,
                            "split": split,
                            "stage": m,
                            "loss_value": value,
                            "residual_rms": rms,
                        }
                    )
                    finals[split] = value
                if split == "test":
                    test_rows[method] = pointwise_metric(y, raw, case.loss, case.task)
        except Exception as e:  # recorded, shown, and counted in the headline
            msg = f"{type(e).__name__}: {e}"
            tables.results.append({**row, "status": "error", "message": msg})
            progress("error", f"  {method:<13} FAILED: {msg}")
            continue
        row.update(train_loss=finals.get("train"), test_loss=finals.get("test"))
        tables.results.append(row)
        fitted[method] = est
        final_test[method] = finals.get("test", float("nan"))
        progress(
            "fit",
            f"  {method:<13} fit {row['fit_s']:8.3f} s   test {row['metric']} "
            f"{row['test_loss']:.6g}",
        )
        _record_contributions(method, est, data, key, tables)
    if "ours-hist" in test_rows and "ours-exact" in test_rows:
        exact, hist = final_test["ours-exact"], final_test["ours-hist"]
        gap, se = paired_gap(test_rows["ours-hist"], test_rows["ours-exact"])
        tables.hist_gap.append(
            {
                **key,
                "n_test": base_row["n_test"],
                "metric": base_row["metric"],
                "exact_test_loss": exact,
                "hist_test_loss": hist,
                "gap": gap,
                "rel_gap": gap / abs(exact) if exact else float("nan"),
                "gap_se": se,
            }
        )
    for ours, ref in PARITY_PAIRS:
        if ours in fitted and ref in fitted:
            worst, n_st, first = 0.0, 0, None
            for X in (data.X_train, data.X_test):
                d, n_st, f = max_abs_diff(
                    staged_raw(fitted[ours], X, case.task), staged_raw(fitted[ref], X, case.task)
                )
                worst = d if np.isnan(d) else max(worst, d)
                first = f if first is None else (first if f is None else min(first, f))
                if np.isnan(worst):
                    break
            tables.parity.append(
                {
                    **key,
                    "method": ours,
                    "reference": ref,
                    "n_stages": n_st,
                    "max_abs_diff": worst,
                    "first_diff_stage": first,
                    "test_loss": final_test[ours],
                    "reference_test_loss": final_test[ref],
                }
            )
            if EXPECTED_TO_MATCH.get(ours, True):
                note = "" if first is None else f" (first at stage {first})"
            else:
                note = f" ({NOT_EXPECTED_NOTE})"
            progress("parity", f"  parity {ours} vs {ref}: max |diff| = {worst:.3g}{note}")


def _record_contributions(method: str, est, data: Split, key: dict, tables: BenchTables) -> None:
    """Per-stage correction sizes, from the shared Stagewise abstraction (ours only)."""
    from residuals.core import Stagewise, contribution_table

    if not isinstance(est, Stagewise):
        return
    table = contribution_table(est, data.X_train)
    scale = float(np.sqrt(data.n_train))
    for r in table.itertuples(index=False):
        tables.contributions.append(
            {
                **key,
                "method": method,
                "stage": int(r.stage) + 1,
                "correction_norm": r.correction_norm,
                "base_norm": r.base_norm,
                "ratio": r.ratio,
                "correction_rms": r.correction_norm / scale,
            }
        )


def case_id(case: Case) -> tuple[str, int | None, str]:
    """``(dataset, size, loss)``: what identifies a case in the tables."""
    return case.dataset, case.size, case.loss


def _row_id(row: dict) -> tuple[str, int | None, str]:
    size = row.get("size")
    return (
        str(row["dataset"]),
        None if size is None or pd.isna(size) else int(size),
        str(row["loss"]),
    )


def load_tables(run) -> BenchTables:
    """The tables a run folder holds (empty ones for tables it lacks)."""
    tables = BenchTables()
    for name in tables.frames():
        if run.has_table(name):
            df = run.read_table(name)
            rows = df.astype(object).where(df.notna(), None).to_dict("records")
            getattr(tables, name).extend(rows)
    return tables


def finished_cases(tables: BenchTables, methods) -> set[tuple[str, int | None, str]]:
    """The cases whose every method has its row in ``results``."""
    seen: dict[tuple, set] = {}
    for row in tables.results:
        seen.setdefault(_row_id(row), set()).add(row["method"])
    return {k for k, m in seen.items() if set(methods) <= m}


def _keep_cases(tables: BenchTables, keep: set) -> BenchTables:
    return BenchTables(
        **{
            name: [r for r in getattr(tables, name) if _row_id(r) in keep]
            for name in tables.frames()
        }
    )


def _measure_case(case: Case, cfg: BoostingBenchConfig) -> tuple[BenchTables, list]:
    """One case in a worker process: its tables and its progress lines."""
    from threadpoolctl import threadpool_limits

    lines: list[tuple[str, str]] = []
    tables = BenchTables()
    data = load_split(case.dataset, case.size, seed=cfg.seed, test_size=cfg.test_size)
    with threadpool_limits(limits=cfg.threads):
        run_case(case, data, cfg, tables, lambda kind, msg: lines.append((kind, msg)))
    return tables, lines


def run_benchmark(
    cfg: BoostingBenchConfig,
    run=None,
    *,
    progress: ProgressCallback | None = None,
    jobs: int = 1,
    tables: BenchTables | None = None,
) -> BenchTables:
    """Run every case of ``cfg``; save the tables into ``run`` (a RunDir) after each case.

    Threads are limited to ``cfg.threads`` for every learner (threadpoolctl for
    OpenMP/BLAS, ``torch.set_num_threads`` for torch), so timings are fair. ``tables``: what
    an earlier, interrupted call measured; its finished cases are kept and skipped, the rows
    of an unfinished one dropped. ``jobs > 1`` measures that many cases at once, in worker
    processes (their timings then share the machine).
    """
    cfg.validate()
    progress = progress or (lambda kind, msg: None)
    cases = list(iter_cases(cfg))
    if not cases:
        raise ValueError(
            "this configuration has no cases (no chosen loss fits the chosen datasets)"
        )
    done = finished_cases(tables, cfg.methods) if tables is not None else set()
    tables = _keep_cases(tables, done) if tables is not None else BenchTables()
    todo = [(i, c) for i, c in enumerate(cases, start=1) if case_id(c) not in done]
    if done:
        progress("case", f"resuming: {len(cases) - len(todo)} of {len(cases)} cases already done")
    try:
        if jobs > 1 and len(todo) > 1:
            _measure_parallel(todo, len(cases), cfg, tables, run, progress, jobs)
        else:
            _measure_here(todo, len(cases), cfg, tables, run, progress)
    finally:
        if run is not None:
            tables.save(run)
    return tables


def _measure_here(todo, n_cases, cfg, tables, run, progress) -> None:
    from threadpoolctl import threadpool_limits

    torch_threads = None
    if any(m.startswith("ours") for m in cfg.methods):
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(cfg.threads)
    loaded: dict[tuple[str, int | None], Split] = {}
    try:
        with threadpool_limits(limits=cfg.threads):
            for i, case in todo:
                dkey = (case.dataset, case.size)
                if dkey not in loaded:
                    loaded.clear()  # one dataset in memory at a time
                    loaded[dkey] = load_split(
                        case.dataset, case.size, seed=cfg.seed, test_size=cfg.test_size
                    )
                data = loaded[dkey]
                progress(
                    "case",
                    f"[{i}/{n_cases}] {case.label}  ({data.n_train:,} train x "
                    f"{data.n_features} features)",
                )
                run_case(case, data, cfg, tables, progress)
                if run is not None:
                    tables.save(run)
    finally:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)


def _measure_parallel(todo, n_cases, cfg, tables, run, progress, jobs) -> None:
    """Cases in worker processes; the tables keep the cases' order whatever finishes first."""
    from residuals.bench._workers import run_pool, spawn_pool

    base = {name: list(getattr(tables, name)) for name in tables.frames()}
    measured: dict[int, BenchTables] = {}
    labels = {i: case.label for i, case in todo}

    def finished(i: int, result: tuple) -> None:
        measured[i], lines = result
        progress("case", f"[{i}/{n_cases}] {labels[i]}")
        for kind, msg in lines:
            progress(kind, msg)
        for name, rows in base.items():
            getattr(tables, name)[:] = rows + [
                r for k in sorted(measured) for r in getattr(measured[k], name)
            ]
        if run is not None:
            tables.save(run)

    pool = spawn_pool(min(jobs, len(todo)), cfg.threads)
    run_pool(pool, {i: (_measure_case, (case, cfg)) for i, case in todo}, finished)
