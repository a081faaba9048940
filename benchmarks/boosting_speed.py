"""Fit time, test loss and peak memory of our booster against scikit-learn's (and LightGBM's).

Methods (``--methods``; short aliases in brackets):

``ours-exact`` [exact]     :class:`residuals.boosting.BoostingRegressor`, ``tree_method="exact"``
``ours-hist`` [hist]       the same, ``tree_method="hist"``, on each ``--device``
``ours-hist-torch``        hist on the CPU with its C loops switched off
  [hist-torch]             (``RESIDUALS_C_KERNELS=0``): torch's loops, the
                           fallback where the optional C extension is not built
``sklearn-gbrt`` [gbrt]    :class:`sklearn.ensemble.GradientBoostingRegressor`
``sklearn-hist`` [hgb]     :class:`sklearn.ensemble.HistGradientBoostingRegressor`
``lightgbm``               :class:`lightgbm.LGBMRegressor`, when it is installed

All fit the same trees: ``--n-estimators`` stages of depth ``--depths``, learning
rate 0.1, squared error, one sample per leaf at least, no regularisation, no
early stopping, ``--max-bins`` bins for the histogram methods.

Data: ``make_friedman1`` (Friedman 1991) with noise 1.0 at each ``--sizes``
entry: ``100k`` is 100,000 rows of ``--n-features`` features, ``1mx50`` is
1,000,000 rows of 50. The test set is 20% as large (at most 100,000 rows),
drawn independently; its MSE is recorded beside each time (the noise floor is 1.0).

How it is measured:

* every fit runs in a fresh Python process, so no fit inherits another's
  caches, allocator pools or memory high-water mark. In it: the data, one
  untimed warm-up fit of 2 trees on 500 rows (lazy imports, the CUDA context),
  then the timed fit;
* ``--repeats`` rounds, each fitting every case once, in turn: on a machine
  whose load drifts, every method meets the same drift. Reported: the median
  fit time with min-max;
* threads: each ``--threads`` count (``1,2,4,8,16`` for the thread-scaling
  table) is a case of its own: ``threadpoolctl.threadpool_limits`` (OpenMP and
  BLAS; our C loops follow it too), ``torch.set_num_threads``,
  ``OMP_NUM_THREADS``; LightGBM gets ``n_jobs``. The default, 1, is a fair
  single-thread comparison. A GPU fit runs once, with the most threads (its
  binning and host work use them), as one more column of the scaling table;
* every thread count and method of a shape fits the same data, generated once
  and kept as ``.npy`` files in a temporary folder for the workers;
* GPU fits are timed after a ``torch.cuda.synchronize()`` on both ends;
* memory: the process's resident set right before the fit (the data) and the
  peak resident set during the fit (Linux's ``VmHWM``, reset before each fit via
  ``/proc/self/clear_refs``; elsewhere ``ru_maxrss``, which then also covers the
  data generation and says so). ``fit_extra_mb`` is the peak minus the resident
  set before the fit: the memory the fit itself needed. ``binned_mb`` is the
  size of the data binned to one byte per value, the floor of a histogram
  booster; on a GPU also ``torch.cuda.max_memory_allocated``;
* a fit that runs longer than ``--timeout`` seconds is stopped and its case is
  recorded as ``timeout`` (and not run again in later rounds); nothing is
  skipped or extrapolated silently.

Goals checked at the end (each ``pass``, ``FAIL`` or ``not measured``), per
shape, depth and thread count (``benchmarks/_boosting_goals.py``):

* hist on the CPU at least 20x faster than GBRT, both single-threaded;
* hist on the CPU no more than 1.5x slower than HistGradientBoosting;
* exact mode no more than 10% slower than GBRT (single-threaded);
* hist on the CPU no slower than LightGBM at 16 threads;
* hist on the CPU 10x faster at 16 threads than at 1 (1M x 50), 1.7x at 2 (1M x 20);
* hist on a GPU faster than HistGradientBoosting at 1M x 50; 1M x 50, depth 6,
  100 trees in 0.5 s; 10M x 50 in 3 s;
* hist's fit memory within 8x the binned data, where the binned data is 16 MB or
  more (below that, fixed costs such as torch's allocator pools dominate); on a
  GPU, ``torch.cuda.max_memory_allocated``.

Run::

    python benchmarks/boosting_speed.py --sizes 10k,100k --depths 3,6
    python benchmarks/boosting_speed.py --sizes 1m,1mx50 --methods hist,hgb --repeats 3
    python benchmarks/boosting_speed.py --sizes 1mx50 --methods hist,hgb --device cpu,cuda
    python benchmarks/boosting_speed.py --sizes 1m,1mx50 --depths 6 --methods hist,hgb,lgbm --threads 1,2,4,8,16
    python benchmarks/boosting_speed.py --sizes 10mx50 --depths 6 --methods hist --device cuda --repeats 1

Results: printed tables, ``<out>/boosting_speed.csv`` (one row per case),
``<out>/boosting_speed-scaling.csv`` (seconds per case and thread count),
``<out>/boosting_speed-goals.csv`` and ``<out>/boosting_speed.json`` (machine,
versions, date, load average before and after, config, every table); rewritten
after every fit, so a run stopped early keeps what it measured.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import residuals  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)

METHODS = ("ours-exact", "ours-hist", "ours-hist-torch", "sklearn-gbrt", "sklearn-hist", "lightgbm")
ALIASES = {
    "exact": "ours-exact",
    "hist": "ours-hist",
    "hist-torch": "ours-hist-torch",
    "gbrt": "sklearn-gbrt",
    "hgb": "sklearn-hist",
    "sklearn-hgb": "sklearn-hist",
    "lgbm": "lightgbm",
}
HIST_METHODS = ("ours-hist", "ours-hist-torch", "sklearn-hist", "lightgbm")
LEARNING_RATE = 0.1
NOISE = 1.0  # friedman1 noise std: the best achievable test MSE is 1.0
TEST_FRACTION, TEST_MAX = 0.2, 100_000

COLUMNS = [
    "n_train",
    "n_features",
    "depth",
    "n_estimators",
    "method",
    "device",
    "threads",
    "status",
    "repeats",
    "fit_s_median",
    "fit_s_min",
    "fit_s_max",
    "fit_s_all",
    "test_mse",
    "base_rss_mb",
    "peak_rss_mb",
    "fit_extra_mb",
    "binned_mb",
    "gpu_peak_mb",
    "peak_scope",
    "kernels",
    "message",
]


@dataclass(frozen=True)
class Case:
    n_train: int
    n_features: int
    depth: int
    method: str
    device: str  # "cpu" or "cuda"; only ours-hist runs anywhere but the CPU
    n_estimators: int
    max_bins: int
    threads: int
    seed: int

    @property
    def label(self) -> str:
        dev = f"[{self.device}]" if self.method == "ours-hist" else ""
        return f"{self.n_train:,} x {self.n_features}, depth {self.depth}, {self.method}{dev}, {self.threads} thr"


# ------------------------------------------------------------------- worker


def _rss_kib(field: str) -> int | None:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux), else None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _maxrss_kib() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


def make_estimator(case: Case):
    common = dict(learning_rate=LEARNING_RATE, max_depth=case.depth, random_state=case.seed)
    if case.method in ("ours-exact", "ours-hist", "ours-hist-torch"):
        from residuals.boosting import BoostingRegressor

        if case.method == "ours-exact":
            return BoostingRegressor(n_estimators=case.n_estimators, tree_method="exact", **common)
        return BoostingRegressor(
            n_estimators=case.n_estimators,
            tree_method="hist",
            max_bins=case.max_bins,
            device=case.device,
            **common,
        )
    if case.method == "sklearn-gbrt":
        from sklearn.ensemble import GradientBoostingRegressor

        return GradientBoostingRegressor(n_estimators=case.n_estimators, **common)
    if case.method == "sklearn-hist":
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(
            max_iter=case.n_estimators,
            max_leaf_nodes=None,
            min_samples_leaf=1,
            l2_regularization=0.0,
            max_bins=case.max_bins,
            early_stopping=False,
            **common,
        )
    if case.method == "lightgbm":
        import lightgbm

        return lightgbm.LGBMRegressor(
            n_estimators=case.n_estimators,
            learning_rate=LEARNING_RATE,
            max_depth=case.depth,
            num_leaves=2**case.depth,
            min_child_samples=1,
            min_child_weight=0.0,
            reg_lambda=0.0,
            max_bin=case.max_bins,
            n_jobs=case.threads,
            random_state=case.seed,
            verbose=-1,
        )
    raise ValueError(f"unknown method {case.method!r}")


def make_data(n: int, n_features: int, seed: int, cache: str | None = None):
    """Train and test sets of friedman1 as float64 ``(n, n_features)`` arrays; with
    ``cache``, read from (or, the first time, saved to) ``.npy`` files in that folder."""
    import numpy as np

    if cache:
        paths = [
            Path(cache) / f"friedman1-{n}x{n_features}-{seed}-{part}.npy"
            for part in ("X", "y", "X_test", "y_test")
        ]
        if all(p.exists() for p in paths):
            return tuple(np.load(p) for p in paths)
        data = make_data(n, n_features, seed)
        for p, a in zip(paths, data):
            tmp = p.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, a)
            tmp.replace(p)  # whole files only: another worker may read them next
        return data
    from sklearn.datasets import make_friedman1

    n_test = max(100, min(int(n * TEST_FRACTION), TEST_MAX))
    X, y = make_friedman1(n_samples=n, n_features=n_features, noise=NOISE, random_state=seed)
    X_test, y_test = make_friedman1(
        n_samples=n_test, n_features=n_features, noise=NOISE, random_state=seed + 1
    )
    return X, y, X_test, y_test


def worker(case: Case, cache: str | None = None) -> dict:
    """Fit one case once in this (fresh) process; return the measurements."""
    import gc

    import numpy as np
    from threadpoolctl import threadpool_limits

    cuda = case.device.startswith("cuda")
    if case.method.startswith("ours"):
        import torch

        torch.set_num_threads(case.threads)
    X, y, X_test, y_test = make_data(case.n_train, case.n_features, case.seed, cache)
    with threadpool_limits(limits=case.threads):
        # untimed warm-up on 500 rows: lazy imports, CUDA context, kernel caches
        make_estimator(replace(case, n_estimators=2)).fit(X[:500], y[:500])
        est = make_estimator(case)
        gc.collect()
        base = _rss_kib("VmRSS") or 0
        scope = "fit" if _reset_peak() else "process"  # else ru_maxrss: includes data generation
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        est.fit(X, y)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = _rss_kib("VmHWM") if scope == "fit" else _maxrss_kib()
        gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        pred = np.asarray(est.predict(X_test), dtype=np.float64)
    kernels = None
    if case.method.startswith("ours-hist"):
        from residuals.boosting import _kernels, _quantized

        if cuda:  # quantized histograms: the Triton kernel, or torch's int64 scatter
            kernels = "triton" if _quantized.use_triton(torch.device(case.device)) else "torch"
        else:
            kernels = "c" if _kernels.available() else "torch"
    return {
        "fit_s": seconds,
        "test_mse": float(np.mean((y_test - pred) ** 2)),
        "base_rss_mb": base / 1024,
        "kernels": kernels,
        "peak_rss_mb": peak / 1024,
        "fit_extra_mb": (peak - base) / 1024,
        "gpu_peak_mb": gpu_peak,
        "peak_scope": scope,
    }


# ------------------------------------------------------------------- parent


def run_fit(case: Case, timeout: float, cache: str | None = None) -> dict:
    """Fit ``case`` once in a fresh subprocess: the worker's measurements, or
    ``{"status": "timeout" | "error", "message": ...}``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(case.threads), "OMP_WAIT_POLICY": "PASSIVE"}
    if case.method == "ours-hist-torch":
        env["RESIDUALS_C_KERNELS"] = "0"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(asdict(case))]
    if cache:
        cmd += ["--cache", cache]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"a fit was stopped after {timeout:g} s"}
    if proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"status": "error", "message": f"exit {proc.returncode}: {err}"}
    return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def summarize(case: Case, fits: list[dict]) -> dict:
    """One results row from a case's fits (median and range of the times, worst memory)."""
    row = {
        **{
            k: getattr(case, k)
            for k in (
                "n_train",
                "n_features",
                "depth",
                "n_estimators",
                "method",
                "device",
                "threads",
            )
        },
        "binned_mb": case.n_train * case.n_features / 2**20,
        "repeats": 0,
        "status": "ok",
        "message": "",
    }
    failed = [f for f in fits if f["status"] != "ok"]
    fits = [f for f in fits if f["status"] == "ok"]
    if failed:  # the fits that did finish are kept, but the case is not "ok"
        row.update(
            status=failed[0]["status"],
            message=f"{failed[0]['message']} (after {len(fits)} full fit(s))",
        )
    if not fits:
        return row
    t = [f["fit_s"] for f in fits]
    gpu = [f["gpu_peak_mb"] for f in fits if f["gpu_peak_mb"] is not None]
    return {
        **row,
        "repeats": len(t),
        "fit_s_median": statistics.median(t),
        "fit_s_min": min(t),
        "fit_s_max": max(t),
        "fit_s_all": ";".join(f"{x:.4f}" for x in t),
        "test_mse": statistics.median(f["test_mse"] for f in fits),
        "base_rss_mb": statistics.median(f["base_rss_mb"] for f in fits),
        "peak_rss_mb": max(f["peak_rss_mb"] for f in fits),
        "kernels": fits[0].get("kernels"),
        "fit_extra_mb": max(f["fit_extra_mb"] for f in fits),
        "gpu_peak_mb": max(gpu) if gpu else None,
        "peak_scope": fits[0]["peak_scope"],
    }


