"""Where a CPU hist fit's time goes at each thread count: every C loop, and the rest.

Fits ``BoostingRegressor(tree_method="hist")`` on friedman1 in one process, at each
``--threads`` count in turn, for ``--repeats`` interleaved rounds after an untimed
warm-up at every count. Each call into hist mode's C loops is timed by wrapping the
function that hands them to the threads (``residuals.boosting._kernels._run``), so a
loop's time includes its hand-off to the pool and the wait for the slowest thread.
The booster's per-tree numpy passes over the rows go through the same function
(``_kernels.parallel_rows``) and show as the part ``elementwise``; "between the C
loops" is the fit's time minus all of them (the training score's mean, copies, bin
edges, the tree's bookkeeping: torch, numpy and Python). The speed-up column of
the most threads against one says which parts scale and which do not.

Writes to ``--out``: ``hist_threads.csv`` (one row per round, thread count and part,
seconds), ``hist_threads-summary.csv`` (medians and speed-ups) and
``hist_threads.json`` (the configuration, the machine, the load before and after).

Run::

    python benchmarks/hist_threads.py --rows 1m --features 20 --depth 6 --trees 20 --threads 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

WHOLE, BETWEEN = "whole fit", "between the C loops"


def measure(rows: int, features: int, depth: int, trees: int, threads: list[int], repeats: int):
    """Rows of ``{"round", "threads", "part", "seconds"}``, rounds interleaving the counts."""
    import torch
    from sklearn.datasets import make_friedman1
    from threadpoolctl import threadpool_limits

    from residuals.boosting import BoostingRegressor, _kernels

    if not _kernels.available():
        raise SystemExit("the C extension is not built: python setup.py build_ext --inplace")
    X, y = make_friedman1(n_samples=rows, n_features=features, noise=1.0, random_state=0)
    spent: dict[str, float] = {}
    run = _kernels._run

    def timed(fn, args, parts):
        t0 = time.perf_counter()
        try:
            return run(fn, args, parts)
        finally:
            name = getattr(fn, "__name__", "search").removeprefix("residuals_")
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

    def fit(n_threads: int) -> dict[str, float]:
        torch.set_num_threads(n_threads)
        with threadpool_limits(limits=n_threads):
            spent.clear()
            est = BoostingRegressor(
                tree_method="hist",
                n_estimators=trees,
                max_depth=depth,
                learning_rate=0.1,
                random_state=0,
            )
            t0 = time.perf_counter()
            est.fit(X, y)
            whole = time.perf_counter() - t0
        return {WHOLE: whole, **spent, BETWEEN: whole - sum(spent.values())}

    _kernels._run = timed
    try:
        for n in threads:  # warm-up: lazy imports, the pool's threads, the allocator
            fit(n)
        return [
            {"round": r, "threads": n, "part": part, "seconds": s}
            for r in range(repeats)
            for n in threads
            for part, s in fit(n).items()
        ]
    finally:
        _kernels._run = run


def summarise(table, threads: list[int]):
    """Median seconds per part and thread count, and the most threads' speed-up over one."""
    med = table.pivot_table(index="part", columns="threads", values="seconds", aggfunc="median")
    med.columns = [f"{n} threads, s" for n in med.columns]
    lo, hi = min(threads), max(threads)
    if lo != hi:
        med[f"speed-up {lo} -> {hi} threads"] = (
            med[f"{lo} threads, s"] / med[f"{hi} threads, s"]
        ).round(2)
    order = [WHOLE] + sorted(p for p in med.index if p not in (WHOLE, BETWEEN)) + [BETWEEN]
    return med.reindex(order).round(3).reset_index()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1m", help="training rows, e.g. 100k, 1m (default: 1m)")
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--trees", type=int, default=20)
    p.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default: 3)")
    p.add_argument("--out", default="benchmarks/results/hist-threads")
    args = p.parse_args(argv)
    try:
        threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    except ValueError:
        p.error(f"--threads must be integers, e.g. 1,2,4; got {args.threads!r}")
    if not threads or threads[0] < 1 or args.repeats < 1:
        p.error("--threads must be integers >= 1 and --repeats at least 1")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import pandas as pd
    from _machine import machine_info

    from residuals.bench.boosting_cli import parse_rows

    rows = parse_rows(args.rows)
    load_before = os.getloadavg()
    table = pd.DataFrame(
        measure(rows, args.features, args.depth, args.trees, threads, args.repeats)
    )
    summary = summarise(table, threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "hist_threads.csv", index=False)
    summary.to_csv(out / "hist_threads-summary.csv", index=False)
    meta = {
        **machine_info("cpu"),
        "config": {**vars(args), "rows": rows, "threads": threads},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "summary": summary.to_dict(orient="records"),
    }
    (out / "hist_threads.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    print(
        f"{rows:,} x {args.features}, depth {args.depth}, {args.trees} trees, "
        f"medians of {args.repeats} interleaved rounds\n"
    )
    print(summary.to_markdown(index=False) if _has_tabulate() else summary.to_string(index=False))
    print(f"\nwrote {out}/hist_threads.csv, hist_threads-summary.csv, hist_threads.json")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
