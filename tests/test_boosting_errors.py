"""Bad input gets a clear error naming the problem, never a silently wrong model."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

from residuals.boosting import BoostingClassifier, BoostingRegressor, InvalidParameterError

RNG = np.random.RandomState(0)
X = RNG.normal(size=(40, 3))
Y_REG = X[:, 0] + RNG.normal(scale=0.1, size=40)
Y_CLF = (X[:, 1] > 0).astype(int)

BOTH = [(BoostingRegressor, Y_REG), (BoostingClassifier, Y_CLF)]
IDS = ["regressor", "classifier"]


@pytest.mark.parametrize("cls,y", BOTH, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_X_in_exact_mode(cls, y, bad):
    Xbad = X.copy()
    Xbad[3, 1] = bad
    kind = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=f"Input X contains {kind}"):
        cls(n_estimators=2).fit(Xbad, y)
    fitted = cls(n_estimators=2).fit(X, y)
    with pytest.raises(ValueError, match=f"Input X contains {kind}"):
        fitted.predict(Xbad)


def test_hist_mode_still_rejects_infinite_X():
    Xbad = X.copy()
    Xbad[0, 0] = np.inf
    with pytest.raises(ValueError, match="Input X contains infinity"):
        BoostingRegressor(tree_method="hist", n_estimators=2).fit(Xbad, Y_REG)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_y(bad):
    y = Y_REG.copy()
    y[5] = bad
    kind = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=f"Input y contains {kind}"):
        BoostingRegressor(n_estimators=2).fit(X, y)
    with pytest.raises(ValueError, match=f"Input y contains {kind}"):
        BoostingRegressor(n_estimators=2, tree_method="hist").fit(X, y)


@pytest.mark.parametrize("cls,y", BOTH, ids=IDS)
def test_mismatched_lengths(cls, y):
    with pytest.raises(ValueError, match=re.escape("inconsistent numbers of samples: [40, 39]")):
        cls(n_estimators=2).fit(X, y[:-1])
    with pytest.raises(ValueError, match=re.escape("sample_weight.shape == (39,), expected (40,)")):
        cls(n_estimators=2).fit(X, y, sample_weight=np.ones(39))


@pytest.mark.parametrize("cls,y", BOTH, ids=IDS)
def test_one_dimensional_X(cls, y):
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead"):
        cls(n_estimators=2).fit(X[:, 0], y)
    fitted = cls(n_estimators=2).fit(X, y)
    with pytest.raises(ValueError, match="Reshape your data"):
        fitted.predict(X[0])


@pytest.mark.parametrize(
    "cls,bad",
    [
        (BoostingRegressor, "log_loss"),
        (BoostingRegressor, "lad"),
        (BoostingClassifier, "squared_error"),
        (BoostingClassifier, "deviance"),
    ],
)
def test_unknown_loss(cls, bad):
    y = Y_CLF if cls is BoostingClassifier else Y_REG
    with pytest.raises(InvalidParameterError) as info:
        cls(loss=bad).fit(X, y)
    msg = str(info.value)
    assert f"The 'loss' parameter of {cls.__name__} must be a str among" in msg
    assert f"Got {bad!r} instead." in msg
    valid = (
        "'absolute_error', 'huber', 'quantile', 'squared_error'"
        if cls is BoostingRegressor
        else "'exponential', 'log_loss'"
    )
    assert valid in msg


@pytest.mark.parametrize(
    "param,value,expect",
    [
        ("learning_rate", -1, "must be a float in the range [0.0, inf). Got -1 instead."),
        ("n_estimators", 0, "must be an int in the range [1, inf). Got 0 instead."),
        ("n_estimators", 2.5, "must be an int in the range [1, inf). Got 2.5 instead."),
        ("subsample", 0.0, "must be a float in the range (0.0, 1.0]. Got 0.0 instead."),
        ("subsample", 1.5, "must be a float in the range (0.0, 1.0]. Got 1.5 instead."),
        ("max_depth", 0, "must be an int in the range [1, inf) or None. Got 0 instead."),
        (
            "min_samples_split",
            1,
            "must be an int in the range [2, inf) or a float in the range "
            "(0.0, 1.0]. Got 1 instead.",
        ),
        ("min_samples_leaf", 0, "Got 0 instead."),
        ("min_weight_fraction_leaf", 0.6, "must be a float in the range [0.0, 0.5]. Got 0.6"),
        ("max_features", "auto", "a str among {'log2', 'sqrt'} or None. Got 'auto' instead."),
        ("max_features", 1.5, "Got 1.5 instead."),
        (
            "alpha",
            1.0,
            "The 'alpha' parameter of BoostingRegressor must be a float in the range "
            "(0.0, 1.0). Got 1.0 instead.",
        ),
        ("validation_fraction", 1.0, "(0.0, 1.0). Got 1.0 instead."),
        ("n_iter_no_change", 0, "or None. Got 0 instead."),
        ("tol", -1e-3, "must be a float in the range [0.0, inf). Got -0.001 instead."),
        ("ccp_alpha", -1.0, "Got -1.0 instead."),
        ("max_leaf_nodes", 1, "must be an int in the range [2, inf) or None. Got 1 instead."),
        ("warm_start", "yes", "must be an instance of 'bool'. Got 'yes' instead."),
        ("random_state", "seed", "'random_state' parameter"),
        (
            "init",
            "mean",
            "must be a str among {'zero'}, None or an object implementing 'fit' "
            "and 'predict'. Got 'mean' instead.",
        ),
        ("init", BoostingRegressor, "Got <class"),  # a class, not an instance
        ("tree_method", "approx", "a str among {'exact', 'hist'}. Got 'approx' instead."),
        ("max_bins", 256, "must be an int in the range [2, 255]. Got 256 instead."),
        ("device", "tpu", "a str among {'auto', 'cpu', 'cuda'}. Got 'tpu' instead."),
    ],
)
def test_out_of_range_parameters(param, value, expect):
    est = BoostingRegressor(n_estimators=2).set_params(**{param: value})
    with pytest.raises(InvalidParameterError, match=re.escape(expect)) as info:
        est.fit(X, Y_REG)
    assert f"The {param!r} parameter of BoostingRegressor" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_single_class():
    with pytest.raises(ValueError, match=r"needs at least 2 classes in y, but y contains 1 class"):
        BoostingClassifier(n_estimators=2).fit(X, np.zeros(40, dtype=int))


def test_single_class_after_zero_weights():
    sw = np.where(Y_CLF == 1, 1.0, 0.0)
    with pytest.raises(
        ValueError,
        match=r"contains 1 class with non-zero sample weight: \[1\]; "
        r"\[0\] only with zero sample weight",
    ):
        BoostingClassifier(n_estimators=2).fit(X, Y_CLF, sample_weight=sw)


def test_continuous_target_for_classifier():
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        BoostingClassifier(n_estimators=2).fit(X, Y_REG)


def test_exponential_loss_needs_two_classes():
    y3 = np.arange(40) % 3
    with pytest.raises(ValueError, match="loss='exponential' is only suitable for a binary"):
        BoostingClassifier(loss="exponential", n_estimators=2).fit(X, y3)


def test_bad_sample_weight():
    with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
        BoostingRegressor(n_estimators=2).fit(X, Y_REG, sample_weight=-np.ones(40))
    with pytest.raises(ValueError, match="at least one non-zero"):
        BoostingRegressor(n_estimators=2).fit(X, Y_REG, sample_weight=np.zeros(40))


@pytest.mark.parametrize("cls", [BoostingRegressor, BoostingClassifier], ids=IDS)
@pytest.mark.parametrize(
    "method", ["predict", "staged_predict", "apply", "final_state", "feature_importances_"]
)
def test_predict_before_fit(cls, method):
    est = cls()
    with pytest.raises(NotFittedError, match=f"This {cls.__name__} instance is not fitted yet"):
        attr = getattr(est, method)
        out = attr(X) if callable(attr) else attr
        if hasattr(out, "__next__"):
            next(out)


@pytest.mark.parametrize("method", ["predict_proba", "decision_function", "staged_predict_proba"])
def test_classifier_outputs_before_fit(method):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        out = getattr(BoostingClassifier(), method)(X)
        next(out) if hasattr(out, "__next__") else None


@pytest.mark.parametrize("cls,y", BOTH, ids=IDS)
def test_wrong_number_of_features_at_predict(cls, y):
    est = cls(n_estimators=2).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 2 features, but \w+ is expecting 3 features"):
        est.predict(X[:, :2])
    with pytest.raises(ValueError, match="X has 4 features"):
        list(est.staged_predict(np.hstack([X, X[:, :1]])))


def test_feature_names_mismatch_warns():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    est = BoostingRegressor(n_estimators=2).fit(df, Y_REG)
    with pytest.raises(ValueError, match="feature names"):
        est.predict(df.rename(columns={"a": "z"}))


def test_exact_mode_rejects_gpu_device():
    with pytest.raises(ValueError, match="device='cuda' only applies to tree_method='hist'"):
        BoostingRegressor(device="cuda").fit(X, Y_REG)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(
        RuntimeError, match="device 'cuda' was asked for but no CUDA GPU is available"
    ):
        BoostingRegressor(tree_method="hist", device="cuda").fit(X, Y_REG)


def test_hist_rejects_exact_only_parameters():
    with pytest.raises(
        ValueError, match="ccp_alpha > 0 .* only supported with tree_method='exact'"
    ):
        BoostingRegressor(tree_method="hist", ccp_alpha=0.1).fit(X, Y_REG)
    with pytest.raises(ValueError, match="min_samples_split is only supported"):
        BoostingRegressor(tree_method="hist", min_samples_split=5).fit(X, Y_REG)


def test_criterion_is_deprecated_like_sklearn():
    with pytest.warns(FutureWarning, match="`criterion` is deprecated"):
        BoostingRegressor(n_estimators=2, criterion="friedman_mse").fit(X, Y_REG)


def test_init_estimator_without_sample_weight_support():
    class NoWeights:
        def fit(self, X, y):
            self.mean_ = float(np.mean(y))
            return self

        def predict(self, X):
            return np.full(X.shape[0], self.mean_)

        def get_params(self, deep=True):
            return {}

        def set_params(self, **params):
            return self

    with pytest.raises(
        ValueError, match="The initial estimator NoWeights does not support sample weights"
    ):
        BoostingRegressor(init=NoWeights(), n_estimators=2).fit(X, Y_REG, sample_weight=np.ones(40))
    est = BoostingRegressor(init=NoWeights(), n_estimators=2).fit(X, Y_REG)
    assert np.isfinite(est.predict(X)).all()


def test_early_stopping_split_with_a_rare_class():
    y = np.zeros(40, dtype=int)
    y[:2] = 1
    y[2] = 2
    with pytest.raises(
        ValueError,
        match=r"Early stopping \(n_iter_no_change=2\) could not hold "
        r"out validation_fraction=0.5 of the 40 rows, stratified "
        r"by class: The least populated classes",
    ):
        BoostingClassifier(n_iter_no_change=2, validation_fraction=0.5, random_state=0).fit(X, y)


def test_drop_stage_index_out_of_range():
    est = BoostingRegressor(n_estimators=3).fit(X, Y_REG)
    with pytest.raises(ValueError, match="drop=3 is not a stage index; valid: 0..2"):
        est.drop_stage(X, 3)


def test_sparse_X_is_refused_in_hist_mode():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="Sparse data was passed"):
        BoostingRegressor(n_estimators=2, tree_method="hist").fit(sparse.csr_matrix(X), Y_REG)
    dense_fit = BoostingRegressor(n_estimators=2, tree_method="hist").fit(X, Y_REG)
    with pytest.raises(TypeError, match="Sparse data was passed"):
        dense_fit.predict(sparse.csr_matrix(X))


def test_warm_start_cannot_switch_tree_method():
    est = BoostingRegressor(n_estimators=2, warm_start=True).fit(X, Y_REG)
    with pytest.raises(ValueError, match="cannot switch tree_method from 'exact' to 'hist'"):
        est.set_params(tree_method="hist", n_estimators=4).fit(X, Y_REG)
