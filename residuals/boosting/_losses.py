"""Loss functions for gradient boosting, as small objects.

Friedman (2001), "Greedy Function Approximation: A Gradient Boosting Machine",
Ann. Statist. 29(5), Algorithm 1::

    F_0(x) = argmin_c  sum_i L(y_i, c)                         # init_raw
    for m = 1..M:
        r_im   = -[dL(y_i, F(x_i)) / dF(x_i)]_{F = F_{m-1}}    # negative_gradient
        {R_jm} = terminal regions of a least-squares tree fitted to r_im
        g_jm   = argmin_g sum_{x_i in R_jm} L(y_i, F_{m-1}(x_i) + g)   # leaf_value
        F_m(x) = F_{m-1}(x) + lr * sum_j g_jm 1(x in R_jm)

Each loss below writes those pieces as code: the constant that starts the model
(``init_raw``), the negative gradient, the TreeBoost terminal-region update
(``leaf_value``, Friedman 2001 Algorithms 2-6; Friedman, Hastie & Tibshirani
2000 for the Newton step of the logistic losses), the loss value, and the link
between raw predictions ``F`` and predictions in target space.

The float formulas follow scikit-learn 1.9 operation by operation (its compiled
pointwise losses call the C library's ``exp``/``log``/``log1p``, so do we, via
:mod:`math`; NumPy's vectorised ``exp`` differs from the C library in the last
bit for about 5% of inputs on AVX-512 machines). That is what makes
``tree_method="exact"`` agree with ``GradientBoosting*`` bit for bit.

Shapes: ``y`` is ``(n_samples,)`` float64 (class losses: encoded labels
``0..K-1``); ``raw`` is ``(n_samples, n_trees)`` float64 with ``n_trees = 1``
for regression and binary classification and ``K`` for multiclass.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from scipy import special, stats

__all__ = [
    "LOSSES",
    "AbsoluteError",
    "BinomialLogLoss",
    "BoostingLoss",
    "ExponentialLoss",
    "HuberLoss",
    "MultinomialLogLoss",
    "QuantileLoss",
    "SquaredError",
    "weighted_lower_percentile",
]


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
        return -self.gradient(y, raw)

    def __call__(self, y: np.ndarray, raw: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
        """Weighted mean loss ``sum_i w_i L(y_i, F_i) / sum_i w_i``."""
        return float(np.average(self.pointwise(y, raw), weights=sample_weight))

    def score(self, y, raw, sample_weight=None) -> float:
        """The value stored in ``train_score_``/``oob_scores_``: ``score_factor * mean L``."""
        return self.score_factor * self(y, raw, sample_weight)

    def leaf_value(self, y: np.ndarray, neg_gradient: np.ndarray, raw: np.ndarray,
                   sample_weight: np.ndarray) -> float:
        """TreeBoost update ``g_j = argmin_g sum_{i in R_j} w_i L(y_i, F_i + g)``.

        Arguments are the leaf's samples only: targets (for multiclass, the
        0/1 indicator of this tree's class), this tree's negative gradient,
        this tree's raw predictions ``F_{m-1}`` and the weights.
        """
        raise NotImplementedError

    def newton_terms(self, y: np.ndarray, neg_gradient: np.ndarray,
                     raw: np.ndarray) -> np.ndarray | None:
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


# --------------------------------------------------------------- regression
class SquaredError(BoostingLoss):
    """Half squared error ``L = (y - F)^2 / 2``; ``F_0`` = weighted mean.

    Negative gradient ``y - F``: the tree fits the plain residuals, and its
    least-squares leaves are already the line-search solution (Friedman 2001,
    Algorithm 2, "LS_Boost"), so no leaf update is needed.
    """

    name = "squared_error"
    score_factor = 2.0
    line_search = False

    def init_prediction(self, y, sample_weight):
        return np.average(y, axis=0, weights=sample_weight)

    def pointwise(self, y, raw):
        d = raw[:, 0] - y
        return 0.5 * d * d

    def gradient(self, y, raw):
        return (raw[:, 0] - y).reshape(-1, 1)


class AbsoluteError(BoostingLoss):
    """Absolute error ``L = |y - F|``; ``F_0`` = weighted median.

    Negative gradient ``sign(y - F)``; leaf value = weighted (lower) median of
    the leaf's residuals ``y - F`` (Friedman 2001, Algorithm 3, "LAD_TreeBoost").
    """

    name = "absolute_error"

    def init_prediction(self, y, sample_weight):
        return _init_percentile(y, sample_weight, 0.5)

    def pointwise(self, y, raw):
        return np.abs(raw[:, 0] - y)

    def gradient(self, y, raw):
        return np.where(raw[:, 0] > y, 1.0, -1.0).reshape(-1, 1)

    def leaf_value(self, y, neg_gradient, raw, sample_weight):
        return weighted_lower_percentile(y - raw, sample_weight, 50)


class QuantileLoss(BoostingLoss):
    """Pinball loss ``L = alpha (y - F)`` if ``y >= F`` else ``(1 - alpha)(F - y)``.

    ``F_0`` and each leaf are the weighted ``alpha``-quantile of the residuals
    (Friedman 2001, Section 4.3 with the quantile in place of the median).
    """

    name = "quantile"

    def __init__(self, alpha: float = 0.9, *, exact: bool = True):
        super().__init__(exact=exact)
        self.alpha = float(alpha)

    def init_prediction(self, y, sample_weight):
        return _init_percentile(y, sample_weight, self.alpha)

    def pointwise(self, y, raw):
        f = raw[:, 0]
        return np.where(y >= f, self.alpha * (y - f), (1.0 - self.alpha) * (f - y))

    def gradient(self, y, raw):
        return np.where(y >= raw[:, 0], -self.alpha, 1.0 - self.alpha).reshape(-1, 1)

    def leaf_value(self, y, neg_gradient, raw, sample_weight):
        return weighted_lower_percentile(y - raw, sample_weight, 100 * self.alpha)


class HuberLoss(BoostingLoss):
    """Huber loss with a data-driven transition point (Friedman 2001, Algorithm 4).

    ``L = (y - F)^2 / 2`` if ``|y - F| <= delta`` else ``delta (|y - F| - delta / 2)``,
    where ``delta`` is re-estimated at every stage as the ``alpha``-quantile of
    ``|y - F_{m-1}|``. ``F_0`` = weighted median; leaf value = median of the
    residuals ``r`` plus the mean of ``sign(r - median) * min(delta, |r - median|)``.
    """

    name = "huber"

    def __init__(self, alpha: float = 0.9, *, exact: bool = True):
        super().__init__(exact=exact)
        self.alpha = float(alpha)
        self.delta = 0.5

    def init_prediction(self, y, sample_weight):
        return _init_percentile(y, sample_weight, 0.5)

    def begin_stage(self, y, raw, sample_weight):
        abserr = np.abs(y - raw.squeeze())
        self.delta = float(weighted_lower_percentile(abserr, sample_weight, 100 * self.alpha))

    def pointwise(self, y, raw):
        abserr = np.abs(y - raw[:, 0])
        return np.where(abserr <= self.delta, 0.5 * abserr**2,
                        self.delta * (abserr - 0.5 * self.delta))

    def gradient(self, y, raw):
        res = raw[:, 0] - y
        clipped = np.where(res >= 0, self.delta, -self.delta)
        return np.where(np.abs(res) <= self.delta, res, clipped).reshape(-1, 1)

    def leaf_value(self, y, neg_gradient, raw, sample_weight):
        r = y - raw
        median = weighted_lower_percentile(r, sample_weight, 50)
        diff = r - median
        term = np.sign(diff) * np.minimum(self.delta, np.abs(diff))
        return float(median + np.average(term, weights=sample_weight))


def _init_percentile(y, sample_weight, quantile: float):
    """``F_0`` of the percentile losses: linear-interpolated unweighted, lower weighted."""
    if sample_weight is None:
        return np.percentile(y, axis=0, q=quantile * 100.0)
    return weighted_lower_percentile(y, sample_weight, quantile * 100.0)


# ----------------------------------------------------------- classification
class _ClassLoss(BoostingLoss):
    is_classification = True

    def __init__(self, n_classes: int = 2, *, exact: bool = True):
        super().__init__(exact=exact)
        self.n_classes = int(n_classes)

    # C-library functions in exact mode (bit-for-bit), NumPy's SIMD ones otherwise
    def _exp(self, x):
        return _libm_exp(x) if self.exact else np.exp(x)

    def _log(self, x):
        return _libm(math.log, x) if self.exact else np.log(x)

    def _log1p(self, x):
        return _libm(math.log1p, x) if self.exact else np.log1p(x)

    def init_prediction(self, y, sample_weight):
        """Class priors ``p_k = sum_{y_i = k} w_i / sum_i w_i``, clipped to ``[eps, 1 - eps]``."""
        counts = np.bincount(y.astype(np.intp), weights=sample_weight, minlength=self.n_classes)
        prior = counts / counts.sum()
        if self.n_trees == 1:
            prior = prior[1]
        eps = np.finfo(np.float64).eps
        return np.clip(prior, eps, 1 - eps, dtype=np.float64)

    def newton_terms(self, y, neg_gradient, raw):
        """The log losses' ``r`` and ``p (1 - p)``, with ``p = y - r`` (see leaf_value)."""
        prob = y - neg_gradient
        return np.column_stack((neg_gradient, prob * (1 - prob)))

    def newton_step(self, numerator, denominator):
        return _safe_divide(numerator, denominator)

    def _binary_proba(self, p1: np.ndarray) -> np.ndarray:
        proba = np.empty((p1.shape[0], 2), dtype=np.float64)
        proba[:, 1] = p1
        proba[:, 0] = 1 - proba[:, 1]
        return proba


