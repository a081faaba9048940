"""The degradation report's figures: pure functions of the saved tables.

Each takes ``results.csv``, ``runs.csv`` or ``probes.csv`` as read by
:mod:`residuals.bench.degradation.report` (and the runs that diverged) and returns a
:class:`~residuals.report.content.Figure` holding the drawing, the tidy data it draws and
its caption: the error curves (He et al. 2015, Fig. 6), the final error against depth, the
layer responses (Fig. 7) and the gradient norms per block. The page around them (headline,
text, tables) is assembled in ``report``.
"""

from __future__ import annotations

import pandas as pd

from residuals.bench.degradation import VARIANTS, model_label
from residuals.report import style
from residuals.report.content import Figure, Overlay

__all__ = ["error_curves", "error_vs_depth", "gradient_norms", "layer_responses"]

TITLES = {"plain": "plain nets (no shortcuts)", "residual": "residual nets (identity shortcuts)"}


def _finite_probes(
    probes: pd.DataFrame, diverged: set | frozenset, cols: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """The probe rows of runs that did not diverge and whose ``cols`` are finite, and the
    labels (``plain-56 seed 1``) of the runs left out."""
    import numpy as np

    keys = list(
        zip(probes["variant"].astype(str), probes["depth"].astype(int), probes["seed"].astype(int))
    )
    bad = pd.Series([k in diverged for k in keys], index=probes.index)
    values = probes[cols].apply(pd.to_numeric, errors="coerce")
    bad |= ~np.isfinite(values).all(axis=1)
    left_out = sorted({k for k, b in zip(keys, bad) if b}, key=lambda k: (k[0], k[1], k[2]))
    labels = [f"{model_label(v, d)} seed {s}" for v, d, s in left_out]
    return probes[~bad], labels


def _left_out_text(labels: list[str]) -> str:
    if not labels:
        return ""
    return (
        f" Left out because they diverged or their probes are not finite numbers: "
        f"{', '.join(labels)}."
    )


def _shade(variant: str, depth: int, depths: list[int]) -> str:
    """The variant's colour, lighter for shallower nets (the deepest gets the full colour)."""
    from matplotlib.colors import to_hex, to_rgb

    base = to_rgb(style.color(variant))
    i = sorted(depths).index(depth)
    t = 0.35 + 0.65 * (i / max(len(depths) - 1, 1))  # 0.35 .. 1.0 of the colour
    return to_hex(tuple(1 - t * (1 - c) for c in base))


def error_curves(results: pd.DataFrame, diverged: set | frozenset = frozenset()) -> Figure:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = results.melt(
        id_vars=["model", "variant", "depth", "seed", "epoch"],
        value_vars=["train_error", "test_error"],
        var_name="split",
        value_name="error",
    )
    data["split"] = data["split"].str.removesuffix("_error")
    data["error"] = 100 * data["error"]
    data = data.sort_values(["variant", "depth", "seed", "split", "epoch"], ignore_index=True)
    variants = [v for v in VARIANTS if v in set(data["variant"])]
    depths = sorted(int(d) for d in data["depth"].unique())
    epochs = sorted(int(e) for e in data["epoch"].unique())
    # few epochs: a marker on every point (a one-epoch line has no length to draw)
    marker = "o" if len(epochs) <= 3 else None

    fig, axes = plt.subplots(1, len(variants), figsize=style.FIGSIZE, sharey=True, squeeze=False)
    for ax, variant in zip(axes[0], variants):
        for depth in depths:
            color = _shade(variant, depth, depths)
            n_bad = sum(1 for v, d, _ in diverged if v == variant and d == depth)
            for split in ("train", "test"):
                sel = data[
                    (data["variant"] == variant)
                    & (data["depth"] == depth)
                    & (data["split"] == split)
                ]
                if sel.empty:
                    continue
                stats = sel.groupby("epoch")["error"].agg(["mean", "min", "max"])
                label = f"{model_label(variant, depth)} {split}" + (" (diverged)" if n_bad else "")
                ax.plot(
                    stats.index,
                    stats["mean"],
                    linestyle=style.linestyle(split),
                    color=color,
                    label=label,
                    marker=marker,
                    markersize=4,
                )
                if sel["seed"].nunique() > 1:
                    ax.fill_between(
                        stats.index,
                        stats["min"],
                        stats["max"],
                        color=color,
                        alpha=0.12,
                        linewidth=0,
                    )
        ax.set_title(TITLES[variant])
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        if len(epochs) == 1:
            ax.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        ax.legend(ncols=2 if len(depths) > 2 else 1, fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    return Figure(
        key="error_curves",
        title="Training (dashed) and test (solid) error during training",
        fig=fig,
        data=data,
        caption="He et al. 2015, Fig. 6: the deeper plain net's training error stays above the "
        "shallower one's, the deeper residual net's does not. Lines are means over seeds, "
        "the shaded band their range; darker colour = deeper net.",
        overlay=Overlay(
            x="epoch",
            y="error",
            hue="variant",
            style="split",
            facet="depth",
            xlabel="epoch",
            ylabel="error (%)",
        ),
    )


def _final_long(runs: pd.DataFrame) -> pd.DataFrame:
    data = runs.melt(
        id_vars=["model", "variant", "depth", "seed", "status"],
        value_vars=["final_train_error", "final_test_error"],
        var_name="split",
        value_name="error",
    )
    data["split"] = data["split"].str.removeprefix("final_").str.removesuffix("_error")
    data["error"] = 100 * data["error"]
    return data.sort_values(["variant", "split", "depth", "seed"], ignore_index=True)


def error_vs_depth(runs: pd.DataFrame) -> Figure:
    import matplotlib.pyplot as plt

    data = _final_long(runs)
    ok = data[data["status"] == "complete"]
    fig, ax = plt.subplots(figsize=style.FIGSIZE)
    for variant in [v for v in VARIANTS if v in set(data["variant"])]:
        for split in ("train", "test"):
            sel = ok[(ok["variant"] == variant) & (ok["split"] == split)]
            if sel.empty:
                continue
            stats = sel.groupby("depth")["error"].agg(["mean", "std"]).fillna(0.0)
            ax.errorbar(
                stats.index,
                stats["mean"],
                yerr=stats["std"],
                color=style.color(variant),
                linestyle=style.linestyle(split),
                marker=style.MARKERS[variant],
                capsize=3,
                label=f"{'resnet' if VARIANTS[variant] else 'plain'} {split}",
            )
            ax.scatter(
                sel["depth"], sel["error"], color=style.color(variant), s=10, alpha=0.35, zorder=3
            )
    diverged = data[(data["status"] == "diverged") & (data["split"] == "train")]
    if not diverged.empty:  # at the training error they ended with, when it is a number
        y = diverged["error"].where(
            diverged["error"].notna() & (diverged["error"].abs() != float("inf")), 100.0
        )
        ax.scatter(
            diverged["depth"],
            y,
            marker="x",
            color="black",
            s=40,
            zorder=4,
            label="diverged (left out of the lines)",
        )
    depths = sorted(int(d) for d in data["depth"].unique())
    ax.set_xticks(depths)
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("final error (%)")
    ax.set_title("after the last epoch: plain (orange) and residual (blue) nets")
    ax.legend()
    return Figure(
        key="error_vs_depth",
        title="Final error against depth",
        fig=fig,
        data=data,
        caption="Degradation reads as a plain training-error line (orange, dashed) that rises with "
        "depth while the residual one (blue, dashed) stays flat or falls. Points are "
        "single seeds, bars one standard deviation over seeds.",
        overlay=Overlay(
            x="depth",
            y="error",
            hue="variant",
            style="split",
            xlabel="depth (layers)",
            ylabel="final error (%)",
        ),
    )


def layer_responses(probes: pd.DataFrame, diverged: set | frozenset = frozenset()) -> Figure:
    import matplotlib.pyplot as plt

    kept, left_out = _finite_probes(probes, diverged, ["response_std"])
    data = (
        kept.groupby(["variant", "depth", "block"], as_index=False)["response_std"]
        .mean()
        .sort_values(["variant", "depth", "block"], ignore_index=True)
    )
    data["block_index"] = data["block"] + 1  # 1 = nearest the input, as drawn
    data["rank"] = (
        data.groupby(["variant", "depth"])["response_std"]
        .rank(ascending=False, method="first")
        .astype(int)
    )
    depths = sorted(int(d) for d in probes["depth"].unique())
    fig, (ax_order, ax_rank) = plt.subplots(1, 2, figsize=style.FIGSIZE, sharey=True)
    for (variant, depth), g in data.groupby(["variant", "depth"], sort=True):
        kw = dict(
            color=_shade(variant, depth, depths),
            marker=style.MARKERS[variant],
            markersize=3,
            label=model_label(variant, depth),
        )
        ax_order.plot(g["block_index"], g["response_std"], **kw)
        ranked = g.sort_values("rank")
        ax_rank.plot(ranked["rank"], ranked["response_std"], **kw)
    ax_order.set_xlabel("block index (1 = nearest the input)")
    ax_rank.set_xlabel("block index, sorted by response (largest first)")
    ax_order.set_ylabel("std of the residual function's output")
    ax_order.set_title("in the net's order")
    ax_rank.set_title("sorted by magnitude")
    _integer_ticks(ax_order, ax_rank)
    _empty_note(data, ax_order, ax_rank)
    if not data.empty:
        ax_rank.legend(fontsize=8)
    return Figure(
        key="layer_responses",
        title="Layer responses (He et al. 2015, Fig. 7)",
        fig=fig,
        data=data,
        caption="Standard deviation of each block's function F(x) after its last batch norm, before "
        "the addition, on a fixed batch of test images after training (mean over seeds). "
        "The paper finds residual functions respond less than plain layers, and less in "
        "deeper nets: they learn small corrections to the identity. "
        + _responses_in_this_run(data)
        + _left_out_text(left_out),
        overlay=Overlay(
            x="block_index",
            y="response_std",
            hue="variant",
            facet="depth",
            xlabel="block index (1 = nearest the input)",
            ylabel="std of the residual function's output",
        ),
    )


def _integer_ticks(*axes) -> None:
    """Block indices and ranks are whole numbers: no 1.5 on an axis of three blocks."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def _empty_note(data: pd.DataFrame, *axes) -> None:
    if data.empty:
        for ax in axes:
            ax.text(
                0.5,
                0.5,
                "no finite probe: every run diverged",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="#555555",
            )


def _responses_in_this_run(data: pd.DataFrame, near: float = 0.1) -> str:
    """What this run's probes show, in words: each net's mean and largest block response,
    which nets keep every block within ``near`` (10%) of 1, and how the residual nets
    compare with the plain ones of the same depth."""
    if data.empty:
        return ""
    stats = data.groupby(["variant", "depth"])["response_std"].agg(["mean", "max", "min"])
    listing = ", ".join(
        f"{model_label(v, d)} {r['mean']:.2f} ({r['max']:.2f})" for (v, d), r in stats.iterrows()
    )
    calm = [
        (v, d) for (v, d), r in stats.iterrows() if r["max"] <= 1 + near and r["min"] >= 1 - near
    ]
    loud = [(v, d) for (v, d) in stats.index if (v, d) not in calm]
    text = f"This run: the mean (largest) response of a block is {listing}."
    if calm:
        text += (
            f" Every block of {_and([model_label(v, d) for v, d in calm])} stays within "
            f"{100 * near:.0f}% of 1.0"
        )
        text += (
            f"; {_and([model_label(v, d) for v, d in loud])} "
            f"{'has' if len(loud) == 1 else 'have'} blocks beyond that."
            if loud
            else "."
        )
    depths = sorted({d for _, d in stats.index})
    pairs = [d for d in depths if ("plain", d) in stats.index and ("residual", d) in stats.index]
    below = [
        d for d in pairs if stats.loc[("residual", d), "mean"] < stats.loc[("plain", d), "mean"]
    ]
    above = [d for d in pairs if d not in below]

    def at(ds: list) -> str:
        return f"depth{'s' * (len(ds) > 1)} {_and(ds)}"

    if below:
        text += f" The residual net responds less than the plain one at {at(below)}"
        text += f", not at {at(above)}." if above else "."
    elif above:
        text += f" The residual net responds at least as much as the plain one at {at(above)}."
    res = [d for d in depths if ("residual", d) in stats.index]
    if len(res) >= 2:
        r0, r1 = stats.loc[("residual", res[0]), "mean"], stats.loc[("residual", res[-1]), "mean"]
        text += (
            f" resnet-{res[-1]} responds {'less than' if r1 < r0 else 'at least as much as'} "
            f"resnet-{res[0]} ({r1:.3f} against {r0:.3f})."
        )
    return text


def _and(items: list) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def gradient_norms(probes: pd.DataFrame, diverged: set | frozenset = frozenset()) -> Figure:
    import matplotlib.pyplot as plt

    cols = [c for c in ("input_grad_norm", "param_grad_norm") if c in probes.columns]
    kept, left_out = _finite_probes(probes, diverged, cols)
    data = (
        kept.groupby(["variant", "depth", "block"], as_index=False)[cols]
        .mean()
        .sort_values(["variant", "depth", "block"], ignore_index=True)
    )
    data["block_index"] = data["block"] + 1
    depths = sorted(int(d) for d in probes["depth"].unique())
    labels = {
        "input_grad_norm": ("at each block's input", "gradient norm at the block's input"),
        "param_grad_norm": ("of each block's weights", "gradient norm of the block's weights"),
    }
    fig, axes = plt.subplots(1, len(cols), figsize=style.FIGSIZE, squeeze=False)
    for ax, col in zip(axes[0], cols):
        for (variant, depth), g in data.groupby(["variant", "depth"], sort=True):
            ax.plot(
                g["block_index"],
                g[col],
                color=_shade(variant, depth, depths),
                marker=style.MARKERS[variant],
                markersize=3,
                label=model_label(variant, depth),
            )
        if (data[col] > 0).any():
            ax.set_yscale("log")
        ax.set_xlabel("block index (1 = nearest the input)")
        title, ylabel = labels[col]
        ax.set_ylabel(f"{ylabel} (L2, log scale)")
        ax.set_title(f"gradient {title}")
    _integer_ticks(*axes[0])
    _empty_note(data, *axes[0])
    if not data.empty:
        axes[0][-1].legend(fontsize=8)
    return Figure(
        key="gradient_norms",
        title="Gradient norms per block after training",
        fig=fig,
        data=data,
        caption="L2 norms of the loss gradient on the same fixed test batch after training, with "
        "BN in training mode as SGD sees it (mean over seeds). In a residual net the "
        "identity paths carry the gradient straight to the early blocks; He et al. argue "
        "that with BN the plain nets' trouble is not vanishing gradients, so compare the "
        "shapes rather than expecting the plain curve to vanish." + _left_out_text(left_out),
        overlay=Overlay(
            x="block_index",
            y="input_grad_norm",
            hue="variant",
            facet="depth",
            xlabel="block index (1 = nearest the input)",
            ylabel="gradient norm at the block's input",
            logy=True,
        )
        if "input_grad_norm" in cols
        else None,
    )
