"""Hist mode's test loss against exact mode's, over several splits and seeds.

``residuals bench boosting`` fits every case once, on one train/test split
with one seed. On a small test set whose loss is near zero (wine: 45 test
rows, log loss ~0.05) the relative gap between two models then swings by tens
of percent from split to split. This script measures what a single split
cannot tell, per case of the quick bench:

* ``gap``: hist's test loss relative to exact's, ``(hist - exact) / exact``,
  on ``--splits`` train/test splits (the data seed), each fitted with
  ``--seeds`` model seeds. A model seed changes no data here (no subsampling):
  only which of several equally good splits a tree takes (in exact mode
  through ``DecisionTreeRegressor``'s random feature order, in hist mode
  through its seeded tie-break);
* ``exact_seed_spread``: exact mode against itself, ``(max - min) / mean`` of
  its test loss over the seeds of one split: how far tie-breaking alone moves
  the loss, the noise floor any comparison with exact mode sits on;
* ``binned_exact``: exact mode fitted on the binned data (each value replaced
  by its bin's value, ``BinMapper.bin_values_``), with the model seed 0, against
  hist mode with seed 0. When the two agree, hist mode differs from exact mode
  by the binning of the features alone, not by its tree algorithm;
* ``gap_of_means``: ``(mean hist - mean exact) / mean exact`` over every split
  and seed, the estimate of the difference in *expected* test loss, with its
  standard error over the splits (``gap_of_means_se``: the std of the
  per-split gaps / sqrt(splits)), and its ``verdict``: ``within 2%``, ``hist
  better`` (by more than 2%), ``hist worse, within noise`` (by more, but by
  at most 2 standard errors) or ``hist worse``;
* ``friedman1-noiseless`` (on by default, ``--no-noiseless`` to leave it out):
  friedman1 with its noiseless target, train and test, a control: the only
  difference from friedman1 is the label noise, so it tells whether the gap
  between the modes comes from exact mode's finer cuts (thousands of candidate
  thresholds per feature against 255) fitting that noise.

Run::

    python benchmarks/hist_gap.py                       # the quick bench's cases, about 10 minutes
    python benchmarks/hist_gap.py --datasets wine,breast_cancer --splits 10

Results: the printed summary, ``<out>/hist_gap.csv`` (one row per case, split
and seed), ``<out>/hist_gap-summary.csv`` (one row per case) and
``<out>/hist_gap.json`` (machine, versions, config, load average, both tables).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402  (after the path, before the package, as the other scripts)
from _machine import run_benchmark  # noqa: E402

from residuals.bench.boosting import (  # noqa: E402
    DATASETS,
    QUICK_LOSSES,
    BoostingBenchConfig,
    Case,
    load_split,
    make_estimator,
    stage_metrics,
)


@dataclass
class Config:
    datasets: tuple[str, ...] = (
        "diabetes",
        "breast_cancer",
        "wine",
        "digits",
        "friedman1",
        "classification",
    )
    sizes: tuple[int, ...] = (
        1000,
        4000,
        16000,
    )  # training rows of the generated datasets (the quick bench's)
    noiseless: bool = True  # add friedman1 with its noiseless target (the label-noise control)
    splits: int = 5  # data seeds 0 .. splits-1
    seeds: int = 3  # model seeds 0 .. seeds-1
    n_estimators: int = 100
    max_depth: int = 3
    device: str = "cpu"
    out: str = "benchmarks/results"


def _test_loss(est, case: Case, X, y) -> float:
    raw = est.predict(X) if case.task == "regression" else est.decision_function(X)
    return stage_metrics(y, np.asarray(raw, dtype=np.float64), case.loss, case.task)[0]


def _binned(mapper, X: np.ndarray) -> np.ndarray:
    """Each value of X replaced by the value of its bin: (n, d) float64."""
    bins = mapper.transform(X).numpy().astype(np.int64)
    return mapper.bin_value_table().numpy()[np.arange(X.shape[1]), bins]


GAP_GOAL = 0.02  # hist's expected test loss within 2% of exact's


def _friedman1_target(X: np.ndarray) -> np.ndarray:
    """Friedman (1991) #1 without its noise: what ``make_friedman1`` adds noise to."""
    return (
        10 * np.sin(np.pi * X[:, 0] * X[:, 1])
        + 20 * (X[:, 2] - 0.5) ** 2
        + 10 * X[:, 3]
        + 5 * X[:, 4]
    )


