"""The ensemble report: a pure function of a run folder's saved tables.

``render(run)`` reads ``meta.json``, ``lesions.csv``, ``staged.csv``,
``contributions.csv`` and ``models.csv`` (written by :mod:`residuals.bench.ensemble`)
and returns the verdict, four figures (each with the tidy data it draws) and two
tables. Nothing is trained or measured here, so ``residuals report build``
rebuilds the page at any time.
"""

from __future__ import annotations

import math

import pandas as pd

from residuals.bench.ensemble.config import verdict_rule
from residuals.bench.ensemble.verdict import ensemble_verdict, lesion_summary
from residuals.report import style
from residuals.report.content import Figure, Overlay, ReportContent, Table

__all__ = ["render"]

INTRO = (
    "Do residual networks behave like boosted ensembles? Veit, Wilber and Belongie (2016) "
    "deleted single blocks from a trained ResNet at test time: its error barely moved, "
    "while deleting one layer of a plain net sent it to chance, and deleting several "
    "blocks raised the error smoothly, as if the net were an ensemble of many shallow "
    "paths. A boosted ensemble is built that way: every stage adds a small correction. "
    "Here a booster, a ResNet, its plain twin and the same ResNet trained block by block "
    "like a booster are measured the same way, through one interface "
    "(residuals.core.Stagewise): a stage is a boosting iteration (one tree per class) or "
    "a residual block. A deleted residual block keeps its shortcut (where it changes "
    "shape, its subsampling and zero channels, as Veit et al. keep the downsampling "
    "blocks' shortcuts); a deleted plain block is taken out of the chain, its input "
    "passed on (through the same parameter-free map where the shape changes)."
)


def render(run) -> ReportContent:
    """Build the report's content from the run's saved CSVs (no training, no randomness)."""
    meta = run.read_meta()
    config = meta.get("config") or {}
    lesions, staged, contributions, models = (
        _table(run, name) for name in ("lesions", "staged", "contributions", "models")
    )
    verdict = ensemble_verdict(lesions)
    planned = len(config.get("families", ())) * int(config.get("seeds", 0))
    headline = verdict.headline
    if planned and len(models) < planned:
        headline = (
            f"partial ({len(models)} of {planned} models measured, status "
            f"{meta.get('status')}): {headline}"
        )
    families = [f for f in config.get("families", ()) if f in set(models.get("family", ()))]
    style.apply()
    figures = []
    if not lesions.empty:
        figures += [
            _single_lesions(lesions, contributions, families),
            _lesion_curve(lesions, models, families),
        ]
    if not contributions.empty:
        figures.append(_contributions(contributions, families))
    if not staged.empty:
        figures.append(_staged(staged, families))
    tables = (
        [_summary_table(lesions, models, families), _models_table(models)] if len(models) else []
    )
    notes = " ".join(f"Note: {n}." for n in verdict.notes)
    return ReportContent(
        headline=headline,
        verdict=verdict.reproduced,
        summary=_summary(meta, config, models, verdict.reproduced),
        intro=f"{INTRO} {_rule_text()}" + (f" {notes}" if notes else ""),
        figures=figures,
        tables=tables,
    )


def _table(run, name: str) -> pd.DataFrame:
    return run.read_table(name) if run.has_table(name) else pd.DataFrame()


def _rule_text() -> str:
    return f"The verdict's rule: {verdict_rule()}"


def _summary(meta: dict, config: dict, models: pd.DataFrame, reproduced: bool | None) -> str:
    word = {True: "reproduced", False: "not reproduced", None: "no verdict"}[reproduced]
    wall = meta.get("wall_s")
    timing = f", {wall / 60:.1f} min" if isinstance(wall, (int, float)) else ""
    device = (meta.get("machine") or {}).get("device") or "?"
    return (
        f"ensemble {word}: {meta.get('dataset')}, ResNet-{config.get('depth')}, "
        f"{'/'.join(config.get('families', ()))}, {config.get('seeds')} seed(s), "
        f"{len(models)} models on {device}{timing}"
    )


