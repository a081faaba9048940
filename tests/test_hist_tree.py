"""Hist mode: quantile binning and the histogram (Newton) tree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.tree import DecisionTreeRegressor

from residuals.boosting._binning import BinMapper
from residuals.boosting._hist import HistTree
from residuals.boosting._hist_data import prepare

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def squared_error_grads(y, raw=None):
    """Gradient and hessian of 0.5*(y - F)^2 at F = raw (default 0)."""
    y = torch.as_tensor(np.asarray(y, dtype=np.float64))
    raw = torch.zeros_like(y) if raw is None else torch.as_tensor(raw, dtype=torch.float64)
    return raw - y, torch.ones_like(y)


def integer_data(n=3000, n_features=6, n_values=40, seed=0):
    """Integer features (every value its own bin, so bin splits == exact splits)
    and a continuous target with structure on several features."""
    rng = np.random.RandomState(seed)
    X = rng.randint(0, n_values, size=(n, n_features)).astype(np.float64)
    y = (
        np.sin(X[:, 0] / 6.0)
        + 0.8 * (X[:, 1] > 23)
        + 0.05 * X[:, 2] * (X[:, 3] < 10)
        + 0.3 * rng.randn(n)
    )
    return X, y


def fit_tree(X, y, sample_weight=None, features=None, **params):
    mapper = BinMapper().fit(X)
    Xb = mapper.transform(X)
    g, h = squared_error_grads(y)
    w = None if sample_weight is None else torch.as_tensor(sample_weight, dtype=torch.float64)
    tree = HistTree(n_bins=mapper.missing_bin + 1, **params).fit(
        Xb, g, h, sample_weight=w, features=features
    )
    return tree, mapper, Xb


# ----------------------------------------------------------------- binning
class TestBinMapper:
    def test_quantile_edges_match_scikit_learn(self):
        binning = pytest.importorskip("sklearn.ensemble._hist_gradient_boosting.binning")
        rng = np.random.RandomState(0)
        X = np.column_stack([rng.randn(5000), rng.exponential(size=5000), rng.randint(0, 7, 5000)])
        ours = BinMapper(max_bins=255, subsample=None).fit(X)
        theirs = binning._BinMapper(n_bins=256, subsample=None).fit(X)
        for mine, ref in zip(ours.bin_thresholds_, theirs.bin_thresholds_):
            np.testing.assert_allclose(mine, ref)
        np.testing.assert_array_equal(ours.n_bins_, theirs.n_bins_non_missing_)
        np.testing.assert_array_equal(ours.transform(X).numpy(), theirs.transform(X))

    def test_quantile_bins_are_balanced(self):
        x = np.random.RandomState(1).rand(25_500, 1)
        mapper = BinMapper(max_bins=255).fit(x)
        assert mapper.n_bins_.tolist() == [255]
        counts = np.bincount(mapper.transform(x).numpy().ravel(), minlength=255)
        assert counts.min() >= 99 and counts.max() <= 101  # 25_500 / 255 = 100 per bin

    @pytest.mark.parametrize("max_bins", [2, 3, 16, 255])
    def test_at_most_max_bins(self, max_bins):
        X = np.random.RandomState(2).randn(2000, 3)
        X[::7, 1] = np.nan
        mapper = BinMapper(max_bins=max_bins).fit(X)
        Xb = mapper.transform(X).numpy()
        assert mapper.missing_bin == max_bins
        assert (mapper.n_bins_ <= max_bins).all() and (mapper.n_bins_ >= max_bins - 1).all()
        present = Xb[~np.isnan(X)]
        assert present.max() < max_bins
        assert (Xb[np.isnan(X)] == max_bins).all()

    def test_few_distinct_values_one_bin_each(self):
        x = np.array([[7.0], [0.0], [1.5], [0.0], [7.0], [1.5]])
        mapper = BinMapper().fit(x)
        assert mapper.n_bins_.tolist() == [3]
        np.testing.assert_allclose(mapper.bin_thresholds_[0], [0.75, 4.25])
        assert mapper.transform(x).numpy().ravel().tolist() == [2, 0, 1, 0, 2, 1]

    def test_nan_gets_the_missing_bin(self):
        x = np.array([[1.0], [np.nan], [2.0], [np.nan], [3.0]])
        mapper = BinMapper(max_bins=255).fit(x)
        assert mapper.transform(x).numpy().ravel().tolist() == [0, 255, 1, 255, 2]
        assert mapper.n_bins_.tolist() == [3]  # NaN is not one of the value bins

    def test_unseen_values_fall_in_the_enclosing_bin(self):
        mapper = BinMapper().fit(np.array([[0.0], [1.0], [2.0], [3.0]]))  # cuts 0.5, 1.5, 2.5
        new = np.array(
            [[-100.0], [-np.inf], [0.5], [0.7], [1.49], [2.6], [1e9], [np.inf], [np.nan]]
        )
        assert mapper.transform(new).numpy().ravel().tolist() == [0, 0, 0, 1, 1, 3, 3, 3, 255]

    def test_constant_and_all_missing_features(self):
        X = np.column_stack([np.full(50, 4.2), np.full(50, np.nan), np.arange(50.0)])
        mapper = BinMapper().fit(X)
        assert mapper.n_bins_.tolist() == [1, 1, 50]
        Xb = mapper.transform(X).numpy()
        assert (Xb[:, 0] == 0).all() and (Xb[:, 1] == 255).all()
        # A value never seen on a constant feature still maps to its only bin.
        assert mapper.transform(np.array([[99.0, 1.0, 3.0]])).numpy().tolist() == [[0, 0, 3]]

    def test_output_layout(self):
        X = np.random.RandomState(3).rand(100, 4).astype(np.float32)
        Xb = BinMapper(max_bins=10).fit(X).transform(X)
        assert Xb.dtype == torch.uint8 and Xb.shape == (100, 4)
        assert Xb.T.is_contiguous()  # feature-major: what the histogram kernel reads
        assert Xb.device.type == "cpu"

    def test_subsample_is_seeded(self):
        X = np.random.RandomState(4).randn(5000, 2)
        a = BinMapper(max_bins=32, subsample=500, random_state=0).fit(X)
        b = BinMapper(max_bins=32, subsample=500, random_state=0).fit(X)
        c = BinMapper(max_bins=32, subsample=None).fit(X)
        np.testing.assert_array_equal(a.bin_thresholds_[0], b.bin_thresholds_[0])
        assert not np.array_equal(a.bin_thresholds_[0], c.bin_thresholds_[0])

    @pytest.mark.parametrize("bad", [1, 256, 2.5, True])
    def test_rejects_bad_max_bins(self, bad):
        with pytest.raises(ValueError, match="max_bins"):
            BinMapper(max_bins=bad).fit(np.zeros((3, 1)))

    def test_transform_errors(self):
        with pytest.raises(RuntimeError, match="not fitted"):
            BinMapper().transform(np.zeros((2, 2)))
        mapper = BinMapper().fit(np.zeros((3, 2)))
        with pytest.raises(ValueError, match="2 features"):
            mapper.transform(np.zeros((3, 5)))
        with pytest.raises(ValueError, match="2-D"):
            mapper.transform(np.zeros(3))


# -------------------------------------------------------------------- tree
class TestHistTree:
    def test_finds_the_step(self):
        x = np.arange(100.0)[:, None]
        y = np.where(x[:, 0] >= 37, 2.0, 0.0)
        tree, mapper, Xb = fit_tree(x, y, max_depth=1)
        assert tree.n_leaves == 2
        assert tree.feature[0] == 0
        assert mapper.bin_threshold(0, tree.threshold_bin[0]) == 36.5
        # Leaf value = mean residual (gradient -y at F = 0, hessian 1).
        np.testing.assert_allclose(sorted(tree.leaf_values.tolist()), [0.0, 2.0])
        np.testing.assert_allclose(tree.predict(Xb).numpy(), y)
        # The gain is the sum-of-squares decrease: 100 * var(y).
        np.testing.assert_allclose(tree.gain[0], 100 * y.var())

    def test_leaf_values_are_mean_residuals(self):
        X, y = integer_data()
        raw = np.random.RandomState(5).randn(len(y))
        mapper = BinMapper().fit(X)
        Xb = mapper.transform(X)
        g, h = squared_error_grads(y, raw)
        tree = HistTree(max_depth=3).fit(Xb, g, h)
        leaves = tree.apply(Xb).numpy()
        residual = y - raw
        for leaf in range(tree.n_leaves):
            np.testing.assert_allclose(
                tree.leaf_values[leaf].item(), residual[leaves == leaf].mean()
            )

    @pytest.mark.parametrize("max_leaf_nodes", [None, 6])
    def test_newton_leaf_values_with_weights_and_hessians(self, max_leaf_nodes):
        X, y = integer_data(n=2000)
        X[::17, 0] = np.nan
        rng = np.random.RandomState(6)
        g = torch.as_tensor(rng.randn(2000))
        h = torch.as_tensor(rng.uniform(0.1, 2.0, 2000))
        w = torch.as_tensor(rng.uniform(0.0, 3.0, 2000))
        Xb = BinMapper().fit_transform(X)
        tree = HistTree(max_depth=3, max_leaf_nodes=max_leaf_nodes, min_samples_leaf=30)
        tree.fit(Xb, g, h, sample_weight=w)
        assert tree.n_leaves >= 6 and (max_leaf_nodes is None or tree.n_leaves == 6)
        leaves = tree.apply(Xb).numpy()
        counts = np.bincount(leaves, minlength=tree.n_leaves)
        assert counts.min() >= 30
        for leaf in range(tree.n_leaves):
            m = leaves == leaf
            expected = -(w[m] * g[m]).sum() / (w[m] * h[m]).sum()
            np.testing.assert_allclose(tree.leaf_values[leaf].item(), expected.item())
        np.testing.assert_allclose(
            tree.n_node_samples[tree.leaf_index >= 0], counts[tree.leaf_index[tree.leaf_index >= 0]]
        )

    @pytest.mark.parametrize("min_samples_leaf", [1, 40])
    def test_root_split_is_the_brute_force_optimum(self, min_samples_leaf):
        """Newton gain with non-constant hessians, weights and NaNs, against an
        exhaustive search over every feature, cut and side for the NaNs."""
        rng = np.random.RandomState(19)
        X = rng.randint(0, 12, size=(600, 4)).astype(float)
        X[rng.rand(600, 4) < 0.1] = np.nan
        g = rng.randn(600) + np.nan_to_num(X[:, 2], nan=20.0) / 5  # NaNs of feature 2 look large
        h, w = rng.uniform(0.2, 2.0, 600), rng.uniform(0.1, 1.0, 600)
        Xb = BinMapper().fit_transform(X)
        tree = HistTree(max_depth=1, min_samples_leaf=min_samples_leaf).fit(
            Xb, torch.as_tensor(g), torch.as_tensor(h), sample_weight=torch.as_tensor(w)
        )
        bins = Xb.numpy()
        G, H = (w * g).sum(), (w * h).sum()
        best = (-np.inf, None)
        for f in range(4):
            for t in range(12):
                for nan_left in (False, True):
                    left = (bins[:, f] <= t) | (nan_left & (bins[:, f] == 255))
                    if min(left.sum(), (~left).sum()) < min_samples_leaf:
                        continue
                    GL, HL = (w * g)[left].sum(), (w * h)[left].sum()
                    gain = GL**2 / HL + (G - GL) ** 2 / (H - HL) - G**2 / H
                    if gain > best[0] + 1e-12:
                        best = (gain, (f, t, nan_left))
        np.testing.assert_allclose(tree.gain[0], best[0], rtol=1e-10)
        assert (tree.feature[0], tree.threshold_bin[0], tree.missing_left[0]) == best[1]

    @pytest.mark.parametrize("max_depth", [0, 1, 2, 4])
    def test_max_depth(self, max_depth):
        X, y = integer_data()
        tree, _, Xb = fit_tree(X, y, max_depth=max_depth)
        assert tree.n_leaves == 2**max_depth  # rich enough data to fill every level
        assert tree.depth == max_depth
        assert len(np.unique(tree.apply(Xb).numpy())) == 2**max_depth

    @pytest.mark.parametrize(
        "max_leaf_nodes, max_depth", [(2, None), (5, None), (13, None), (13, 3)]
    )
    def test_max_leaf_nodes(self, max_leaf_nodes, max_depth):
        X, y = integer_data()
        tree, _, Xb = fit_tree(X, y, max_depth=max_depth, max_leaf_nodes=max_leaf_nodes)
        assert tree.n_leaves == min(max_leaf_nodes, 2 ** (max_depth or 64))
        if max_depth is not None:
            assert tree.depth <= max_depth
        assert len(np.unique(tree.apply(Xb).numpy())) == tree.n_leaves

    def test_best_first_splits_by_gain(self):
        X, y = integer_data()
        tree, _, _ = fit_tree(X, y, max_depth=None, max_leaf_nodes=6)
        internal = np.flatnonzero(tree.children_left >= 0)
        # Best-first: an internal node's gain never exceeds that of the node split before it
        # unless it was not yet available (a child of a later split).
        assert tree.gain[0] == tree.gain[internal].max()

    @pytest.mark.parametrize("max_leaf_nodes", [None, 10])
    @pytest.mark.parametrize("min_samples_leaf", [1, 50, 400])
    def test_min_samples_leaf(self, min_samples_leaf, max_leaf_nodes):
        X, y = integer_data()
        tree, _, Xb = fit_tree(
            X, y, max_depth=5, max_leaf_nodes=max_leaf_nodes, min_samples_leaf=min_samples_leaf
        )
        counts = np.bincount(tree.apply(Xb).numpy(), minlength=tree.n_leaves)
        assert counts.min() >= min_samples_leaf
        assert tree.n_leaves > 1

    def test_min_weight_leaf(self):
        X, y = integer_data()
        w = np.random.RandomState(7).uniform(0.5, 1.5, len(y))
        tree, _, Xb = fit_tree(X, y, sample_weight=w, max_depth=6, min_weight_leaf=60.0)
        leaves = tree.apply(Xb).numpy()
        weights = np.bincount(leaves, weights=w, minlength=tree.n_leaves)
        assert weights.min() >= 60.0 and tree.n_leaves > 4

    def test_min_impurity_decrease_matches_scikit_learn(self):
        X, y = integer_data()
        for threshold in (0.0, 0.01, 0.05, 10.0):
            tree, _, _ = fit_tree(X, y, max_depth=4, min_impurity_decrease=threshold)
            ref = DecisionTreeRegressor(max_depth=4, min_impurity_decrease=threshold).fit(X, y)
            assert tree.n_leaves == ref.get_n_leaves(), threshold

    def test_zero_weight_rows_are_ignored(self):
        X, y = integer_data()
        rng = np.random.RandomState(8)
        keep = rng.rand(len(y)) < 0.6
        y_poisoned = np.where(keep, y, 1e3 * rng.randn(len(y)))
        tree, mapper, Xb = fit_tree(
            X, y_poisoned, sample_weight=keep.astype(float), max_depth=3, min_samples_leaf=5
        )
        g, h = squared_error_grads(y[keep])
        ref = HistTree(max_depth=3, min_samples_leaf=5).fit(Xb[torch.as_tensor(keep)], g, h)
        np.testing.assert_allclose(tree.predict(Xb).numpy(), ref.predict(Xb).numpy())
        assert tree.n_node_samples[0] == keep.sum()

    def test_unit_weights_equal_no_weights(self):
        X, y = integer_data()
        tree, _, Xb = fit_tree(
            X, y, sample_weight=np.ones(len(y)), max_depth=4, min_weight_leaf=30.0
        )
        ref, _, _ = fit_tree(X, y, max_depth=4, min_weight_leaf=30.0)
        np.testing.assert_array_equal(tree.threshold_bin, ref.threshold_bin)
        np.testing.assert_allclose(tree.predict(Xb).numpy(), ref.predict(Xb).numpy())
        np.testing.assert_allclose(tree.weighted_n_node_samples, tree.n_node_samples)

    def test_integer_weights_equal_repeated_rows(self):
        X, y = integer_data(n=1500)
        reps = np.random.RandomState(9).randint(1, 4, len(y))
        tree, _, Xb = fit_tree(X, y, sample_weight=reps.astype(float), max_depth=3)
        ref, _, _ = fit_tree(np.repeat(X, reps, 0), np.repeat(y, reps), max_depth=3)
        np.testing.assert_allclose(tree.predict(Xb).numpy(), ref.predict(Xb).numpy())
        np.testing.assert_allclose(tree.feature_importances(6), ref.feature_importances(6))

    def test_features_subset(self):
        X, y = integer_data()
        tree, _, Xb = fit_tree(X, y, max_depth=3, features=[2, 4, 5])
        used = set(tree.feature[tree.feature >= 0].tolist())
        assert used <= {2, 4, 5} and used
        sub, _, Xb_sub = fit_tree(X[:, [2, 4, 5]], y, max_depth=3)
        np.testing.assert_allclose(tree.predict(Xb).numpy(), sub.predict(Xb_sub).numpy())
        importances = tree.feature_importances(6)
        assert importances[[0, 1, 3]].tolist() == [0.0, 0.0, 0.0] and importances[2] > 0

    @pytest.mark.parametrize("nan_like", ["left", "right"])
    def test_missing_values_go_to_the_better_side(self, nan_like):
        rng = np.random.RandomState(10)
        x = rng.randint(0, 100, 1000) / 100.0
        y = np.where(x > 0.5, 5.0, -5.0)
        missing = rng.rand(1000) < 0.2
        y[missing] = -5.0 if nan_like == "left" else 5.0
        x[missing] = np.nan
        tree, mapper, Xb = fit_tree(x[:, None], y, max_depth=1)
        assert tree.missing_left[0] == (nan_like == "left")
        np.testing.assert_allclose(tree.predict(Xb).numpy(), y)
        probe = mapper.transform(np.array([[np.nan]]))
        assert tree.predict(probe).item() == (-5.0 if nan_like == "left" else 5.0)

    def test_split_on_missingness(self):
        rng = np.random.RandomState(11)
        x = rng.rand(500)
        missing = rng.rand(500) < 0.3
        y = np.where(missing, 3.0, 0.0)
        x[missing] = np.nan
        tree, _, Xb = fit_tree(x[:, None], y, max_depth=1)
        np.testing.assert_allclose(tree.predict(Xb).numpy(), y)

    def test_unseen_missing_values_follow_the_larger_child(self):
        x = np.arange(100.0)
        y = np.where(x < 80, 0.0, 1.0)
        tree, mapper, _ = fit_tree(x[:, None], y, max_depth=1)
        probe = mapper.transform(np.array([[np.nan]]))
        assert tree.predict(probe).item() == 0.0  # 80 rows went left

    @pytest.mark.parametrize(
        "max_depth, max_leaf_nodes", [(1, None), (3, None), (5, None), (None, 7), (4, 11)]
    )
    def test_matches_decision_tree_regressor(self, max_depth, max_leaf_nodes):
        X, y = integer_data(seed=12)
        tree, _, Xb = fit_tree(
            X, y, max_depth=max_depth, max_leaf_nodes=max_leaf_nodes, min_samples_leaf=3
        )
        ref = DecisionTreeRegressor(
            max_depth=max_depth, max_leaf_nodes=max_leaf_nodes, min_samples_leaf=3
        ).fit(X, y)
        assert tree.n_leaves == ref.get_n_leaves()
        np.testing.assert_allclose(tree.predict(Xb).numpy(), ref.predict(X), atol=1e-12)
        np.testing.assert_allclose(
            tree.feature_importances(X.shape[1]),
            ref.tree_.compute_feature_importances(normalize=False),
            rtol=1e-9,
        )

    @pytest.mark.parametrize("max_leaf_nodes", [None, 200])
    def test_fully_grown_tree_matches_decision_tree_regressor(self, max_leaf_nodes):
        X, y = integer_data(n=2000, seed=3)
        tree, _, Xb = fit_tree(X, y, max_depth=None, max_leaf_nodes=max_leaf_nodes)
        ref = DecisionTreeRegressor(max_leaf_nodes=max_leaf_nodes).fit(X, y)
        assert (tree.n_leaves, tree.depth) == (ref.get_n_leaves(), ref.get_depth())
        np.testing.assert_allclose(tree.predict(Xb).numpy(), ref.predict(X), atol=1e-10)

    def test_matches_weighted_decision_tree_regressor(self):
        X, y = integer_data(seed=13)
        w = np.random.RandomState(13).uniform(0.2, 2.0, len(y))
        tree, _, Xb = fit_tree(X, y, sample_weight=w, max_depth=4)
        ref = DecisionTreeRegressor(max_depth=4).fit(X, y, sample_weight=w)
        np.testing.assert_allclose(tree.predict(Xb).numpy(), ref.predict(X), atol=1e-12)

    def test_subtraction_trick_equals_direct_histograms(self):
        X, y = integer_data(seed=14)
        X[::9, 0] = np.nan
        mapper = BinMapper(max_bins=63).fit(X)
        Xb = mapper.transform(X)
        g = torch.as_tensor(np.random.RandomState(14).randn(len(y)))
        h = torch.as_tensor(np.random.RandomState(15).uniform(0.5, 1.5, len(y)))
        tree = HistTree(n_bins=64)
        data, _, _ = prepare(Xb, g, h, None, None, tree.n_bins)
        assert data.cw is not None  # non-constant hessian: counts get their own histogram
        parent, parent_cw = tree._histograms(data, None, None, 1)
        right = torch.as_tensor(np.flatnonzero(X[:, 1] > 20))
        left = torch.as_tensor(np.flatnonzero(~(X[:, 1] > 20)))
        small, small_cw = tree._histograms(data, right, None, 1)
        direct, direct_cw = tree._histograms(data, left, None, 1)
        torch.testing.assert_close(parent - small, direct, rtol=0, atol=1e-10)
        torch.testing.assert_close(parent_cw - small_cw, direct_cw, rtol=0, atol=0)
        # Both children of a level in one pass: slots 0 and 1.
        rows = torch.cat((right, left))
        slots = torch.cat((torch.zeros(len(right)), torch.ones(len(left)))).long()
        both, _ = tree._histograms(data, rows, slots, 2)
        torch.testing.assert_close(both[0], small[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(both[1], direct[0], rtol=0, atol=1e-12)
        # Against a plain numpy histogram of one feature.
        ref = np.bincount(Xb[:, 0].numpy(), weights=g.numpy(), minlength=64)
        np.testing.assert_allclose(
            parent[0, 0].real.numpy(), ref, atol=1e-12
        )  # (node, feature, bin)

    def test_row_major_bins_give_the_same_tree(self):
        X, y = integer_data()
        tree, _, Xb = fit_tree(X, y, max_depth=4)
        g, h = squared_error_grads(y)
        row_major = Xb.contiguous()
        assert not row_major.T.is_contiguous()
        other = HistTree(max_depth=4).fit(row_major, g, h)
        np.testing.assert_array_equal(tree.feature, other.feature)
        np.testing.assert_array_equal(tree.threshold_bin, other.threshold_bin)
        np.testing.assert_array_equal(other.apply(row_major).numpy(), tree.apply(Xb).numpy())

    def test_training_leaves_cache_is_exact_and_invalidated(self):
        X, y = integer_data()
        first, _, Xb = fit_tree(X, y, max_depth=4)
        fresh = first.apply(Xb.clone()).numpy()  # a different tensor: routed from scratch
        np.testing.assert_array_equal(first.apply(Xb).numpy(), fresh)  # served from the fit
        g, h = squared_error_grads(-y)
        second = HistTree(max_depth=2).fit(Xb, g, h)
        np.testing.assert_array_equal(first.apply(Xb).numpy(), fresh)  # not the second tree's
        np.testing.assert_array_equal(second.apply(Xb).numpy(), second.apply(Xb.clone()).numpy())
        Xb[:, :] = 0  # in place: every row now falls in the leftmost leaf
        assert len(np.unique(second.apply(Xb).numpy())) == 1

    def test_root_counts_cache_follows_the_matrix(self):
        import gc

        from residuals.boosting import _hist_data

        X, y = integer_data()
        Xb = BinMapper().fit_transform(X)
        rng = np.random.RandomState(17)
        for _ in range(3):  # later fits reuse the cached counts of the same matrix
            g = torch.as_tensor(rng.randn(len(y)))
            h = torch.ones_like(g)
            cached = HistTree(max_depth=3).fit(Xb, g, h)
            fresh = HistTree(max_depth=3).fit(Xb.clone(), g, h)
            np.testing.assert_array_equal(cached.threshold_bin, fresh.threshold_bin)
            np.testing.assert_allclose(cached.leaf_values.numpy(), fresh.leaf_values.numpy())
        Xb[:, 1] = 0  # in place: the cached counts must not be reused
        g = torch.as_tensor(rng.randn(len(y)))
        cached = HistTree(max_depth=3).fit(Xb, g, torch.ones_like(g))
        assert 1 not in cached.feature
        assert _hist_data._root_counts_cache.get(Xb) is not None
        del Xb
        gc.collect()
        assert _hist_data._root_counts_cache._entry is None  # released with the matrix

    @pytest.mark.parametrize("nan", [False, True])
    def test_memory_bounded_paths_grow_the_same_tree(self, monkeypatch, nan):
        from residuals.boosting import _histograms, _split_search

        X, y = integer_data(n=4000, seed=18)
        if nan:
            X[::13, 3] = np.nan
        w = np.random.RandomState(18).uniform(0.5, 2.0, len(y))  # weights: count histograms too
        reference, _, Xb = fit_tree(X, y, sample_weight=w, max_depth=7, min_samples_leaf=5)
        # Histograms of a single node only, and one node per search pass.
        monkeypatch.setattr(_histograms, "_HIST_BYTES", 1)
        monkeypatch.setattr(_split_search, "_SEARCH_ELEMENTS", 1)
        bounded, _, _ = fit_tree(X, y, sample_weight=w, max_depth=7, min_samples_leaf=5)
        assert bounded.n_leaves == reference.n_leaves > 40
        # Sums in another order may break exact ties (two features cutting a small
        # node the same way) differently, but the partition, hence the fit, is the same.
        np.testing.assert_allclose(bounded.predict(Xb).numpy(), reference.predict(Xb).numpy())
        np.testing.assert_allclose(
            np.sort(bounded.gain), np.sort(reference.gain), rtol=1e-9, atol=1e-12
        )

    def test_accelerator_kernels_agree_with_the_cpu_ones(self):
        """The two-pass real scatter and torch.nonzero, used off the CPU, run here too."""
        from residuals.boosting._hist_data import _nonzero
        from residuals.boosting._histograms import _scatter_hist

        rng = np.random.RandomState(20)
        XT = torch.as_tensor(rng.randint(0, 16, size=(5, 3000)), dtype=torch.uint8)
        values = torch.complex(torch.as_tensor(rng.randn(3000)), torch.as_tensor(rng.rand(3000)))
        rows = torch.as_tensor(np.flatnonzero(rng.rand(3000) < 0.4))
        slots = torch.as_tensor(rng.randint(0, 4, size=len(rows)))
        fused = _scatter_hist(XT, values, 64, 16, rows, slots, fused=True)
        torch.testing.assert_close(
            _scatter_hist(XT, values, 64, 16, rows, slots, fused=False), fused
        )
        mask = torch.as_tensor(rng.rand(3000) < 0.3)
        assert torch.equal(_nonzero(mask, use_numpy=False), _nonzero(mask, use_numpy=True))

    def test_histograms_in_chunks_equal_one_pass(self, monkeypatch):
        """The int64 index is built chunk by chunk: any chunk size gives the same sums."""
        from residuals.boosting import _histograms, _kernels

        rng = np.random.RandomState(21)
        XT = torch.as_tensor(rng.randint(0, 16, size=(5, 3001)), dtype=torch.uint8)
        values = torch.complex(torch.as_tensor(rng.randn(3001)), torch.as_tensor(rng.rand(3001)))
        rows = torch.as_tensor(np.flatnonzero(rng.rand(3001) < 0.4))
        slots = torch.as_tensor(rng.randint(0, 4, size=len(rows)))
        whole = torch.zeros((5, 64), dtype=torch.complex128)
        whole.scatter_add_(1, torch.add(XT[:, rows], slots, alpha=16), values[rows].expand(5, -1))
        root = torch.zeros((5, 16), dtype=torch.complex128).scatter_add_(
            1, XT.long(), values.expand(5, -1)
        )
        with _kernels.disabled():  # the chunks are torch's loop's (the C loop needs no index)
            for elements in (5, 7 * 5, 1 << 20):  # one row, 7 rows, every row per chunk
                for name in ("_SLICE_INDEX_ELEMENTS", "_GATHER_INDEX_ELEMENTS"):
                    monkeypatch.setattr(_histograms, name, elements)
                torch.testing.assert_close(
                    _histograms._scatter_hist(XT, values, 64, 16, rows, slots), whole
                )
                torch.testing.assert_close(_histograms._scatter_hist(XT, values, 16, 16), root)

    def test_leaf_values_can_be_overwritten(self):
        X, y = integer_data()
        tree, _, Xb = fit_tree(X, y, max_depth=2)
        tree.leaf_values = torch.arange(4, dtype=torch.float64)
        np.testing.assert_array_equal(
            tree.predict(Xb).numpy(), tree.apply(Xb).numpy().astype(float)
        )
        assert tree.apply(Xb).dtype == torch.int64 and tree.predict(Xb).dtype == torch.float64

    def test_no_split_when_nothing_to_gain(self):
        X, _ = integer_data()
        tree, _, Xb = fit_tree(X, np.full(len(X), 3.0), max_depth=3)
        assert tree.n_leaves == 1
        np.testing.assert_allclose(tree.predict(Xb).numpy(), 3.0)

    def test_all_weights_zero(self):
        X, y = integer_data(n=100)
        tree, _, Xb = fit_tree(X, y, sample_weight=np.zeros(100), max_depth=3)
        assert tree.n_leaves == 1 and tree.predict(Xb).abs().max().item() == 0.0

    def test_boosting_with_hist_trees_tracks_gbrt(self):
        from sklearn.datasets import make_friedman1
        from sklearn.ensemble import GradientBoostingRegressor

        X, y = make_friedman1(n_samples=3000, n_features=10, noise=0.5, random_state=0)
        X_test, y_test = make_friedman1(n_samples=2000, n_features=10, noise=0.5, random_state=1)
        mapper = BinMapper(random_state=0).fit(X)
        Xb, Xb_test = mapper.transform(X), mapper.transform(X_test)
        target = torch.as_tensor(y)
        raw = torch.full_like(target, y.mean())
        raw_test = torch.full((len(y_test),), y.mean(), dtype=torch.float64)
        for _ in range(50):
            tree = HistTree(max_depth=3).fit(Xb, raw - target, torch.ones_like(target))
            raw += 0.1 * tree.predict(Xb)
            raw_test += 0.1 * tree.predict(Xb_test)
        ours = float(((raw_test.numpy() - y_test) ** 2).mean())
        ref = GradientBoostingRegressor(
            n_estimators=50, max_depth=3, learning_rate=0.1, random_state=0
        ).fit(X, y)
        theirs = float(((ref.predict(X_test) - y_test) ** 2).mean())
        assert ours < 1.02 * theirs

    def test_ties_go_to_a_seeded_random_feature_order(self):
        # Four copies of one column: every feature splits the rows alike.
        x = np.arange(200.0) % 20
        X = np.repeat(x[:, None], 4, axis=1)
        y = np.where(x >= 7, 1.0, 0.0)
        Xb = BinMapper().fit_transform(X)
        g, h = squared_error_grads(y)
        assert HistTree(max_depth=1).fit(Xb, g, h).feature[0] == 0  # None: the lowest feature
        trees = [HistTree(max_depth=1, random_state=s).fit(Xb, g, h) for s in range(20)]
        assert {t.feature[0] for t in trees} == {0, 1, 2, 3}
        for t in trees:  # every tie-break picks an optimal split: the step between 6 and 7
            assert t.threshold_bin[0] == 6
            np.testing.assert_allclose(t.predict(Xb).numpy(), y)
        again = [HistTree(max_depth=1, random_state=3).fit(Xb, g, h).feature[0] for _ in range(3)]
        assert len(set(again)) == 1
        # Rounding noise is a tie too: a gain that differs in the last bits.
        g_noisy = g.clone()
        g_noisy[0] *= 1 + 1e-15
        assert HistTree(max_depth=1).fit(Xb, g_noisy, h).feature[0] == 0

    @pytest.mark.parametrize("use_numpy", [True, False])  # False: the accelerator kernel
    def test_first_best_against_brute_force(self, use_numpy):
        from residuals.boosting._split_search import _first_best

        rng = np.random.RandomState(8)
        K, D, F, c = 5, 2, 6, 7
        score = torch.as_tensor(
            rng.randint(0, 4, size=(K, D, F, c)).astype(np.float64)
        )  # many ties
        score[1] = -np.inf  # a node with no valid split
        order = torch.as_tensor(rng.permutation(F))
        flat_order = (
            (torch.arange(D).view(D, 1, 1) * F + order.view(1, F, 1)) * c
            + torch.arange(c).view(1, 1, c)
        ).view(-1)
        best, arg = _first_best(score, flat_order, use_numpy=use_numpy)
        for k in range(K):
            s = score[k].numpy()
            assert best[k] == s.max()
            d, f, b = np.unravel_index(int(arg[k]), s.shape)
            assert s[d, f, b] == s.max()
            # first in tie-break order: direction, then the feature's rank, then the cut
            rank = {int(x): i for i, x in enumerate(order)}
            tied = [(dd, rank[ff], bb) for dd, ff, bb in zip(*np.nonzero(s == s.max()))]
            assert (d, rank[f], b) == min(tied)
        best0, arg0 = _first_best(
            score, None, use_numpy=use_numpy
        )  # no order: the lowest flat index
        for k in range(K):
            assert int(arg0[k]) == int(
                np.flatnonzero(score[k].numpy().ravel() == best0[k].item())[0]
            )

    def test_cut_is_centred_between_the_node_values(self):
        # Bins 1 .. 8 are empty: every cut between bin 0 and bin 9 splits alike.
        values = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 100.0])
        Xb = torch.tensor([[0] * 30 + [9] * 30], dtype=torch.uint8).T
        y = np.r_[np.zeros(30), np.ones(30)]
        g, h = squared_error_grads(y)
        middle = HistTree(max_depth=1, n_bins=11).fit(Xb, g, h)
        assert middle.threshold_bin[0] == 4  # (0 + 9 - 1) // 2, the middle of the run
        table = np.r_[values][None, :]
        tree = HistTree(max_depth=1, n_bins=11).fit(Xb, g, h, bin_values=table)
        # an exact tree cuts at (0 + 100) / 2 = 50; the nearest cut is (8 + 100) / 2 = 54
        assert tree.threshold_bin[0] == 8
        exact = DecisionTreeRegressor(max_depth=1).fit(values[Xb.numpy()], y)
        cuts = 0.5 * (values[:-1] + values[1:])
        assert tree.threshold_bin[0] == np.argmin(np.abs(cuts - exact.tree_.threshold[0]))
        np.testing.assert_array_equal(tree.apply(Xb).numpy(), middle.apply(Xb).numpy())
        with pytest.raises(ValueError, match="bin_values has shape"):
            HistTree(max_depth=1, n_bins=11).fit(Xb, g, h, bin_values=table[:, :5])

    def test_bin_values(self):
        X = np.c_[np.r_[0.0, 0.0, 1.0, 3.0, np.nan], np.arange(5.0)]
        mapper = BinMapper(max_bins=4).fit(X)
        np.testing.assert_array_equal(mapper.bin_values_[0], [0.0, 1.0, 3.0])
        table = mapper.bin_value_table().numpy()
        assert table.shape == (2, 4)
        np.testing.assert_array_equal(table[0], [0.0, 1.0, 3.0, 3.0])  # unused bins repeat the last
        wide = BinMapper(max_bins=4).fit(np.arange(100.0)[:, None])
        cuts, values = wide.bin_thresholds_[0], wide.bin_values_[0]
        edges = np.r_[0.0, cuts, 99.0]
        np.testing.assert_allclose(values, 0.5 * (edges[:-1] + edges[1:]))

    def test_input_errors(self):
        X, y = integer_data(n=50)
        Xb = BinMapper().fit_transform(X)
        g, h = squared_error_grads(y)
        with pytest.raises(TypeError, match="uint8"):
            HistTree().fit(Xb.long(), g, h)
        with pytest.raises(ValueError, match="rows"):
            HistTree().fit(Xb, g[:10], h)
        with pytest.raises(ValueError, match="sample_weight"):
            HistTree().fit(Xb, g, h, sample_weight=-torch.ones(50))
        with pytest.raises(ValueError, match="features"):
            HistTree().fit(Xb, g, h, features=[7])
        with pytest.raises(ValueError, match="n_bins"):
            HistTree(n_bins=16).fit(Xb, g, h)
        with pytest.raises(ValueError, match="max_leaf_nodes"):
            HistTree(max_leaf_nodes=1).fit(Xb, g, h)
        with pytest.raises(ValueError, match="min_samples_leaf"):
            HistTree(min_samples_leaf=0).fit(Xb, g, h)
        with pytest.raises(ValueError, match="hessian"):
            HistTree().fit(Xb, g, -h)
        with pytest.raises(ValueError, match="gradient has NaN"):
            HistTree().fit(Xb, torch.full_like(g, float("nan")), h)
        with pytest.raises(RuntimeError, match="not fitted"):
            HistTree().predict(Xb)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("max_leaf_nodes", [None, 9])
def test_cpu_and_cuda_trees_agree(max_leaf_nodes):
    X, y = integer_data(n=20_000, seed=16)
    X[::11, 2] = np.nan
    mapper = BinMapper().fit(X)
    rng = np.random.RandomState(16)
    g = torch.as_tensor(rng.randn(len(y)) - y)
    h = torch.as_tensor(rng.uniform(0.5, 1.5, len(y)))
    w = torch.as_tensor((rng.rand(len(y)) < 0.8).astype(float))
    trees = {}
    for device in ("cpu", "cuda"):
        Xb = mapper.transform(X, device=device)
        tree = HistTree(
            max_depth=4, max_leaf_nodes=max_leaf_nodes, min_samples_leaf=20, random_state=3
        )
        for _ in range(2):  # the second fit reuses the first one's workspace
            tree.fit(
                Xb,
                g.to(device),
                h.to(device),
                sample_weight=w.to(device),
                bin_values=mapper.bin_value_table(device),
            )
        assert tree.leaf_values.device.type == device
        trees[device] = (tree, tree.predict(Xb).cpu())
    (cpu, p_cpu), (gpu, p_gpu) = trees["cpu"], trees["cuda"]
    np.testing.assert_array_equal(cpu.feature, gpu.feature)
    np.testing.assert_array_equal(cpu.threshold_bin, gpu.threshold_bin)
    torch.testing.assert_close(p_cpu, p_gpu, rtol=1e-9, atol=1e-9)
