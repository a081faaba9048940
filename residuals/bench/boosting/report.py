"""The report of ``residuals bench boosting``: a pure function of the run's tables.

``render(run)`` reads ``results.csv``, ``staged.csv``, ``parity.csv``,
``contributions.csv`` and ``hist_gap.csv`` (written by
:mod:`residuals.bench.boosting`; runs saved before ``hist_gap.csv`` existed
render without its table) and returns
the headline, figures and tables; it trains nothing, so ``residuals report
build RUN_DIR`` redraws a report exactly. The figures are drawn in
:mod:`residuals.bench.boosting.figures`; this module owns the headline (its measured facts
and their words), the tables and the page around them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from residuals.bench.boosting.cases import EXPECTED_TO_MATCH
from residuals.bench.boosting.figures import CASE, draw_figures, methods_in, with_label
from residuals.report import style
from residuals.report.content import ReportContent, Table

__all__ = ["render", "headline_facts"]

# The goal for hist mode (issue 2): test loss within this fraction of exact mode's.
HIST_GAP_GOAL = 0.02


# ---------------------------------------------------------------------------- headline


def headline_facts(
    results: pd.DataFrame, parity: pd.DataFrame, gaps: pd.DataFrame | None = None
) -> dict:
    """The measured numbers behind the headline (all ``None`` where not measured).

    ``gaps`` (``hist_gap.csv``), when given, sorts the cases by :func:`gap_class`:
    within the hist-vs-exact goal, hist better beyond it, hist worse beyond it
    but within 2 standard errors of the test-set noise, hist worse.
    """
    facts: dict = {
        "exact_cases": 0,
        "exact_bitwise": 0,
        "exact_errors": 0,
        "exact_max_diff": None,
        "hist_vs_exact_rel": None,
        "hist_vs_exact_median": None,
        "speed_rows": None,
        "hist_vs_gbrt": None,
        "hist_vs_hgb": None,
        "errors": int((results["status"] == "error").sum()),
        "gap_cases": 0,
        "gap_met": 0,
        "gap_better": 0,
        "gap_noise": 0,
        "gap_worse": 0,
        "fits_ok": int((results["status"] == "ok").sum()),
    }
    ex = parity[parity["method"] == "ours-exact"]
    facts["exact_errors"] = int(
        ((results["method"] == "ours-exact") & (results["status"] == "error")).sum()
    )
    facts["exact_cases"] = len(ex) + facts["exact_errors"]
    facts["exact_bitwise"] = int((ex["max_abs_diff"] == 0.0).sum())
    if len(ex):
        facts["exact_max_diff"] = float(ex["max_abs_diff"].max())
    ok = results[results["status"] == "ok"]
    wide = ok.pivot_table(index=CASE, columns="method", values="test_loss", dropna=False)
    if {"ours-hist", "ours-exact"} <= set(wide.columns):
        rel = ((wide["ours-hist"] - wide["ours-exact"]) / wide["ours-exact"].abs()).dropna()
        if len(rel):
            facts["hist_vs_exact_rel"] = float(rel.abs().max())
            facts["hist_vs_exact_median"] = float(rel.abs().median())
    if gaps is not None and len(gaps):
        classes = gap_class(gaps).value_counts()
        facts["gap_cases"] = len(gaps)
        for key in ("met", "better", "noise", "worse"):
            facts[f"gap_{key}"] = int(classes.get(key, 0))
    sized = ok[ok["size"].notna()]
    times = sized.pivot_table(
        index=["dataset", "loss", "n_train"], columns="method", values="fit_s"
    )
    if "ours-hist" in times.columns and "sklearn-gbrt" in times.columns:
        both = times.dropna(subset=["ours-hist", "sklearn-gbrt"])
        if len(both):
            idx = both.index.get_level_values("n_train").argmax()
            row = both.iloc[idx]
            facts["speed_rows"] = int(both.index[idx][2])
            facts["hist_vs_gbrt"] = float(row["sklearn-gbrt"] / row["ours-hist"])
            if "sklearn-hist" in both.columns and not math.isnan(row["sklearn-hist"]):
                facts["hist_vs_hgb"] = float(row["ours-hist"] / row["sklearn-hist"])
    return facts


def _headline(f: dict) -> tuple[str, bool | None, str]:
    parts, short = [], []
    if f["exact_cases"]:
        n, k = f["exact_cases"], f["exact_bitwise"]
        if k == n:
            parts.append(f"exact mode matches scikit-learn bit for bit in {k}/{n} cases")
        else:
            parts.append(
                f"exact mode matches scikit-learn bit for bit in only {k}/{n} cases "
                f"(worst max |diff| {f['exact_max_diff']:.3g})"
            )
        short.append(f"exact = sklearn in {k}/{n}")
    if f["hist_vs_exact_rel"] is not None:
        text = (
            f"hist mode test loss within {100 * f['hist_vs_exact_rel']:.1f}% of exact "
            f"(median {100 * f['hist_vs_exact_median']:.1f}%"
        )
        if f["gap_cases"]:
            n, k = f["gap_cases"], f["gap_met"]
            text += f"; within {100 * HIST_GAP_GOAL:.0f}% in {k}/{n} cases"
            others = [
                (f["gap_better"], "better"),
                (f["gap_noise"], "worse but within 2 standard errors of the test-set noise"),
                (f["gap_worse"], "worse"),
            ]
            text += "".join(f", hist {what} in {m}" for m, what in others if m)
        parts.append(text + ")")
        short.append(f"hist loss within {100 * f['hist_vs_exact_rel']:.1f}%")
    if f["hist_vs_gbrt"] is not None:
        r = f["hist_vs_gbrt"]
        speed = f"{r:.1f}x faster" if r >= 1 else f"{1 / r:.1f}x slower"
        text = f"hist {speed} than GBRT at {f['speed_rows']:,} rows"
        if f["hist_vs_hgb"] is not None:
            text += f" ({f['hist_vs_hgb']:.2f}x HistGradientBoosting's time)"
        parts.append(text)
        short.append(f"hist {speed} than GBRT")
    if f["errors"]:
        parts.append(f"{f['errors']} fit(s) failed, see the status table")
    if not parts:
        if f["fits_ok"]:
            return (
                f"{f['fits_ok']} fits ran, none of them ours: no parity measured",
                None,
                "scikit-learn only",
            )
        return "no fit ran to completion", False, "no results"
    verdict = None
    if f["exact_cases"]:
        verdict = f["exact_bitwise"] == f["exact_cases"] and not f["errors"]
    headline = "; ".join(parts)
    return headline[0].upper() + headline[1:], verdict, "; ".join(short)


# ---------------------------------------------------------------------------- tables


def _parity_table(parity: pd.DataFrame) -> Table | None:
    if parity.empty:
        return None
    t = with_label(parity)
    t["test_loss_rel_diff"] = (t["test_loss"] - t["reference_test_loss"]) / t[
        "reference_test_loss"
    ].abs()
    expected = t["method"].map(lambda m: EXPECTED_TO_MATCH.get(m, True))
    same = t["max_abs_diff"] == 0.0
    t["bit_for_bit"] = [
        ("yes" if s else "NO") if e else "not expected" for s, e in zip(same, expected)
    ]
    cols = [
        "case",
        "method",
        "reference",
        "n_stages",
        "max_abs_diff",
        "bit_for_bit",
        "first_diff_stage",
        "test_loss",
        "reference_test_loss",
        "test_loss_rel_diff",
    ]
    return Table(
        "parity",
        "Parity: max |our staged prediction - scikit-learn's|",
        t[cols],
        "Maximum over every stage m and every train and test sample of |F_m(x) ours - F_m(x) "
        "reference| (raw predictions: staged_predict for regression, staged_decision_function "
        "for classification). Exact mode is scikit-learn's algorithm and must be 0.0 "
        "(bit for bit: yes). Hist mode is not expected to match HistGradientBoosting: the "
        "two bin the features their own way, so their trees differ; compare their test "
        "losses instead.",
    )


GAP_CLASSES = {
    "met": f"within {100 * HIST_GAP_GOAL:.0f}%",
    "better": "hist better",
    "noise": "hist worse, within noise",
    "worse": "hist worse",
}


def gap_class(gaps: pd.DataFrame) -> pd.Series:
    """Each case of ``hist_gap.csv`` as ``met`` (``|rel_gap| <= 2%``), ``better``
    (hist's loss lower by more than that), ``noise`` (higher by more, but by at
    most 2 standard errors of the paired gap: this test set cannot tell) or ``worse``."""
    z = gaps["gap"] / gaps["gap_se"]
    met = gaps["rel_gap"].abs() <= HIST_GAP_GOAL
    return pd.Series(
        np.select([met, gaps["rel_gap"] < 0, z <= 2], ["met", "better", "noise"], "worse"),
        index=gaps.index,
    )


def _gap_table(gaps: pd.DataFrame) -> Table | None:
    if gaps is None or gaps.empty:
        return None
    t = with_label(gaps)
    t["z"] = t["gap"] / t["gap_se"]
    t["verdict"] = gap_class(gaps).map(GAP_CLASSES).values
    cols = [
        "case",
        "metric",
        "n_test",
        "exact_test_loss",
        "hist_test_loss",
        "gap",
        "rel_gap",
        "gap_se",
        "z",
        "verdict",
    ]
    return Table(
        "hist_gap",
        "Hist vs exact: final test loss",
        t[cols],
        f"The goal: hist mode's test loss within {100 * HIST_GAP_GOAL:.0f}% of exact mode's "
        "(rel_gap = (hist - exact) / exact, negative when hist is better). gap_se is the paired "
        "standard error of the gap over the n_test test rows (std of the per-row loss differences "
        "/ sqrt(n_test)), z = gap / gap_se: with |z| <= 2 this test set cannot tell the two apart, "
        "whatever the relative gap (small test sets, losses near zero). One split and one seed per "
        "case: benchmarks/hist_gap.py averages over several, and has a noiseless friedman1 control "
        "(where hist is better, it is the label noise that exact mode's finer cuts fit).",
    )


def _summary_table(results: pd.DataFrame) -> Table:
    t = with_label(results)
    t["cell"] = [
        f"{tl:.4g} in {fs:.3g} s" if st == "ok" else st
        for st, tl, fs in zip(t["status"], t["test_loss"], t["fit_s"])
    ]
    wide = t.pivot_table(
        index=["case", "metric", "n_train"],
        columns="method",
        values="cell",
        aggfunc="first",
        sort=False,
    )
    wide = wide[[m for m in methods_in(t) if m in wide.columns]].reset_index()
    wide.columns.name = None
    return Table(
        "summary",
        "Test loss and fit time per case",
        wide,
        "Final test loss after all stages and the wall time of one fit, per method. "
        "'unsupported': the learner has no such loss; 'error': see the status table.",
    )


# the columns of each saved table this page reads (a table without one is a broken run)
NEEDS = {
    "results": ("dataset", "size", "loss", "method", "status"),
    "staged": ("dataset", "size", "loss", "method", "split", "stage"),
    "parity": ("dataset", "size", "loss", "method", "reference", "max_abs_diff"),
    "contributions": ("dataset", "size", "loss", "method", "stage", "correction_rms"),
    "hist_gap": ("dataset", "size", "loss", "gap", "rel_gap", "gap_se"),
}


def render(run) -> ReportContent:
    """Headline, figures and tables of a boosting run, from its saved CSVs only."""
    style.apply()
    results = run.read_table("results", columns=NEEDS["results"])

    def optional(name: str, empty: pd.DataFrame | None) -> pd.DataFrame | None:
        return run.read_table(name, columns=NEEDS[name]) if run.has_table(name) else empty

    staged = optional("staged", pd.DataFrame(columns=["method"]))
    parity = optional("parity", pd.DataFrame(columns=["method"]))
    contrib = optional("contributions", pd.DataFrame())
    gaps = optional("hist_gap", None)
    for df in (results, staged, parity, contrib, *([] if gaps is None else [gaps])):
        if "size" in df.columns:
            df["size"] = pd.to_numeric(df["size"], errors="coerce")

    facts = headline_facts(results, parity, gaps)
    headline, verdict, summary = _headline(facts)
    figures = draw_figures(staged, results, contrib)
    tables = [
        t
        for t in (_gap_table(gaps), _parity_table(parity), _summary_table(results))
        if t is not None
    ]
    bad = results[results["status"] != "ok"]
    if len(bad):
        tables.append(
            Table(
                "status",
                "Fits that did not run",
                with_label(bad)[["case", "method", "status", "message"]],
                "unsupported: the learner has no such loss; error: it raised.",
            )
        )
    intro = (
        "Our gradient booster (Friedman 2001: F_m = F_{m-1} + lr*h_m, each tree h_m fitted to the "
        "pseudo-residuals) against scikit-learn's GradientBoosting (the reference for exact mode) and "
        "HistGradientBoosting (the reference for hist mode), with the same trees: depth "
        f"{_one(results, 'max_depth')}, {_one(results, 'n_estimators')} stages, "
        f"{_one(results, 'threads')} thread(s). Every number on this page was measured in this run."
    )
    return ReportContent(
        headline=headline,
        verdict=verdict,
        summary=summary,
        intro=intro,
        figures=figures,
        tables=tables,
    )


def _one(df: pd.DataFrame, col: str) -> str:
    vals = sorted(df[col].dropna().unique()) if col in df.columns else []
    return ", ".join(str(int(v)) for v in vals) or "?"
