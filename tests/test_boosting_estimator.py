"""Estimator conventions and the Stagewise view of the boosters."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, make_friedman1
from sklearn.metrics import mean_squared_error
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from residuals.boosting import BoostingClassifier, BoostingRegressor
from residuals.core import Stagewise

# Checks expected to fail, with the reason (passed to scikit-learn, which then
# reports them as xfail instead of hiding them).
SAMPLE_WEIGHT_REASON = (
    "scikit-learn's GradientBoosting* fails this check too (it is in scikit-learn's own "
    "expected-failure list): the trees' min_samples_* counts and the unweighted "
    "interpolated-percentile init are not equivalent to repeating rows. Exact mode "
    "reproduces scikit-learn bit for bit, including this."
)


EXPECTED_FAILED = (
    "check_sample_weight_equivalence_on_dense_data",
    "check_sample_weight_equivalence_on_sparse_data",
)


def _expected_failed_checks(estimator):
    return {name: SAMPLE_WEIGHT_REASON for name in EXPECTED_FAILED}


@parametrize_with_checks(
    [
        BoostingRegressor(n_estimators=10),
        BoostingClassifier(n_estimators=10),
        BoostingRegressor(n_estimators=10, tree_method="hist", max_bins=32),
        BoostingClassifier(n_estimators=3, max_depth=2, tree_method="hist", max_bins=32),
    ],
    expected_failed_checks=_expected_failed_checks,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.SkipTestWarning")
def test_expected_failure_is_also_sklearns():
    """The checks we list as expected-to-fail fail for scikit-learn's GBRT as well."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(
        GradientBoostingRegressor(n_estimators=10), on_fail=None, expected_failed_checks={}
    )
    failed = {r["check_name"] for r in results if r["status"] == "failed"}
    assert set(EXPECTED_FAILED) <= failed


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def diabetes():
    X, y = load_diabetes(return_X_y=True)
    return train_test_split(X, y, random_state=0)


@pytest.fixture(scope="module")
def cancer():
    X, y = load_breast_cancer(return_X_y=True)
    return X, y


# -------------------------------------------------------- sklearn plumbing
def test_clone_keeps_params_and_drops_fit(diabetes):
    Xa, _, ya, _ = diabetes
    est = BoostingRegressor(n_estimators=7, loss="huber", alpha=0.8, tree_method="exact").fit(
        Xa, ya
    )
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    assert not hasattr(twin, "estimators_")


def test_pipeline_and_grid_search(diabetes):
    Xa, Xb, ya, yb = diabetes
    pipe = make_pipeline(StandardScaler(), BoostingRegressor(n_estimators=20, random_state=0))
    grid = GridSearchCV(
        pipe,
        {"boostingregressor__max_depth": [1, 3], "boostingregressor__learning_rate": [0.05, 0.3]},
        cv=3,
    )
    grid.fit(Xa, ya)
    assert set(grid.best_params_) == {
        "boostingregressor__max_depth",
        "boostingregressor__learning_rate",
    }
    assert grid.best_estimator_.score(Xb, yb) > 0.2
    assert len(grid.cv_results_["mean_test_score"]) == 4


