"""The figures of the ``residuals bench boosting`` report: pure functions of its tables.

:func:`draw_figures` turns ``staged.csv``, ``contributions.csv`` and ``results.csv`` into
the page's figures (staged loss, the residual per stage, the corrections, the fit times),
each a :class:`~residuals.report.content.Figure` with the tidy data it draws. The labels of
cases and methods (:func:`with_label`, :func:`methods_in`) live here too, shared with the
tables of ``report``, which assembles the page.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from residuals.report import style
from residuals.report.content import Figure, Overlay

__all__ = ["CASE", "draw_figures", "methods_in", "with_label"]

METHOD_ORDER = [
    "sklearn-gbrt",
    "sklearn-hist",
    "lightgbm",
    "ours-exact",
    "ours-hist",
]  # ours drawn last, on top
METHOD_LABELS = {
    "ours-exact": "ours, exact",
    "ours-hist": "ours, hist",
    "sklearn-gbrt": "sklearn GBRT",
    "sklearn-hist": "sklearn HistGB",
    "lightgbm": "LightGBM",
}
CASE = ["dataset", "size", "loss"]


def _case_label(dataset: str, size, loss: str) -> str:
    if size is None or (isinstance(size, float) and math.isnan(size)):
        return f"{dataset} / {loss}"
    return f"{dataset} n={int(size):,} / {loss}"


def with_label(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["case"] = [_case_label(d, s, l) for d, s, l in zip(df["dataset"], df["size"], df["loss"])]
    return df


def _shown_cases(results: pd.DataFrame) -> pd.DataFrame:
    """Cases drawn in the per-case figures: every shipped dataset, and only the
    largest size of each generated one (the others appear in the timing figure)."""
    cases = results[CASE].drop_duplicates()
    keep = []
    for _, grp in cases.groupby(["dataset", "loss"], sort=False, dropna=False):
        sizes = grp["size"].dropna()
        keep.append(grp if sizes.empty else grp[grp["size"] == sizes.max()])
    return pd.concat(keep) if keep else cases


def methods_in(df: pd.DataFrame) -> list[str]:
    present = set(df["method"])
    return [m for m in METHOD_ORDER if m in present] + sorted(present - set(METHOD_ORDER))


def _grid(n: int):
    import matplotlib.pyplot as plt

    ncols = min(3, max(n, 1))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(style.FIGSIZE[0], 2.9 * nrows + 0.6), squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _legend(fig, axes, ncols: int = 5) -> None:
    handles: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles.keys()),
            loc="outside lower center",
            ncols=min(len(handles), ncols),
            frameon=False,
        )


def _staged_figure(
    staged: pd.DataFrame,
    results: pd.DataFrame,
    key: str,
    value: str,
    splits: tuple[str, ...],
    title: str,
    ylabel: str,
    caption: str,
) -> Figure | None:
    if staged.empty:
        return None
    shown = _shown_cases(results)
    data = staged.merge(shown, on=CASE)
    data = data[data["split"].isin(splits)]
    if data.empty:
        return None
    data = with_label(data)
    metric = dict(zip(results["loss"], results["metric"]))  # the metric depends on the loss only
    cases = list(dict.fromkeys(data["case"]))
    fig, axes = _grid(len(cases))
    for ax, case in zip(axes, cases):
        sub = data[data["case"] == case]
        for method in methods_in(sub):
            for split in splits:
                line = sub[(sub["method"] == method) & (sub["split"] == split)].sort_values("stage")
                if line.empty:
                    continue
                ax.plot(
                    line["stage"],
                    line[value],
                    color=style.color(method),
                    linestyle=style.linestyle(split),
                    lw=style.LINEWIDTH.get(method, 1.5),
                    zorder=3 if method.startswith("ours") else 2,
                    label=f"{METHOD_LABELS.get(method, method)}, {split}",
                )
        ax.set_title(case, fontsize=8.5)
        ax.set_xlabel("stage m (trees)")
        ax.set_ylabel(metric.get(sub["loss"].iloc[0], ylabel) if value == "loss_value" else ylabel)
        if (sub[value] > 0).all():
            ax.set_yscale("log")
    fig.suptitle(title)
    _legend(fig, axes)
    cols = ["case", *CASE, "method", "split", "stage", value]
    return Figure(
        key,
        title,
        fig,
        data[cols].reset_index(drop=True),
        caption,
        overlay=Overlay(
            x="stage",
            y=value,
            hue="method",
            style="split",
            facet="case",
            xlabel="stage m (trees)",
            ylabel=ylabel,
        ),
    )


def _corrections_figure(contrib: pd.DataFrame, results: pd.DataFrame) -> Figure | None:
    import matplotlib.pyplot as plt

    if contrib.empty:
        return None
    data = with_label(contrib.merge(_shown_cases(results), on=CASE))
    first = data[data["stage"] == 1].set_index(["case", "method"])["correction_rms"]
    data["relative_correction"] = [
        r / first.get((c, m), np.nan) if first.get((c, m), 0) > 0 else np.nan
        for c, m, r in zip(data["case"], data["method"], data["correction_rms"])
    ]
    methods = methods_in(data)
    cases = list(dict.fromkeys(data["case"]))
    fig, axes = plt.subplots(
        1,
        len(methods),
        figsize=(style.FIGSIZE[0], style.FIGSIZE[1] + 0.25 * len(cases)),
        squeeze=False,
        sharey=True,
    )
    cmap = plt.get_cmap("viridis")
    for ax, method in zip(axes.flat, methods):
        for i, case in enumerate(cases):
            line = data[(data["case"] == case) & (data["method"] == method)].sort_values("stage")
            ax.plot(
                line["stage"],
                line["relative_correction"],
                lw=1.2,
                color=cmap(i / max(len(cases) - 1, 1)),
                label=case,
            )
        ax.set_yscale("log")
        ax.set_title(METHOD_LABELS.get(method, method))
        ax.set_xlabel("stage m (trees)")
    axes.flat[0].set_ylabel("RMS of lr*h_m(x) / stage 1's")
    fig.suptitle("Each stage's correction shrinks (training set)")
    _legend(fig, list(axes.flat), ncols=2)
    cols = [
        "case",
        *CASE,
        "method",
        "stage",
        "correction_norm",
        "base_norm",
        "ratio",
        "correction_rms",
        "relative_correction",
    ]
    return Figure(
        "corrections",
        "Size of each stage's correction",
        fig,
        data[cols].reset_index(drop=True),
        "RMS over the training set of the m-th tree's shrunken output lr*h_m(x), divided by the "
        "first tree's, from our boosters' per-stage decomposition F_m = F_{m-1} + lr*h_m. "
        "Generated datasets are shown at their largest size.",
        overlay=Overlay(
            x="stage",
            y="relative_correction",
            hue="method",
            facet="case",
            xlabel="stage m (trees)",
            ylabel="RMS of lr*h_m(x) / stage 1's",
            logy=True,
        ),
    )


def _fit_time_figure(results: pd.DataFrame) -> Figure | None:
    import matplotlib.pyplot as plt

    ok = results[(results["status"] == "ok") & results["size"].notna()]
    if ok.empty:
        return None
    families = list(dict.fromkeys(zip(ok["dataset"], ok["loss"])))
    fig, axes = plt.subplots(1, len(families), figsize=style.FIGSIZE, squeeze=False)
    for ax, (dataset, loss) in zip(axes.flat, families):
        sub = ok[(ok["dataset"] == dataset) & (ok["loss"] == loss)]
        for method in methods_in(sub):
            pts = sub[sub["method"] == method].sort_values("n_train")
            ax.plot(
                pts["n_train"],
                pts["fit_s"],
                marker="o",
                color=style.color(method),
                lw=style.LINEWIDTH.get(method, 1.5),
                label=METHOD_LABELS.get(method, method),
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{dataset} / {loss}")
        ax.set_xlabel("training rows n")
        ax.set_ylabel("fit time (s)")
    threads = ", ".join(str(t) for t in sorted(ok["threads"].unique()))
    fig.suptitle(f"Fit time against training rows ({threads} thread(s))")
    _legend(fig, list(axes.flat))
    data = ok.assign(panel=[f"{d} / {l}" for d, l in zip(ok["dataset"], ok["loss"])])
    cols = ["panel", *CASE, "method", "device", "threads", "n_train", "n_features", "fit_s"]
    return Figure(
        "fit_time",
        "Fit time against n_samples",
        fig,
        data[cols].reset_index(drop=True),
        "Wall time of fit() only (GPU work synchronized): a fit under 1 s is the median of 3 "
        "fresh fits (fit_repeats in results.csv), a slower one a single fit. For ratios measured "
        "over several rounds in fresh processes, see benchmarks/boosting_speed.py. "
        "Both axes are logarithmic.",
        overlay=Overlay(
            x="n_train",
            y="fit_s",
            hue="method",
            facet="panel",
            xlabel="training rows n",
            ylabel="fit time (s)",
            logx=True,
            logy=True,
        ),
    )


def draw_figures(
    staged: pd.DataFrame, results: pd.DataFrame, contrib: pd.DataFrame
) -> list[Figure]:
    """The page's figures, in order; a figure with nothing to draw is left out."""
    return [
        f
        for f in (
            _staged_figure(
                staged,
                results,
                "staged_loss",
                "loss_value",
                ("train", "test"),
                "Staged train and test loss, ours laid over scikit-learn's",
                "loss",
                "Loss after each stage m: train dashed, test solid. Our lines are drawn thin on "
                "top of scikit-learn's thick ones, so where they agree you see one line. "
                "Generated datasets are shown at their largest size.",
            ),
            _staged_figure(
                staged,
                results,
                "residual",
                "residual_rms",
                ("train",),
                "The residual shrinks stage by stage",
                "RMS residual y - prediction",
                "Root mean square of y - prediction on the training set after each stage "
                "(classification: one-hot y minus predicted probabilities) -- the quantity each "
                "new tree is fitted to (for squared error, exactly its target).",
            ),
            _corrections_figure(contrib, results),
            _fit_time_figure(results),
        )
        if f is not None
    ]