class BinomialLogLoss(_ClassLoss):
    """Half binomial deviance ``L = log(1 + e^F) - y F``, ``p = expit(F)``.

    ``F_0 = logit(prior)``; negative gradient ``y - p``; leaf value is one
    Newton step ``sum w (y - p) / sum w p (1 - p)`` (Friedman 2001, Algorithm 5,
    with Friedman, Hastie & Tibshirani 2000's parametrisation ``p = expit(F)``).
    """

    name = "log_loss"
    score_factor = 2.0

    def link(self, y_pred):
        return special.logit(y_pred)

    def pointwise(self, y, raw):
        x = raw[:, 0]
        ex = np.zeros_like(x)
        low = x <= 18
        ex[low] = self._exp(x[low])
        # log(1 + e^x), stable piecewise as in Maechler (2012), eq. (10)
        log1pexp = np.where(x <= -37, ex, 0.0)
        mid = (x > -37) & (x <= -2)
        log1pexp[mid] = self._log1p(ex[mid])
        mid = (x > -2) & (x <= 18)
        log1pexp[mid] = self._log(1.0 + ex[mid])
        hi = (x > 18) & (x <= 33.3)
        log1pexp[hi] = x[hi] + self._exp(-x[hi])
        top = x > 33.3
        log1pexp[top] = x[top]
        return log1pexp - y * x

    def gradient(self, y, raw):
        x = raw[:, 0]
        g = np.empty_like(x)
        big = x > -37
        e = self._exp(-x[big])
        g[big] = ((1 - y[big]) - y[big] * e) / (1 + e)
        g[~big] = self._exp(x[~big]) - y[~big]
        return g.reshape(-1, 1)

    def leaf_value(self, y, neg_gradient, raw, sample_weight):
        prob = y - neg_gradient
        numerator = np.average(neg_gradient, weights=sample_weight)
        denominator = np.average(prob * (1 - prob), weights=sample_weight)
        return _safe_divide(numerator, denominator)

    def predict_proba(self, raw):
        return self._binary_proba(special.expit(raw.reshape(raw.shape[0], -1)[:, 0]))