def parse_shapes(text: str, n_features: int) -> list[tuple[int, int]]:
    """``"10k,100k,1mx50"`` -> ``[(10000, F), (100000, F), (1000000, 50)]``."""
    from residuals.bench.boosting_cli import parse_rows

    shapes = []
    for item in (s.strip() for s in text.split(",") if s.strip()):
        rows, _, feats = item.lower().partition("x")
        try:
            f = int(feats) if feats else n_features
        except ValueError:
            raise SystemExit(f"--sizes: {item!r}: features after 'x' must be an integer") from None
        try:
            shapes.append((parse_rows(rows), f))
        except ValueError as e:
            raise SystemExit(f"--sizes: {e}") from None
    if not shapes:
        raise SystemExit("--sizes: give at least one size, e.g. 10k,100k,1mx50")
    return shapes


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring (or benchmarks/README.md) for what is measured.",
    )
    p.add_argument(
        "--sizes",
        default="10k,100k,1m,1mx50",
        help="training shapes: ROWS or ROWSxFEATURES, comma-separated (default: %(default)s)",
    )
    p.add_argument(
        "--n-features",
        type=int,
        default=20,
        help="features where --sizes gives rows only (default: 20)",
    )
    p.add_argument(
        "--depths", default="3,6", help="tree depths, comma-separated (default: %(default)s)"
    )
    p.add_argument("--n-estimators", type=int, default=100, help="trees per fit (default: 100)")
    p.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="comma-separated: "
        + ", ".join(f"{m}" for m in METHODS)
        + "; aliases exact, hist, gbrt, hgb, lgbm (default: all; lightgbm when installed)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="where ours-hist runs: cpu, cuda, a list like cpu,cuda, or auto = cpu plus cuda "
        "when available (default: auto)",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds; each fits every case once, in a fresh process; median, min, max (default: 3)",
    )
    p.add_argument(
        "--threads",
        default="1",
        help="thread counts, comma-separated, each a case of its own, e.g. 1,2,4,8,16 for the "
        "thread-scaling table (default: 1)",
    )
    p.add_argument(
        "--max-bins", type=int, default=255, help="histogram bins per feature (default: 255)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds before one fit (its process) is stopped and its case recorded as timeout "
        "(default: 3600)",
    )
    p.add_argument("--seed", type=int, default=0, help="data and model seed (default: 0)")
    p.add_argument(
        "--out", default="benchmarks/results", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--markdown", action="store_true", help="also print the results as a Markdown table"
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cache", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return args
    try:
        args.threads = sorted({int(t) for t in str(args.threads).split(",") if t.strip()})
    except ValueError:
        p.error(f"--threads must be integers, e.g. 1,2,4; got {args.threads!r}")
    if not args.threads or min(args.threads) < 1:
        p.error("--threads must be integers >= 1")
    for name in ("n_features", "n_estimators", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not 2 <= args.max_bins <= 255:
        p.error(f"--max-bins must be in [2, 255], got {args.max_bins}")
    try:
        args.depths = sorted({int(d) for d in args.depths.split(",") if d.strip()})
    except ValueError:
        p.error(f"--depths must be integers, e.g. 3,6; got {args.depths!r}")
    if not args.depths or min(args.depths) < 1:
        p.error("--depths must be integers >= 1")
    methods = []
    for m in (s.strip().lower() for s in args.methods.split(",") if s.strip()):
        m = ALIASES.get(m, m)
        if m not in METHODS:
            p.error(
                f"unknown method {m!r}; choose from {', '.join(METHODS)} (aliases {', '.join(ALIASES)})"
            )
        methods.append(m)
    args.methods, args.skipped = list(dict.fromkeys(methods)), {}
    if "lightgbm" in args.methods:
        import importlib.util

        if importlib.util.find_spec("lightgbm") is None:
            if "--methods" in (argv if argv is not None else sys.argv):
                p.error(
                    "lightgbm is not installed (pip install lightgbm), or leave it out of --methods"
                )
            args.methods.remove("lightgbm")
            args.skipped["lightgbm"] = "not installed"
    args.shapes = parse_shapes(args.sizes, args.n_features)
    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    import torch

    if devices == ["auto"]:
        devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
        if not torch.cuda.is_available():
            args.skipped["ours-hist[cuda]"] = "no CUDA device"
    for d in devices:
        if d not in ("cpu", "cuda"):
            p.error(f"--device: {d!r} is not cpu, cuda or auto")
        if d == "cuda" and not torch.cuda.is_available():
            p.error(f"--device cuda: CUDA is not available to this torch ({torch.__version__})")
    args.devices = devices
    return args


def build_cases(args) -> list[Case]:
    cases = []
    for n, f in args.shapes:
        for depth in args.depths:
            for method in args.methods:
                for device in args.devices if method == "ours-hist" else ["cpu"]:
                    # on a GPU one fit, with the most threads for its host work
                    for threads in args.threads if device == "cpu" else [max(args.threads)]:
                        cases.append(
                            Case(
                                n,
                                f,
                                depth,
                                method,
                                device,
                                args.n_estimators,
                                args.max_bins,
                                threads,
                                args.seed,
                            )
                        )
    return cases


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(Case(**json.loads(args.worker)), args.cache)))
        return 0

    import pandas as pd

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _boosting_goals import (
        GOAL_COLUMNS,
        check_goals,
        markdown_scaling,
        markdown_table,
        scaling_table,
    )
    from _machine import format_si, machine_info, write_results

    cases = build_cases(args)
    info = machine_info("cuda" if "cuda" in args.devices else "cpu")
    from importlib import metadata

    for pkg in ("threadpoolctl", "lightgbm"):
        try:
            info["versions"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info["versions"][pkg] = None
    load_before = os.getloadavg()
    print(
        f"{len(cases)} cases, {args.repeats} round(s), threads {args.threads}; "
        f"{info['machine']['cpu_model']}, {info['machine']['cpu_count']} cores; load average {load_before[0]:.2f}"
    )
    for what, why in args.skipped.items():
        print(f"  {what}: skipped ({why})")
    fits: dict[Case, list[dict]] = {case: [] for case in cases}

    def tables():
        """Every table from the fits so far (written after each fit: a stopped run keeps them)."""
        rows = [summarize(case, fits[case]) for case in cases if fits[case]]
        results = pd.DataFrame(rows, columns=COLUMNS)
        goals = pd.DataFrame(check_goals(rows), columns=GOAL_COLUMNS)
        return {"results": results, "scaling": scaling_table(results), "goals": goals}

    def save(done: bool):
        meta = {
            **info,
            "config": {k: v for k, v in vars(args).items() if k not in ("worker", "cache")},
            "complete": done,
            "load_average_1_5_15": {"before": load_before, "after": os.getloadavg()},
        }
        return write_results(tables(), meta, args.out, "boosting_speed")

    # data kept on disk for the workers only where several fits read it (10M x 50 is 4 GB)
    uses = collections.Counter((c.n_train, c.n_features) for c in cases)
    shared = {shape: uses[shape] * args.repeats > 1 for shape in uses}
    with tempfile.TemporaryDirectory(prefix="boosting-speed-data-") as cache:
        for rnd in range(1, args.repeats + 1):
            for i, case in enumerate(cases, 1):
                if any(f["status"] != "ok" for f in fits[case]):
                    continue  # timed out or failed in an earlier round: not run again
                print(
                    f"[round {rnd}/{args.repeats}, {i}/{len(cases)}] {case.label} ...",
                    end=" ",
                    flush=True,
                )
                fit = run_fit(
                    case, args.timeout, cache if shared[case.n_train, case.n_features] else None
                )
                fits[case].append(fit)
                if fit["status"] == "ok":
                    print(
                        f"{format_si(fit['fit_s'])} s  test MSE {fit['test_mse']:.4g}  "
                        f"fit +{fit['fit_extra_mb']:.0f} MB",
                        flush=True,
                    )
                else:
                    print(f"{fit['status'].upper()}: {fit['message']}", flush=True)
                save(done=False)
    paths = save(done=True)
    out = tables()
    results, goals, scaling = out["results"], out["goals"], out["scaling"]
    with pd.option_context("display.width", 220, "display.max_columns", 30):
        print()
        print(
            results[
                [
                    "n_train",
                    "n_features",
                    "depth",
                    "method",
                    "device",
                    "threads",
                    "status",
                    "fit_s_median",
                    "fit_s_min",
                    "fit_s_max",
                    "test_mse",
                    "fit_extra_mb",
                    "binned_mb",
                ]
            ].to_string(index=False)
        )
        if len(args.threads) > 1 or len(args.devices) > 1:
            print("\nfit seconds (median) by thread count\n" + scaling.to_string(index=False))
        if len(goals):
            print()
            print(goals.to_string(index=False))
    if args.markdown:
        print("\n" + markdown_table(results))
        if len(args.threads) > 1 or len(args.devices) > 1:
            print("\n" + markdown_scaling(scaling))
    load_after = os.getloadavg()
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)"
    )
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
