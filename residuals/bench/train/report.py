"""The report of a ``residuals train`` run: a pure function of its saved tables.

``render(run)`` reads ``meta.json``, ``results.csv`` (one row per epoch) and ``steps.csv``
(one row per optimiser step) and returns the headline, four figures (each with the tidy
data it draws: loss, error, learning rate, images/s) and two tables (the final figures and
the recipe). Named recipes with an article's figures get a verdict: reached the article's
test accuracy or not (:data:`~residuals.bench.train.recipes.ARTICLE_FIGURES`).
"""

from __future__ import annotations

import pandas as pd

from residuals.bench.train.recipes import ARTICLE_FIGURES
from residuals.report import style
from residuals.report.content import Figure, Overlay, ReportContent, Table
from residuals.runs import RunDir

__all__ = ["render"]

INTRO = (
    "One net trained with one recipe by residuals train. The curves are the running "
    "training loss and error of each epoch (dashed, measured while the weights change, as in "
    "He et al. 2015, Fig. 6) and the test loss and error after it (solid); thin grey lines "
    "are single optimiser steps. The learning rate is drawn per step (a resume with more "
    "epochs re-plans it from where the run stopped)."
)


def render(run: RunDir) -> ReportContent:
    """Build the page's content from the run's saved CSVs (no training, no randomness)."""
    meta = run.read_meta()
    results = run.read_table("results")
    steps = run.read_table("steps") if run.has_table("steps") else pd.DataFrame()
    config = meta.get("config") or {}
    name = config.get("name") or "custom"
    style.apply()
    figures = [_loss_curves(results, steps), _error_curves(results)]
    if not steps.empty:
        figures.append(_lr_curve(steps, meta.get("plans") or []))
    figures.append(_throughput(results))
    headline, verdict = _verdict(meta, config, results)
    return ReportContent(
        headline=headline,
        verdict=verdict,
        summary=_summary(meta, config, results),
        intro=INTRO + (f" Recipe: {name}." if name != "custom" else ""),
        figures=figures,
        tables=[_final_table(meta, config, results), _recipe_table(config)],
    )


def _verdict(meta: dict, config: dict, results: pd.DataFrame) -> tuple[str, bool | None]:
    headline = meta.get("headline") or f"{config.get('model')} on {meta.get('dataset')}"
    if meta.get("status") != "complete":
        headline = f"{meta.get('status')} after {len(results)} epoch(s): {headline}"
    article = ARTICLE_FIGURES.get(config.get("name", ""))
    if article is None or results.empty or "test_acc" not in article:
        return headline, None
    acc = 1 - float(results["test_error"].iloc[-1])
    reached = acc >= article["test_acc"]
    word = "reached" if reached else "below"
    return (
        f"{word} the article's test accuracy ({acc:.3f} vs {article['test_acc']:.3f}); {headline}"
    ), reached


def _summary(meta: dict, config: dict, results: pd.DataFrame) -> str:
    device = (meta.get("machine") or {}).get("device") or "?"
    last = results.iloc[-1] if not results.empty else None
    acc = f", test acc {1 - last['test_error']:.3f}" if last is not None else ""
    return (
        f"train {config.get('model')} on {meta.get('dataset')} ({config.get('name')}), "
        f"{len(results)} epochs on {device}{acc}"
    )


def _splits(results: pd.DataFrame, what: str) -> pd.DataFrame:
    data = results.melt(
        id_vars=["epoch"],
        value_vars=[f"train_{what}", f"test_{what}"],
        var_name="split",
        value_name=what,
    )
    data["split"] = data["split"].str.removesuffix(f"_{what}")
    return data.sort_values(["split", "epoch"], ignore_index=True)


def _plot_splits(ax, data: pd.DataFrame, y: str) -> None:
    for split in ("train", "test"):
        sel = data[data["split"] == split]
        ax.plot(
            sel["epoch"],
            sel[y],
            linestyle=style.linestyle(split),
            marker="o",
            color=style.color("residual"),
            label=f"{split} (per epoch)",
        )


