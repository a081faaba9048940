"""The seed article's example: boosting is three trees, each fitted to the last residuals.

Fit a depth-2 regression tree to the residuals of the model so far, add its
prediction, repeat three times: the sum predicts exactly what
``GradientBoostingRegressor(max_depth=2, n_estimators=3, learning_rate=1.0)``
predicts -- and what ``BoostingRegressor`` with the same parameters predicts.
(The same code is shown in docs/boosting.md.)
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.tree import DecisionTreeRegressor

from residuals.boosting import BoostingRegressor


@pytest.fixture(scope="module")
def quadratic():
    """A noisy quadratic, 100 points: ``y = 3 x^2 + noise``."""
    rng = np.random.RandomState(42)
    X = rng.rand(100, 1) - 0.5
    y = 3 * X[:, 0] ** 2 + 0.05 * rng.randn(100)
    X_new = np.linspace(-0.5, 0.5, 41).reshape(-1, 1)
    return X, y, X_new


def fit_three_trees_by_hand(X, y):
    """Friedman's Algorithm 1 for the squared error, unrolled: F_0 = mean, then 3 trees."""
    f0 = y.mean()
    F = np.full(y.shape[0], f0)  # the model so far, on the training points
    trees = []
    for _ in range(3):
        tree = DecisionTreeRegressor(max_depth=2).fit(X, y - F)  # fit the residual
        trees.append(tree)
        F = F + tree.predict(X)
    return f0, trees


def predict_by_hand(f0, trees, X):
    prediction = np.full(X.shape[0], f0)
    for tree in trees:
        prediction = prediction + tree.predict(X)
    return prediction


def test_three_hand_fitted_trees_equal_sklearn_and_ours_bit_for_bit(quadratic):
    X, y, X_new = quadratic
    f0, trees = fit_three_trees_by_hand(X, y)
    by_hand = predict_by_hand(f0, trees, X_new)

    params = dict(max_depth=2, n_estimators=3, learning_rate=1.0, random_state=42)
    sk = GradientBoostingRegressor(**params).fit(X, y)
    ours = BoostingRegressor(**params).fit(X, y)

    np.testing.assert_array_equal(sk.predict(X_new), by_hand)
    np.testing.assert_array_equal(ours.predict(X_new), by_hand)
    # and every partial sum is a stage of the boosted model
    for m, staged in enumerate(ours.staged_predict(X_new)):
        np.testing.assert_array_equal(staged, predict_by_hand(f0, trees[: m + 1], X_new))
    # the boosted model's trees are the hand-fitted ones
    for tree, ours_tree in zip(trees, ours.estimators_[:, 0]):
        np.testing.assert_array_equal(tree.tree_.threshold, ours_tree.tree_.threshold)
        np.testing.assert_array_equal(tree.tree_.value, ours_tree.tree_.value)


def test_stage_corrections_are_the_hand_trees(quadratic):
    """In the Stagewise view, stage m's correction is tree m's prediction."""
    X, y, X_new = quadratic
    f0, trees = fit_three_trees_by_hand(X, y)
    ours = BoostingRegressor(max_depth=2, n_estimators=3, learning_rate=1.0).fit(X, y)
    steps = list(ours.staged_steps(X_new))
    np.testing.assert_array_equal(steps[0].base[:, 0], np.full(X_new.shape[0], f0))
    for step, tree in zip(steps, trees):
        np.testing.assert_array_equal(step.correction[:, 0], tree.predict(X_new))


def test_residuals_shrink_each_stage(quadratic):
    X, y, _ = quadratic
    ours = BoostingRegressor(max_depth=2, n_estimators=3, learning_rate=1.0).fit(X, y)
    mse = [np.mean((y - p) ** 2) for p in ours.staged_predict(X)]
    assert mse[0] > mse[1] > mse[2]
    np.testing.assert_allclose(ours.train_score_, mse, rtol=1e-12)


def test_first_tree_on_y_itself_agrees_up_to_rounding(quadratic):
    """The article's shortcut (first tree fitted to y, no F_0): same model up to rounding."""
    X, y, X_new = quadratic
    residual, prediction = y, np.zeros(X_new.shape[0])
    for _ in range(3):
        tree = DecisionTreeRegressor(max_depth=2).fit(X, residual)
        residual = residual - tree.predict(X)
        prediction += tree.predict(X_new)
    ours = BoostingRegressor(max_depth=2, n_estimators=3, learning_rate=1.0).fit(X, y)
    np.testing.assert_allclose(ours.predict(X_new), prediction, rtol=0, atol=1e-12)
