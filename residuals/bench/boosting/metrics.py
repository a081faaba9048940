"""Scoring: each loss's metric per sample and per stage, paired gaps, staged-prediction parity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from residuals.bench.boosting.cases import ALPHA

__all__ = ["max_abs_diff", "paired_gap", "pointwise_metric", "stage_metrics"]


# ---------------------------------------------------------------------------- scoring

#: Each loss's metric: its name, and the booster's own loss object (by its ``loss``
#: name) times a factor. The squared error's object is L = r^2 / 2 (Friedman's LS_Boost),
#: so MSE is twice it; huber's delta moves with every stage, so it is scored by MSE too.
METRICS = {
    "squared_error": ("MSE", "squared_error", 2.0),
    "absolute_error": ("MAE", "absolute_error", 1.0),
    "huber": ("MSE", "squared_error", 2.0),
    "quantile": (f"pinball loss (alpha={ALPHA})", "quantile", 1.0),
    "log_loss": ("log loss", "log_loss", 1.0),
    "exponential": ("exponential loss", "exponential", 1.0),
}
METRIC_NAMES = {loss: metric for loss, (metric, _, _) in METRICS.items()}
_REGRESSION = ("squared_error", "absolute_error", "huber", "quantile")


def _pointwise(
    y: np.ndarray, raw: np.ndarray, loss: str, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss (named by :data:`METRIC_NAMES`) and squared residual, both (n,).

    The loss is the booster's own loss object (:func:`residuals.boosting.make_loss`), the
    one its ``train_score_`` reads, so the bench and the estimators score alike.
    """
    from residuals.boosting import make_loss

    if loss not in METRICS or (task == "regression") != (loss in _REGRESSION):
        raise ValueError(f"no {task} metric for loss {loss!r}")
    _, name, factor = METRICS[loss]
    raw2 = raw.reshape(len(y), -1).astype(np.float64, copy=False)
    n_classes = None if task == "regression" else max(raw2.shape[1], 2)
    obj = make_loss(name, n_classes=n_classes, alpha=ALPHA)
    value = obj.pointwise(y, raw2)
    if factor != 1.0:
        value = factor * value
    if task == "regression":
        r = y - raw2[:, 0]
        return value, r * r
    P = obj.predict_proba(raw2)  # (n, K), K = 2 for binary
    if task == "binary":  # the residual of the positive class's probability
        return value, (y - P[:, 1]) ** 2
    onehot = np.zeros_like(P)
    onehot[np.arange(len(y)), y.astype(int)] = 1.0
    return value, np.sum((onehot - P) ** 2, axis=1)


def pointwise_metric(y: np.ndarray, raw: np.ndarray, loss: str, task: str) -> np.ndarray:
    """The loss of every row, shape (n,): :func:`stage_metrics`' loss is its mean."""
    return _pointwise(y, raw, loss, task)[0]


def stage_metrics(y: np.ndarray, raw: np.ndarray, loss: str, task: str) -> tuple[float, float]:
    """The loss of ``raw`` and the RMS residual ``y - prediction``.

    Parameters
    ----------
    y : ndarray of shape (n,)
        Targets; class indices ``0..K-1`` for classification.
    raw : ndarray of shape (n,) or (n, K)
        Raw model output ``F_m(x)`` (log-odds / logits for classifiers).

    Returns
    -------
    (loss, residual_rms) : the loss named by :data:`METRIC_NAMES`, and
    ``sqrt(mean((y - p)^2))`` with ``p`` the prediction (regression) or the
    predicted probabilities against one-hot ``y`` (classification).
    """
    value, squared = _pointwise(y, raw, loss, task)
    return float(np.mean(value)), float(np.sqrt(np.mean(squared)))


def paired_gap(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """``(gap, standard_error)`` of two models' per-row losses on the same rows.

    ``gap = mean(ours - reference)``, the difference of the test losses; its
    standard error ``std(ours - reference) / sqrt(n)`` (paired, ddof=1) is how
    much the gap would move with another test set of the same size: a gap
    within about 2 standard errors is one the test set cannot tell from 0.
    """
    d = np.asarray(ours, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    se = float(np.std(d, ddof=1) / np.sqrt(d.size)) if d.size > 1 else float("nan")
    return float(np.mean(d)), se


def max_abs_diff(a: Iterator[np.ndarray], b: Iterator[np.ndarray]) -> tuple[float, int, int | None]:
    """``max_m max_i |a_m(i) - b_m(i)|`` over two staged outputs.

    Returns ``(max_diff, n_stages, first_stage_that_differs)`` (stages 1-based;
    ``None`` when all agree). ``max_diff`` is ``nan`` if the stage counts differ.
    """
    worst, first, n = 0.0, None, 0
    sentinel = object()
    while True:
        ra: Any = next(a, sentinel)
        rb: Any = next(b, sentinel)
        if ra is sentinel and rb is sentinel:
            return worst, n, first
        if ra is sentinel or rb is sentinel:
            return float("nan"), n, first
        n += 1
        if ra.shape != rb.shape:
            return float("nan"), n, n
        d = float(np.max(np.abs(ra - rb))) if ra.size else 0.0
        if d > 0 and first is None:
            first = n
        worst = max(worst, d)
