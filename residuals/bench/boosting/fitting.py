"""The learners of the bench, built with the same tree settings, and how they are fitted
(timed, GPU work synchronized) and read stage by stage."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np

from residuals.bench.boosting.cases import ALPHA, HIST_LOSSES, METHODS, BoostingBenchConfig, Case

__all__ = ["make_estimator", "method_unsupported", "staged_raw", "timed_fit"]


# ---------------------------------------------------------------------------- learners


def method_unsupported(method: str, case: Case) -> str | None:
    """Why ``method`` cannot run ``case``, or None when it can."""
    if method == "sklearn-hist" and case.loss not in HIST_LOSSES:
        return f"HistGradientBoosting has no {case.loss!r} loss"
    return None


def make_estimator(method: str, case: Case, cfg: BoostingBenchConfig):
    """An unfitted learner with the bench's shared tree settings."""
    clf = case.task != "regression"
    common = dict(
        learning_rate=cfg.learning_rate,
        max_depth=cfg.max_depth,
        random_state=cfg.seed,
        loss=case.loss,
    )
    if case.loss in ("huber", "quantile"):
        common["alpha"] = ALPHA
    if method in ("ours-exact", "ours-hist"):
        from residuals.boosting import BoostingClassifier, BoostingRegressor

        kind = (
            dict(tree_method="exact")
            if method == "ours-exact"
            else dict(tree_method="hist", max_bins=cfg.max_bins, device=cfg.device)
        )
        cls = BoostingClassifier if clf else BoostingRegressor
        return cls(n_estimators=cfg.n_estimators, **common, **kind)
    if method == "sklearn-gbrt":
        from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor

        cls = GradientBoostingClassifier if clf else GradientBoostingRegressor
        return cls(n_estimators=cfg.n_estimators, **common)
    if method == "sklearn-hist":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        if case.loss == "quantile":
            common["quantile"] = common.pop("alpha")
        cls = HistGradientBoostingClassifier if clf else HistGradientBoostingRegressor
        # the same trees as GBRT: depth-limited, no leaf cap, 1 sample per leaf, no L2,
        # and all M stages (no early stopping)
        return cls(
            max_iter=cfg.n_estimators,
            max_leaf_nodes=None,
            min_samples_leaf=1,
            l2_regularization=0.0,
            max_bins=cfg.max_bins,
            early_stopping=False,
            **common,
        )
    raise ValueError(f"unknown method {method!r}; choose from: {', '.join(METHODS)}")


# A fit faster than FAST_FIT_S seconds is timed FAST_FIT_REPEATS times and its median
# kept: a sub-second fit on a shared machine varies by tens of percent from run to run
# (benchmarks/README.md, "Figures behind the defaults"); slow fits (exact mode, GBRT) are
# timed once, their noise is relatively small.
FAST_FIT_S = 1.0
FAST_FIT_REPEATS = 3


def timed_fit(est, X: np.ndarray, y: np.ndarray, device: str) -> float:
    """Fit ``est`` and return the wall time in seconds (GPU work synchronized)."""
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.synchronize()
    t0 = time.perf_counter()
    est.fit(X, y)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def staged_raw(est, X: np.ndarray, task: str) -> Iterator[np.ndarray]:
    """Raw predictions ``F_m(X)`` after each stage: shape ``(n,)``, or ``(n, K)`` for multiclass."""
    gen = est.staged_predict(X) if task == "regression" else est.staged_decision_function(X)
    for raw in gen:
        raw = np.asarray(raw, dtype=np.float64)
        yield raw.ravel() if raw.ndim == 2 and raw.shape[1] == 1 else raw
