"""Stagewise gradient boosting of regression trees (Friedman 2001).

J. H. Friedman, "Greedy Function Approximation: A Gradient Boosting Machine",
Annals of Statistics 29(5), 2001, Algorithm 1 (with the TreeBoost leaf updates
of Algorithms 2-6) and "Stochastic Gradient Boosting", CSDA 38(4), 2002 (row
subsampling). The loop, written out (``_fit_stages``)::

    F = F_0(X)                                   # loss.init_raw
    for m in range(M):
        mask = rows drawn without replacement    # subsample < 1
        r = -dL/dF (y, F)                        # loss.negative_gradient, (n, K)
        for k in range(K):                       # K = n_classes for multiclass, else 1
            h = tree fitted to r[:, k] on the in-bag rows
            leaf values of h <- argmin_g sum L(y, F + g)   # TreeBoost, per leaf
            F[:, k] += learning_rate * h(X)

The state ``F`` is the raw prediction, shape ``(n_samples, K)``; the boosters
are :class:`residuals.core.Stagewise` models whose stage ``m`` adds
``learning_rate * h_m(X)`` to it.

With ``tree_method="exact"`` (the default) the base learner is scikit-learn's
public ``DecisionTreeRegressor`` and every random draw, float formula and
percentile definition follows scikit-learn 1.9's ``GradientBoosting*``, so
predictions, staged outputs, ``train_score_``, ``n_estimators_`` under early
stopping and ``feature_importances_`` are equal to scikit-learn's bit for bit.
No scikit-learn gradient-boosting class or private module is used.

This module holds the shared machinery (:class:`_BaseBoosting`: validation, state and the
fit loop, kept together so the algorithm reads top to bottom); the estimators are in
:mod:`residuals.boosting._estimators`, the fitted model's prediction and Stagewise view in
:mod:`residuals.boosting._gb_view`, the parameters' constraints in
:mod:`residuals.boosting._validation`, the fit loop's small pieces in
:mod:`residuals.boosting._fit_support`.
"""

from __future__ import annotations

import warnings
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils.validation import check_array, validate_data

from residuals.boosting._fit_support import (
    _add_step,
    _check_sample_weight,
    _rows_of,
    _VerboseReporter,
)
from residuals.boosting._gb_view import _Prepared, _StagewiseView
from residuals.boosting._learners import TreeParams, make_learner
from residuals.boosting._losses import (
    BoostingLoss,
)
from residuals.boosting._validation import COMMON_CONSTRAINTS, validate_params

__all__ = ["_BaseBoosting"]


