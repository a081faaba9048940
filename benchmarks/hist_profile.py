"""Where a hist-mode fit spends its time, op by op and function by function.

Fits ``BoostingRegressor(tree_method="hist")`` on friedman1 three times after a
warm-up (which also compiles the GPU kernels at full size): once timed alone,
once under ``torch.profiler`` (CPU and CUDA activity: every kernel's GPU time,
every op's host time) and once under ``cProfile`` (the Python functions; on a
GPU their time lands where they wait for the device). Writes to ``--out``:

* ``ops.csv``: per op, calls, self CPU ms and self device ms (torch.profiler);
* ``functions.csv``: per Python function, calls, total and cumulative s (cProfile);
* ``profile.json``: the configuration, the machine, the plain fit's seconds and both tables.

Run::

    python benchmarks/hist_profile.py --rows 1m --features 50 --depth 6 --trees 20 --device cuda
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path


def _fit(X, y, depth: int, trees: int, device: str):
    import torch

    from residuals.boosting import BoostingRegressor

    est = BoostingRegressor(
        tree_method="hist",
        n_estimators=trees,
        max_depth=depth,
        learning_rate=0.1,
        random_state=0,
        device=device,
    )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    est.fit(X, y)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def profile_fit(
    rows: int, features: int, depth: int, trees: int, device: str, top: int = 40
) -> dict:
    """The three fits; returns ``{"fit_s", "ops", "functions"}`` (tables as lists of dicts)."""
    import torch
    from sklearn.datasets import make_friedman1
    from torch.profiler import ProfilerActivity, profile

    X, y = make_friedman1(n_samples=rows, n_features=features, noise=1.0, random_state=0)
    _fit(X[:500], y[:500], depth, 2, device)  # imports, CUDA context
    _fit(X, y, depth, 2, device)  # every kernel at full size (compiled once)
    seconds = _fit(X, y, depth, trees, device)
    activities = [ProfilerActivity.CPU] + (
        [ProfilerActivity.CUDA] if device.startswith("cuda") else []
    )
    with profile(activities=activities) as prof:
        _fit(X, y, depth, trees, device)
    ops = []
    for e in prof.key_averages():
        device_us = getattr(e, "self_device_time_total", None)
        if device_us is None:
            device_us = getattr(e, "self_cuda_time_total", 0.0)
        ops.append(
            {
                "op": e.key,
                "calls": e.count,
                "self_cpu_ms": e.self_cpu_time_total / 1e3,
                "self_device_ms": device_us / 1e3,
            }
        )
    ops.sort(key=lambda r: (r["self_device_ms"], r["self_cpu_ms"]), reverse=True)
    profiler = cProfile.Profile()
    profiler.enable()
    _fit(X, y, depth, trees, device)
    profiler.disable()
    stats = pstats.Stats(profiler)
    functions = [
        {
            "function": f"{Path(file).name}:{line}({name})",
            "calls": nc,
            "total_s": tt,
            "cumulative_s": ct,
        }
        for (file, line, name), (_, nc, tt, ct, _) in stats.stats.items()
    ]
    functions.sort(key=lambda r: r["total_s"], reverse=True)
    del torch
    return {"fit_s": seconds, "ops": ops[: top * 2], "functions": functions[:top]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", default="1m", help="training rows, e.g. 100k, 1m (default: 1m)")
    p.add_argument("--features", type=int, default=50)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--trees", type=int, default=20)
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="benchmarks/results/hist-profile")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import pandas as pd
    from _machine import machine_info

    from residuals.bench.boosting_cli import parse_rows

    rows = parse_rows(args.rows)
    result = profile_fit(rows, args.features, args.depth, args.trees, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ops, functions = pd.DataFrame(result["ops"]), pd.DataFrame(result["functions"])
    ops.to_csv(out / "ops.csv", index=False)
    functions.to_csv(out / "functions.csv", index=False)
    meta = {
        **machine_info(args.device),
        "config": vars(args),
        "rows": rows,
        "fit_s": result["fit_s"],
        "tables": {"ops": result["ops"], "functions": result["functions"]},
    }
    (out / "profile.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    with pd.option_context("display.width", 200, "display.max_colwidth", 70):
        print(
            f"{rows:,} x {args.features}, depth {args.depth}, {args.trees} trees on {args.device}: "
            f"{result['fit_s']:.3f} s ({result['fit_s'] / args.trees * 1e3:.1f} ms a tree)\n"
        )
        print(ops.head(30).to_string(index=False))
        print()
        print(functions.head(30).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
