"""A fitted booster as a :class:`residuals.core.Stagewise` model: the ``X`` its trees take,
prediction, its staged states and stage steps (the lesions of any set of trees), and the inspection of its trees.

:class:`_StagewiseView` is a mixin of :class:`residuals.boosting._gb._BaseBoosting`, which
fits what it reads: ``estimators_`` (the trees, ``(n_stages, K)``), ``_learner`` (how a
tree of the chosen ``tree_method`` is applied), ``_loss``, ``init_`` and ``learning_rate``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted, validate_data

from residuals.core import StageStep, Stagewise

__all__ = ["_Prepared", "_StagewiseView"]


class _Prepared:
    """``X`` validated once and converted for the trees (float32 or bins)."""

    __slots__ = ("X", "Xt", "n_samples")

    def __init__(self, X: np.ndarray, Xt: Any):
        self.X, self.Xt, self.n_samples = X, Xt, X.shape[0]


class _StagewiseView(Stagewise):
    """Prediction and the Stagewise view of the fitted trees (a mixin; see the module)."""

    estimators_: np.ndarray
    init_: Any
    learning_rate: float
    n_trees_per_iteration_: int
    n_features_in_: int
    init_prediction_: Any
    _learner: Any
    _loss: Any
    _init_prediction_from_estimator: Callable[[np.ndarray], np.ndarray]
    tree_method: str

    # ------------------------------------------------- the X the trees take
    def _validate_X_predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(
            self,
            X,
            dtype=self._X_dtype(),
            reset=False,
            order="C" if self.tree_method == "exact" else None,
            accept_sparse=self._sparse_formats("csr"),
            ensure_all_finite=self._finite_X(),
        )

    def _X_dtype(self):
        """float32, as scikit-learn's trees. Hist mode keeps a float64 ``X`` as it
        is (no copy; its bins are those of the float32 values, see
        ``BinMapper(round_to_float32=True)``) and converts anything else."""
        return np.float32 if self.tree_method == "exact" else [np.float32, np.float64]

    def _finite_X(self):
        return "allow-nan" if self.tree_method == "hist" else True

    def _sparse_formats(self, formats):
        """Sparse ``X`` is accepted by the exact trees only."""
        return formats if self.tree_method == "exact" else False

    def _prepare(self, X) -> _Prepared:
        if isinstance(X, _Prepared):
            return X
        Xv = self._validate_X_predict(X)
        return _Prepared(Xv, self._learner.prepare(Xv))

    # ---------------------------------------------------------------- predict
    def _raw_predict_init(self, P: _Prepared) -> np.ndarray:
        n, K = P.n_samples, self.n_trees_per_iteration_
        if isinstance(self.init_, str) and self.init_ == "zero":
            return np.zeros((n, K), dtype=np.float64)
        if self.init_ is None:
            return self._loss.init_raw(self.init_prediction_, n)
        X = P.X.astype(np.float32, copy=False)  # as in _fit_init
        return self._loss.raw_from_prediction(self._init_prediction_from_estimator(X))

    def _add_stage(self, m: int, P: _Prepared, raw: np.ndarray) -> None:
        for k in range(self.estimators_.shape[1]):
            tree = self.estimators_[m, k]
            values = self._learner.leaf_values(tree)
            raw[:, k] += self.learning_rate * values.take(
                self._learner.leaf_ids(tree, P.Xt), axis=0
            )

    def _raw_predict(self, X) -> np.ndarray:
        """``F_M(X)``, shape ``(n_samples, K)``: the Stagewise model's final state."""
        return self.final_state(X)

    def _staged_raw_predict(self, X) -> Iterator[np.ndarray]:
        """``F_1(X), F_2(X), ...`` (copies): its staged states."""
        return self.staged_states(X)

    # ------------------------------------------------------- Stagewise (core)
    stages_read_state = False  # h_m reads only X: a lesion is F_M minus the deleted corrections

    @property
    def n_stages_(self) -> int:
        check_is_fitted(self)
        return int(self.estimators_.shape[0])

    def _initial_state(self, P: _Prepared) -> np.ndarray:
        """``F_0(X)``, the init raw prediction, ``(n_samples, K)``."""
        return self._raw_predict_init(P)

    def _stage_step(
        self, m: int, state: np.ndarray, P: _Prepared, *, drop: bool = False
    ) -> StageStep:
        """Stage ``m``: base ``F_{m}``, correction ``lr * h_m(X)``, state ``F_{m+1}``.

        ``state + correction`` equals scikit-learn's in-place ``raw += lr * h`` bit for bit:
        the correction is ``0 + lr * h``, exactly ``lr * h``.
        """
        correction = np.zeros((P.n_samples, self.estimators_.shape[1]), dtype=np.float64)
        self._add_stage(m, P, correction)
        new = state.copy() if drop else state + correction
        return StageStep(base=state, correction=correction, state=new)

    # ------------------------------------------------------------- inspection
    @property
    def feature_importances_(self) -> np.ndarray:
        """Impurity-based importances: mean over non-trivial trees, normalised to sum 1.

        Each tree contributes its unnormalised total weighted impurity decrease
        per feature; all-zero when every tree is a single leaf.
        """
        check_is_fitted(self)
        learner = self._learner
        relevant = [t for stage in self.estimators_ for t in stage if not learner.is_trivial(t)]
        if not relevant:
            return np.zeros(self.n_features_in_, dtype=np.float64)
        per_tree = [learner.importances(t, self.n_features_in_) for t in relevant]
        avg = np.mean(per_tree, axis=0, dtype=np.float64)
        return avg / np.sum(avg)

    def apply(self, X) -> np.ndarray:
        """Leaf index of each sample in each tree, ``(n_samples, n_estimators, K)``."""
        P = self._prepare(X)
        n_est, K = self.estimators_.shape
        leaves = np.zeros((P.n_samples, n_est, K))
        for i in range(n_est):
            for k in range(K):
                leaves[:, i, k] = self._learner.leaf_ids(self.estimators_[i, k], P.Xt)
        return leaves
