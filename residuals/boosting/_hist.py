"""The histogram tree of hist mode: a Newton regression tree grown on binned features.

One boosting stage fits a tree to the loss's gradients ``g`` and hessians ``h``
(Friedman 2001; second-order form as in XGBoost, Chen & Guestrin 2016, eqs.
5-7, with no regularisation). With sample weights ``w``, a node holding the rows
``I`` has ``G = sum_I w*g`` and ``H = sum_I w*h``; its Newton leaf value is
``-G / H``, and splitting it into ``L`` and ``R`` reduces the second-order
loss by (twice) ::

    gain = G_L**2 / H_L + G_R**2 / H_R - G**2 / H

For the squared error (``h = 1``) the gain is exactly the weighted
sum-of-squares decrease that scikit-learn's tree criterion maximises, and the
leaf value is the (weighted) mean residual, so on unambiguous data this tree
and ``DecisionTreeRegressor`` fit to the residuals agree.

Because features are binned (:mod:`residuals.boosting._binning`), the sums
``G_L, H_L`` of every candidate split ``bin <= t`` are cumulative sums over a
per-node histogram of ``(w*g, w*h)`` -- LightGBM's algorithm (Ke et al. 2017,
Alg. 1) -- and a child's histogram is its parent's minus its sibling's (the
"subtraction trick"), so only the smaller child is ever histogrammed.

Implementation (everything stays on the device of the binned data):

* ``(w*g, w*h)`` travel together as one complex128 number per row, so a
  single ``scatter_add_`` over flat ``(node, bin)`` indices builds both
  histograms of all nodes of a level at once (on CUDA, two float64 scatters);
* the split search is vectorised over nodes, features, cut points and the two
  directions a missing value can take, then an ``argmax`` per node;
* depth-wise growth (``max_leaf_nodes=None``) does one host sync per level;
  best-first growth (``max_leaf_nodes`` set, as scikit-learn's
  ``BestFirstTreeBuilder`` and ``HistGradientBoosting``) one per split;
* rows are routed to children with a ``(node, bin) -> child`` lookup table.

Row counts per node (for ``min_samples_leaf``) are read off the hessian
histogram when ``w*h`` is the same for every row (squared error, unit or 0/1
weights); otherwise a second histogram of ``(1, w)`` is built.
"""

from __future__ import annotations

import heapq
import numbers
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["HistTree"]

# A split must improve on the parent by more than this fraction of its score,
# so rounding noise never splits a node whose gradients are all equal.
_REL_GAIN_TOL = 1e-10
# Columns of the per-node statistics: sum w*g, sum w*h, row count, sum w.
_G, _H, _C, _W = range(4)


@dataclass
class _Data:
    """The rows a tree is fitted on (only rows with positive weight)."""

    X: torch.Tensor  # (n, F) uint8 bins of the allowed features
    gh: torch.Tensor  # (n,) complex128: w*g + 1j * w*h
    cw: torch.Tensor | None  # (n,) complex128: 1 + 1j * w, when counts can't be read off H
    count_unit: float  # w*h of every row when cw is None: count = H / count_unit
    weight_unit: float  # sum w = count * weight_unit  (if > 0) ...
    hess_unit: float  # ... or = H / hess_unit
    n_bins: int


@dataclass
class _Splits:
    """Best split of each of K nodes (tensors on the device)."""

    gain: torch.Tensor  # (K,) float64, -inf when no valid split
    score: torch.Tensor  # (K,) float64, G_L^2/H_L + G_R^2/H_R at the best split
    feature: torch.Tensor  # (K,) int64, column of the (allowed-features) histogram
    bin: torch.Tensor  # (K,) int64, rows with bin <= this go left
    missing_left: torch.Tensor  # (K,) bool
    left: torch.Tensor  # (K, 4) float64 stats of the left child (G, H, count, weight)
    right: torch.Tensor  # (K, 4)


