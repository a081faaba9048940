"""A small fake bench for the report tests: run folders and a pure renderer.

The renderer follows the contract of the real ones (a pure function of the
run's saved CSVs, drawn with ``residuals.report.style``), so the report
machinery is tested without training anything.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from residuals.report.content import Figure, Overlay, ReportContent, Table
from residuals.runs import RunDir

BENCH = "fakebench"


def results_frame(lr: float = 0.1, seeds=(0, 1), epochs: int = 6) -> pd.DataFrame:
    """Error curves of plain and residual nets at two depths: plain 8 degrades, residual does not."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for depth in (2, 8):
            for net in ("plain", "residual"):
                floor = 0.05 + (0.15 if (net == "plain" and depth == 8) else 0.0)
                for epoch in range(1, epochs + 1):
                    for split, gap in (("train", 0.0), ("test", 0.03)):
                        err = (
                            floor
                            + gap
                            + 0.5 * np.exp(-epoch * lr * 4)
                            + 0.005 * rng.standard_normal()
                        )
                        rows.append(
                            dict(
                                seed=seed,
                                depth=depth,
                                net=net,
                                split=split,
                                epoch=epoch,
                                error=round(float(err), 6),
                            )
                        )
    return pd.DataFrame(rows)


def make_run(
    root,
    *,
    lr: float = 0.1,
    name: str | None = None,
    started_at: str | None = None,
    status: str = "complete",
    device: str = "cpu",
    results: bool = True,
) -> RunDir:
    run = RunDir.create(
        root,
        BENCH,
        "toy",
        {"lr": lr, "epochs": 6, "model": {"widths": [16, 32]}},
        command=f"residuals bench fake --lr {lr}",
        device=device,
        name=name,
    )
    if results:
        run.write_table(results_frame(lr))
    if status != "running":
        run.finish(status)
    if started_at is not None:
        meta = run.read_meta()
        meta["started_at"] = started_at
        run.write_meta(meta)
    return run


def final_table(df: pd.DataFrame) -> pd.DataFrame:
    last = df[df.epoch == df.epoch.max()]
    g = last.groupby(["depth", "net", "split"], as_index=False)["error"]
    out = g.agg(error_mean="mean", error_std="std", n="count")
    return out


def render(run: RunDir) -> ReportContent:
    import matplotlib.pyplot as plt

    from residuals.report import style

    df = run.read_table("results")
    curves = df.groupby(["depth", "net", "split", "epoch"], as_index=False)["error"].mean()
    fig, axes = plt.subplots(1, 2, figsize=style.FIGSIZE, sharey=True)
    for ax, (depth, d) in zip(axes, curves.groupby("depth")):
        for (net, split), s in d.groupby(["net", "split"]):
            ax.plot(
                s.epoch,
                s.error,
                color=style.color(net),
                linestyle=style.linestyle(split),
                label=f"{net} {split}",
            )
        ax.set(title=f"depth {depth}", xlabel="epoch", ylabel="error (fraction misclassified)")
        ax.legend()
    fig.suptitle("Training and test error")
    final = final_table(df)
    test = final[final.split == "test"].set_index(["depth", "net"])["error_mean"]
    degraded = bool(
        test[(8, "plain")] > test[(2, "plain")] and test[(8, "residual")] <= test[(8, "plain")]
    )
    headline = (
        "Degradation reproduced: plain 8 is worse than plain 2, residual 8 is not"
        if degraded
        else "Degradation not reproduced"
    )
    return ReportContent(
        headline=headline,
        verdict=degraded,
        summary=headline,
        intro="A toy bench for tests. Deeper `plain` nets train worse; `residual` ones do not.",
        figures=[
            Figure(
                "curves",
                "Error during training",
                fig,
                curves,
                caption="Dashed: train, solid: test.",
                overlay=Overlay(
                    x="epoch",
                    y="error",
                    hue="net",
                    style="split",
                    facet="depth",
                    xlabel="epoch",
                    ylabel="error (fraction)",
                ),
            )
        ],
        tables=[
            Table("final", "Final error (mean \u00b1 std over seeds)", final, caption="Last epoch.")
        ],
    )


def register(monkeypatch) -> None:
    from residuals.report import content

    monkeypatch.setitem(content.RENDERERS, BENCH, f"{__name__}:render")


def corrupt(path) -> None:
    (path / "meta.json").write_text("{not json")


def set_meta(run: RunDir, **changes) -> None:
    meta = json.loads(run.meta_path.read_text())
    meta.update(changes)
    run.meta_path.write_text(json.dumps(meta))
