"""The booster against ported scikit-learn code: warm starts that change the trees, an
``init`` Pipeline without sample weights, and the one-class message (docs/reliability.md)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_hastie_10_2
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
from sklearn.pipeline import make_pipeline

from residuals.boosting import BoostingClassifier, BoostingRegressor

X, Y = make_hastie_10_2(n_samples=100, random_state=1)

# every tree parameter set_params may change between two warm-started fits
TREE_CHANGES = [
    ("max_depth", 2),
    ("min_samples_leaf", 5),
    ("max_leaf_nodes", 3),
    ("max_features", 0.5),
    ("min_impurity_decrease", 0.05),
    ("ccp_alpha", 0.01),
    ("min_samples_split", 10),
    ("min_weight_fraction_leaf", 0.1),
]


@pytest.mark.parametrize("param, value", TREE_CHANGES)
def test_warm_start_with_changed_tree_parameters_equals_scikit_learn(param, value):
    ours = BoostingRegressor(n_estimators=100, max_depth=1, warm_start=True, random_state=0).fit(
        X, Y
    )
    ref = GradientBoostingRegressor(n_estimators=100, max_depth=1, warm_start=True, random_state=0)
    ref.fit(X, Y)
    ours.set_params(n_estimators=110, **{param: value}).fit(X, Y)
    ref.set_params(n_estimators=110, **{param: value}).fit(X, Y)
    assert ours.estimators_.shape == ref.estimators_.shape == (110, 1)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))  # bit for bit
    for a, b in zip(ours.staged_predict(X), ref.staged_predict(X)):
        np.testing.assert_array_equal(a, b)
    new, old = ours.estimators_[-1, 0], ours.estimators_[0, 0]
    assert new.get_params()[param] == value and old.get_params()[param] != value


def test_warm_start_with_changed_tree_parameters_equals_scikit_learn_classifier():
    ours = BoostingClassifier(n_estimators=20, max_depth=1, warm_start=True, random_state=0).fit(
        X, Y
    )
    ref = GradientBoostingClassifier(n_estimators=20, max_depth=1, warm_start=True, random_state=0)
    ref.fit(X, Y)
    ours.set_params(n_estimators=30, max_depth=3, min_samples_leaf=4).fit(X, Y)
    ref.set_params(n_estimators=30, max_depth=3, min_samples_leaf=4).fit(X, Y)
    np.testing.assert_array_equal(ours.decision_function(X), ref.decision_function(X))


@pytest.mark.parametrize(
    "param, value", [(p, v) for p, v in TREE_CHANGES if p not in ("ccp_alpha", "min_samples_split")]
)
def test_hist_warm_start_builds_the_new_trees_with_the_new_parameters(param, value):
    ours = BoostingRegressor(
        n_estimators=10, max_depth=1, warm_start=True, random_state=0, tree_method="hist"
    ).fit(X, Y)
    before = ours.predict(X)
    bins = ours._learner.bin_mapper
    ours.set_params(n_estimators=15, **{param: value}).fit(X, Y)
    assert ours._learner.params.__getattribute__(param) == value
    assert ours._learner.bin_mapper is bins  # the first fit's bins, kept
    staged = list(ours.staged_predict(X))
    np.testing.assert_array_equal(staged[9], before)  # the first 10 trees are untouched
    if param == "max_depth":
        assert max(t.depth for t in ours.estimators_[10:, 0]) == 2


def test_hist_warm_start_refuses_new_bins():
    ours = BoostingRegressor(n_estimators=5, warm_start=True, tree_method="hist").fit(X, Y)
    with pytest.raises(ValueError, match="cannot change max_bins from 255 to 16"):
        ours.set_params(n_estimators=6, max_bins=16).fit(X, Y)


@pytest.mark.parametrize(
    "est, init",
    [
        (BoostingRegressor, make_pipeline(DummyRegressor())),
        (BoostingClassifier, make_pipeline(DummyClassifier())),
    ],
)
def test_an_init_pipeline_without_sample_weights_gets_scikit_learns_message(est, init):
    message = "The initial estimator Pipeline does not support sample weights."
    ref = {
        BoostingRegressor: GradientBoostingRegressor,
        BoostingClassifier: GradientBoostingClassifier,
    }[est]
    with pytest.raises(ValueError, match=message):
        ref(init=init, n_estimators=2).fit(X, Y, sample_weight=np.ones(len(Y)))
    with pytest.raises(ValueError, match=message):
        est(init=init, n_estimators=2).fit(X, Y, sample_weight=np.ones(len(Y)))
    est(init=init, n_estimators=2).fit(X, Y)  # without weights the Pipeline is fine


def test_one_class_left_by_the_weights_is_named_alone():
    w = (Y == 1).astype(float)
    with pytest.raises(ValueError) as info:
        BoostingClassifier(n_estimators=2).fit(X, Y, sample_weight=w)
    message = str(info.value)
    assert "contains 1 class with non-zero sample weight: [1.0]" in message
    assert "[-1.0] only with zero sample weight" in message
