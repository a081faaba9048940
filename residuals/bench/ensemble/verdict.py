"""The verdict of ``bench ensemble``: is Veit's contrast reproduced (the rule is stated in
:mod:`residuals.bench.ensemble`)?"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from residuals.bench.ensemble.config import CONTRAST_FACTOR, PLAIN_MIN_POINTS
from residuals.bench.ensemble.measurement import LESION_COLUMNS

__all__ = ["Verdict", "ensemble_verdict", "lesion_summary"]


@dataclass(frozen=True)
class Verdict:
    """The measured answer: is Veit's contrast reproduced on every seed?"""

    reproduced: bool | None  # None: not enough finished models to say
    headline: str
    notes: tuple[str, ...] = ()


def lesion_summary(lesions: pd.DataFrame) -> pd.DataFrame:
    """Per (family, model, seed): whole-model error and single-stage lesion increases.

    Columns ``family, model, seed, n_stages, test_error, single_mean, single_max,
    single_increase`` (errors as fractions; ``single_increase`` = ``D``, the mean
    increase in percentage points).
    """
    rows = []
    for (family, model, seed), g in lesions.groupby(["family", "model", "seed"], sort=True):
        whole = g.loc[g["dropped"] == 0, "test_error"]
        single = g.loc[g["dropped"] == 1, "test_error"]
        if whole.empty or single.empty:
            continue
        base = float(whole.iloc[0])
        rows.append(
            {
                "family": family,
                "model": model,
                "seed": int(seed),
                "n_stages": len(single),
                "test_error": base,
                "single_mean": float(single.mean()),
                "single_max": float(single.max()),
                "single_increase": 100.0 * (float(single.mean()) - base),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "family",
            "model",
            "seed",
            "n_stages",
            "test_error",
            "single_mean",
            "single_max",
            "single_increase",
        ],
    )


def ensemble_verdict(
    lesions: pd.DataFrame, *, factor: float = CONTRAST_FACTOR, plain_min: float = PLAIN_MIN_POINTS
) -> Verdict:
    """Apply the rule of the module docstring to ``lesions.csv``."""
    summary = (
        lesion_summary(lesions)
        if not lesions.empty
        else lesion_summary(pd.DataFrame(columns=LESION_COLUMNS))
    )
    by = {f: g.set_index("seed")["single_increase"] for f, g in summary.groupby("family")}
    if "residual" not in by or "plain" not in by:
        return Verdict(
            None,
            "no verdict: the rule compares the residual net with the plain net, "
            "and this run has " + (", ".join(sorted(by)) or "no finished model"),
        )
    seeds = sorted(set(by["residual"].index) & set(by["plain"].index))
    if not seeds:
        return Verdict(None, "no verdict: no seed has both a residual and a plain net measured")
    failed = [
        s
        for s in seeds
        if not (by["plain"][s] >= plain_min and by["residual"][s] <= factor * by["plain"][s])
    ]
    names = dict(zip(summary["family"], summary["model"]))

    def mean(family: str) -> str:
        v = by[family].loc[[s for s in seeds if s in by[family].index]].mean()
        return f"{v:.1f} points" if math.isfinite(v) else "n/a"

    extra = [f"{f} ({names[f]}): {mean(f)}" for f in by if f not in ("residual", "plain")]
    detail = (
        f"deleting one block raised the test error of {names['residual']} by {mean('residual')} "
        f"on average, of {names['plain']} by {mean('plain')}"
        + (f" (deleting one stage: {'; '.join(extra)})" if extra else "")
        + f"; {len(seeds)} seed{'s' * (len(seeds) > 1)}"
    )
    rule = f"rule: on every seed, residual <= {factor:g} x plain and plain >= {plain_min:g} points"
    notes = tuple(
        f"seed {s}: residual {by['residual'][s]:.1f} vs plain {by['plain'][s]:.1f} points"
        for s in failed
    )
    if not failed:
        return Verdict(True, f"residual nets behave like ensembles: {detail} ({rule})", notes)
    return Verdict(
        False,
        f"Veit's contrast not reproduced on seed(s) "
        f"{', '.join(map(str, failed))}: {detail} ({rule})",
        notes,
    )
