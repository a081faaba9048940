"""Tables of ``boosting_speed.py``: the goals checked, the thread-scaling table, Markdown.

Pure functions of the results rows (one dict per case: shape, depth, method,
device, threads, median/min/max fit time, memory); nothing here measures.
"""

from __future__ import annotations

import pandas as pd

MEMORY_GOAL = 8.0  # hist fit memory / binned data size ...
MEMORY_GOAL_MIN_MB = 16.0  # ... checked where the binned data is at least this large

LABELS = {
    "ours-exact": "ours exact",
    "ours-hist": "ours hist",
    "ours-hist-torch": "ours hist, torch loops",
    "sklearn-gbrt": "sklearn GBRT",
    "sklearn-hist": "sklearn HistGB",
    "lightgbm": "LightGBM",
}

GOAL_COLUMNS = [
    "n_train",
    "n_features",
    "depth",
    "threads",
    "goal",
    "ratio_median",
    "ratio_range",
    "target",
    "status",
]

# (name, numerator (method, device), denominator (method, device), op, target, only at
# (n_train, n_features) or None, only at this thread count or None): the ratio of median
# fit times num / den, both at the same thread count.
PAIR_GOALS = [
    (
        "hist (cpu) >= 20x faster than GBRT",
        ("sklearn-gbrt", "cpu"),
        ("ours-hist", "cpu"),
        ">=",
        20.0,
        None,
        1,
    ),
    (
        "hist (cpu) <= 1.5x HistGradientBoosting's time",
        ("ours-hist", "cpu"),
        ("sklearn-hist", "cpu"),
        "<=",
        1.5,
        None,
        None,
    ),
    (
        "hist (cpu): C loops faster than torch loops",
        ("ours-hist-torch", "cpu"),
        ("ours-hist", "cpu"),
        ">",
        1.0,
        None,
        None,
    ),
    (
        "exact <= 1.1x GBRT's time",
        ("ours-exact", "cpu"),
        ("sklearn-gbrt", "cpu"),
        "<=",
        1.10,
        None,
        1,
    ),
    (
        "hist (cpu) no slower than LightGBM at 16 threads",
        ("ours-hist", "cpu"),
        ("lightgbm", "cpu"),
        "<=",
        1.0,
        None,
        16,
    ),
]
# (name, (n_train, n_features), threads from, threads to, target speed-up of ours-hist on the CPU)
SCALING_GOALS = [
    ("hist (cpu) 1 -> 16 threads >= 10x faster", (1_000_000, 50), 1, 16, 10.0),
    ("hist (cpu) 1 -> 2 threads >= 1.7x faster", (1_000_000, 20), 1, 2, 1.7),
]
# (name, (n_train, n_features, depth, n_estimators), seconds): ours-hist on CUDA
GPU_GOALS = [
    ("hist (cuda) 1M x 50, depth 6, 100 trees in <= 0.5 s", (1_000_000, 50, 6, 100), 0.5),
    ("hist (cuda) 10M x 50, depth 6, 100 trees in <= 3 s", (10_000_000, 50, 6, 100), 3.0),
]


def _ok(rows):
    return [r for r in rows if r["status"] == "ok"]


def _find(rows, key, method, device, threads=None):
    for r in rows:
        if (
            (r["n_train"], r["n_features"], r["depth"]) == key
            and r["method"] == method
            and r["device"] == device
            and (threads is None or r["threads"] == threads)
        ):
            return r
    return None


def _status(value, op, target):
    if value is None:
        return "not measured"
    passed = value >= target if op == ">=" else value <= target if op == "<=" else value > target
    return "pass" if passed else "FAIL"


def _goal(key, threads, name, ratio, op, target, status=None):
    return {
        "n_train": key[0],
        "n_features": key[1],
        "depth": key[2],
        "threads": threads,
        "goal": name,
        "ratio_median": None if ratio is None else ratio[0],
        "ratio_range": None
        if ratio is None or len(ratio) < 3
        else f"{ratio[1]:.3g}-{ratio[2]:.3g}",
        "target": f"{op} {target:g}",
        "status": status or _status(None if ratio is None else ratio[0], op, target),
    }


