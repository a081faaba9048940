"""The classification losses of gradient boosting: binomial and multinomial log loss and the
exponential (AdaBoost) loss, with their TreeBoost leaf updates (see
:mod:`residuals.boosting._losses` for the formulas' origin)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special, stats

from residuals.boosting._loss_base import BoostingLoss, _libm, _libm_exp, _safe_divide, _softmax

__all__ = ["BinomialLogLoss", "ExponentialLoss", "MultinomialLogLoss"]


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