class MultinomialLogLoss(_ClassLoss):
    """Half multinomial deviance ``L = log sum_k e^{F_k} - F_y``, ``p = softmax(F)``.

    One tree per class and stage. ``F_0 = log(prior_k / geometric_mean(prior))``
    (symmetric logit); negative gradient ``1(y = k) - p_k``; leaf value is the
    Newton step ``(K - 1)/K * sum w r / sum w p (1 - p)`` (Friedman 2001,
    Algorithm 6; the factor ``(K - 1)/K`` is kept for compatibility).
    """

    name = "log_loss"

    def __init__(self, n_classes: int = 3, *, exact: bool = True):
        super().__init__(n_classes, exact=exact)
        self.n_trees = self.n_classes

    def link(self, y_pred):
        gm = stats.gmean(y_pred, axis=1)
        return np.log(y_pred / gm[:, None])

    def _max_and_exps(self, raw):
        """Per-row max and ``exp(F_k - max)``, summed in class order."""
        mx = raw.max(axis=1)
        p = self._exp(raw - mx[:, None])
        total = p[:, 0].copy()
        for k in range(1, raw.shape[1]):
            total += p[:, k]
        return mx, p, total

    def pointwise(self, y, raw):
        mx, _, total = self._max_and_exps(raw)
        return (self._log(total) + mx) - raw[np.arange(raw.shape[0]), y.astype(np.intp)]

    def gradient(self, y, raw):
        _, p, total = self._max_and_exps(raw)
        p /= total[:, None]
        return p - (y[:, None] == np.arange(raw.shape[1])[None, :])

    def leaf_value(self, y, neg_gradient, raw, sample_weight):
        prob = y - neg_gradient
        numerator = np.average(neg_gradient, weights=sample_weight)
        numerator *= (self.n_classes - 1) / self.n_classes
        denominator = np.average(prob * (1 - prob), weights=sample_weight)
        return _safe_divide(numerator, denominator)

    def newton_step(self, numerator, denominator):
        return _safe_divide(numerator * ((self.n_classes - 1) / self.n_classes), denominator)

    def predict_proba(self, raw):
        return _softmax(raw)