def _label(models_or_lesions: pd.DataFrame, family: str) -> str:
    names = models_or_lesions.loc[models_or_lesions["family"] == family, "model"]
    return f"{family} ({names.iloc[0]})" if len(names) else family


# ------------------------------------------------------------------------ figures
def _panels(n: int, **kw):
    import matplotlib.pyplot as plt

    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(9.0, 3.0 * rows + 0.6), squeeze=False, sharey=True, **kw
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _single_lesions(lesions: pd.DataFrame, contributions: pd.DataFrame, families) -> Figure:
    single = lesions[lesions["dropped"] == 1].copy()
    single["stage"] = single["stage"].astype(int)
    whole = lesions[lesions["dropped"] == 0].groupby("family")["test_error"].mean()
    shape = (
        contributions.drop_duplicates(["family", "stage"])[["family", "stage", "changes_shape"]]
        if not contributions.empty
        else pd.DataFrame(columns=["family", "stage", "changes_shape"])
    )
    data = single.merge(shape, on=["family", "stage"], how="left")
    data["changes_shape"] = data["changes_shape"].fillna(False).astype(bool)
    data["test error"] = 100 * data["test_error"]
    data["stage"] = data["stage"] + 1
    data = data[["family", "model", "seed", "stage", "changes_shape", "test error"]].sort_values(
        ["family", "seed", "stage"], ignore_index=True
    )
    fig, axes = _panels(len(families))
    for ax, family in zip(axes, families):
        g = data[data["family"] == family]
        color = style.color(family)
        mean = g.groupby("stage")["test error"].mean()
        ax.plot(mean.index, mean.values, color=color, linewidth=1.2)
        for changes, marker in ((False, "o"), (True, "D")):
            sel = g[g["changes_shape"] == changes]
            if not sel.empty:
                ax.scatter(
                    sel["stage"],
                    sel["test error"],
                    color=color,
                    marker=marker,
                    s=14,
                    alpha=0.6,
                    label="changes shape" if changes else None,
                )
        if family in whole.index:
            ax.axhline(
                100 * whole[family],
                color="black",
                linestyle="--",
                linewidth=1,
                label="nothing deleted",
            )
        ax.set_title(_label(data, family))
        ax.set_xlabel(f"deleted stage (1 = nearest the input, of {int(g['stage'].max())})")
        ax.legend(fontsize=8, loc="upper right")
    axes[0].set_ylabel("test error (%)")
    return Figure(
        key="single_lesions",
        title="Test error after deleting each single stage (Veit et al. 2016, Fig. 3)",
        fig=fig,
        data=data,
        caption="Each point is one model (seed) with one stage deleted at test time; the line "
        "is their mean, the dashed line the whole model's error. Diamonds: blocks that change "
        "the state's shape (their shortcut is kept). Ensemble-like models stay near the dashed "
        "line; a plain net goes to chance.",
        overlay=Overlay(
            x="stage", y="test error", hue="family", xlabel="deleted stage", ylabel="test error (%)"
        ),
    )


