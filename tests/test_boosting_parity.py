"""Bit-for-bit parity of ``tree_method="exact"`` with scikit-learn's GradientBoosting*.

Every comparison is ``np.array_equal`` -- no tolerance. On failure the message
names the first diverging stage and the largest absolute difference there.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.linear_model import LinearRegression, LogisticRegression

from residuals.boosting import BoostingClassifier, BoostingRegressor


# ------------------------------------------------------------------ datasets
def _diabetes():
    return load_diabetes(return_X_y=True)


def _breast_cancer():
    return load_breast_cancer(return_X_y=True)


def _wine():
    return load_wine(return_X_y=True)


def _digits():
    X, y = load_digits(return_X_y=True)
    return X[:500], y[:500]  # 10 classes x stages is the slow case; 500 rows keep it fast


def _ties_regression():
    """Duplicated rows, a coarse (4-level) feature and a constant one: many tied splits."""
    rng = np.random.RandomState(7)
    X = rng.normal(size=(150, 5))
    X[:, 1] = np.round(X[:, 1])
    X[:, 2] = np.floor(X[:, 2] * 2) / 2
    X[:, 4] = 1.0
    X = np.vstack([X, X[:60]])  # 60 rows repeated exactly
    y = X[:, 0] + 2 * X[:, 1] + rng.standard_t(3, size=X.shape[0])
    y = np.round(y, 1)  # tied targets: the percentile leaves hit ties too
    return X, y


def _ties_classification(n_classes: int):
    rng = np.random.RandomState(3)
    X = np.round(rng.normal(size=(180, 4)), 0)
    X = np.vstack([X, X[:50]])
    score = X[:, 0] - X[:, 1] + rng.normal(scale=0.7, size=X.shape[0])
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1]))
    return X, y


# -------------------------------------------------------------------- helper
def _first_divergence(ours, ref) -> str | None:
    for m, (a, b) in enumerate(zip(ours, ref)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape:
            return f"stage {m}: shape {a.shape} != {b.shape}"
        if not np.array_equal(a, b):
            diff = (
                np.max(np.abs(a.astype(float) - b.astype(float)))
                if a.dtype.kind in "fiub"
                else "n/a"
            )
            return f"first diverging stage {m} (0-based), max |diff| = {diff}"
    return None


def assert_parity(ours, ref, X):
    """Same staged outputs, predictions, scores, n_estimators_ and importances."""
    assert ours.n_estimators_ == ref.n_estimators_, (
        f"n_estimators_: ours {ours.n_estimators_} vs sklearn {ref.n_estimators_}"
    )
    methods = ["staged_predict"]
    if hasattr(ref, "classes_"):
        methods += ["staged_decision_function", "staged_predict_proba"]
        np.testing.assert_array_equal(ours.classes_, ref.classes_)
    for name in methods:
        n_ours = n_ref = 0
        msg = _first_divergence(getattr(ours, name)(X), getattr(ref, name)(X))
        assert msg is None, f"{name}: {msg}"
        n_ours = sum(1 for _ in getattr(ours, name)(X))
        n_ref = sum(1 for _ in getattr(ref, name)(X))
        assert n_ours == n_ref == ref.n_estimators_
    final = ["predict"] + (
        ["decision_function", "predict_proba"] if hasattr(ref, "classes_") else []
    )
    for name in final:
        a, b = getattr(ours, name)(X), getattr(ref, name)(X)
        assert np.array_equal(a, b), f"{name}: max |diff| = {np.max(np.abs(a - b))}"
    assert np.array_equal(ours.apply(X), ref.apply(X)), "apply: leaf indices differ"
    for attr in ("train_score_", "oob_scores_", "oob_improvement_", "feature_importances_"):
        if hasattr(ref, attr):
            a, b = getattr(ours, attr), getattr(ref, attr)
            msg = _first_divergence(
                a[:, None] if a.ndim == 1 else a, b[:, None] if b.ndim == 1 else b
            )
            assert msg is None, f"{attr}: {msg}"
        else:
            assert not hasattr(ours, attr), attr


def _fit_both(ours_cls, ref_cls, X, y, sample_weight=None, **params):
    ours = ours_cls(**params).fit(X, y, sample_weight=sample_weight)
    ref = ref_cls(**params).fit(X, y, sample_weight=sample_weight)
    return ours, ref


# --------------------------------------------------------------- regression
REG_OPTIONS = {
    "plain": {},
    "subsample+max_features": dict(subsample=0.7, max_features=0.5),
    "early_stopping": dict(n_iter_no_change=3, validation_fraction=0.2, tol=1e-3),
    "leaf_nodes+min_leaf": dict(max_depth=None, max_leaf_nodes=6, min_samples_leaf=3),
}


@pytest.mark.parametrize("loss", ["squared_error", "absolute_error", "huber", "quantile"])
@pytest.mark.parametrize("option", list(REG_OPTIONS))
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_regressor_parity_diabetes(loss, option, weighted):
    X, y = _diabetes()
    sw = np.random.RandomState(0).uniform(0.2, 3.0, size=y.shape[0]) if weighted else None
    ours, ref = _fit_both(
        BoostingRegressor,
        GradientBoostingRegressor,
        X,
        y,
        sw,
        loss=loss,
        n_estimators=30,
        learning_rate=0.2,
        random_state=0,
        **REG_OPTIONS[option],
    )
    assert_parity(ours, ref, X)


@pytest.mark.parametrize(
    "loss,alpha",
    [
        ("squared_error", 0.9),
        ("absolute_error", 0.9),
        ("huber", 0.7),
        ("quantile", 0.5),
        ("quantile", 0.1),
    ],
)
@pytest.mark.parametrize("option", ["plain", "subsample+max_features"])
def test_regressor_parity_with_ties(loss, alpha, option):
    X, y = _ties_regression()
    ours, ref = _fit_both(
        BoostingRegressor,
        GradientBoostingRegressor,
        X,
        y,
        loss=loss,
        alpha=alpha,
        n_estimators=25,
        random_state=1,
        **REG_OPTIONS[option],
    )
    assert_parity(ours, ref, X)


def test_early_stopping_stops_and_matches():
    """The validation split, the loss history and the stop stage all agree."""
    X, y = _diabetes()
    params = dict(
        n_estimators=500,
        learning_rate=0.5,
        n_iter_no_change=2,
        validation_fraction=0.25,
        random_state=4,
    )
    ours, ref = _fit_both(BoostingRegressor, GradientBoostingRegressor, X, y, **params)
    assert ref.n_estimators_ < 500  # it did stop early
    assert_parity(ours, ref, X)


@pytest.mark.parametrize("init", ["zero", "estimator"])
def test_regressor_parity_init(init):
    X, y = _diabetes()
    init_value = "zero" if init == "zero" else LinearRegression()
    ours, ref = _fit_both(
        BoostingRegressor,
        GradientBoostingRegressor,
        X,
        y,
        init=init_value,
        n_estimators=15,
        random_state=0,
        subsample=0.8,
    )
    assert_parity(ours, ref, X)


def test_regressor_parity_random_state_instance_and_warm_start():
    """A shared RandomState object and a warm-started second fit draw in the same order."""
    X, y = _diabetes()
    kw = dict(n_estimators=10, subsample=0.6, max_features=0.4, warm_start=True)
    ours = BoostingRegressor(random_state=np.random.RandomState(5), **kw).fit(X, y)
    ref = GradientBoostingRegressor(random_state=np.random.RandomState(5), **kw).fit(X, y)
    ours.set_params(n_estimators=25).fit(X, y)
    ref.set_params(n_estimators=25).fit(X, y)
    assert_parity(ours, ref, X)


# ----------------------------------------------------------- classification
CLF_OPTIONS = {
    "plain": {},
    "subsample+max_features": dict(subsample=0.7, max_features="sqrt"),
    "early_stopping": dict(n_iter_no_change=2, validation_fraction=0.2),
}


@pytest.mark.parametrize("loss", ["log_loss", "exponential"])
@pytest.mark.parametrize("option", list(CLF_OPTIONS))
def test_binary_parity_breast_cancer(loss, option):
    X, y = _breast_cancer()
    ours, ref = _fit_both(
        BoostingClassifier,
        GradientBoostingClassifier,
        X,
        y,
        loss=loss,
        n_estimators=25,
        learning_rate=0.3,
        random_state=0,
        **CLF_OPTIONS[option],
    )
    assert_parity(ours, ref, X)


@pytest.mark.parametrize("option", list(CLF_OPTIONS))
def test_multiclass_parity_wine(option):
    X, y = _wine()
    ours, ref = _fit_both(
        BoostingClassifier,
        GradientBoostingClassifier,
        X,
        y,
        n_estimators=20,
        random_state=2,
        **CLF_OPTIONS[option],
    )
    assert_parity(ours, ref, X)


def test_multiclass_parity_digits():
    X, y = _digits()
    ours, ref = _fit_both(
        BoostingClassifier,
        GradientBoostingClassifier,
        X,
        y,
        n_estimators=8,
        subsample=0.8,
        max_features=0.3,
        random_state=0,
    )
    assert_parity(ours, ref, X)


@pytest.mark.parametrize("n_classes,loss", [(2, "log_loss"), (2, "exponential"), (3, "log_loss")])
def test_classifier_parity_ties_and_weights(n_classes, loss):
    X, y = _ties_classification(n_classes)
    sw = np.random.RandomState(1).randint(1, 4, size=y.shape[0]).astype(float)
    ours, ref = _fit_both(
        BoostingClassifier,
        GradientBoostingClassifier,
        X,
        y,
        sw,
        loss=loss,
        n_estimators=20,
        subsample=0.8,
        random_state=3,
    )
    assert_parity(ours, ref, X)


@pytest.mark.parametrize("init", ["zero", "estimator"])
def test_classifier_parity_init(init):
    X, y = _wine()
    init_value = "zero" if init == "zero" else DummyClassifier(strategy="prior")
    ours, ref = _fit_both(
        BoostingClassifier,
        GradientBoostingClassifier,
        X,
        y,
        init=init_value,
        n_estimators=10,
        random_state=0,
    )
    assert_parity(ours, ref, X)


def test_classifier_parity_logistic_init_binary():
    X, y = _breast_cancer()
    X = X / X.max(axis=0)
    init_value = LogisticRegression(max_iter=200)
    ours, ref = _fit_both(
        BoostingClassifier,
        GradientBoostingClassifier,
        X,
        y,
        init=init_value,
        n_estimators=10,
        random_state=0,
    )
    assert_parity(ours, ref, X)


def test_string_labels_parity():
    X, y = _wine()
    labels = np.array(["barolo", "grignolino", "barbera"])[y]
    ours, ref = _fit_both(
        BoostingClassifier, GradientBoostingClassifier, X, labels, n_estimators=5, random_state=0
    )
    assert_parity(ours, ref, X)
    assert ours.predict(X).dtype == ref.predict(X).dtype


def test_parity_on_unseen_rows():
    """Predictions on held-out rows (not only the training rows) agree too."""
    X, y = _diabetes()
    ours, ref = _fit_both(
        BoostingRegressor,
        GradientBoostingRegressor,
        X[:300],
        y[:300],
        loss="huber",
        n_estimators=20,
        random_state=0,
    )
    assert_parity(ours, ref, X[300:])


@pytest.mark.parametrize(
    "tree_options",
    [
        dict(min_weight_fraction_leaf=0.05),
        dict(min_impurity_decrease=50.0),
        dict(ccp_alpha=20.0),
        dict(min_samples_split=0.1, min_samples_leaf=0.02),
        dict(max_features="log2", max_depth=5),
        dict(learning_rate=0.0),
        dict(criterion="friedman_mse"),
    ],
    ids=lambda d: ",".join(d),
)
def test_tree_options_parity(tree_options):
    X, y = _diabetes()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # criterion is deprecated in both
        ours, ref = _fit_both(
            BoostingRegressor,
            GradientBoostingRegressor,
            X,
            y,
            **{"n_estimators": 15, "random_state": 1, **tree_options},
        )
    assert_parity(ours, ref, X)


def test_monitor_and_list_inputs_parity():
    X, y = _diabetes()
    stop_at_5 = lambda i, est, env: i == 4  # noqa: E731
    ours = BoostingRegressor(n_estimators=20, random_state=0).fit(
        X.tolist(), y.tolist(), sample_weight=[1] * len(y), monitor=stop_at_5
    )
    ref = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(
        X.tolist(), y.tolist(), sample_weight=[1] * len(y), monitor=stop_at_5
    )
    assert ours.n_estimators_ == 5
    assert_parity(ours, ref, X)


@pytest.mark.parametrize("fmt", ["csr", "csc", "coo"])
def test_sparse_X_parity(fmt):
    from scipy import sparse

    X, y = _diabetes()
    X = np.where(np.abs(X) < 0.03, 0.0, X)  # ~60% zeros
    Xs = getattr(sparse, f"{fmt}_matrix")(X)
    ours, ref = _fit_both(
        BoostingRegressor,
        GradientBoostingRegressor,
        Xs,
        y,
        loss="huber",
        n_estimators=15,
        subsample=0.7,
        max_features=0.5,
        random_state=0,
    )
    assert_parity(ours, ref, sparse.csr_matrix(X))
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))  # dense rows, same model


def test_divergence_report_names_the_stage():
    """The checker itself: a model that differs from stage 3 on is reported as such."""
    X, y = _diabetes()
    ref = GradientBoostingRegressor(n_estimators=6, random_state=0).fit(X, y)
    ours = BoostingRegressor(n_estimators=6, random_state=0).fit(X, y)
    ours.estimators_[3, 0].tree_.value[:, 0, 0] += 1e-9  # perturb one tree's leaves
    msg = _first_divergence(ours.staged_predict(X), ref.staged_predict(X))
    assert msg is not None and "stage 3" in msg and "max |diff|" in msg
    with pytest.raises(AssertionError, match="first diverging stage 3"):
        assert_parity(ours, ref, X)


# ------------------------------------------- the loss formulas, one by one
# scikit-learn's private loss module is used here only as the reference.
def _sk_losses():
    from sklearn._loss import loss as sk

    return {
        "squared_error": (sk.HalfSquaredError(), {}),
        "absolute_error": (sk.AbsoluteError(), {}),
        "quantile": (sk.PinballLoss(quantile=0.3), {"alpha": 0.3}),
        "huber": (sk.HuberLoss(quantile=0.8, delta=0.7), {"alpha": 0.8}),
        "log_loss": (sk.HalfBinomialLoss(), {"n_classes": 2}),
        "exponential": (sk.ExponentialLoss(), {"n_classes": 2}),
    }


@pytest.mark.parametrize(
    "name", ["squared_error", "absolute_error", "quantile", "huber", "log_loss", "exponential"]
)
def test_pointwise_loss_and_gradient_bit_for_bit(name):
    from residuals.boosting._losses import make_loss

    ref, kw = _sk_losses()[name]
    ours = make_loss(name, **kw)
    if name == "huber":
        ours.delta = 0.7
    rng = np.random.RandomState(0)
    n = 20_000
    # cover every branch: log1pexp's cut points (-37, -2, 18, 33.3) and exp overflow
    raw = np.concatenate([rng.uniform(-60, 60, n), [-37, -2, 18, 33.3, 700, 709.5, -745.5]])
    if ours.is_classification:
        y = rng.randint(0, 2, raw.size).astype(np.float64)
    else:
        y = raw + rng.standard_t(2, raw.size)
        y[::5] = raw[::5]  # ties y == F for the sign-type gradients
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(ours.pointwise(y, raw[:, None]), ref.loss(y, raw))
        np.testing.assert_array_equal(ours.gradient(y, raw[:, None])[:, 0], ref.gradient(y, raw))


def test_multinomial_loss_gradient_and_proba_bit_for_bit():
    from sklearn._loss.loss import HalfMultinomialLoss

    from residuals.boosting._losses import make_loss

    rng = np.random.RandomState(1)
    K, n = 10, 5000
    raw = rng.normal(scale=8, size=(n, K))
    y = rng.randint(0, K, n).astype(np.float64)
    ours, ref = make_loss("log_loss", n_classes=K), HalfMultinomialLoss(n_classes=K)
    np.testing.assert_array_equal(ours.pointwise(y, raw), ref.loss(y, raw))
    np.testing.assert_array_equal(ours.gradient(y, raw), ref.gradient(y, raw))
    np.testing.assert_array_equal(ours.predict_proba(raw), ref.predict_proba(raw))


def test_weighted_lower_percentile_matches_sklearn():
    from sklearn.utils.stats import _weighted_percentile

    from residuals.boosting._losses import weighted_lower_percentile

    rng = np.random.RandomState(2)
    for trial in range(200):
        n = rng.randint(1, 40)
        values = np.round(rng.normal(size=n), 1)  # ties
        weights = rng.choice([0.0, 0.5, 1.0, 3.0], size=n)
        q = [50, 90, 100 * 0.3, 100 * 0.9, 0.0, 100.0][trial % 6]
        ref = _weighted_percentile(values, weights, q)
        ours = weighted_lower_percentile(values, weights, q)
        assert (np.isnan(ref) and np.isnan(ours)) or ours == ref, (values, weights, q)
        # unit weights take a selection instead of a sort: the same value
        ones = np.ones(n)
        assert weighted_lower_percentile(values, ones, q) == _weighted_percentile(
            values, ones, q
        ), (values, q)