class ExponentialLoss(_ClassLoss):
    """Exponential loss ``L = y e^{-F} + (1 - y) e^{F}`` (AdaBoost), ``p = expit(2F)``.

    ``F_0 = logit(prior) / 2``; leaf value is the Newton step
    ``sum w r / sum w |r|`` with ``r = y e^{-F} - (1 - y) e^{F}``.
    """

    name = "exponential"

    def link(self, y_pred):
        return 0.5 * special.logit(y_pred)

    def pointwise(self, y, raw):
        t = self._exp(raw[:, 0])
        return y / t + (1 - y) * t

    def gradient(self, y, raw):
        t = self._exp(raw[:, 0])
        return (-y / t + (1 - y) * t).reshape(-1, 1)

    def leaf_value(self, y, neg_gradient, raw, sample_weight):
        numerator = np.average(neg_gradient, weights=sample_weight)
        hessian = neg_gradient.copy()
        hessian[y == 0] *= -1
        denominator = np.average(hessian, weights=sample_weight)
        return _safe_divide(numerator, denominator)

    def newton_terms(self, y, neg_gradient, raw):
        hessian = np.where(y == 0, -neg_gradient, neg_gradient)
        return np.column_stack((neg_gradient, hessian))

    def predict_proba(self, raw):
        return self._binary_proba(special.expit(2 * raw.reshape(raw.shape[0], -1)[:, 0]))


#: Regression losses by their ``loss`` parameter value.
REGRESSION_LOSSES = {
    "squared_error": SquaredError,
    "absolute_error": AbsoluteError,
    "huber": HuberLoss,
    "quantile": QuantileLoss,
}
#: Classification losses by their ``loss`` parameter value.
CLASSIFICATION_LOSSES = ("log_loss", "exponential")
LOSSES = {**REGRESSION_LOSSES, "log_loss": BinomialLogLoss, "exponential": ExponentialLoss}


def make_loss(name: str, *, n_classes: int | None = None, alpha: float = 0.9,
              exact: bool = True) -> BoostingLoss:
    """Build the loss object for an estimator's ``loss`` parameter."""
    if name in ("huber", "quantile"):
        return REGRESSION_LOSSES[name](alpha, exact=exact)
    if name in REGRESSION_LOSSES:
        return REGRESSION_LOSSES[name](exact=exact)
    if name == "log_loss":
        if n_classes == 2:
            return BinomialLogLoss(2, exact=exact)
        return MultinomialLogLoss(n_classes, exact=exact)
    if name == "exponential":
        if n_classes != 2:
            raise ValueError(
                f"loss='exponential' is only suitable for a binary classification "
                f"problem, you have n_classes={n_classes}. Please use loss='log_loss' instead.")
        return ExponentialLoss(2, exact=exact)
    raise ValueError(f"Unknown loss {name!r}; valid: {sorted(LOSSES)}")


def update_terminal_regions(loss: BoostingLoss, leaf_ids: np.ndarray, leaves: np.ndarray,
                            leaf_values: np.ndarray, y: np.ndarray, neg_gradient: np.ndarray,
                            raw: np.ndarray, sample_weight: np.ndarray,
                            sample_mask: np.ndarray | None) -> None:
    """TreeBoost line search (Algorithm 1, line 5), from leaf ids, in place.

    Parameters
    ----------
    leaf_ids : ndarray of shape (n_samples,)
        ``tree.apply(X)``: the leaf each training sample falls in.
    leaves : ndarray of int
        Indices into ``leaf_values`` that are leaves.
    leaf_values : ndarray of shape (n_nodes,), float64, written in place
        Overwritten with ``loss.leaf_value`` for each leaf that holds in-bag
        samples; leaves with none keep the tree's value.
    y, neg_gradient, raw : ndarray of shape (n_samples,)
        This tree's target (class indicator for multiclass), negative gradient
        and raw prediction ``F_{m-1}``.
    sample_mask : ndarray of bool, or None
        In-bag samples (``None``: all).
    """
    if not loss.line_search:
        return
    ids = leaf_ids if sample_mask is None else np.where(sample_mask, leaf_ids, -1)
    # samples grouped by leaf, in index order; on 16-bit keys numpy's stable sort is
    # a radix sort, 10x faster than on int64 keys (measured, 12k rows) and the same order
    key = ids.astype(np.int16) if ids.size and ids.min() >= -1 and ids.max() < 2**15 else ids
    order = np.argsort(key, kind="stable")
    sorted_ids = ids[order]
    starts = np.searchsorted(sorted_ids, leaves, side="left")
    ends = np.searchsorted(sorted_ids, leaves, side="right")
    for leaf, a, b in zip(leaves.tolist(), starts.tolist(), ends.tolist()):
        if a == b:
            continue
        idx = order[a:b]
        leaf_values[leaf] = loss.leaf_value(y.take(idx), neg_gradient.take(idx),
                                            raw.take(idx), sample_weight[idx])