def _lesion_curve(lesions: pd.DataFrame, models: pd.DataFrame, families) -> Figure:
    import matplotlib.pyplot as plt

    stages = models.drop_duplicates("family").set_index("family")["n_stages"]
    data = lesions[lesions["family"].isin(stages.index)].copy()
    data["n_stages"] = data["family"].map(stages).astype(int)
    data["fraction deleted"] = data["dropped"] / data["n_stages"]
    data["test error"] = 100 * data["test_error"]
    data = data[
        ["family", "model", "seed", "dropped", "n_stages", "fraction deleted", "test error"]
    ].sort_values(["family", "seed", "dropped"], ignore_index=True)
    fig, ax = plt.subplots(figsize=style.FIGSIZE)
    for family in families:
        g = data[data["family"] == family]
        stats = g.groupby("fraction deleted")["test error"].agg(["mean", "std"]).fillna(0.0)
        color = style.color(family)
        ax.plot(
            stats.index,
            stats["mean"],
            color=color,
            marker="o",
            markersize=3,
            label=_label(data, family) + f", {int(g['n_stages'].iloc[0])} stages",
        )
        ax.fill_between(
            stats.index,
            (stats["mean"] - stats["std"]).clip(lower=0),  # an error rate stays in [0, 100]
            (stats["mean"] + stats["std"]).clip(upper=100),
            color=color,
            alpha=0.15,
            linewidth=0,
        )
    ax.set_xlabel("fraction of the model's stages deleted at random (k / M)")
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=8)
    return Figure(
        key="lesion_curve",
        title="Test error against the number of deleted stages (Veit et al. 2016, Fig. 5a)",
        fig=fig,
        data=data,
        caption="k stages deleted at once, drawn at random (every set when there are few); "
        "lines are means over draws and seeds (k = 1: over every single stage), bands one "
        "standard deviation. The x axis is k over the model's number of stages, so a booster "
        "with many iterations and a net with few blocks share it. An ensemble degrades "
        "smoothly.",
        overlay=Overlay(
            x="fraction deleted",
            y="test error",
            hue="family",
            xlabel="fraction of stages deleted",
            ylabel="test error (%)",
        ),
    )


def _contributions(contributions: pd.DataFrame, families) -> Figure:
    data = (
        contributions.groupby(["family", "model", "stage"], as_index=False)[
            ["correction_norm", "base_norm", "ratio"]
        ]
        .mean()
        .sort_values(["family", "stage"], ignore_index=True)
    )
    data["stage"] = data["stage"] + 1
    fig, axes = _panels(len(families))
    finite = data.loc[data["ratio"].map(math.isfinite), "ratio"]
    top = float(finite.max()) * 3 if len(finite) else 10.0
    for ax, family in zip(axes, families):
        g = data[data["family"] == family]
        color = style.color(family)
        ok = g[g["ratio"].map(math.isfinite)]
        ax.plot(ok["stage"], ok["ratio"], color=color, marker="o", markersize=3)
        inf = g[~g["ratio"].map(math.isfinite)]
        if not inf.empty:
            ax.scatter(
                inf["stage"],
                [top] * len(inf),
                color=color,
                marker="^",
                s=18,
                label="infinite: no identity path (base = 0)",
            )
            ax.legend(fontsize=8, loc="lower right")
        ax.set_yscale("log")
        ax.set_title(_label(data, family))
        ax.set_xlabel("stage (1 = nearest the input)")
    axes[0].set_ylabel("||correction|| / ||base|| (log)")
    return Figure(
        key="contributions",
        title="Stage contributions: the size of each stage's correction",
        fig=fig,
        data=data,
        caption="||correction|| / ||base|| per stage on a fixed batch of test images, mean over "
        "seeds: for a booster the shrunk tree outputs over the raw prediction so far, for a "
        "ResNet the residual function F(x) over the shortcut. Small ratios are small "
        "corrections to the state; a plain block has no base to correct.",
        overlay=Overlay(
            x="stage",
            y="ratio",
            hue="family",
            logy=True,
            xlabel="stage",
            ylabel="||correction|| / ||base||",
        ),
    )


