"""``residuals train`` runs beside the d2l chapter's own loop and the articles' figures.

Reads the run folders ``residuals train`` wrote under ``--runs`` and the table
``benchmarks/d2l_reference.py`` wrote (``--reference``), and writes one tidy table, one
row per (recipe, measure), with our figure, the reference loop's (measured on the same
machine) and the article's::

    python benchmarks/train_vs_d2l.py --runs RESULTS/runs --reference RESULTS/d2l_reference.csv \\
        --out RESULTS

Speeds: ours is the median over epochs of training images per second (evaluation
excluded; the trainer times the GPU with CUDA events); the reference's is d2l's own
measure (its Timer around each step, data loading excluded) over the steps it ran, and,
apart, its wall-clock rate (data loading included).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from residuals.bench.train import ARTICLE_FIGURES, median_images_per_s
from residuals.runs import RunDir


def ours(runs: Path) -> list[dict]:
    """One row per (recipe, measure) of each ``residuals train`` run folder under ``runs``."""
    rows = []
    for meta_path in sorted(runs.glob("*/meta.json")):
        run = RunDir(meta_path.parent)
        meta = run.read_meta()
        if meta.get("bench") != "train" or not run.has_table("results"):
            continue
        results = run.read_table("results")
        recipe = (meta.get("config") or {}).get("name", "custom")
        last = results.iloc[-1]
        history = [row for _, row in results.iterrows()]
        figures = {
            "epochs": int(last["epoch"]),
            "loss": float(last["train_loss"]),
            "train_acc": 1 - float(last["train_error"]),
            "test_acc": 1 - float(last["test_error"]),
            "images_per_s": median_images_per_s(history),
        }
        for measure, value in figures.items():
            rows.append(
                {
                    "recipe": recipe,
                    "measure": measure,
                    "ours": value,
                    "status": meta.get("status"),
                    "run": run.path.name,
                    "device": (meta.get("machine") or {}).get("gpu")
                    or (meta.get("machine") or {}).get("device"),
                }
            )
    return rows


def compare(runs: Path, reference: Path | None) -> pd.DataFrame:
    table = pd.DataFrame(
        ours(runs), columns=["recipe", "measure", "ours", "status", "run", "device"]
    )
    table["article"] = [
        ARTICLE_FIGURES.get(r, {}).get(m) for r, m in zip(table["recipe"], table["measure"])
    ]
    table["reference"] = None
    if reference is not None and reference.is_file():
        ref = pd.read_csv(reference)
        examples = ref["examples"].sum()
        d2l = examples / ref["step_seconds"].sum()
        wall = examples / ref["wall_seconds"].sum()
        mask = (table["recipe"] == "d2l-resnet18") & (table["measure"] == "images_per_s")
        table.loc[mask, "reference"] = d2l
        table = pd.concat(
            [
                table,
                pd.DataFrame(
                    [
                        {
                            "recipe": "d2l-resnet18",
                            "measure": "reference_wall_images_per_s",
                            "reference": wall,
                        }
                    ]
                ),
            ],
            ignore_index=True,
        )
    speed = table["measure"] == "images_per_s"
    table["ours_over_reference"] = pd.to_numeric(
        table["ours"].where(speed), errors="coerce"
    ) / pd.to_numeric(table["reference"], errors="coerce")
    table["ours_over_article"] = pd.to_numeric(
        table["ours"].where(speed), errors="coerce"
    ) / pd.to_numeric(table["article"], errors="coerce")
    return table


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--reference", type=Path, default=None)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    table = compare(a.runs, a.reference)
    a.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(a.out / "train_vs_d2l.csv", index=False)
    (a.out / "train_vs_d2l.json").write_text(
        json.dumps(json.loads(table.to_json(orient="records")), indent=2) + "\n"
    )
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.drop(columns=["run"]).to_string(index=False))


if __name__ == "__main__":
    main()
