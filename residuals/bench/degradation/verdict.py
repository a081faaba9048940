"""The verdict: a rule on ``runs.csv``, stated once in :mod:`residuals.bench.degradation`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from residuals.bench.degradation.config import (
    DEGRADATION_MARGIN,
    RESIDUAL_TOLERANCE,
    SIGNIFICANCE,
    VARIANTS,
    model_label,
)

__all__ = ["Verdict", "degradation_verdict", "final_errors"]


# --------------------------------------------------------------------------- verdict
@dataclass(frozen=True)
class Verdict:
    """The measured answer: was the degradation problem reproduced?"""

    reproduced: bool | None  # None: not enough finished runs to say
    headline: str
    notes: tuple[str, ...] = ()


def final_errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count of the final errors per (variant, depth), over non-diverged seeds.

    Columns: ``variant, depth, model, n_seeds, n_diverged, train_error_mean,
    train_error_std, test_error_mean, test_error_std`` (errors as fractions; std is
    the sample std, NaN for a single seed).
    """
    rows = []
    for (variant, depth), g in runs.groupby(["variant", "depth"], sort=True):
        ok = g[g["status"] == "complete"]
        rows.append(
            {
                "variant": variant,
                "depth": int(depth),
                "model": model_label(variant, depth),
                "n_seeds": len(ok),
                "n_diverged": int((g["status"] == "diverged").sum()),
                "train_error_mean": ok["final_train_error"].mean(),
                "train_error_std": ok["final_train_error"].std(),
                "test_error_mean": ok["final_test_error"].mean(),
                "test_error_std": ok["final_test_error"].std(),
            }
        )
    cols = [
        "variant",
        "depth",
        "model",
        "n_seeds",
        "n_diverged",
        "train_error_mean",
        "train_error_std",
        "test_error_mean",
        "test_error_std",
    ]
    return pd.DataFrame(rows, columns=cols)


def degradation_verdict(
    runs: pd.DataFrame,
    *,
    margin: float = DEGRADATION_MARGIN,
    tolerance: float = RESIDUAL_TOLERANCE,
    significance: float = SIGNIFICANCE,
) -> Verdict:
    """Apply the rule of the module docstring to ``runs.csv`` (errors as fractions).

    ``margin`` and ``tolerance`` are in percentage points of training error,
    ``significance`` in standard errors of the plain nets' gap.
    """
    if runs.empty:
        return Verdict(None, "no verdict: no run has finished yet")
    variants = set(runs["variant"])
    depths = sorted(int(d) for d in runs["depth"].unique())
    if not set(VARIANTS) <= variants or len(depths) < 2:
        return Verdict(
            None,
            "no verdict: the rule compares plain and residual nets at two or more "
            f"depths (this run has {', '.join(sorted(variants))} at "
            f"{', '.join(map(str, depths))})",
        )
    d0, d1 = depths[0], depths[-1]
    table = final_errors(runs).set_index(["variant", "depth"])
    notes = []
    for variant in VARIANTS:
        for depth in (d0, d1):
            if (variant, depth) not in table.index:
                return Verdict(
                    None, f"no verdict: {model_label(variant, depth)} has no finished run"
                )
            row = table.loc[(variant, depth)]
            if row["n_diverged"]:
                total = row["n_diverged"] + row["n_seeds"]
                notes.append(
                    f"{model_label(variant, depth)}: {row['n_diverged']} of {total} seeds "
                    "diverged (left out of the mean)"
                )
            if row["n_seeds"] == 0:
                return Verdict(
                    None,
                    f"no verdict: every {model_label(variant, depth)} run diverged "
                    "(non-finite loss); try a lower --lr or a warm-up",
                    tuple(notes),
                )

    def err(variant, depth) -> float:
        return 100.0 * table.loc[(variant, depth), "train_error_mean"]

    def cell(variant, depth) -> str:
        row = table.loc[(variant, depth)]
        text = f"{100 * row['train_error_mean']:.1f}%"
        if row["n_seeds"] > 1:
            text += f" ± {100 * row['train_error_std']:.1f}"
        return text

    p0, p1 = model_label("plain", d0), model_label("plain", d1)
    r0, r1 = model_label("residual", d0), model_label("residual", d1)

    def var_of_mean(variant, depth) -> float:
        row = table.loc[(variant, depth)]
        n, sd = row["n_seeds"], 100.0 * row["train_error_std"]
        return sd * sd / n if n > 1 and math.isfinite(sd) else 0.0

    se = math.sqrt(var_of_mean("plain", d1) + var_of_mean("plain", d0))
    needed = max(margin, significance * se)
    degraded = err("plain", d1) - err("plain", d0) > needed
    residual_ok = err("residual", d1) - err("residual", d0) <= tolerance
    n = int(table["n_seeds"].max())
    seeds = f" (means over {n} seeds)" if n > 1 else ""
    plain = f"{p1} training error {cell('plain', d1)} {'>' if degraded else 'vs'} {p0} {cell('plain', d0)}"
    resid = (
        f"{r1} {cell('residual', d1)} {'<=' if residual_ok else '>'} {r0} {cell('residual', d0)}"
    )
    if degraded and residual_ok:
        return Verdict(True, f"degradation reproduced: {plain}; {resid}{seeds}", tuple(notes))
    why = []
    if not degraded:
        bar = (
            f"{margin:g} points"
            if needed == margin
            else f"{needed:.1f} points ({significance:g} standard errors over seeds)"
        )
        why.append(f"{p1} is not worse than {p0} by more than {bar}")
    if not residual_ok:
        why.append(f"{r1} is worse than {r0} by more than {tolerance:g} points")
    return Verdict(
        False,
        f"degradation not reproduced ({'; '.join(why)}): {plain}; {resid}{seeds}",
        tuple(notes),
    )
