"""The two estimators: :class:`BoostingRegressor` and :class:`BoostingClassifier`, scikit-learn's
``GradientBoosting*`` parameters on the shared machinery of :mod:`residuals.boosting._gb`."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from residuals.boosting._gb import _BaseBoosting
from residuals.boosting._losses import (
    CLASSIFICATION_LOSSES,
    REGRESSION_LOSSES,
    make_loss,
)
from residuals.boosting._validation import COMMON_CONSTRAINTS as _COMMON_CONSTRAINTS
from residuals.boosting._validation import (
    NONE,
    HasMethods,
    Interval,
    Options,
)

__all__ = ["BoostingClassifier", "BoostingRegressor"]


class BoostingRegressor(RegressorMixin, _BaseBoosting):
    """Gradient boosting for regression (Friedman 2001), stage by stage.

    Same parameters, defaults and results as scikit-learn's
    ``GradientBoostingRegressor`` with ``tree_method="exact"``; see that class
    for the meaning of each shared parameter.

    Parameters (beyond scikit-learn's)
    ----------------------------------
    tree_method : {"exact", "hist"}, default="exact"
        ``"exact"``: scikit-learn's ``DecisionTreeRegressor`` (bit-for-bit
        parity). ``"hist"``: the project's histogram tree on features binned
        into at most ``max_bins`` quantile bins (allows NaN in ``X``).
    max_bins : int in [2, 255], default=255
        Bins per feature in hist mode (plus one bin for missing values).
    device : {"cpu", "cuda", "auto"}, default="cpu"
        Where the hist trees are built; ``"cuda"`` without a GPU is an error.
    distributed : bool, default=False
        Hist mode only. Fit inside an initialised ``torch.distributed`` process
        group, this process's ``X, y, sample_weight`` being its rank's shard of
        the rows (rank 0's rows first): bin edges come from all ranks, each
        level's histograms are all-reduced, and every rank ends with the same
        model -- bit for bit the model one process fits on all the rows with
        ``distributed=True`` (see ``docs/distributed.md``). Not with early
        stopping or an init estimator.

    Attributes
    ----------
    estimators_ : ndarray of trees, shape (n_estimators_, 1)
    train_score_ : ndarray of shape (n_estimators_,)
        ``2 x`` half squared error, or the mean loss, on the in-bag rows after each stage.
    oob_improvement_, oob_scores_, oob_score_ : only when ``subsample < 1``.
    n_estimators_ : int, stages kept (fewer under early stopping).
    init_prediction_ : float, ``F_0`` in target space when ``init=None``.
    feature_importances_ : ndarray of shape (n_features,)
    """

    _constraints = {
        **_COMMON_CONSTRAINTS,
        "loss": [Options(*REGRESSION_LOSSES)],
        "init": [Options("zero"), NONE, HasMethods(("fit", "predict"))],
        "alpha": [Interval("real", 0.0, 1.0, "neither")],
    }

    def __init__(
        self,
        *,
        loss="squared_error",
        learning_rate=0.1,
        n_estimators=100,
        subsample=1.0,
        criterion="deprecated",
        min_samples_split=2,
        min_samples_leaf=1,
        min_weight_fraction_leaf=0.0,
        max_depth=3,
        min_impurity_decrease=0.0,
        init=None,
        random_state=None,
        max_features=None,
        alpha=0.9,
        verbose=0,
        max_leaf_nodes=None,
        warm_start=False,
        validation_fraction=0.1,
        n_iter_no_change=None,
        tol=1e-4,
        ccp_alpha=0.0,
        tree_method="exact",
        max_bins=255,
        device="cpu",
        distributed=False,
    ):
        super().__init__(
            loss=loss,
            learning_rate=learning_rate,
            n_estimators=n_estimators,
            subsample=subsample,
            criterion=criterion,
            min_samples_split=min_samples_split,
            min_samples_leaf=min_samples_leaf,
            min_weight_fraction_leaf=min_weight_fraction_leaf,
            max_depth=max_depth,
            min_impurity_decrease=min_impurity_decrease,
            init=init,
            random_state=random_state,
            max_features=max_features,
            alpha=alpha,
            verbose=verbose,
            max_leaf_nodes=max_leaf_nodes,
            warm_start=warm_start,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            ccp_alpha=ccp_alpha,
            tree_method=tree_method,
            max_bins=max_bins,
            device=device,
            distributed=distributed,
        )

    def _encode_y(self, y, sample_weight):
        self.n_trees_per_iteration_ = 1
        return y.astype(np.float64, copy=False)

    def _make_loss(self, exact):
        return make_loss(self.loss, alpha=self.alpha, exact=exact)

    def _init_prediction_from_estimator(self, X):
        return self.init_.predict(X).astype(np.float64)

    def predict(self, X) -> np.ndarray:
        """Predicted targets ``F_M(X)``, shape ``(n_samples,)``."""
        return self._raw_predict(X).ravel()

    def staged_predict(self, X) -> Iterator[np.ndarray]:
        """Predictions after each stage, ``(n_samples,)`` each (copies)."""
        for raw in self._staged_raw_predict(X):
            yield raw.ravel()

    def _predict_state(self, state: np.ndarray) -> np.ndarray:
        return state.ravel()

    def apply(self, X) -> np.ndarray:
        """Leaf index of each sample in each tree, ``(n_samples, n_estimators)``."""
        leaves = super().apply(X)
        return leaves.reshape(leaves.shape[0], self.estimators_.shape[0])


class BoostingClassifier(ClassifierMixin, _BaseBoosting):
    """Gradient boosting for classification (Friedman 2001), stage by stage.

    Same parameters, defaults and results as scikit-learn's
    ``GradientBoostingClassifier`` with ``tree_method="exact"``. ``loss``:
    ``"log_loss"`` (binomial, or multinomial with one tree per class and
    stage) or ``"exponential"`` (binary only; AdaBoost's loss).
    ``tree_method``, ``max_bins``, ``device`` and ``distributed`` as in
    :class:`BoostingRegressor`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_classes_ : int
    n_trees_per_iteration_ : int, 1 for binary, ``n_classes_`` otherwise.
    estimators_ : ndarray of trees, shape (n_estimators_, n_trees_per_iteration_)
    train_score_, oob_improvement_, oob_scores_, oob_score_, n_estimators_,
    feature_importances_ : as in :class:`BoostingRegressor`.
    init_prediction_ : class priors ``F_0`` is the link of, when ``init=None``.
    """

    _constraints = {
        **_COMMON_CONSTRAINTS,
        "loss": [Options(*CLASSIFICATION_LOSSES)],
        "init": [Options("zero"), NONE, HasMethods(("fit", "predict_proba"))],
    }

    def __init__(
        self,
        *,
        loss="log_loss",
        learning_rate=0.1,
        n_estimators=100,
        subsample=1.0,
        criterion="deprecated",
        min_samples_split=2,
        min_samples_leaf=1,
        min_weight_fraction_leaf=0.0,
        max_depth=3,
        min_impurity_decrease=0.0,
        init=None,
        random_state=None,
        max_features=None,
        verbose=0,
        max_leaf_nodes=None,
        warm_start=False,
        validation_fraction=0.1,
        n_iter_no_change=None,
        tol=1e-4,
        ccp_alpha=0.0,
        tree_method="exact",
        max_bins=255,
        device="cpu",
        distributed=False,
    ):
        super().__init__(
            loss=loss,
            learning_rate=learning_rate,
            n_estimators=n_estimators,
            subsample=subsample,
            criterion=criterion,
            min_samples_split=min_samples_split,
            min_samples_leaf=min_samples_leaf,
            min_weight_fraction_leaf=min_weight_fraction_leaf,
            max_depth=max_depth,
            min_impurity_decrease=min_impurity_decrease,
            init=init,
            random_state=random_state,
            max_features=max_features,
            verbose=verbose,
            max_leaf_nodes=max_leaf_nodes,
            warm_start=warm_start,
            validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change,
            tol=tol,
            ccp_alpha=ccp_alpha,
            tree_method=tree_method,
            max_bins=max_bins,
            device=device,
            distributed=distributed,
        )

    def _encode_y(self, y, sample_weight):
        self.classes_, encoded = self._rows.encode_labels(y)
        n_classes = self.classes_.shape[0]
        self.n_trees_per_iteration_ = 1 if n_classes <= 2 else n_classes
        self.n_classes_ = n_classes
        kept = (
            np.arange(n_classes)
            if sample_weight is None
            else np.flatnonzero(self._rows.class_weights(encoded, sample_weight, n_classes))
        )
        if len(kept) < 2:
            dropped = np.setdiff1d(np.arange(n_classes), kept)
            zero = (
                f"; {self.classes_[dropped].tolist()} only with zero sample weight"
                if len(dropped)
                else ""
            )
            weighted = "" if sample_weight is None else " with non-zero sample weight"
            raise ValueError(
                f"{type(self).__name__} needs at least 2 classes in y, but y contains "
                f"{len(kept)} class{weighted}: {self.classes_[kept].tolist()}{zero}."
            )
        return encoded.astype(float, copy=False)

    def _make_loss(self, exact):
        return make_loss(self.loss, n_classes=self.n_classes_, exact=exact)

    def _init_prediction_from_estimator(self, X):
        proba = self.init_.predict_proba(X)
        if self.n_trees_per_iteration_ == 1:
            proba = proba[:, 1]
        eps = np.finfo(np.float64).eps
        return np.clip(proba, eps, 1 - eps, dtype=np.float64)

    def decision_function(self, X) -> np.ndarray:
        """Raw predictions ``F_M(X)``: ``(n_samples,)`` for binary, ``(n_samples, K)`` otherwise."""
        raw = self._raw_predict(X)
        return raw.ravel() if raw.shape[1] == 1 else raw

    def staged_decision_function(self, X) -> Iterator[np.ndarray]:
        """Raw predictions after each stage, ``(n_samples, K)`` each (``K = 1`` for binary)."""
        yield from self._staged_raw_predict(X)

    def _decode(self, raw: np.ndarray) -> np.ndarray:
        if raw.shape[1] == 1:
            return self.classes_.take((raw[:, 0] >= 0).astype(int), axis=0)
        return self.classes_.take(np.argmax(raw, axis=1), axis=0)

    def _predict_state(self, state: np.ndarray) -> np.ndarray:
        return self._decode(state)

    def predict(self, X) -> np.ndarray:
        """Predicted class labels: ``F >= 0`` (binary) or ``argmax_k F_k``, ``(n_samples,)``."""
        return self._decode(self._raw_predict(X))

    def staged_predict(self, X) -> Iterator[np.ndarray]:
        """Predicted labels after each stage, ``(n_samples,)`` each."""
        for raw in self._staged_raw_predict(X):
            yield self._decode(raw)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, ``(n_samples, n_classes)``, columns in ``classes_`` order."""
        check_is_fitted(self)
        return self._loss.predict_proba(self._raw_predict(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """``log(predict_proba(X))``, ``(n_samples, n_classes)``."""
        return np.log(self.predict_proba(X))

    def staged_predict_proba(self, X) -> Iterator[np.ndarray]:
        """Class probabilities after each stage, ``(n_samples, n_classes)`` each (copies)."""
        check_is_fitted(self)
        for raw in self._staged_raw_predict(X):
            yield self._loss.predict_proba(raw)
