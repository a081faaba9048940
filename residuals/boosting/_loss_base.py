"""The loss interface of gradient boosting (:class:`BoostingLoss`) and the numerics every loss
shares (C-library ``exp``/``log``, weighted percentiles). The losses themselves are in
:mod:`residuals.boosting._losses` (regression) and :mod:`residuals.boosting._class_losses`."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

__all__ = ["BoostingLoss", "in_row_blocks", "weighted_lower_percentile"]


def in_row_blocks(fn: Callable[[int, int], None], n: int, threaded: bool) -> None:
    """``fn(a, b)`` over row ranges covering ``[0, n)``: elementwise work that writes
    rows ``[a, b)`` of its outputs. ``threaded`` (hist mode, where torch and the C
    loops' pool are loaded): in blocks on the pool's threads, the same bits as one
    call (:func:`residuals.boosting._kernels.parallel_rows`); else one call."""
    if not threaded:
        fn(0, n)
        return
    from residuals.boosting._kernels import parallel_rows

    parallel_rows(fn, n)


# ----------------------------------------------------------------- numerics
def _libm(fn: Callable[[float], float], x: np.ndarray) -> np.ndarray:
    """Apply a C-library scalar function elementwise (exact, not SIMD-approximated)."""
    flat = np.ascontiguousarray(x, dtype=np.float64).ravel()
    out = np.fromiter(map(fn, flat.tolist()), dtype=np.float64, count=flat.size)
    return out.reshape(np.shape(x))


def _libm_exp(x: np.ndarray) -> np.ndarray:
    """C-library ``exp``; overflows to ``inf`` like C (``math.exp`` would raise)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.exp(x)
    ok = x < 709.0
    out[ok] = _libm(math.exp, x[ok])
    return out


def weighted_lower_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Weighted ``q``-th percentile, the "inverted CDF" definition (lower median).

    The smallest value ``v`` whose cumulative weight reaches ``q/100`` of the
    total. With unit weights and ``q=50`` on an even number of values this is
    the *lower* of the two middle values (``np.median`` would average them).
    This is the leaf value of the absolute/quantile/huber losses in Friedman's
    TreeBoost (Algorithms 3-4), written as scikit-learn 1.9 computes it.

    Parameters
    ----------
    values : ndarray of shape (n,)
    weights : ndarray of shape (n,), non-negative
    q : float in [0, 100]

    Returns
    -------
    float; ``nan`` if all weights are zero.
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if values.size and np.all(weights == 1.0):
        # unit weights: the cdf below is exactly 1, 2, ..., n, so the searchsorted
        # index is ceil(target) - 1 and the answer the value of that rank: a
        # selection (O(n)) instead of a sort, the same value
        target = np.float64(q) / 100 * np.float64(values.size)
        idx = min(max(int(np.ceil(target)) - 1, 0), values.size - 1)
        return float(np.partition(values, idx)[idx])
    if np.all(weights == 0):
        return float("nan")
    order = np.argsort(values)
    cdf = np.cumsum(weights[order])
    target = np.float64(q) / 100 * cdf[-1]
    if target == 0:  # ignore leading zero-weight observations
        target = np.nextafter(target, target + 1)
    idx = min(int(np.searchsorted(cdf, target)), values.size - 1)
    return float(values[order[idx]])


def _softmax(raw: np.ndarray) -> np.ndarray:
    """Row-wise softmax, max-shifted: exp(F_k - max F) / sum_j exp(F_j - max F)."""
    p = np.array(raw, dtype=np.float64, copy=True)
    p -= p.max(axis=1).reshape(-1, 1)
    np.exp(p, out=p)
    p /= p.sum(axis=1).reshape(-1, 1)
    return p


def _safe_divide(numerator: float, denominator: float) -> float:
    """Newton step that is zero where the hessian vanishes (pure leaves)."""
    if abs(denominator) < 1e-150:
        return 0.0
    return float(numerator) / float(denominator)


# --------------------------------------------------------------------- base
class BoostingLoss:
    """A loss ``L(y, F)`` as the booster needs it.

    Attributes
    ----------
    name : str
        The estimator's ``loss`` parameter value.
    n_trees : int
        Trees per boosting stage (``K``).
    score_factor : float
        ``train_score_`` / ``oob_scores_`` report ``score_factor * mean L``: 2 for
        the half squared error and the binomial log loss, so that the scores are
        the squared error and the binomial deviance (scikit-learn's convention).
    line_search : bool
        Whether the leaves of each tree are re-estimated (TreeBoost). For the
        squared error the least-squares leaf *is* the line-search solution.
    exact : bool
        Use the C library's exp/log (bit-for-bit with scikit-learn) instead of
        NumPy's vectorised ones (faster; used by ``tree_method="hist"``).
    """

    name = "base"
    n_trees = 1
    score_factor = 1.0
    line_search = True
    is_classification = False

    def __init__(self, *, exact: bool = True):
        self.exact = exact

    # --- start of the model --------------------------------------------
    def init_prediction(self, y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray:
        """The loss-optimal constant in target space, ``(n_trees,)`` or scalar."""
        raise NotImplementedError

    def link(self, y_pred: np.ndarray) -> np.ndarray:
        """Target space -> raw space, ``F = g(y_pred)`` (identity for regression)."""
        return y_pred

    def raw_from_prediction(self, prediction: np.ndarray) -> np.ndarray:
        """Raw predictions from per-sample target-space predictions.

        ``prediction`` is ``(n_samples,)`` or ``(n_samples, n_trees)`` (class
        probabilities for multiclass); returns float64 ``(n_samples, n_trees)``.
        """
        pred = np.asarray(prediction, dtype=np.float64)
        return np.asarray(self.link(pred), dtype=np.float64).reshape(pred.shape[0], -1)

    def init_raw(self, constant, n_samples: int) -> np.ndarray:
        """``F_0`` for ``n_samples`` rows from the constant of :meth:`init_prediction`."""
        pred = np.tile(np.asarray(constant, dtype=np.float64).reshape(1, -1), (n_samples, 1))
        if self.n_trees == 1:
            pred = pred[:, 0]
        return self.raw_from_prediction(pred)

    # --- per stage -------------------------------------------------------
    def begin_stage(self, y: np.ndarray, raw: np.ndarray, sample_weight: np.ndarray) -> None:
        """Hook run before each stage's gradient (Huber re-estimates its delta)."""

    def pointwise(self, y: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """``L(y_i, F(x_i))`` per sample, ``(n_samples,)``."""
        raise NotImplementedError

    def gradient(self, y: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """``dL/dF`` per sample, ``(n_samples, n_trees)``."""
        raise NotImplementedError

    def negative_gradient(self, y: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Pseudo-residuals ``r_i = -dL/dF`` (Algorithm 1, line 3), ``(n_samples, n_trees)``."""
        if self.exact:
            return -self.gradient(y, raw)
        out = np.empty(raw.shape, dtype=np.float64)

        def rows(a: int, b: int) -> None:
            np.negative(self.gradient(y[a:b], raw[a:b]), out=out[a:b])

        in_row_blocks(rows, raw.shape[0], True)
        return out

    def __call__(
        self, y: np.ndarray, raw: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> float:
        """Weighted mean loss ``sum_i w_i L(y_i, F_i) / sum_i w_i``."""
        if self.exact:
            return float(np.average(self.pointwise(y, raw), weights=sample_weight))
        losses = np.empty(raw.shape[0], dtype=np.float64)

        def rows(a: int, b: int) -> None:
            losses[a:b] = self.pointwise(y[a:b], raw[a:b])

        in_row_blocks(rows, raw.shape[0], True)
        return float(np.average(losses, weights=sample_weight))

    def score(self, y, raw, sample_weight=None) -> float:
        """The value stored in ``train_score_``/``oob_scores_``: ``score_factor * mean L``."""
        return self.score_factor * self(y, raw, sample_weight)

    def leaf_value(
        self, y: np.ndarray, neg_gradient: np.ndarray, raw: np.ndarray, sample_weight: np.ndarray
    ) -> float:
        """TreeBoost update ``g_j = argmin_g sum_{i in R_j} w_i L(y_i, F_i + g)``.

        Arguments are the leaf's samples only: targets (for multiclass, the
        0/1 indicator of this tree's class), this tree's negative gradient,
        this tree's raw predictions ``F_{m-1}`` and the weights.
        """
        raise NotImplementedError

    def newton_terms(
        self, y: np.ndarray, neg_gradient: np.ndarray, raw: np.ndarray
    ) -> np.ndarray | None:
        """Per-row terms ``(n, c)`` whose weighted means give :meth:`leaf_value` through
        :meth:`newton_step`, for the losses whose leaf is a Newton step (sums over the
        leaf, which a distributed fit adds exactly); None for the others."""
        return None

    def newton_step(self, *means: float) -> float:
        """The leaf value from the weighted means of :meth:`newton_terms`' columns."""
        raise NotImplementedError

    # --- output ------------------------------------------------------------
    def predict_proba(self, raw: np.ndarray) -> np.ndarray:
        raise AttributeError(f"loss={self.name!r} does not support predict_proba")