def _loss_curves(results: pd.DataFrame, steps: pd.DataFrame) -> Figure:
    import matplotlib.pyplot as plt

    data = _splits(results, "loss")
    fig, ax = plt.subplots(figsize=style.FIGSIZE)
    if not steps.empty:
        spe = steps.groupby("epoch")["iteration"].count().max()
        x = (steps["iteration"] + 1) / spe
        ax.plot(
            x,
            steps["loss"],
            color="#999999",
            linewidth=0.6,
            alpha=0.7,
            label="train (step)",
        )
    _plot_splits(ax, data, "loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_yscale("log")
    ax.legend()
    return Figure(
        key="loss_curves",
        title="Loss during training",
        fig=fig,
        data=data,
        caption="Running training loss of each epoch (dashed), test loss after it "
        "(solid), every step's training loss (grey); log scale.",
        overlay=Overlay(
            x="epoch",
            y="loss",
            style="split",
            xlabel="epoch",
            ylabel="cross-entropy (nats)",
            logy=True,
        ),
    )


def _error_curves(results: pd.DataFrame) -> Figure:
    import matplotlib.pyplot as plt

    data = _splits(results, "error")
    data["error"] = 100 * data["error"]
    fig, ax = plt.subplots(figsize=style.FIGSIZE)
    _plot_splits(ax, data, "error")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.legend()
    return Figure(
        key="error_curves",
        title="Training (dashed) and test (solid) error",
        fig=fig,
        data=data,
        caption="Accuracy is 100% minus the error.",
        overlay=Overlay(x="epoch", y="error", style="split", xlabel="epoch", ylabel="error (%)"),
    )


def _lr_curve(steps: pd.DataFrame, plans: list[dict]) -> Figure:
    import matplotlib.pyplot as plt

    data = steps[["iteration", "epoch", "lr"]].copy()
    fig, ax = plt.subplots(figsize=style.FIGSIZE)
    ax.plot(data["iteration"] + 1, data["lr"], color=style.color("residual"))
    for plan in plans[1:]:
        ax.axvline(plan["from_iteration"], color="#999999", linestyle=":")
        ax.annotate(
            f"resumed: {plan['epochs']} epochs",
            (plan["from_iteration"], ax.get_ylim()[1]),
            fontsize=8,
            ha="left",
            va="top",
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("learning rate")
    return Figure(
        key="learning_rate",
        title="Learning rate per step",
        fig=fig,
        data=data,
        caption="The schedule as the optimiser saw it; dotted lines mark resumes that "
        "asked for more epochs (the schedule re-planned over the new total).",
        overlay=Overlay(x="iteration", y="lr", xlabel="optimiser step", ylabel="learning rate"),
    )


def _throughput(results: pd.DataFrame) -> Figure:
    import matplotlib.pyplot as plt

    data = results[["epoch", "images_per_s", "seconds"]].copy()
    fig, ax = plt.subplots(figsize=style.FIGSIZE)
    ax.bar(data["epoch"], data["images_per_s"], color=style.color("residual"))
    ax.set_xlabel("epoch")
    ax.set_ylabel("training images / s")
    return Figure(
        key="throughput",
        title="Training speed per epoch",
        fig=fig,
        data=data,
        caption="Images per second of training time (evaluation excluded); the first "
        "epoch carries one-off costs (kernel selection, graph capture).",
        overlay=Overlay(x="epoch", y="images_per_s", xlabel="epoch", ylabel="images / s"),
    )


def _final_table(meta: dict, config: dict, results: pd.DataFrame) -> Table:
    last = results.iloc[-1]
    rows = {
        "epochs": int(last["epoch"]),
        "train loss": round(float(last["train_loss"]), 4),
        "train accuracy": round(1 - float(last["train_error"]), 4),
        "test loss": round(float(last["test_loss"]), 4),
        "test accuracy": round(1 - float(last["test_error"]), 4),
        "best test accuracy": round(1 - float(results["test_error"].min()), 4),
        "images/s (median over epochs)": round(float(results["images_per_s"].median()), 1),
        "training seconds": round(float(results["seconds"].sum()), 2),
        "precision": meta.get("precision"),
        "parameters": meta.get("parameters"),
    }
    article = ARTICLE_FIGURES.get(config.get("name", ""), {})
    data = pd.DataFrame({"measure": list(rows), "ours": list(rows.values())})
    if article:
        data["article"] = [article.get(_ARTICLE_KEYS.get(k, ""), "") for k in rows]
    return Table(
        key="final",
        title="Final figures",
        data=data,
        caption="After the last epoch; the article's own figures where it gives them.",
    )


_ARTICLE_KEYS = {
    "train loss": "loss",
    "train accuracy": "train_acc",
    "test accuracy": "test_acc",
    "images/s (median over epochs)": "images_per_s",
    "epochs": "epochs",
}


def _recipe_table(config: dict) -> Table:
    flat = {k: v for k, v in config.items() if k != "train"}
    flat.update(config.get("train") or {})
    data = pd.DataFrame({"setting": list(flat), "value": [str(v) for v in flat.values()]})
    return Table(
        key="recipe",
        title="Recipe",
        data=data,
        caption="Everything this run was trained with (meta.json's config).",
    )