def _scatter_hist(index: torch.Tensor, values: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``out[index[i, f], f] += values[i]``: complex (n_rows, F) histogram.

    index : (m, F) int64; values : (m,) complex128.
    """
    m, F = index.shape
    if values.device.type == "cpu":  # one pass for both channels
        out = torch.zeros((n_rows, F), dtype=torch.complex128)
        return out.scatter_add_(0, index, values.unsqueeze(1).expand(m, F))
    # Complex atomics are not available on every accelerator: two real passes.
    parts = []
    for part in (values.real, values.imag):
        out = torch.zeros((n_rows, F), dtype=torch.float64, device=values.device)
        parts.append(out.scatter_add_(0, index, part.unsqueeze(1).expand(m, F)))
    return torch.complex(*parts)


def _nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the True entries of a 1-D mask (int64, same device).

    On the CPU numpy's flatnonzero is ~10x faster than torch.nonzero (measured,
    100k rows, one thread); on an accelerator torch.nonzero is the only way.
    """
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def _route(X: torch.Tensor, slot: torch.Tensor, column: torch.Tensor, table: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Send every row one level down: ``table[slot, X[row, column[slot]]]``.

    X : (n, F) uint8, C-contiguous; slot : (n,) int64 node of each row;
    column : (n_slots,) int64 split column of each node; table : (n_slots * n_bins,)
    int64, the node a bin leads to. ``index_select`` on flat views, 3x faster on
    the CPU than advanced indexing or ``gather`` (measured).
    """
    n, F = X.shape
    flat = torch.arange(0, n * F, F, device=X.device).add_(column.index_select(0, slot))
    b = X.view(-1).index_select(0, flat)
    return table.index_select(0, torch.add(b, slot, alpha=n_bins))


class HistTree:
    """Newton regression tree on binned features, grown from gradient histograms.

    Parameters
    ----------
    max_depth : int or None, default=3
        Maximum depth, counting edges as scikit-learn does (depth 3 -> at most
        8 leaves); None for no limit.
    max_leaf_nodes : int or None, default=None
        If set (>= 2), grow best-first -- always split the leaf with the largest
        gain -- until this many leaves; otherwise grow depth-wise.
    min_samples_leaf : int, default=1
        Minimum number of rows (with positive weight) in each child of a split.
    min_weight_leaf : float, default=0.0
        Minimum sum of sample weights in each child of a split.
    min_impurity_decrease : float, default=0.0
        Split only if ``gain / W >= min_impurity_decrease``, ``W`` the total
        sample weight: scikit-learn's weighted impurity decrease for the squared
        error.
    n_bins : int, default=256
        Number of bin indices, missing bin included: ``BinMapper.missing_bin + 1``.
        The last index, ``n_bins - 1``, is the missing-value bin.

    Attributes (after fit)
    ----------------------
    leaf_values : float64 tensor of shape (n_leaves,)
        ``-sum(w*g) / sum(w*h)`` per leaf; the booster may overwrite it.
    n_leaves : int
    depth : int, depth of the fitted tree.
    children_left, children_right : int64 ndarray (n_nodes,), -1 at leaves.
    feature : int64 ndarray (n_nodes,), split feature (-1 at leaves).
    threshold_bin : int64 ndarray (n_nodes,), rows with ``bin <= threshold_bin`` go left.
    missing_left : bool ndarray (n_nodes,), where the missing bin goes.
    gain : float64 ndarray (n_nodes,), split gain (0 at leaves).
    node_sum_gradient, node_sum_hessian, n_node_samples, weighted_n_node_samples :
        float64 ndarrays (n_nodes,).
    leaf_index : int64 ndarray (n_nodes,), leaf number of each node (-1 if internal).
    """

    def __init__(
        self,
        *,
        max_depth: int | None = 3,
        max_leaf_nodes: int | None = None,
        min_samples_leaf: int = 1,
        min_weight_leaf: float = 0.0,
        min_impurity_decrease: float = 0.0,
        n_bins: int = 256,
    ):
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.min_weight_leaf = min_weight_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.n_bins = n_bins

    # ------------------------------------------------------------------ checks
    def _validate_params(self) -> None:
        def is_int(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def is_real(v):
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)

        if self.max_depth is not None and not (is_int(self.max_depth) and self.max_depth >= 0):
            raise ValueError(f"max_depth must be an integer >= 0 or None, got {self.max_depth!r}.")
        if self.max_leaf_nodes is not None and not (
            is_int(self.max_leaf_nodes) and self.max_leaf_nodes >= 2
        ):
            raise ValueError(
                f"max_leaf_nodes must be an integer >= 2 or None, got {self.max_leaf_nodes!r}."
            )
        if not (is_int(self.min_samples_leaf) and self.min_samples_leaf >= 1):
            raise ValueError(
                f"min_samples_leaf must be an integer >= 1, got {self.min_samples_leaf!r}."
            )
        for name in ("min_weight_leaf", "min_impurity_decrease"):
            value = getattr(self, name)
            if not (is_real(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        if not (is_int(self.n_bins) and 2 <= self.n_bins <= 256):
            raise ValueError(
                f"n_bins must be an integer in [2, 256] (BinMapper.missing_bin + 1), "
                f"got {self.n_bins!r}."
            )

    def _prepare(self, Xb, gradient, hessian, sample_weight, features) -> tuple[_Data, np.ndarray, float]:
        """Validate the inputs; keep the rows with positive weight and the allowed columns."""
        if not isinstance(Xb, torch.Tensor) or Xb.dtype != torch.uint8 or Xb.dim() != 2:
            raise TypeError(
                "HistTree.fit expects Xb as a 2-D uint8 torch tensor of bin indices "
                f"(BinMapper.transform's output), got {type(Xb).__name__}"
                + (f" of dtype {Xb.dtype} and shape {tuple(Xb.shape)}" if isinstance(Xb, torch.Tensor) else "")
                + "."
            )
        device = Xb.device
        n, n_features = Xb.shape

        def vector(v, name):
            v = torch.as_tensor(v, device=device).to(torch.float64).reshape(-1)
            if v.shape[0] != n:
                raise ValueError(f"{name} has {v.shape[0]} values, but Xb has {n} rows.")
            return v

        g = vector(gradient, "gradient")
        h = vector(hessian, "hessian")
        if features is None:
            columns = np.arange(n_features)
        else:
            columns = np.asarray(
                features.cpu() if isinstance(features, torch.Tensor) else features
            ).reshape(-1)
            if columns.size == 0 or not np.issubdtype(columns.dtype, np.integer):
                raise ValueError(f"features must be a non-empty list of column indices, got {features!r}.")
            if columns.min() < 0 or columns.max() >= n_features:
                raise ValueError(
                    f"features must index the {n_features} columns of Xb, got {columns.tolist()}."
                )
            columns = np.unique(columns)
        X = Xb if columns.size == n_features else Xb.index_select(1, torch.as_tensor(columns, device=device))
        if sample_weight is None:
            w = None
        else:
            w = vector(sample_weight, "sample_weight")
            lo = float(w.min()) if n else 0.0
            if lo < 0 or not bool(torch.isfinite(w).all()):
                raise ValueError("sample_weight must be finite and >= 0.")
            if lo == 0:
                rows = _nonzero(w > 0)
                X, g, h, w = (v.index_select(0, rows) for v in (X, g, h, w))
        if self.n_bins < 256 and X.numel() and int(X.max()) >= self.n_bins:
            raise ValueError(
                f"Xb holds bin index {int(X.max())}, but n_bins={self.n_bins}; pass "
                "n_bins=BinMapper.missing_bin + 1."
            )
        gw, hw = (g, h) if w is None else (g * w, h * w)
        n_rows = X.shape[0]
        # One sync: are w*h, w and h constant over the kept rows?
        if n_rows:
            stats = torch.stack([hw.min(), hw.max(), h.min(), h.max()]
                                + ([w.min(), w.max(), w.sum()] if w is not None else []))
            s = stats.tolist()
        else:
            s = [0.0] * 7
        count_unit = s[0] if s[0] == s[1] and s[0] > 0 else 0.0
        hess_unit = s[2] if s[2] == s[3] and s[2] > 0 else 0.0
        weight_unit = 1.0 if w is None else (s[4] if s[4] == s[5] else 0.0)
        total_weight = float(n_rows) if w is None else s[6]
        need_cw = count_unit == 0.0 or (weight_unit == 0.0 and hess_unit == 0.0)
        cw = torch.complex(torch.ones_like(hw), torch.ones_like(hw) if w is None else w) if need_cw else None
        data = _Data(
            X=X.contiguous(),
            gh=torch.complex(gw, hw),
            cw=cw,
            count_unit=count_unit,
            weight_unit=weight_unit,
            hess_unit=hess_unit,
            n_bins=self.n_bins,
        )
        return data, columns, total_weight

    # -------------------------------------------------------------- histograms
    @staticmethod
    def _histograms(data: _Data, rows, slots, n_slots: int):
        """Histograms of the rows ``rows`` (all if None) into ``n_slots`` nodes.

        Returns ``(gh, cw)``: complex tensors of shape (n_slots, n_bins, F),
        ``cw`` None when counts are read off ``gh``.
        """
        nb = data.n_bins
        if rows is None:
            X, gh, cw = data.X, data.gh, data.cw
        else:
            X, gh = data.X.index_select(0, rows), data.gh.index_select(0, rows)
            cw = None if data.cw is None else data.cw.index_select(0, rows)
        index = X.long() if slots is None else torch.add(X, (slots * nb).unsqueeze(1))
        F = X.shape[1]
        hist = _scatter_hist(index, gh, n_slots * nb).view(n_slots, nb, F)
        if cw is not None:
            cw = _scatter_hist(index, cw, n_slots * nb).view(n_slots, nb, F)
        return hist, cw

    @staticmethod
    def _channels(hist: torch.Tensor, cw: torch.Tensor | None) -> torch.Tensor:
        """Real view (K, n_bins, F, 2 or 4) of the histogram channels."""
        parts = torch.view_as_real(hist)
        return parts if cw is None else torch.cat((parts, torch.view_as_real(cw)), -1)

    @staticmethod
    def _count_weight(data: _Data, s: torch.Tensor):
        """Counts and weights from stacked channels ``s[..., c]`` (G, H[, C, W])."""
        if s.shape[-1] == 4:
            return s[..., 2], s[..., 3]
        count = torch.round(s[..., 1] / data.count_unit)
        weight = count * data.weight_unit if data.weight_unit > 0 else s[..., 1] / data.hess_unit
        return count, weight

    # ----------------------------------------------------------- split search
    def _find_splits(self, data: _Data, hist, cw, totals: torch.Tensor) -> _Splits:
        """Best split of each node, searched over features, cut points, NaN side.

        hist, cw : (K, n_bins, F) complex histograms; totals : (K, 4) node stats.
        """
        K, nb, F = hist.shape
        ch = self._channels(hist, cw)  # (K, nb, F, c)
        nc = ch.shape[-1]
        cum = ch[:, :-1].cumsum(1)  # left sums of the cut after bin t, NaN going right
        miss = ch[:, -1:]  # (K, 1, F, c)
        left = torch.stack((cum, cum + miss), 1)  # (K, 2, nb-1, F, c): [:, 1] NaN left
        tot = totals[:, :nc]
        right = tot.view(K, 1, 1, 1, nc) - left
        GL, HL, GR, HR = left[..., 0], left[..., 1], right[..., 0], right[..., 1]
        CL, WL = self._count_weight(data, left)
        CR, WR = self._count_weight(data, right)
        msl = self.min_samples_leaf
        valid = (CL >= msl) & (CR >= msl) & (HL > 0) & (HR > 0)
        if self.min_weight_leaf > 0:
            valid &= (WL >= self.min_weight_leaf) & (WR >= self.min_weight_leaf)
        score = GL * GL / HL + GR * GR / HR
        score = torch.where(valid, score, -torch.inf).view(K, -1)
        best, arg = score.max(1)
        direction = arg // ((nb - 1) * F)
        cut = (arg // F) % (nb - 1)
        feature = arg % F
        flat = left.view(K, -1, nc)
        left_stats = flat.gather(1, arg.view(K, 1, 1).expand(K, 1, nc)).squeeze(1)
        if nc == 2:
            c, wsum = self._count_weight(data, left_stats)
            left_stats = torch.stack((left_stats[:, 0], left_stats[:, 1], c, wsum), 1)
        right_stats = totals - left_stats
        # Without NaNs in the node, unseen NaNs follow the larger child (as HistGradientBoosting).
        n_missing = self._count_weight(data, miss.squeeze(1))[0].gather(1, feature.view(K, 1)).squeeze(1)
        missing_left = torch.where(
            n_missing > 0, direction == 1, left_stats[:, _C] >= right_stats[:, _C]
        )
        G, H = totals[:, _G], totals[:, _H]
        parent = torch.where(H > 0, G * G / H, torch.zeros_like(G))
        return _Splits(
            gain=best - parent,
            score=best,
            feature=feature,
            bin=cut,
            missing_left=missing_left,
            left=left_stats,
            right=right_stats,
        )

    def _accept(self, splits: _Splits, total_weight: float) -> torch.Tensor:
        """Which candidate splits are taken: (K,) bool on the device."""
        gain = splits.gain
        ok = torch.isfinite(gain) & (gain > _REL_GAIN_TOL * splits.score.abs())
        if self.min_impurity_decrease > 0:
            ok &= gain >= self.min_impurity_decrease * total_weight
        return ok

    @staticmethod
    def _to_host(splits: _Splits, accept: torch.Tensor) -> np.ndarray:
        """One device->host copy: (K, 13) float64 rows [accept, gain, feature, bin,
        missing_left, left stats (4), right stats (4)]."""
        cols = torch.cat(
            (
                torch.stack(
                    (
                        accept.double(),
                        splits.gain,
                        splits.feature.double(),
                        splits.bin.double(),
                        splits.missing_left.double(),
                    ),
                    1,
                ),
                splits.left,
                splits.right,
            ),
            1,
        )
        return cols.cpu().numpy()

    # ------------------------------------------------------------ tree record
    def _new_node(self, stats, depth: int) -> int:
        self._nodes.append([-1, -1, -1, 0, False, 0.0, *map(float, stats), depth])
        return len(self._nodes) - 1

    def _split_node(self, node: int, row: np.ndarray, depth: int) -> tuple[int, int]:
        """Record the split in ``row`` (a _to_host row) at ``node``; returns the children."""
        left = self._new_node(row[5:9], depth + 1)
        right = self._new_node(row[9:13], depth + 1)
        rec = self._nodes[node]
        rec[0], rec[1] = left, right
        rec[2] = int(self._columns[int(row[2])])
        rec[3] = int(row[3])
        rec[4] = bool(row[4])
        rec[5] = float(row[1])
        return left, right

    def _goes_right(self, rows: np.ndarray) -> np.ndarray:
        """(K, n_bins) bool: does bin b go right at the split of host row k."""
        right = np.arange(self.n_bins)[None, :] > rows[:, 3:4]
        right[:, -1] = rows[:, 4] == 0.0  # the missing bin
        return right

    def _route_table(self, rows: np.ndarray, child_slots: np.ndarray, sentinel: int) -> torch.Tensor:
        """(K+1, n_bins) int64 table: slot of the child a row of node k with bin b goes to.

        rows : (K, 13) host split rows; child_slots : (K, 2) left/right slots, -1 if k
        does not split (its rows, and the last table row, map to ``sentinel``).
        """
        nb = self.n_bins
        right = self._goes_right(rows)
        table = np.where(right, child_slots[:, 1:2], child_slots[:, 0:1])
        table[child_slots[:, 0] < 0] = sentinel
        table = np.vstack((table, np.full((1, nb), sentinel)))
        return table.reshape(-1)

    # ----------------------------------------------------------------- growth
    def _grow_depthwise(self, data: _Data, totals: torch.Tensor, total_weight: float) -> None:
        device = data.X.device
        nb = self.n_bins
        n = data.X.shape[0]
        hist, cw = self._histograms(data, None, None, 1)
        level = [0]  # node ids of this level, by slot
        slot = torch.zeros(n, dtype=torch.int64, device=device)
        depth = 0
        while self.max_depth is None or depth < self.max_depth:
            splits = self._find_splits(data, hist, cw, totals)
            host = self._to_host(splits, self._accept(splits, total_weight))
            taken = np.flatnonzero(host[:, 0] > 0)
            if taken.size == 0:
                return
            k = taken.size
            # Slots of the next level: smaller children first (histogrammed), then
            # the larger ones (parent minus sibling).
            child_slots = np.full((host.shape[0], 2), -1, dtype=np.int64)
            next_level = [0] * (2 * k)
            small_right = host[taken, 11] < host[taken, 7]
            for j, node_k in enumerate(taken):
                left, right = self._split_node(level[node_k], host[node_k], depth)
                s, l_ = (right, left) if small_right[j] else (left, right)
                next_level[j], next_level[k + j] = s, l_
                child_slots[node_k] = (k + j, j) if small_right[j] else (j, k + j)
            depth += 1
            if self.max_depth is not None and depth >= self.max_depth:
                return
            table = torch.as_tensor(self._route_table(host, child_slots, 2 * k), device=device)
            col = torch.as_tensor(np.append(host[:, 2], 0).astype(np.int64), device=device)
            slot = _route(data.X, slot, col, table, nb)
            small_rows = _nonzero(slot < k)
            small, small_cw = self._histograms(data, small_rows, slot.index_select(0, small_rows), k)
            parents = torch.as_tensor(taken, device=device)
            hist = torch.cat((small, hist.index_select(0, parents) - small))
            if cw is not None:
                cw = torch.cat((small_cw, cw.index_select(0, parents) - small_cw))
            sel = torch.as_tensor(small_right, device=device).unsqueeze(1)
            lefts, rights = splits.left.index_select(0, parents), splits.right.index_select(0, parents)
            totals = torch.cat((torch.where(sel, rights, lefts), torch.where(sel, lefts, rights)))
            level = next_level

    def _grow_best_first(self, data: _Data, totals: torch.Tensor, total_weight: float) -> None:
        device = data.X.device
        nb = self.n_bins
        hist, cw = self._histograms(data, None, None, 1)
        heap: list = []
        # payload per open leaf: (rows, hist, cw, splits-tensor row, host row)
        payload: dict[int, tuple] = {}

        def consider(nodes, rows_list, hist, cw, totals, depth):
            if self.max_depth is not None and depth >= self.max_depth:
                return
            splits = self._find_splits(data, hist, cw, totals)
            host = self._to_host(splits, self._accept(splits, total_weight))
            for i, node in enumerate(nodes):
                if host[i, 0] > 0:
                    heapq.heappush(heap, (-host[i, 1], node))
                    payload[node] = (rows_list[i], hist[i : i + 1], None if cw is None else cw[i : i + 1], host[i], depth)

        consider([0], [None], hist, cw, totals, 0)
        n_leaves = 1
        while heap and n_leaves < self.max_leaf_nodes:
            _, node = heapq.heappop(heap)
            rows, p_hist, p_cw, row, depth = payload.pop(node)
            left, right = self._split_node(node, row, depth)
            n_leaves += 1
            if n_leaves >= self.max_leaf_nodes or (
                self.max_depth is not None and depth + 1 >= self.max_depth
            ):
                continue
            feature = int(row[2])
            goes_right = torch.as_tensor(self._goes_right(row[None, :])[0], device=device)
            col = data.X[:, feature] if rows is None else data.X[rows, feature]
            r = goes_right[col.long()]
            if rows is None:
                rows = torch.arange(data.X.shape[0], device=device)
            left_rows, right_rows = rows[~r], rows[r]
            small_right = row[9 + _C] < row[5 + _C]
            small_rows = right_rows if small_right else left_rows
            small, small_cw = self._histograms(data, small_rows, None, 1)
            large = p_hist - small
            large_cw = None if p_cw is None else p_cw - small_cw
            hists = torch.cat((small, large))
            cws = None if p_cw is None else torch.cat((small_cw, large_cw))
            stats_l = torch.as_tensor(row[5:9], device=device)
            stats_r = torch.as_tensor(row[9:13], device=device)
            if small_right:
                nodes, rows_list, tots = [right, left], [right_rows, left_rows], (stats_r, stats_l)
            else:
                nodes, rows_list, tots = [left, right], [left_rows, right_rows], (stats_l, stats_r)
            consider(nodes, rows_list, hists, cws, torch.stack(tots), depth + 1)

    # ------------------------------------------------------------------- API
    def fit(self, Xb: torch.Tensor, gradient: torch.Tensor, hessian: torch.Tensor, *, sample_weight=None, features=None) -> "HistTree":
        """Grow the tree on the gradients of one boosting stage.

        Parameters
        ----------
        Xb : uint8 tensor (n_samples, n_features), bins from ``BinMapper.transform``.
        gradient, hessian : tensors (n_samples,), on Xb's device; cast to float64.
        sample_weight : tensor (n_samples,) or None. Rows with weight 0 are left
            out entirely (the booster's row subsampling).
        features : sequence of int or None. Columns this tree may split on.
        """
        self._validate_params()
        data, columns, total_weight = self._prepare(Xb, gradient, hessian, sample_weight, features)
        self._columns = columns
        self._nodes = []
        device = Xb.device
        n_rows = data.X.shape[0]
        s = complex(data.gh.sum()) if n_rows else 0j
        root = [s.real, s.imag, float(n_rows), total_weight]
        self._new_node(root, 0)
        if n_rows and self.max_depth != 0:
            grow = self._grow_depthwise if self.max_leaf_nodes is None else self._grow_best_first
            grow(data, torch.tensor([root], dtype=torch.float64, device=device), total_weight)
        self._finalize(device, total_weight)
        del self._nodes
        return self

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
        depth = nodes[:, 10].astype(np.int64)
        self.total_weight_ = total_weight
        is_leaf = self.children_left < 0
        self.leaf_index = np.full(len(nodes), -1, dtype=np.int64)
        self.leaf_index[is_leaf] = np.arange(int(is_leaf.sum()))
        self.n_leaves = int(is_leaf.sum())
        self.depth = int(depth.max())
        H, G = self.node_sum_hessian[is_leaf], self.node_sum_gradient[is_leaf]
        values = np.where(H > 0, -G / np.where(H > 0, H, 1.0), 0.0)
        self.leaf_values = torch.as_tensor(values, dtype=torch.float64, device=device)
        # Routing table for apply: (n_nodes, n_bins) -> next node; leaves loop on themselves.
        nb = self.n_bins
        goes_right = np.arange(nb)[None, :] > self.threshold_bin[:, None]
        goes_right[:, nb - 1] = ~self.missing_left
        table = np.where(goes_right, self.children_right[:, None], self.children_left[:, None])
        table[is_leaf] = np.arange(len(nodes))[is_leaf, None]
        self._table = torch.as_tensor(table.reshape(-1), device=device)
        self._node_feature = torch.as_tensor(np.maximum(self.feature, 0), device=device)
        self._leaf_of_node = torch.as_tensor(self.leaf_index, device=device)

    def apply(self, Xb: torch.Tensor) -> torch.Tensor:
        """Leaf index of every row: int64 tensor (n_samples,) in ``[0, n_leaves)``."""
        if not hasattr(self, "_table"):
            raise RuntimeError("This HistTree is not fitted yet: call fit first.")
        if not isinstance(Xb, torch.Tensor) or Xb.dim() != 2:
            raise TypeError("HistTree.apply expects a 2-D uint8 tensor of bins.")
        if Xb.device != self._table.device:
            raise ValueError(f"Xb is on {Xb.device}, but the tree was fitted on {self._table.device}.")
        node = torch.zeros(Xb.shape[0], dtype=torch.int64, device=Xb.device)
        X = Xb.contiguous()
        for _ in range(self.depth):
            node = _route(X, node, self._node_feature, self._table, self.n_bins)
        return self._leaf_of_node.index_select(0, node)

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