class _BaseBoosting(_StagewiseView, BaseEstimator):
    """Shared fit/predict machinery; subclasses set the loss family and the output."""

    init_: Any  # "zero", None (the loss's own init) or a fitted estimator

    _constraints: dict = COMMON_CONSTRAINTS

    def __init__(
        self,
        *,
        loss,
        learning_rate,
        n_estimators,
        subsample,
        criterion,
        min_samples_split,
        min_samples_leaf,
        min_weight_fraction_leaf,
        max_depth,
        min_impurity_decrease,
        init,
        random_state,
        max_features,
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
        self.loss = loss
        self.learning_rate = learning_rate
        self.n_estimators = n_estimators
        self.subsample = subsample
        self.criterion = criterion
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.min_weight_fraction_leaf = min_weight_fraction_leaf
        self.max_depth = max_depth
        self.min_impurity_decrease = min_impurity_decrease
        self.init = init
        self.random_state = random_state
        self.max_features = max_features
        self.alpha = alpha
        self.verbose = verbose
        self.max_leaf_nodes = max_leaf_nodes
        self.warm_start = warm_start
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.ccp_alpha = ccp_alpha
        self.tree_method = tree_method
        self.max_bins = max_bins
        self.device = device
        self.distributed = distributed

    # ----------------------------------------------------------- subclass API
    def _encode_y(self, y: np.ndarray, sample_weight: np.ndarray | None) -> np.ndarray:
        raise NotImplementedError

    def _make_loss(self, exact: bool) -> BoostingLoss:
        raise NotImplementedError

    def _init_prediction_from_estimator(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ------------------------------------------------------------- validation
    def _validate_params(self) -> None:
        validate_params(self, self._constraints)
        if self.tree_method == "exact" and self.device != "cpu":
            raise ValueError(
                f"device={self.device!r} only applies to tree_method='hist'; the exact "
                "trees run on the CPU. Use tree_method='hist' to train on a GPU."
            )
        if self.tree_method == "hist":
            if self.ccp_alpha != 0.0:
                raise ValueError(
                    "ccp_alpha > 0 (cost-complexity pruning) is only supported "
                    "with tree_method='exact'."
                )
            if self.min_samples_split != 2:
                raise ValueError(
                    "min_samples_split is only supported with tree_method='exact'; "
                    "use min_samples_leaf with tree_method='hist'."
                )
        if self.distributed:
            if self.tree_method != "hist":
                raise ValueError(
                    "distributed=True needs tree_method='hist': the exact trees "
                    "sort every feature's values, which no rank holds all of."
                )
            if self.n_iter_no_change is not None:
                raise ValueError(
                    "distributed=True does not support early stopping "
                    "(n_iter_no_change): hold out a validation set yourself."
                )
            if not (self.init is None or isinstance(self.init, str)):
                raise ValueError(
                    "distributed=True supports init=None or 'zero' only: an init "
                    "estimator would be fitted on one shard."
                )

    # -------------------------------------------------------------- the state
    def _is_fitted(self) -> bool:
        return len(getattr(self, "estimators_", [])) > 0

    def _clear_state(self) -> None:
        for attr in (
            "estimators_",
            "train_score_",
            "oob_improvement_",
            "oob_scores_",
            "oob_score_",
            "init_",
            "_rng",
            "n_estimators_",
            "_learner",
        ):
            if hasattr(self, attr):
                delattr(self, attr)

    def _init_state(self) -> None:
        self.estimators_ = np.empty((self.n_estimators, self.n_trees_per_iteration_), dtype=object)
        self.train_score_ = np.zeros(self.n_estimators, dtype=np.float64)
        if self.subsample < 1.0:
            self.oob_improvement_ = np.zeros(self.n_estimators, dtype=np.float64)
            self.oob_scores_ = np.zeros(self.n_estimators, dtype=np.float64)
            self.oob_score_ = np.nan

    def _resize_state(self) -> None:
        total = self.n_estimators
        self.estimators_ = np.resize(self.estimators_, (total, self.n_trees_per_iteration_))
        self.train_score_ = np.resize(self.train_score_, total)
        if self.subsample < 1 or hasattr(self, "oob_improvement_"):
            if hasattr(self, "oob_improvement_"):
                self.oob_improvement_ = np.resize(self.oob_improvement_, total)
                self.oob_scores_ = np.resize(self.oob_scores_, total)
            else:
                self.oob_improvement_ = np.zeros(total, dtype=np.float64)
                self.oob_scores_ = np.zeros(total, dtype=np.float64)
            self.oob_score_ = np.nan

    def _set_max_features(self) -> None:
        n, mf = self.n_features_in_, self.max_features
        if mf is None:
            self.max_features_ = n
        elif mf == "sqrt":
            self.max_features_ = max(1, int(np.sqrt(n)))
        elif mf == "log2":
            self.max_features_ = max(1, int(np.log2(n)))
        elif isinstance(mf, Integral):
            self.max_features_ = int(mf)
        else:
            self.max_features_ = max(1, int(mf * n))

    def _tree_params(self) -> TreeParams:
        return TreeParams(
            self.max_depth,
            self.min_samples_split,
            self.min_samples_leaf,
            self.min_weight_fraction_leaf,
            self.min_impurity_decrease,
            self.max_features,
            self.max_leaf_nodes,
            self.ccp_alpha,
        )

    # -------------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None, monitor=None):
        """Fit the boosted ensemble.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs; converted to float32 (as scikit-learn's trees do;
            hist mode bins the float32 values of a float64 ``X`` without a copy).
            Must be finite with ``tree_method="exact"``; NaN is allowed (own
            bin) with ``tree_method="hist"``.
        y : array-like of shape (n_samples,)
            Targets: real numbers (regression) or class labels (classification).
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; ``None`` means unit weights.
        monitor : callable, default=None
            ``monitor(i, self, locals())`` after each stage; returning True stops.

        Returns
        -------
        self
        """
        self._rows = _rows_of(self)
        try:
            return self._fit(X, y, sample_weight, monitor)
        finally:
            del self._rows  # may hold a process group: never pickled with the model

    def _validated(self, X, y, sample_weight) -> tuple:
        """Validate the parameters and this process's data (all of it, or one shard)."""
        self._validate_params()
        if not self.warm_start:
            self._clear_state()
        if self.criterion != "deprecated":
            warnings.warn(
                "The parameter `criterion` is deprecated (as in scikit-learn 1.9) "
                "and has no effect. Leave it to its default value to avoid this "
                "warning.",
                FutureWarning,
                stacklevel=2,
            )
        if self.tree_method == "hist":
            from residuals.device import resolve_device  # imports torch: hist mode only

            device = resolve_device(self.device)
        else:
            device = "cpu"
        X, y = validate_data(
            self,
            X,
            y,
            dtype=self._X_dtype(),
            multi_output=True,
            accept_sparse=self._sparse_formats(["csr", "csc", "coo"]),
            ensure_all_finite=self._finite_X(),
        )
        sample_weight_is_none = sample_weight is None
        # a shard's weights may all be zero: the ranks check the sum together
        sample_weight = _check_sample_weight(
            sample_weight, X.shape[0], one_positive=not self.distributed
        )
        return X, y, sample_weight, sample_weight_is_none, device

    def _fit(self, X, y, sample_weight, monitor):
        X, y, sample_weight, sample_weight_is_none, device = self._rows.validated(
            self, lambda: self._validated(X, y, sample_weight)
        )
        y = self._encode_y(y, None if sample_weight_is_none else sample_weight)
        y = column_or_1d(y, warn=True)
        self._set_max_features()
        exact = self.tree_method == "exact"
        self._loss = self._make_loss(exact)

        if self.n_iter_no_change is not None:
            stratify = y if self._is_classifier() else None
            try:
                X_train, X_val, y_train, y_val, sw_train, sw_val = train_test_split(
                    X,
                    y,
                    sample_weight,
                    random_state=self.random_state,
                    test_size=self.validation_fraction,
                    stratify=stratify,
                )
            except ValueError as e:
                how = ", stratified by class" if stratify is not None else ""
                raise ValueError(
                    f"Early stopping (n_iter_no_change={self.n_iter_no_change}) could not hold "
                    f"out validation_fraction={self.validation_fraction} of the "
                    f"{X.shape[0]} rows{how}: {e}"
                ) from e
            if self._is_classifier() and self.n_classes_ != np.unique(y_train).shape[0]:
                raise ValueError(
                    "The training data after the early stopping split is missing "
                    "some classes. Try using another random seed."
                )
        else:
            X_train, y_train, sw_train = X, y, sample_weight
            X_val = y_val = sw_val = None

        if not self._is_fitted():
            self._init_state()
            raw = self._fit_init(X_train, y_train, sw_train, sample_weight_is_none)
            begin_at_stage = 0
            self._rng = check_random_state(self.random_state)
            self._learner = make_learner(
                self.tree_method,
                self._tree_params(),
                self.n_features_in_,
                max_bins=self.max_bins,
                device=device,
            )
            if not exact:
                self._learner.collective = self._rows.collective
                self._learner.fit_binning(X_train, self._rng)
        else:
            if self.n_estimators < self.estimators_.shape[0]:
                raise ValueError(
                    f"n_estimators={self.n_estimators} must be larger or equal to "
                    f"estimators_.shape[0]={self.estimators_.shape[0]} when warm_start==True"
                )
            self._learner = self._warm_learner(device)
            begin_at_stage = self.estimators_.shape[0]
            if not exact:
                self._learner.collective = self._rows.collective
            X_train = check_array(
                X_train,
                dtype=self._X_dtype(),
                accept_sparse=self._sparse_formats("csr"),
                ensure_all_finite=False,
            )
            raw = self._raw_predict(_Prepared(X_train, self._learner.prepare(X_train)))
            self._resize_state()

        try:
            n_stages = self._fit_stages(
                X_train,
                y_train,
                raw,
                sw_train,
                self._rng,
                X_val,
                y_val,
                sw_val,
                begin_at_stage,
                monitor,
            )
        finally:
            self._learner.end_fit()
        if n_stages != self.estimators_.shape[0]:
            self.estimators_ = self.estimators_[:n_stages]
            self.train_score_ = self.train_score_[:n_stages]
            if hasattr(self, "oob_improvement_"):
                self.oob_improvement_ = self.oob_improvement_[:n_stages]
                self.oob_scores_ = self.oob_scores_[:n_stages]
                self.oob_score_ = self.oob_scores_[-1]
        self.n_estimators_ = n_stages
        return self

    def _warm_learner(self, device: str):
        """The learner for the trees a warm start adds: built from the parameters as they are
        now (``set_params`` may have changed the tree shape, as scikit-learn allows), on the
        binning of the first fit (the trees already fitted read those bins)."""
        old = self._learner
        if old.kind != self.tree_method:
            raise ValueError(
                f"warm_start=True cannot switch tree_method from {old.kind!r} "
                f"to {self.tree_method!r}; fit with warm_start=False to start over."
            )
        if old.kind == "exact":
            return make_learner("exact", self._tree_params(), self.n_features_in_)
        for name, before, now in (
            ("max_bins", old.max_bins, self.max_bins),
            ("device", old.device, device),
        ):
            if before != now:
                raise ValueError(
                    f"warm_start=True cannot change {name} from {before!r} to {now!r}: the "
                    f"trees already fitted read the first fit's bins on its device; fit with "
                    f"warm_start=False to start over."
                )
        return make_learner(
            "hist",
            self._tree_params(),
            self.n_features_in_,
            max_bins=old.max_bins,
            device=old.device,
            bin_mapper=old.bin_mapper,
        )

    def _is_classifier(self) -> bool:
        return isinstance(self, ClassifierMixin)

    def _fit_init(self, X, y, sample_weight, sample_weight_is_none) -> np.ndarray:
        """Set ``init_`` and return ``F_0`` on the training rows, ``(n_samples, K)``."""
        n, K = X.shape[0], self.n_trees_per_iteration_
        if isinstance(self.init, str) and self.init == "zero":
            self.init_ = "zero"
            return np.zeros((n, K), dtype=np.float64)
        if self.init is None:
            self.init_ = None
            self.init_prediction_ = self._rows.init_prediction(
                self._loss, y, None if sample_weight_is_none else sample_weight
            )
            return self._loss.init_raw(self.init_prediction_, n)
        self.init_ = clone(self.init)
        X = X.astype(np.float32, copy=False)  # the float32 X of exact mode, in either mode
        if sample_weight_is_none:
            self.init_.fit(X, y)
        else:
            unsupported = ValueError(
                f"The initial estimator {type(self.init_).__name__} does "
                "not support sample weights."
            )
            try:
                self.init_.fit(X, y, sample_weight=sample_weight)
            except TypeError as e:  # an estimator whose fit has no sample_weight
                if "unexpected keyword argument 'sample_weight'" in str(e):
                    raise unsupported from e
                raise
            except ValueError as e:  # a Pipeline: fit parameters must name their step
                if "pass parameters to specific steps of your pipeline" in str(e):
                    raise unsupported from e
                raise
        return self._loss.raw_from_prediction(self._init_prediction_from_estimator(X))

    def _fit_stages(
        self,
        X,
        y,
        raw,
        sample_weight,
        rng,
        X_val,
        y_val,
        sample_weight_val,
        begin_at_stage=0,
        monitor=None,
    ) -> int:
        """Run the boosting iterations; return the number of stages kept."""
        loss, rows = self._loss, self._rows
        n_samples = X.shape[0]
        do_oob = self.subsample < 1.0
        sample_mask = np.ones(n_samples, dtype=bool)
        n_inbag = max(1, int(self.subsample * rows.n_total))
        Xt = self._learner.prepare(X)
        step = np.empty(n_samples)  # lr * h_m(x) of each tree, one buffer for the fit
        # Hist mode need not match scikit-learn bit for bit: unit weights score as
        # a plain mean (one pass over the rows instead of three, every stage).
        unit = self._learner.kind == "hist" and bool(np.all(sample_weight == 1.0))
        score_weight = None if unit else sample_weight
        if self.verbose:
            reporter = _VerboseReporter(self, begin_at_stage)
        if self.n_iter_no_change is not None:
            loss_history = np.full(self.n_iter_no_change, np.inf)
            val_raw = self._staged_raw_predict(_Prepared(X_val, self._learner.prepare(X_val)))

        i = begin_at_stage
        for i in range(begin_at_stage, self.n_estimators):
            if do_oob:
                sample_mask = rows.sample_mask(n_inbag, rng)
                y_oob, sw_oob = y[~sample_mask], sample_weight[~sample_mask]
                if i == 0:
                    initial_loss = rows.score(loss, y_oob, raw[~sample_mask], sw_oob)

            raw = self._fit_stage(i, Xt, y, raw, sample_weight, sample_mask, rng, step)

            if do_oob:
                self.train_score_[i] = rows.score(
                    loss, y[sample_mask], raw[sample_mask], sample_weight[sample_mask]
                )
                self.oob_scores_[i] = rows.score(loss, y_oob, raw[~sample_mask], sw_oob)
                previous = initial_loss if i == 0 else self.oob_scores_[i - 1]
                self.oob_improvement_[i] = previous - self.oob_scores_[i]
                self.oob_score_ = self.oob_scores_[-1]
            else:
                self.train_score_[i] = rows.score(loss, y, raw, score_weight)

            if self.verbose:
                reporter.update(i)
            if monitor is not None and rows.any(monitor(i, self, locals())):
                break
            if self.n_iter_no_change is not None:
                validation_loss = loss.score(y_val, next(val_raw), sample_weight_val)
                # stop unless better than at least one of the last n_iter_no_change
                if np.any(validation_loss + self.tol < loss_history):
                    loss_history[i % len(loss_history)] = validation_loss
                else:
                    break
        return i + 1

    def _fit_stage(self, i, Xt, y, raw, sample_weight, sample_mask, rng, step) -> np.ndarray:
        """Fit the ``K`` trees of stage ``i`` and add them to ``raw`` in place.

        ``step``: an ``(n_samples,)`` float64 buffer for ``lr * h(x)`` (a fresh
        row-sized vector per tree fragments the heap; same floats either way).
        """
        loss, learner = self._loss, self._learner
        self._rows.begin_stage(loss, y, raw, sample_weight)
        neg_gradient = loss.negative_gradient(y, raw)
        multiclass = self.n_trees_per_iteration_ > 1
        mask = sample_mask if self.subsample < 1.0 else None
        sw = sample_weight * sample_mask.astype(np.float64) if mask is not None else sample_weight
        for k in range(self.n_trees_per_iteration_):
            target = np.array(y == k, dtype=np.float64) if multiclass else y
            tree = learner.fit(Xt, neg_gradient[:, k], sw, rng)
            leaf_ids = learner.leaf_ids(tree, Xt)
            values = learner.leaf_values(tree)
            if loss.line_search:  # else the fitted leaves are final (squared error)
                self._rows.line_search(
                    loss,
                    leaf_ids,
                    learner.leaves(tree),
                    values,
                    target,
                    neg_gradient[:, k],
                    raw[:, k],
                    sw,
                    mask,
                )
                learner.commit_leaf_values(tree, values)
            _add_step(raw[:, k], self.learning_rate, values, leaf_ids, step, not loss.exact)
            self.estimators_[i, k] = tree
        return raw

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.tree_method == "hist"
        tags.input_tags.sparse = self.tree_method == "exact"
        return tags