def _cases(cfg: Config):
    """(label, dataset, Case, size, noiseless) in run order."""
    out = []
    for name in cfg.datasets:
        spec = DATASETS[name]
        for size in cfg.sizes if spec.sized else [None]:
            for loss in QUICK_LOSSES[spec.task]:
                out.append((name, name, Case(name, size, spec.task, loss), size, False))
                if name == "friedman1" and cfg.noiseless:
                    out.append(
                        ("friedman1-noiseless", name, Case(name, size, spec.task, loss), size, True)
                    )
    return out


def measure(cfg: Config) -> dict:
    import pandas as pd

    torch.set_num_threads(1)
    rows = []
    for label, name, case, size, noiseless in _cases(cfg):
        for split in range(cfg.splits):
            data = load_split(name, size, seed=split)
            y_train, y_test = data.y_train, data.y_test
            if noiseless:
                y_train, y_test = _friedman1_target(data.X_train), _friedman1_target(data.X_test)
            if case.task != "regression":
                y_test = np.searchsorted(np.unique(y_train), y_test)
            for seed in range(cfg.seeds):
                bench = BoostingBenchConfig.quick(
                    seed=seed, n_estimators=cfg.n_estimators, max_depth=cfg.max_depth
                )
                exact = make_estimator("ours-exact", case, bench).fit(data.X_train, y_train)
                hist = make_estimator("ours-hist", case, bench).fit(data.X_train, y_train)
                row = {
                    "dataset": label,
                    "size": size,
                    "loss": case.loss,
                    "n_test": len(y_test),
                    "split": split,
                    "seed": seed,
                    "exact": _test_loss(exact, case, data.X_test, y_test),
                    "hist": _test_loss(hist, case, data.X_test, y_test),
                    "binned_exact": np.nan,
                }
                if seed == 0:
                    mapper = hist._learner.bin_mapper
                    on_bins = make_estimator("ours-exact", case, bench).fit(
                        _binned(mapper, data.X_train), y_train
                    )
                    row["binned_exact"] = _test_loss(
                        on_bins, case, _binned(mapper, data.X_test), y_test
                    )
                rows.append(row)
                where = label if size is None else f"{label} n={size}"
                print(
                    f"{where} / {case.loss} split {split} seed {seed}: exact {row['exact']:.5g}  "
                    f"hist {row['hist']:.5g}",
                    flush=True,
                )
    runs = pd.DataFrame(rows)
    return {"results": runs, "summary": summarize(runs)}


def verdict(gap: float, se: float) -> str:
    """The gap of the means ``(hist - exact) / exact`` against the 2% goal:
    ``within 2%``, ``hist better`` (by more), ``hist worse, within noise`` (by
    more, but by at most 2 standard errors ``se`` over the splits) or ``hist worse``."""
    if abs(gap) <= GAP_GOAL:
        return f"within {100 * GAP_GOAL:g}%"
    if gap < 0:
        return "hist better"
    return "hist worse, within noise" if gap <= 2 * se else "hist worse"


def summarize(runs):
    """One row per case: the gap over splits, exact's seed spread, binned exact vs hist."""
    import pandas as pd

    out = []
    for (name, size, loss), g in runs.groupby(
        ["dataset", "size", "loss"], dropna=False, sort=False
    ):
        per_split = g.groupby("split")
        mean = per_split[["exact", "hist"]].mean()
        gap = (mean["hist"] - mean["exact"]) / mean["exact"].abs()
        gap_seed0 = (g[g.seed == 0]["hist"].values - g[g.seed == 0]["exact"].values) / np.abs(
            g[g.seed == 0]["exact"].values
        )
        spread = per_split["exact"].agg(lambda v: (v.max() - v.min()) / abs(v.mean()))
        gap_of_means = float(
            (mean["hist"].mean() - mean["exact"].mean()) / abs(mean["exact"].mean())
        )
        # its standard error over the splits (the splits are the independent draws)
        gap_se = float(np.std(gap, ddof=1) / np.sqrt(len(gap))) if len(gap) > 1 else float("nan")
        first = g[g.seed == 0]
        binned = np.abs(first["binned_exact"].values - first["hist"].values) / np.abs(
            first["hist"].values
        )
        out.append(
            {
                "dataset": name,
                "size": size,
                "loss": loss,
                "n_test": int(g["n_test"].iloc[0]),
                "splits": len(mean),
                "seeds": int(g["seed"].nunique()),
                "exact_mean": float(mean["exact"].mean()),
                "hist_mean": float(mean["hist"].mean()),
                "gap_of_means": gap_of_means,
                "gap_of_means_se": gap_se,
                "verdict": verdict(gap_of_means, gap_se),
                "gap_median": float(np.median(gap)),
                "gap_mean": float(np.mean(gap)),
                "gap_min": float(gap.min()),
                "gap_max": float(gap.max()),
                "gap_seed0_median": float(np.median(gap_seed0)),
                "exact_seed_spread_median": float(spread.median()),
                "exact_seed_spread_max": float(spread.max()),
                "binned_exact_vs_hist_max": float(binned.max()),
            }
        )
    return pd.DataFrame(out)


