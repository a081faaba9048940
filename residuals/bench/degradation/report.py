"""The degradation report: a pure function of a run folder's saved tables.

``render(run)`` reads ``meta.json``, ``results.csv``, ``runs.csv`` and
``probes.csv`` (written by :mod:`residuals.bench.degradation`) and returns the
headline verdict, four figures (each with the tidy data it draws) and two
tables. Nothing is trained or measured here, so ``residuals report build``
rebuilds the page at any time. The figures are drawn in
:mod:`residuals.bench.degradation.figures`; this module owns the page around them: the
headline, the text (the verdict's rule, whether the curves flattened) and the tables.
"""

from __future__ import annotations

import pandas as pd

from residuals.bench.degradation import (
    DEGRADATION_MARGIN,
    RESIDUAL_TOLERANCE,
    SIGNIFICANCE,
    degradation_verdict,
    final_errors,
    model_label,
)
from residuals.bench.degradation.figures import (
    error_curves,
    error_vs_depth,
    gradient_norms,
    layer_responses,
)
from residuals.bench.degradation.tables import check_tables
from residuals.report import style
from residuals.report.content import ReportContent, Table
from residuals.runs import RunDir

__all__ = ["render"]

INTRO = (
    "Stacking more layers should never hurt a network's fit to its own training data, yet "
    "without skip connections it does: a deeper plain net ends with a HIGHER training error "
    "than a shallower one (the degradation problem, He et al. 2015, Fig. 6), while the same "
    "nets with identity shortcuts (x + F(x)) keep improving with depth. Look at the dashed "
    "training-error curves: in the plain panel the deepest net stays high, in the residual "
    "panel it goes as low as the shallow one; the probes below look inside the trained nets "
    "(the size of each block's response, Fig. 7, and of the gradient reaching it)."
)


def render(run: RunDir) -> ReportContent:
    """Build the report's content from the run's saved CSVs (no training, no randomness)."""
    meta = run.read_meta()
    results = _table(run, "results")
    runs = _table(run, "runs")
    probes = _table(run, "probes")
    # every finished run complete in all three tables: never a page drawn from part of them
    check_tables(run, {"results": results, "runs": runs, "probes": probes})
    config = meta.get("config") or {}

    verdict = degradation_verdict(runs)
    try:
        planned = (
            len(config.get("variants", ()))
            * len(config.get("depths", ()))
            * int(config.get("seeds", 0))
        )
    except (TypeError, ValueError):  # an odd config: the headline then does not count runs
        planned = 0
    headline = verdict.headline
    if planned and len(runs) < planned:
        headline = (
            f"partial ({len(runs)} of {planned} runs finished, status {meta.get('status')}): "
            f"{headline}"
        )

    style.apply()
    diverged = _diverged(runs)
    figures = []
    if not results.empty:
        figures += [error_curves(results, diverged), error_vs_depth(runs)]
    if not probes.empty:
        figures += [layer_responses(probes, diverged), gradient_norms(probes, diverged)]
    flat = flattening(results)
    tables = [_final_table(runs), _runs_table(runs)] if not runs.empty else []
    if not flat.empty:
        tables.append(_flattening_table(flat))
    notes = " ".join(f"Note: {n}." for n in verdict.notes)
    return ReportContent(
        headline=headline,
        verdict=verdict.reproduced,
        summary=_summary(meta, config, runs, verdict.reproduced),
        intro=INTRO
        + " "
        + _rule_text()
        + (" " + notes if notes else "")
        + ("\n\n" + _flattening_text(flat) if not flat.empty else ""),
        figures=figures,
        tables=tables,
    )


# the columns each saved table must have for this page (older runs may lack "replicas")
NEEDS = {
    "results": ("model", "variant", "depth", "seed", "epoch", "train_error", "test_error"),
    "runs": (
        "model",
        "variant",
        "depth",
        "seed",
        "status",
        "epochs",
        "final_train_error",
        "final_test_error",
        "images_per_s",
        "train_s",
        "wall_s",
        "device",
        "threads",
    ),
    "probes": ("variant", "depth", "seed", "block", "response_std"),
}