@pytest.mark.parametrize("tree_method", ["exact", "hist"])
def test_pickle_round_trip(cancer, tree_method):
    X, y = cancer
    est = BoostingClassifier(n_estimators=8, tree_method=tree_method, random_state=0).fit(X, y)
    list(est.staged_states(X[:5]))  # leaves a cache behind that must not be pickled
    back = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(back.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(back.feature_importances_, est.feature_importances_)


# ------------------------------------------------------------ Stagewise view
def test_is_stagewise_and_states_are_raw_predictions(cancer):
    X, y = cancer
    est = BoostingClassifier(n_estimators=12, learning_rate=0.5, random_state=0).fit(X, y)
    assert isinstance(est, Stagewise) and est.n_stages_ == 12
    states = list(est.staged_states(X))
    raw = list(est.staged_decision_function(X))
    assert len(states) == len(raw) == 12
    for s, r in zip(states, raw):
        np.testing.assert_array_equal(s, r)
    np.testing.assert_array_equal(est.final_state(X)[:, 0], est.decision_function(X))


def test_stage_steps_and_drop_stage(diabetes):
    Xa, Xb, ya, _ = diabetes
    est = BoostingRegressor(n_estimators=10, learning_rate=0.3, random_state=0).fit(Xa, ya)
    steps = list(est.staged_steps(Xb))
    for step in steps:
        np.testing.assert_allclose(step.base + step.correction, step.state, rtol=0, atol=1e-12)
    # stage 0's base is F_0, the training mean
    np.testing.assert_allclose(steps[0].base, np.mean(ya), rtol=1e-12)
    # lesioning stage 4 removes exactly its correction from the final prediction
    dropped = est.drop_stage(Xb, 4)
    np.testing.assert_allclose(
        dropped[:, 0], est.predict(Xb) - steps[4].correction[:, 0], rtol=0, atol=1e-9
    )
    ratios = est.stage_contributions(Xb)
    assert ratios.shape == (10,) and np.all(ratios > 0) and np.all(np.isfinite(ratios))
    # shrinkage 0.3 with a decaying residual: later stages move F less than the first one
    assert ratios[-1] < ratios[0]


def test_staged_outputs_are_copies(cancer):
    X, y = cancer
    est = BoostingClassifier(n_estimators=5, random_state=0).fit(X, y)
    first = None
    for m, p in enumerate(est.staged_predict_proba(X[:20])):
        if m == 0:
            first = p
            p[:] = -1.0  # scribble on the yielded array
    final = est.predict_proba(X[:20])
    assert np.all(first == -1.0)
    np.testing.assert_array_equal(p, final)  # later stages unaffected


@pytest.mark.parametrize("tree_method", ["exact", "hist"])
def test_predict_is_the_stagewise_final_state_and_prepares_X_once(
    diabetes, tree_method, monkeypatch
):
    Xa, Xb, ya, _ = diabetes
    est = BoostingRegressor(n_estimators=4, tree_method=tree_method).fit(Xa, ya)
    calls = []
    real = est._validate_X_predict
    monkeypatch.setattr(est, "_validate_X_predict", lambda X: calls.append(1) or real(X))
    expected = est.predict(Xb)
    assert len(calls) == 1  # once for all 4 stages
    np.testing.assert_array_equal(est.final_state(Xb)[:, 0], expected)
    staged = list(est.staged_predict(Xb))
    assert len(calls) == 3 and len(staged) == 4
    np.testing.assert_array_equal(staged[-1], expected)
    for state, pred in zip(est.staged_states(Xb.tolist()), staged):  # lists work too
        np.testing.assert_array_equal(state[:, 0], pred)
    assert not any("cache" in k for k in vars(est))  # nothing of X is kept


def test_zero_init_first_stage_ratio_is_infinite(diabetes):
    Xa, _, ya, _ = diabetes
    est = BoostingRegressor(n_estimators=3, init="zero").fit(Xa, ya)
    ratios = est.stage_contributions(Xa)
    assert np.isinf(ratios[0]) and np.isfinite(ratios[1:]).all()


# ---------------------------------------------------------------- behaviour
def test_warm_start_equals_one_long_fit(diabetes):
    Xa, _, ya, _ = diabetes
    kw = dict(subsample=0.7, max_features=0.5, random_state=3)
    warm = BoostingRegressor(n_estimators=10, warm_start=True, **kw).fit(Xa, ya)
    warm.set_params(n_estimators=20).fit(Xa, ya)
    cold = BoostingRegressor(n_estimators=20, **kw).fit(Xa, ya)
    np.testing.assert_array_equal(warm.predict(Xa), cold.predict(Xa))
    np.testing.assert_array_equal(warm.oob_scores_, cold.oob_scores_)
    with pytest.raises(ValueError, match="must be larger or equal to estimators_.shape"):
        warm.set_params(n_estimators=5).fit(Xa, ya)


def test_train_score_and_oob_attributes(diabetes):
    Xa, _, ya, _ = diabetes
    full = BoostingRegressor(n_estimators=30, random_state=0).fit(Xa, ya)
    assert np.all(np.diff(full.train_score_) <= 0)  # squared error on the training rows
    assert not hasattr(full, "oob_scores_")
    sub = BoostingRegressor(n_estimators=30, subsample=0.5, random_state=0).fit(Xa, ya)
    assert sub.oob_scores_.shape == sub.oob_improvement_.shape == (30,)
    assert sub.oob_score_ == sub.oob_scores_[-1]
    np.testing.assert_allclose(sub.oob_improvement_[1:], -np.diff(sub.oob_scores_))


def test_monitor_stops_fit(diabetes):
    Xa, _, ya, _ = diabetes
    est = BoostingRegressor(n_estimators=50).fit(Xa, ya, monitor=lambda i, est, env: i == 6)
    assert est.n_estimators_ == 7 and est.train_score_.shape == (7,)


def test_verbose_reports_progress(diabetes, capsys):
    Xa, _, ya, _ = diabetes
    BoostingRegressor(n_estimators=3, subsample=0.8, verbose=2).fit(Xa, ya)
    out = capsys.readouterr().out.splitlines()
    assert "Train Loss" in out[0] and "OOB Improve" in out[0]
    assert len(out) == 4 and out[-1].split()[0] == "3"


def test_feature_importances_find_the_signal():
    X, y = make_friedman1(n_samples=400, n_features=8, random_state=0)
    est = BoostingRegressor(n_estimators=50, random_state=0).fit(X, y)
    imp = est.feature_importances_
    assert imp.shape == (8,) and np.isclose(imp.sum(), 1.0)
    assert imp[:5].sum() > 0.9  # friedman1 uses only the first 5 features


def test_predict_log_proba_and_apply(cancer):
    X, y = cancer
    est = BoostingClassifier(n_estimators=4, random_state=0).fit(X, y)
    np.testing.assert_allclose(np.exp(est.predict_log_proba(X)), est.predict_proba(X))
    leaves = est.apply(X)
    assert leaves.shape == (X.shape[0], 4, 1)
    reg = BoostingRegressor(n_estimators=4).fit(X, y.astype(float))
    assert reg.apply(X).shape == (X.shape[0], 4)


# ------------------------------------------------------------------ hist mode
def test_hist_mode_close_to_exact_on_friedman1():
    X, y = make_friedman1(n_samples=2000, n_features=10, noise=1.0, random_state=0)
    Xa, Xb, ya, yb = train_test_split(X, y, random_state=0)
    kw = dict(n_estimators=60, learning_rate=0.1, max_depth=3, random_state=0)
    exact = BoostingRegressor(**kw).fit(Xa, ya)
    hist = BoostingRegressor(tree_method="hist", **kw).fit(Xa, ya)
    mse_exact = mean_squared_error(yb, exact.predict(Xb))
    mse_hist = mean_squared_error(yb, hist.predict(Xb))
    assert mse_hist <= 1.05 * mse_exact, (mse_hist, mse_exact)


def test_hist_mode_bins_the_float32_values_of_a_float64_X():
    """A float64 X is binned without a float32 copy, exactly as its float32 copy."""
    rng = np.random.RandomState(3)
    X = rng.randn(600, 4) * 10.0 ** rng.randint(-3, 4, size=4)
    X[:, 0] = np.repeat(np.arange(20) / 3.0, 30)  # 20 distinct values, not exact in float32
    y = X[:, 0] + np.sin(X[:, 1]) + 0.1 * rng.randn(600)
    kw = dict(tree_method="hist", n_estimators=20, random_state=0)
    a = BoostingRegressor(**kw).fit(X, y)
    b = BoostingRegressor(**kw).fit(X.astype(np.float32), y)
    np.testing.assert_array_equal(a.predict(X), b.predict(X.astype(np.float32)))
    np.testing.assert_array_equal(a.predict(X), a.predict(X.astype(np.float32)))
    big = X.copy()
    big[0, 0] = 1e39  # finite in float64, infinite in float32
    with pytest.raises(ValueError, match="too large for dtype"):
        BoostingRegressor(**kw).fit(big, y)


@pytest.mark.parametrize("loss", ["absolute_error", "huber", "quantile"])
def test_hist_mode_terminal_region_update(loss):
    """The TreeBoost leaf update runs on hist trees too: leaves hold the loss's optimum."""
    X, y = make_friedman1(n_samples=600, random_state=1)
    est = BoostingRegressor(
        loss=loss, tree_method="hist", n_estimators=1, learning_rate=1.0, max_depth=2, alpha=0.5
    ).fit(X, y)
    tree = est.estimators_[0, 0]
    Xt = est._learner.prepare(est._validate_X_predict(X))
    leaf = tree.apply(Xt).numpy()
    resid = y - est.init_prediction_
    lower_median = lambda r: np.sort(r)[(r.size - 1) // 2]  # noqa: E731
    delta = lower_median(np.abs(resid))  # Huber's delta at stage 0 (alpha = 0.5)
    assert est._loss.delta == delta if loss == "huber" else True
    assert tree.n_leaves == 4
    for j in range(tree.n_leaves):
        r = resid[leaf == j]
        value = float(tree.leaf_values[j])
        if loss == "huber":  # median + mean of the deviations from it, clipped at delta
            med = lower_median(r)
            expected = med + np.mean(np.clip(r - med, -delta, delta))
            assert value == pytest.approx(expected, rel=1e-12, abs=1e-12)
        else:  # the lower median of the leaf's residuals
            assert value == lower_median(r)


def test_hist_mode_accepts_missing_values():
    X, y = make_friedman1(n_samples=400, random_state=0)
    X[::7, 0] = np.nan
    est = BoostingRegressor(tree_method="hist", n_estimators=20, learning_rate=0.2).fit(X, y)
    assert np.isfinite(est.predict(X)).all()
    assert est.score(X, y) > 0.6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_hist_mode_on_cuda_matches_cpu():
    X, y = make_friedman1(n_samples=2000, random_state=0)
    kw = dict(tree_method="hist", n_estimators=30, random_state=0)
    cpu = BoostingRegressor(device="cpu", **kw).fit(X, y)
    gpu = BoostingRegressor(device="cuda", **kw).fit(X, y)
    np.testing.assert_allclose(gpu.predict(X), cpu.predict(X), rtol=1e-9, atol=1e-9)
