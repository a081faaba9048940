"""Base learners of the booster: the regression tree fitted at each stage.

A learner turns the booster's validated ``X`` into the form its trees read
(:meth:`prepare`), fits one tree to one column of pseudo-residuals, and gives
the booster what the TreeBoost update needs: the leaf id of every sample and a
writable array of per-leaf values. Two learners share that interface:

* :class:`ExactLearner` -- scikit-learn's public ``DecisionTreeRegressor``
  (``criterion="squared_error"``, ``splitter="best"``), built exactly as
  scikit-learn's GBRT builds it and drawing its seed from the booster's one
  shared ``RandomState``: the source of bit-for-bit parity.
* :class:`HistLearner` -- the project's histogram tree on quantile-binned
  features (:mod:`residuals.boosting._hist`), in torch on CPU or CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.tree import DecisionTreeRegressor

__all__ = ["ExactLearner", "HistLearner", "TreeParams"]


@dataclass(frozen=True)
class TreeParams:
    """Tree-shape parameters, as the estimator's constructor names them."""

    max_depth: int | None
    min_samples_split: int | float
    min_samples_leaf: int | float
    min_weight_fraction_leaf: float
    min_impurity_decrease: float
    max_features: int | float | str | None
    max_leaf_nodes: int | None
    ccp_alpha: float


@dataclass(frozen=True)
class _SparsePair:
    csc: Any
    csr: Any


class ExactLearner:
    """Exact greedy regression trees (scikit-learn ``DecisionTreeRegressor``)."""

    kind = "exact"

    def __init__(self, params: TreeParams, n_features: int):
        self.params = params
        self.n_features = n_features

    def prepare(self, X):
        """Validated float32 ``X`` -> C-ordered float32, or a CSC/CSR pair if sparse.

        Trees are fitted on CSC (column access) and applied to CSR (row access).
        """
        if sparse.issparse(X):
            return _SparsePair(
                sparse.csc_array(X, dtype=np.float32), sparse.csr_array(X, dtype=np.float32)
            )
        return np.ascontiguousarray(X, dtype=np.float32)

    def fit(self, Xp, target: np.ndarray, sample_weight: np.ndarray, rng: np.random.RandomState):
        p = self.params
        tree = DecisionTreeRegressor(
            criterion="squared_error",
            splitter="best",
            max_depth=p.max_depth,
            min_samples_split=p.min_samples_split,
            min_samples_leaf=p.min_samples_leaf,
            min_weight_fraction_leaf=p.min_weight_fraction_leaf,
            min_impurity_decrease=p.min_impurity_decrease,
            max_features=p.max_features,
            max_leaf_nodes=p.max_leaf_nodes,
            random_state=rng,
            ccp_alpha=p.ccp_alpha,
        )
        X_fit = Xp.csc if isinstance(Xp, _SparsePair) else Xp
        return tree.fit(X_fit, target, sample_weight=sample_weight, check_input=False)

    @staticmethod
    def leaf_ids(tree, Xp) -> np.ndarray:
        """Node index of the leaf each row falls in, ``(n_samples,)`` intp."""
        return tree.tree_.apply(Xp.csr if isinstance(Xp, _SparsePair) else Xp)

    @staticmethod
    def leaves(tree) -> np.ndarray:
        return np.nonzero(tree.tree_.children_left == -1)[0]

    @staticmethod
    def leaf_values(tree) -> np.ndarray:
        """Writable float64 view of the per-node values, ``(n_nodes,)``."""
        return tree.tree_.value[:, 0, 0]

    @staticmethod
    def commit_leaf_values(tree, values: np.ndarray) -> None:
        """Nothing to do: :meth:`leaf_values` is a view into the tree."""

    def end_fit(self) -> None:
        """Nothing to release."""

    @staticmethod
    def is_trivial(tree) -> bool:
        return tree.tree_.node_count <= 1

    @staticmethod
    def importances(tree, n_features: int) -> np.ndarray:
        """Unnormalised total weighted impurity decrease per feature.

        ``sum over splits on f of (w_t i_t - w_L i_L - w_R i_R) / w_root``, in
        node order (the order scikit-learn accumulates it in).
        """
        t = tree.tree_
        left, right, feature = t.children_left, t.children_right, t.feature
        w, imp = t.weighted_n_node_samples, t.impurity
        out = np.zeros(n_features, dtype=np.float64)
        for node in np.nonzero(left != -1)[0].tolist():
            lo, hi = left[node], right[node]
            out[feature[node]] += w[node] * imp[node] - w[lo] * imp[lo] - w[hi] * imp[hi]
        out /= w[0]
        return out


