"""Scoring: each loss's metric per sample and per stage, paired gaps, staged-prediction parity."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from residuals.bench.boosting.cases import ALPHA

__all__ = ["max_abs_diff", "paired_gap", "pointwise_metric", "stage_metrics"]


# ---------------------------------------------------------------------------- scoring

METRIC_NAMES = {
    "squared_error": "MSE",
    "absolute_error": "MAE",
    "huber": "MSE",  # huber's delta moves with every stage; scored by MSE
    "quantile": f"pinball loss (alpha={ALPHA})",
    "log_loss": "log loss",
    "exponential": "exponential loss",
}


def _softmax(raw: np.ndarray) -> np.ndarray:
    z = raw - raw.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _expit(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # stable for large |z|


def _pointwise(
    y: np.ndarray, raw: np.ndarray, loss: str, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row loss (named by :data:`METRIC_NAMES`) and squared residual, both (n,)."""
    if task == "regression":
        r = y - raw
        if loss in ("squared_error", "huber"):
            value = r * r
        elif loss == "absolute_error":
            value = np.abs(r)
        elif loss == "quantile":
            value = np.maximum(ALPHA * r, (ALPHA - 1) * r)
        else:
            raise ValueError(f"no regression metric for loss {loss!r}")
        return value, r * r
    eps = 1e-15
    if task == "binary":
        yy = y.astype(np.float64)
        if loss == "exponential":
            return np.exp(-(2 * yy - 1) * raw), (yy - _expit(2 * raw)) ** 2
        p = _expit(raw)
        pc = np.clip(p, eps, 1 - eps)
        return -(yy * np.log(pc) + (1 - yy) * np.log(1 - pc)), (yy - p) ** 2
    P = _softmax(raw)
    onehot = np.zeros_like(P)
    onehot[np.arange(len(y)), y.astype(int)] = 1.0
    value = -np.log(np.clip(P[np.arange(len(y)), y.astype(int)], eps, None))
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