def show(tables: dict, info: dict) -> None:
    s = tables["summary"]
    pct = lambda v: f"{100 * v:+.1f}%"  # noqa: E731
    print(
        f"\nhist vs exact test loss, {int(s['splits'].max())} splits x {int(s['seeds'].max())} seeds "
        f"({info['machine']['cpu_model']}):"
    )
    print(
        "case | test rows | gap of the means ± SE | verdict | gap: median over splits [min, max] | "
        "exact seed spread: median [max] | binned exact vs hist: max"
    )
    for r in s.itertuples():
        label = (
            r.dataset
            if not isinstance(r.size, (int, float)) or np.isnan(r.size)
            else f"{r.dataset} n={int(r.size)}"
        )
        print(
            f"{label} / {r.loss} | {r.n_test} | {pct(r.gap_of_means)} ± {100 * r.gap_of_means_se:.1f}% | "
            f"{r.verdict} | "
            f"{pct(r.gap_median)} [{pct(r.gap_min)}, {pct(r.gap_max)}] | "
            f"{100 * r.exact_seed_spread_median:.1f}% [{100 * r.exact_seed_spread_max:.1f}%] | "
            f"{100 * r.binned_exact_vs_hist_max:.2f}%"
        )


def parse_args(argv=None) -> Config:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    d = Config()
    p.add_argument(
        "--datasets", default=",".join(d.datasets), help="comma-separated (default: %(default)s)"
    )
    p.add_argument(
        "--sizes",
        default=",".join(map(str, d.sizes)),
        help="training rows of the generated datasets, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--no-noiseless",
        dest="noiseless",
        action="store_false",
        help="leave out the friedman1-noiseless control case",
    )
    p.add_argument(
        "--splits", type=int, default=d.splits, help="train/test splits (default: %(default)s)"
    )
    p.add_argument(
        "--seeds", type=int, default=d.seeds, help="model seeds per split (default: %(default)s)"
    )
    p.add_argument("--n-estimators", type=int, default=d.n_estimators, help="default: %(default)s")
    p.add_argument("--max-depth", type=int, default=d.max_depth, help="default: %(default)s")
    p.add_argument("--out", default=d.out, help="output folder (default: %(default)s)")
    a = p.parse_args(argv)
    datasets = tuple(x for x in a.datasets.split(",") if x)
    for name in datasets:
        if name not in DATASETS:
            p.error(f"unknown dataset {name!r}; choose from: {', '.join(DATASETS)}")
    if a.splits < 1 or a.seeds < 1:
        p.error("--splits and --seeds must be >= 1")
    try:
        sizes = tuple(int(x) for x in a.sizes.split(",") if x)
    except ValueError:
        p.error(f"--sizes: expected comma-separated integers, got {a.sizes!r}")
    if not sizes or min(sizes) < 20:
        p.error("--sizes: give at least one size, each >= 20 training rows")
    return Config(
        datasets=datasets,
        sizes=sizes,
        noiseless=a.noiseless,
        splits=a.splits,
        seeds=a.seeds,
        n_estimators=a.n_estimators,
        max_depth=a.max_depth,
        out=a.out,
    )


if __name__ == "__main__":
    run_benchmark("hist_gap", parse_args(), measure, show)