class HistLearner:
    """Histogram trees on features binned once per fit (LightGBM-style).

    ``max_features`` is applied per tree (one random feature subset per tree,
    drawn from the booster's ``RandomState``), not per split; ``ccp_alpha`` and
    ``min_samples_split`` have no histogram counterpart and are rejected by the
    estimator when set.
    """

    kind = "hist"

    def __init__(
        self, params: TreeParams, n_features: int, *, max_bins: int, device: str, bin_mapper=None
    ):
        self.params = params
        self.n_features = n_features
        self.max_bins = max_bins
        self.device = device
        self.bin_mapper = bin_mapper
        self._weight = None  # device tensors reused across stages (not pickled)
        self._residual = None  # a class's column of the residuals, copied (multiclass)
        self._bin_values = None  # BinMapper.bin_value_table(), host, per fit
        self.collective = None  # a distributed fit's Collective, set by the booster for a fit

    def __getstate__(self):
        return {
            **self.__dict__,
            "_weight": None,
            "_residual": None,
            "_bin_values": None,
            "collective": None,
        }

    def end_fit(self) -> None:
        """Drop the per-fit buffers."""
        self._weight = self._residual = self._bin_values = self.collective = None

    def fit_binning(self, X: np.ndarray, rng: np.random.RandomState) -> None:
        """Quantile bins of every feature; in a distributed fit, of every rank's rows."""
        from residuals.boosting._binning import BinMapper

        seed = rng.randint(np.iinfo(np.int32).max)
        mapper = BinMapper(max_bins=self.max_bins, random_state=seed, round_to_float32=True)
        if self.collective is None:
            self.bin_mapper = mapper.fit(X)
        else:
            from residuals.boosting._sharded import fit_bins

            fit_bins(mapper, X, self.collective)
            self.bin_mapper = mapper

    def prepare(self, X: np.ndarray):
        return self.bin_mapper.transform(X, device=self.device)

    def _max_features(self) -> int:
        mf, n = self.params.max_features, self.n_features
        if mf is None:
            return n
        if mf == "sqrt":
            return max(1, int(np.sqrt(n)))
        if mf == "log2":
            return max(1, int(np.log2(n)))
        if isinstance(mf, (int, np.integer)):
            return min(int(mf), n)
        return max(1, int(mf * n))

    def fit(self, Xp, target: np.ndarray, sample_weight: np.ndarray, rng: np.random.RandomState):
        import torch

        from residuals.boosting._hist import HistTree

        p, comm = self.params, self.collective
        n = target.shape[0]
        msl = p.min_samples_leaf
        n_all = n if comm is None else comm.n_total
        min_samples_leaf = int(math.ceil(msl * n_all)) if isinstance(msl, float) else int(msl)
        if self._weight is None or self._weight[0] is not sample_weight:
            # The same weights array every stage unless rows are subsampled: copy
            # once. Unit weights are passed as None, which spares the tree its
            # per-stage weight checks (a host sync each); their sum, once too.
            sw = np.asarray(sample_weight, dtype=np.float64)
            unit = bool(np.all(sw == 1.0))
            if comm is not None:  # unit on every rank, agreed once (not once per tree)
                unit = not comm.any(not unit, "unit weights")
            weight_sum = (
                np.sum(sample_weight)
                if comm is None or not p.min_weight_fraction_leaf
                else comm.exact_sums(sample_weight[:, None], what="weights")[0, 0]
            )
            self._weight = (
                sample_weight,
                None if unit else torch.as_tensor(sw, device=self.device),
                weight_sum,
            )
        weight_sum = self._weight[2]
        tree = HistTree(
            max_depth=p.max_depth,
            max_leaf_nodes=p.max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            min_weight_leaf=float(p.min_weight_fraction_leaf * weight_sum),
            min_impurity_decrease=p.min_impurity_decrease,
            n_bins=self.max_bins + 1,
        )
        k = self._max_features()
        features = None
        if k < self.n_features:
            chosen = np.sort(rng.choice(self.n_features, size=k, replace=False))
            features = torch.as_tensor(chosen, dtype=torch.int64, device=self.device)
        dev = self.device
        # least squares on the pseudo-residuals: gradient = -r, hessian = 1; the tree
        # negates r in the pass that puts it on its grid (no negated copy here)
        residual = torch.as_tensor(self._contiguous(target), device=dev)
        hessian = torch.ones((), dtype=torch.float64, device=dev).expand(n)  # no memory
        if self._bin_values is None:
            self._bin_values = self.bin_mapper.bin_value_table().numpy()
        # ties between splits go to a random feature order, as DecisionTreeRegressor's
        tree.random_state = int(rng.randint(np.iinfo(np.int32).max))
        return tree.fit(
            Xp,
            residual,
            hessian,
            sample_weight=self._weight[1],
            features=features,
            bin_values=self._bin_values,
            collective=comm,
            negated_gradient=True,
        )

    def _contiguous(self, target: np.ndarray) -> np.ndarray:
        """``target`` as contiguous float64: itself for one tree per stage; a class's
        column of a multiclass fit copied into a buffer kept for the fit (a fresh
        row-sized vector per tree fragments the heap, measured in ``_hist_data``)."""
        if target.dtype == np.float64 and target.flags.c_contiguous:
            return target
        if self._residual is None or self._residual.shape != target.shape:
            self._residual = np.empty(target.shape, dtype=np.float64)
        np.copyto(self._residual, target)
        return self._residual

    @staticmethod
    def leaf_ids(tree, Xp) -> np.ndarray:
        """Read-only: on the CPU, a view of the leaves the tree kept from its fit."""
        return tree.apply(Xp, copy=False).cpu().numpy()

    @staticmethod
    def leaves(tree) -> np.ndarray:
        return np.arange(tree.n_leaves)

    @staticmethod
    def leaf_values(tree) -> np.ndarray:
        return tree.leaf_values.detach().cpu().numpy().astype(np.float64, copy=True)

    @staticmethod
    def commit_leaf_values(tree, values: np.ndarray) -> None:
        import torch

        tree.leaf_values = torch.as_tensor(
            values, dtype=torch.float64, device=tree.leaf_values.device
        )

    @staticmethod
    def is_trivial(tree) -> bool:
        return tree.n_leaves <= 1

    @staticmethod
    def importances(tree, n_features: int) -> np.ndarray:
        return np.asarray(tree.feature_importances(n_features), dtype=np.float64)


def make_learner(tree_method: str, params: TreeParams, n_features: int, **hist: Any):
    if tree_method == "exact":
        return ExactLearner(params, n_features)
    return HistLearner(params, n_features, **hist)