def _staged(staged: pd.DataFrame, families) -> Figure:
    import matplotlib.pyplot as plt

    data = staged.copy()
    data["fraction kept"] = data["kept"] / data["n_stages"]
    data["test error"] = 100 * data["test_error"]
    data = data[
        ["family", "model", "seed", "curve", "kept", "n_stages", "fraction kept", "test error"]
    ].sort_values(["family", "curve", "seed", "kept"], ignore_index=True)
    fig, ax = plt.subplots(figsize=style.FIGSIZE)
    for family in families:
        for curve, linestyle in (("truncated", "-"), ("training", "--")):
            g = data[(data["family"] == family) & (data["curve"] == curve)]
            if g.empty:
                continue
            mean = g.groupby("fraction kept")["test error"].mean()
            label = _label(data, family) + (
                ", as trained stage by stage" if curve == "training" else ""
            )
            ax.plot(
                mean.index,
                mean.values,
                color=style.color(family),
                linestyle=linestyle,
                marker="o",
                markersize=2.5,
                label=label,
            )
    ax.set_xlabel("fraction of the model's stages kept (the first j of M)")
    ax.set_ylabel("test error (%)")
    ax.legend(fontsize=8)
    return Figure(
        key="staged",
        title="Test error as stages are added",
        fig=fig,
        data=data,
        caption="Solid: the trained model with every stage after the j-th deleted; for the "
        "booster that is exactly its staged prediction F_j, for a net the net cut after j "
        "blocks (later blocks bypassed). Dashed: the stagewise net's test error as each block "
        "finished training (its head then; the solid line uses the final head). Means over "
        "seeds.",
        overlay=Overlay(
            x="fraction kept",
            y="test error",
            hue="family",
            style="curve",
            xlabel="fraction of stages kept",
            ylabel="test error (%)",
        ),
    )


# ------------------------------------------------------------------------- tables
def _summary_table(lesions: pd.DataFrame, models: pd.DataFrame, families) -> Table:
    summary = lesion_summary(lesions)
    rows = []
    for family in families:
        s = summary[summary["family"] == family]
        m = models[models["family"] == family]
        half = lesions[(lesions["family"] == family)]
        n = int(m["n_stages"].iloc[0])
        k = min(half["dropped"].unique(), key=lambda v: abs(v - n / 2))
        at_half = half[half["dropped"] == k].groupby("seed")["test_error"].mean()
        rows.append(
            {
                "family": family,
                "model": m["model"].iloc[0],
                "stages": n,
                "learned numbers": int(m["parameters"].iloc[0]),
                "seeds": len(m),
                "test error %_mean": round(100 * s["test_error"].mean(), 2),
                "test error %_std": round(100 * s["test_error"].std(), 2),
                "D: one stage deleted, points_mean": round(s["single_increase"].mean(), 2),
                "D: one stage deleted, points_std": round(s["single_increase"].std(), 2),
                "worst single stage %": round(100 * s["single_max"].max(), 2),
                "about half deleted %": round(100 * at_half.mean(), 2),
                "training s": round(m["train_s"].mean(), 1),
            }
        )
    data = pd.DataFrame(rows)
    return Table(
        key="summary",
        title="Per family: whole-model error and what deleting stages costs (mean ± std over "
        "seeds)",
        data=data,
        caption="D is the verdict's measure: the mean over stages of the error increase when "
        "that stage alone is deleted. 'About half deleted': random sets of the k nearest M/2 "
        "stages. Learned numbers: weights of a net; leaf values and split thresholds of the "
        "booster's trees.",
    )


def _models_table(models: pd.DataFrame) -> Table:
    df = models.sort_values(["family", "seed"], ignore_index=True)
    data = pd.DataFrame(
        {
            "model": df["model"],
            "family": df["family"],
            "seed": df["seed"],
            "status": df["status"],
            "stages": df["n_stages"],
            "train error %": (100 * df["train_error"]).round(2),
            "test error %": (100 * df["test_error"]).round(2),
            "training s": df["train_s"].round(1),
            "measuring s": df["measure_s"].round(1),
            "device": df["device"],
            "threads": df["threads"],
        }
    )
    return Table(
        key="models",
        title="Every model: errors and time",
        data=data,
        caption="training s: the training itself (for the nets the sum of epoch times); "
        "measuring s: every lesion, the staged curve and the contributions on the test split.",
    )