NUMERIC = (
    "depth",
    "seed",
    "epoch",
    "block",
    "train_error",
    "test_error",
    "final_train_error",
    "final_test_error",
    "response_std",
)


def _table(run: RunDir, name: str) -> pd.DataFrame:
    if not run.has_table(name):
        return pd.DataFrame()
    return run.read_table(name, columns=NEEDS[name], numeric=NUMERIC)


def _diverged(runs: pd.DataFrame) -> set[tuple[str, int, int]]:
    """(variant, depth, seed) of the runs whose loss became non-finite."""
    if runs.empty:
        return set()
    bad = runs[runs["status"] == "diverged"]
    return {
        (str(v), int(d), int(s))
        for v, d, s in bad[["variant", "depth", "seed"]].itertuples(index=False)
    }


# The curves have flattened when the mean training error moved by at most FLAT_POINTS
# percentage points over the last FLAT_SHARE of the epochs (at least the last two).
FLAT_SHARE = 0.25
FLAT_POINTS = 1.0


def flattening(results: pd.DataFrame) -> pd.DataFrame:
    """Per net: the mean training error (%) at the start and end of the last quarter of its
    epochs, the change, and whether its curve has flattened (see FLAT_POINTS). Diverged
    runs are left out; one row per (variant, depth) with finished epochs."""
    cols = [
        "net",
        "variant",
        "depth",
        "from_epoch",
        "to_epoch",
        "train_error_from",
        "train_error_to",
        "change",
        "flattened",
    ]
    if results.empty:
        return pd.DataFrame(columns=cols)
    ok = results[results["status"] != "diverged"] if "status" in results else results
    rows = []
    for (variant, depth), g in ok.groupby(["variant", "depth"], sort=True):
        curve = g.groupby("epoch")["train_error"].mean().sort_index() * 100
        if len(curve) < 2:
            continue
        window = max(1, round(FLAT_SHARE * (len(curve) - 1)))
        start, end = curve.index[-1 - window], curve.index[-1]
        change = float(curve.loc[end] - curve.loc[start])
        rows.append(
            {
                "net": model_label(variant, depth),
                "variant": variant,
                "depth": int(depth),
                "from_epoch": int(start),
                "to_epoch": int(end),
                "train_error_from": round(float(curve.loc[start]), 2),
                "train_error_to": round(float(curve.loc[end]), 2),
                "change": round(change, 2),
                "flattened": abs(change) <= FLAT_POINTS,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def _flattening_text(flat: pd.DataFrame) -> str:
    moving = flat[~flat["flattened"]]
    window = (
        f"over the last {int(flat['to_epoch'].max() - flat['from_epoch'].min())} epoch(s)"
        if flat["to_epoch"].nunique() == 1 and flat["from_epoch"].nunique() == 1
        else "over the last quarter of each run's epochs"
    )
    if moving.empty:
        return (
            f"The training curves have flattened: every net's mean training error moved by at "
            f"most {FLAT_POINTS:g} point {window}, so the final errors are where training "
            f"settled, not a snapshot of a net still descending."
        )
    still = ", ".join(
        f"{r.net} ({r.train_error_from:.1f}% to {r.train_error_to:.1f}%)"
        for r in moving.itertuples()
    )
    return (
        f"Not every training curve has flattened: {still} moved by more than "
        f"{FLAT_POINTS:g} point {window}. Those nets' final errors are a snapshot of "
        f"training still under way; train longer (--epochs) to see where they settle."
    )


def _rule_text() -> str:
    return (
        f"The verdict's rule: reproduced when the deepest plain net's final training error "
        f"(mean over seeds) exceeds the shallowest plain net's by more than "
        f"{DEGRADATION_MARGIN:g} point and by more than {SIGNIFICANCE:g} standard errors of "
        f"that gap over seeds, and the deepest residual net's exceeds the shallowest "
        f"residual net's by at most {RESIDUAL_TOLERANCE:g} point; diverged runs are left out."
    )


def _summary(meta: dict, config: dict, runs: pd.DataFrame, reproduced: bool | None) -> str:
    depths = "/".join(map(str, config.get("depths", [])))
    word = {True: "reproduced", False: "not reproduced", None: "no verdict"}[reproduced]
    seeds = config.get("seeds")
    wall = meta.get("wall_s")
    timing = f", {wall / 60:.1f} min" if isinstance(wall, (int, float)) else ""
    device = (meta.get("machine") or {}).get("device") or "?"
    jobs = meta.get("jobs")
    if isinstance(jobs, int) and jobs > 1:
        device += f", {jobs} at a time" + (" (CUDA MPS)" if meta.get("cuda_mps") else "")
    return (
        f"degradation {word}: {meta.get('dataset')}, depths {depths}, {seeds} seed(s), "
        f"{config.get('epochs')} epochs, {len(runs)} runs on {device}{timing}"
    )


# ------------------------------------------------------------------------- tables
def _final_table(runs: pd.DataFrame) -> Table:
    fe = final_errors(runs)
    data = pd.DataFrame(
        {
            "net": fe["model"],
            "depth": fe["depth"],
            "seeds": fe["n_seeds"],
            "diverged": fe["n_diverged"],
            # <name>_mean / <name>_std pairs are shown as one "mean ± std" column on the page
            "train error %_mean": (100 * fe["train_error_mean"]).round(2),
            "train error %_std": (100 * fe["train_error_std"]).round(2),
            "test error %_mean": (100 * fe["test_error_mean"]).round(2),
            "test error %_std": (100 * fe["test_error_std"]).round(2),
        }
    )
    return Table(
        key="final_errors",
        title="Final errors per net (mean and std over seeds)",
        data=data,
        caption="Errors after the last epoch; std is over seeds (empty for one seed). "
        "Diverged runs are counted, not averaged.",
    )


def _runs_table(runs: pd.DataFrame) -> Table:
    df = runs.sort_values(["variant", "depth", "seed"], ignore_index=True)
    data = pd.DataFrame(
        {
            "net": [model_label(v, d) for v, d in zip(df["variant"], df["depth"])],
            "seed": df["seed"],
            "status": df["status"],
            "epochs": df["epochs"],
            "train error %": (100 * df["final_train_error"]).round(2),
            "test error %": (100 * df["final_test_error"]).round(2),
            "images/s": df["images_per_s"].round(0),
            "training s": df["train_s"].round(1),
            "wall s": df["wall_s"].round(1),
            "device": df["device"],
            "threads": df["threads"],
            # runs saved before CPU data parallelism trained one model
            "replicas": df["replicas"] if "replicas" in df else 1,
        }
    )
    return Table(
        key="runs",
        title="Every run: final errors, speed and time",
        data=data,
        caption="images/s: training throughput, the median over epochs. training s: the "
        "sum of epoch times (across resumes); wall s: data loading, training and "
        "probes in the session that finished the run.",
    )


def _flattening_table(flat: pd.DataFrame) -> Table:
    data = flat[
        [
            "net",
            "from_epoch",
            "to_epoch",
            "train_error_from",
            "train_error_to",
            "change",
            "flattened",
        ]
    ].rename(
        columns={
            "from_epoch": "from epoch",
            "to_epoch": "to epoch",
            "train_error_from": "train error % then",
            "train_error_to": "train error % at the end",
            "change": "change (points)",
        }
    )
    return Table(
        key="flattening",
        title="Have the training curves flattened?",
        data=data,
        caption=f"Mean training error over seeds at the start and end of the last quarter "
        f"of the epochs; flattened when it moved by at most {FLAT_POINTS:g} point. "
        f"A net still descending at the end was stopped, not converged.",
    )
