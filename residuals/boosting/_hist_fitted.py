"""The fitted side of :class:`~residuals.boosting._hist.HistTree` (a mixin): the tree's
arrays made from its grown nodes, the routing tables, ``apply``, ``predict`` and the
feature importances. Growing the tree is in :mod:`residuals.boosting._hist`."""

from __future__ import annotations

import numpy as np
import torch

from ._hist_data import _C, _G, _H, _W, _feature_major, _slot_dtype, _train_leaves
from ._histograms import _route


class _FittedTree:
    """What a grown :class:`~residuals.boosting._hist.HistTree` is and does."""

    n_bins: int
    _nodes: list
    _routing: tuple | None

    def _finalize(self, device, total_weight: float) -> None:
        nodes = np.array(self._nodes, dtype=np.float64).reshape(-1, 11)
        self.children_left = nodes[:, 0].astype(np.int64)
        self.children_right = nodes[:, 1].astype(np.int64)
        self.feature = nodes[:, 2].astype(np.int64)
        self.threshold_bin = nodes[:, 3].astype(np.int64)
        self.missing_left = nodes[:, 4].astype(bool)
        self.gain = nodes[:, 5].copy()
        self.node_sum_gradient = nodes[:, 6 + _G].copy()
        self.node_sum_hessian = nodes[:, 6 + _H].copy()
        self.n_node_samples = nodes[:, 6 + _C].copy()
        self.weighted_n_node_samples = nodes[:, 6 + _W].copy()
        self.total_weight_ = total_weight
        is_leaf = self.children_left < 0
        self.leaf_index = np.full(len(nodes), -1, dtype=np.int64)
        self.leaf_index[is_leaf] = np.arange(int(is_leaf.sum()))
        self.n_leaves = int(is_leaf.sum())
        self.depth = int(nodes[:, 10].max())
        G, H = self.node_sum_gradient[is_leaf], self.node_sum_hessian[is_leaf]
        values = np.where(H > 0, -G / np.where(H > 0, H, 1.0), 0.0)
        self.leaf_values = torch.as_tensor(values, dtype=torch.float64, device=device)
        self._device = torch.device(device)
        self._routing = None  # built on the first apply that needs it

    def _routing_tables(self, dtype: torch.dtype) -> tuple:
        """(table, node_feature, leaf_of_node) for :func:`_route`: bin -> next node
        ``(n_nodes * n_bins,)``, leaves looping on themselves."""
        if self._routing is None or self._routing[0].dtype != dtype:
            is_leaf = self.children_left < 0
            goes_right = np.arange(self.n_bins)[None, :] > self.threshold_bin[:, None]
            goes_right[:, -1] = ~self.missing_left
            table = np.where(goes_right, self.children_right[:, None], self.children_left[:, None])
            table[is_leaf] = np.flatnonzero(is_leaf)[:, None]
            self._routing = tuple(
                torch.as_tensor(a, dtype=t, device=self._device)
                for a, t in (
                    (table.reshape(-1), dtype),
                    (np.maximum(self.feature, 0), dtype),
                    (self.leaf_index, torch.int64),
                )
            )
        return self._routing

    def apply(self, Xb: torch.Tensor, *, copy: bool = True) -> torch.Tensor:
        """Leaf index of every row: int64 tensor (n_samples,) in ``[0, n_leaves)``, on Xb's device.

        ``copy=False`` may return the leaves kept from the fit on this very ``Xb``:
        read-only, and valid until the next fit on ``Xb`` (which reuses them).
        """
        if not hasattr(self, "_routing"):
            raise RuntimeError("This HistTree is not fitted yet: call fit first.")
        if not isinstance(Xb, torch.Tensor) or Xb.dtype != torch.uint8 or Xb.dim() != 2:
            raise TypeError(
                "HistTree.apply expects a 2-D uint8 tensor of bins (BinMapper.transform)."
            )
        if Xb.device != self._device:
            raise ValueError(f"Xb is on {Xb.device}, but the tree was fitted on {self._device}.")
        cached = _train_leaves.get(Xb, owner=self)
        if cached is not None:
            return cached.clone() if copy else cached
        XT = _feature_major(Xb)
        dtype = _slot_dtype(XT)
        table, node_feature, leaf_of_node = self._routing_tables(dtype)
        node = torch.zeros(Xb.shape[0], dtype=dtype, device=Xb.device)
        for _ in range(self.depth):
            node = _route(XT, node, node_feature, table, self.n_bins)
        return leaf_of_node.index_select(0, node)

    def predict(self, Xb: torch.Tensor) -> torch.Tensor:
        """float64 tensor (n_samples,): ``leaf_values[apply(Xb)]``."""
        leaves = self.apply(Xb)
        return self.leaf_values.index_select(0, leaves)

    def feature_importances(self, n_features: int) -> np.ndarray:
        """Total gain per feature divided by the total sample weight, unnormalised.

        For the squared error this is scikit-learn's
        ``tree_.compute_feature_importances(normalize=False)``.
        """
        out = np.zeros(n_features, dtype=np.float64)
        internal = self.children_left >= 0
        np.add.at(out, self.feature[internal], self.gain[internal])
        return out / self.total_weight_ if self.total_weight_ > 0 else out