def check_goals(rows: list[dict]) -> list[dict]:
    """Each goal per shape, depth (and thread count): the measured ratio, pass / FAIL / not measured."""
    rows = _ok(rows)
    goals = []
    keys = sorted({(r["n_train"], r["n_features"], r["depth"]) for r in rows})
    threads_run = sorted({r["threads"] for r in rows if r["device"] == "cpu"})
    for key in keys:
        for name, num, den, op, target, only, at in PAIR_GOALS:
            if only and key[:2] != only:
                continue
            for t in [at] if at else threads_run:
                a, b = _find(rows, key, *num, t), _find(rows, key, *den, t)
                if a is None or b is None:
                    continue
                ratio = (
                    a["fit_s_median"] / b["fit_s_median"],
                    a["fit_s_min"] / b["fit_s_max"],
                    a["fit_s_max"] / b["fit_s_min"],
                )
                goals.append(_goal(key, t, name, ratio, op, target))
        for name, shape, t0, t1, target in SCALING_GOALS:
            if key[:2] != shape:
                continue
            a, b = (
                _find(rows, key, "ours-hist", "cpu", t0),
                _find(rows, key, "ours-hist", "cpu", t1),
            )
            ratio = (
                None
                if a is None or b is None
                else (
                    a["fit_s_median"] / b["fit_s_median"],
                    a["fit_s_min"] / b["fit_s_max"],
                    a["fit_s_max"] / b["fit_s_min"],
                )
            )
            goals.append(_goal(key, f"{t0}->{t1}", name, ratio, ">=", target))
        gpu = _find(rows, key, "ours-hist", "cuda")
        if gpu is not None:
            hgb = [
                r
                for r in rows
                if (r["n_train"], r["n_features"], r["depth"]) == key
                and r["method"] == "sklearn-hist"
            ]
            if hgb and key[:2] == (1_000_000, 50):
                best = min(hgb, key=lambda r: r["fit_s_median"])  # HGB at its best thread count
                ratio = (best["fit_s_median"] / gpu["fit_s_median"],)
                goals.append(
                    _goal(
                        key,
                        best["threads"],
                        "hist (cuda) faster than HistGradientBoosting",
                        ratio,
                        ">",
                        1.0,
                    )
                )
            for name, shape, seconds in GPU_GOALS:
                if (*key, gpu["n_estimators"]) == shape:
                    goals.append(
                        _goal(key, gpu["threads"], name, (gpu["fit_s_median"],), "<=", seconds)
                    )
        for r in rows:
            if (
                (r["n_train"], r["n_features"], r["depth"]) == key
                and r["method"] == "ours-hist"
                and r.get("peak_scope") == "fit"
                and r["binned_mb"] >= MEMORY_GOAL_MIN_MB
            ):
                extra = (
                    r["gpu_peak_mb"]
                    if r["device"] == "cuda" and r.get("gpu_peak_mb")
                    else r["fit_extra_mb"]
                )
                goals.append(
                    _goal(
                        key,
                        r["threads"],
                        f"hist ({r['device']}) fit memory <= {MEMORY_GOAL:g}x binned data",
                        (extra / r["binned_mb"],),
                        "<=",
                        MEMORY_GOAL,
                    )
                )
    return goals


def scaling_table(results: pd.DataFrame) -> pd.DataFrame:
    """Median fit seconds per case (rows) and thread count (columns), the GPU as a column of
    its own, and each CPU row's speed-up from its fewest to its most threads."""
    ok = results[results["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["column"] = [
        f"cuda ({t} cpu threads)" if d == "cuda" else f"{t} threads"
        for d, t in zip(ok["device"], ok["threads"])
    ]
    ok["case"] = ok["method"].map(lambda m: LABELS.get(m, m))
    index = ["n_train", "n_features", "depth", "n_estimators", "case"]
    table = ok.pivot_table(index=index, columns="column", values="fit_s_median", aggfunc="first")
    cpu_cols = sorted(
        (c for c in table.columns if c.endswith(" threads") and not c.startswith("cuda")),
        key=lambda c: int(c.split()[0]),
    )
    table = table[cpu_cols + [c for c in table.columns if c not in cpu_cols]]
    if len(cpu_cols) > 1:
        table[f"speed-up {cpu_cols[0]} -> {cpu_cols[-1]}"] = (
            table[cpu_cols[0]] / table[cpu_cols[-1]]
        )
    return table.reset_index()


def markdown_table(results: pd.DataFrame) -> str:
    """The results as the Markdown table of benchmarks/README.md."""
    lines = [
        "| rows x features | depth | method | device | threads | fit time, s: median [min-max] "
        "| test MSE | fit memory, MB | binned data, MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results.itertuples():
        t = (
            f"{r.fit_s_median:.3g} [{r.fit_s_min:.3g}-{r.fit_s_max:.3g}]"
            if r.status == "ok"
            else r.status
        )
        mse = f"{r.test_mse:.4g}" if r.status == "ok" else ""
        mem = f"{r.fit_extra_mb:.0f}" if r.status == "ok" else ""
        lines.append(
            f"| {r.n_train:,} x {r.n_features} | {r.depth} | {LABELS.get(r.method, r.method)} "
            f"| {r.device} | {r.threads} | {t} | {mse} | {mem} | {r.binned_mb:.3g} |"
        )
    return "\n".join(lines)


def markdown_scaling(table: pd.DataFrame) -> str:
    """The thread-scaling table in Markdown (seconds, 3 significant digits)."""
    if table.empty:
        return ""
    cols = list(table.columns)
    lines = [
        "| " + " | ".join(str(c) for c in cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    for row in table.itertuples(index=False):
        cells = [
            f"{v:.3g}" if isinstance(v, float) else (f"{v:,}" if isinstance(v, int) else str(v))
            for v in row
        ]
        lines.append("| " + " | ".join("" if c == "nan" else c for c in cells) + " |")
    return "\n".join(lines)
