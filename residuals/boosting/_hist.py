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

* the bins are read feature-major, ``(n_features, n_samples)`` (the layout
  ``BinMapper.transform`` returns, seen through ``.T``): scattering along the
  contiguous row axis is 2.5x faster than along a strided one (measured, 100k x
  20, one CPU thread);
* ``(w*g, w*h)`` travel together as one complex128 number per row, so a
  single ``scatter_add_`` over flat ``(node, bin)`` indices builds both
  histograms; the rows of a small child are gathered as uint8 bins, then
  widened to the int64 index ``scatter_add_`` needs, a chunk of rows at a time
  (:mod:`._histograms`);
* on accelerators the rows are quantized to int64 instead, so that the
  histograms' atomic adds are exact in any order: one Triton kernel per level
  on CUDA, torch's int64 ``scatter_add_`` elsewhere (:mod:`._quantized`, which
  also states when the trees can differ from the CPU's: near-ties only);
* the split search is vectorised over nodes, features, cut points and (only
  when the data has NaNs) the two sides a missing value can take, then an
  ``argmax`` per node; ties go to a seeded random feature order, as in
  ``DecisionTreeRegressor``, and the winning cut is centred between the
  node's values next to it, as an exact tree's threshold;
* depth-wise growth (``max_leaf_nodes=None``) copies one small table of
  winning splits to the host per level (plus the row counts ``nonzero`` needs
  on an accelerator); best-first growth (``max_leaf_nodes`` set, as
  scikit-learn's ``BestFirstTreeBuilder`` and ``HistGradientBoosting``) does
  the same per split;
* rows are routed to children with a ``(node, bin) -> child`` lookup table,
  with int32 indices; the training rows' leaves are kept from the fit, so the
  booster's ``apply``/``predict`` on the same matrix right after costs nothing.

On the CPU, when the optional C extension is built (:mod:`._kernels`), the
histograms (a level's nodes in one pass), the routing, the binning and the
split search with its host rows run as C loops, on all cores (threads over rows,
features or nodes), instead of the torch and numpy code. ``w*g``, ``w*h`` and
``w`` are first put on a fixed-point grid (:mod:`._grid`: 33 bits of each value
kept at a million rows), on which every sum is exact in any order: the trees are
bit-identical either way and at any thread count (``tests/test_hist_kernels.py``),
and equal to a distributed fit's. The torch code is what runs
on a GPU, and on a CPU without the extension.

Row counts per node (for ``min_samples_leaf``) are read off the hessian
histogram when ``w*h`` is the same for every row (squared error, unit or 0/1
weights); otherwise a second histogram of ``(1, w)`` is built.

Memory: beyond the binned matrix (1 byte per value), a fit keeps 41 bytes per
row (:class:`_Workspace`: node of each row, routing temporaries, ``w*g +
1j*w*h``, ``w*g`` on its grid, leaves), reused from tree to tree; the int64 index ``scatter_add_``
needs is built a chunk of rows at a time (a few MiB, whatever n; the C loops
need none), and a level's rows are selected range by range (the C loops select
them block by block, in a few KiB per thread); ``n_nodes * n_features * n_bins``
complex sums: a level keeps those for the subtraction trick up to
``_HIST_BYTES`` (with the C loops, in two buffers per channel used in turn);
wider levels are histogrammed directly, group by group. Fresh row-sized
temporaries at every level are avoided on purpose: besides their size, they
fragment the C heap (see :class:`_Workspace`). Quantized, a fit also keeps
``8 * C`` bytes per row (``C`` = 2 or 4 int64 channels) and the level's int64 sums.

This file runs past 500 lines because of these notes: the code below, :class:`HistTree`'s
growth (depth-wise and best-first), fit and prediction, is under 500 and reads as one
algorithm; its histograms (:mod:`._histograms`), split search (:mod:`._split_search`) and
row data (:mod:`._hist_data`) are already modules of their own.
"""

import heapq
import math
import numbers

import numpy as np
import torch

from . import _grid_passes, _kernels
from ._hist_data import (
    _C,
    _Data,
    _nonzero,
    _slot_dtype,
    _train_leaves,
    _workspaces,
    prepare,
)
from ._hist_fitted import _FittedTree
from ._histograms import _Histograms, _route
from ._split_search import (
    _ACCEPT,
    _BIN,
    _FEATURE,
    _GAIN,
    _LEFT,
    _MISSING_LEFT,
    _RIGHT,
    _SplitSearch,
)

__all__ = ["HistTree"]


class HistTree(_Histograms, _SplitSearch, _FittedTree):
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
    random_state : int or None, default=None
        Seeds the order in which features win ties. Splits whose scores agree
        to ``_TIE_TOL`` (relative) are ties; the first feature in a random
        permutation drawn at each fit wins, as in ``DecisionTreeRegressor``,
        which visits the features in a random order and keeps the first best.
        None: the lowest feature index wins (deterministic, as HistGradientBoosting).
    quantized : bool or None, default=None
        Build the histograms from integer gradients (:mod:`._quantized`): exact
        sums in any order, as the GPU's atomic adds need. None: on accelerators
        only; the CPU's float sums are already in a fixed order. Trees agree with
        the float ones except at near-ties of the split scores (the rule is in
        :mod:`._quantized`).

    Cut placement: cuts ``t .. u`` with the bins between them empty in a node
    split its rows alike. The tree takes the cut nearest the midpoint of the
    node's neighbouring values, as an exact tree's threshold, when ``fit`` gets
    ``bin_values``; else the middle of the run of cuts.

    Attributes (after fit)
    ----------------------
    leaf_values : float64 tensor of shape (n_leaves,), on the data's device
        ``-sum(w*g) / sum(w*h)`` per leaf; the booster may overwrite it.
    n_leaves : int
    depth : int, depth of the fitted tree.
    children_left, children_right : int64 ndarray (n_nodes,), -1 at leaves.
    feature : int64 ndarray (n_nodes,), split feature (-1 at leaves).
    threshold_bin : int64 ndarray (n_nodes,), rows with ``bin <= threshold_bin`` go left.
    missing_left : bool ndarray (n_nodes,), where the missing bin goes.
    gain : float64 ndarray (n_nodes,), split gain (0 at leaves).
    node_sum_gradient, node_sum_hessian, n_node_samples, weighted_n_node_samples :
        float64 ndarrays (n_nodes,): ``sum w*g``, ``sum w*h``, rows, ``sum w``.
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
        random_state: int | None = None,
        quantized: bool | None = None,
    ):
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.min_weight_leaf = min_weight_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.n_bins = n_bins
        self.random_state = random_state
        self.quantized = quantized

    # ------------------------------------------------------------------ checks
    def _validate_params(self) -> None:
        def is_int(v):
            return isinstance(v, numbers.Integral) and not isinstance(v, bool)

        def is_real(v):
            return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)

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
        if self.random_state is not None and not is_int(self.random_state):
            raise ValueError(f"random_state must be an integer or None, got {self.random_state!r}.")

    # ------------------------------------------------------------ tree record
    def _new_node(self, stats, depth: int) -> int:
        # children_left, children_right, feature, bin, missing_left, gain, G, H, count, weight, depth
        self._nodes.append([-1, -1, -1, 0, False, 0.0, *map(float, stats), depth])
        return len(self._nodes) - 1

    def _split_node(self, node: int, row: np.ndarray, columns: np.ndarray) -> tuple[int, int]:
        """Record the split of host row ``row`` at ``node``; returns the new children."""
        depth = self._nodes[node][10]
        left = self._new_node(row[_LEFT : _LEFT + 4], depth + 1)
        right = self._new_node(row[_RIGHT : _RIGHT + 4], depth + 1)
        rec = self._nodes[node]
        rec[0], rec[1] = left, right
        rec[2] = int(columns[int(row[_FEATURE])])
        rec[3] = int(row[_BIN])
        rec[4] = bool(row[_MISSING_LEFT])
        rec[5] = float(row[_GAIN])
        return left, right

    def _goes_right(self, rows: np.ndarray) -> np.ndarray:
        """(K, n_bins) bool: does bin b go right at the split of host row k."""
        right = np.arange(self.n_bins)[None, :] > rows[:, _BIN : _BIN + 1]
        right[:, -1] = rows[:, _MISSING_LEFT] == 0.0  # the missing bin
        return right

    # ----------------------------------------------------------------- growth
    def _next_level(self, host, taken, small_right, open_nodes, done_nodes, columns, np_dtype):
        """Record a level's splits and lay out the next level's slots.

        Next level: the smaller children in slots [0, k) (histogrammed), the
        larger ones in [k, 2k) (parent minus sibling), then every finished leaf.
        Returns the routing table ``(n_slots, n_bins)`` and split column
        ``(n_slots,)`` of the current slots, and the next open and done nodes.
        """
        K, k, nb = len(open_nodes), taken.size, self.n_bins
        children = [0] * (2 * k)
        for j, node_k in enumerate(taken):
            left, right = self._split_node(open_nodes[node_k], host[node_k], columns)
            children[j], children[k + j] = (right, left) if small_right[j] else (left, right)
        rank = np.arange(k)
        left_slot = np.where(small_right, k + rank, rank)
        right_slot = np.where(small_right, rank, k + rank)
        table = np.empty((K + len(done_nodes), nb), dtype=np_dtype)
        table[taken] = np.where(
            self._goes_right(host[taken]), right_slot[:, None], left_slot[:, None]
        )
        stays = [i for i in range(K) if host[i, _ACCEPT] == 0]
        finished = [open_nodes[i] for i in stays] + done_nodes
        stays += range(K, K + len(done_nodes))
        table[stays] = (2 * k + np.arange(len(stays)))[:, None]
        column = np.zeros(len(table), dtype=np_dtype)
        column[taken] = host[taken, _FEATURE]
        return table, column, children, finished

    def _grow_depthwise(
        self, data: _Data, totals: np.ndarray, total_weight: float, columns
    ) -> tuple | None:
        """Level by level; returns ``(slot, node_of_slot)`` for the training rows
        when they were all kept (for the leaf cache), else None.

        A row's ``slot`` is its node's position: the open nodes of the level
        (their histograms are ``hist[slot]``) come first, then finished leaves.
        """
        device = data.XT.device
        nb = self.n_bins
        hist, cw = self._root_histograms(data)
        open_nodes, done_nodes = [0], []
        dtype = _slot_dtype(data.XT)
        np_dtype = np.int32 if dtype == torch.int32 else np.int64
        work = data.work
        slot = work.slot.zero_()
        c_loops = device.type == "cpu" and _kernels.available()  # the root's routing too
        depth = 0
        while open_nodes and (self.max_depth is None or depth < self.max_depth):
            K = len(open_nodes)
            if hist is not None:
                host = self._find_splits(data, hist, cw, totals, total_weight)
            else:
                host = self._find_splits_direct(data, slot, K, totals, total_weight)
            taken = np.flatnonzero(host[:, _ACCEPT] > 0)
            k = taken.size
            if k == 0:
                break
            small_right = host[taken, _RIGHT + _C] < host[taken, _LEFT + _C]
            table, column, open_nodes, done_nodes = self._next_level(
                host, taken, small_right, open_nodes, done_nodes, columns, np_dtype
            )
            depth += 1
            last = self.max_depth is not None and depth >= self.max_depth
            if last and not data.all_rows:
                return None
            table_t = torch.as_tensor(table.reshape(-1), device=device)
            column_t = torch.as_tensor(column, device=device)
            # on the CPU's C loops, the rows are routed in the pass that histograms them
            fused = (
                c_loops
                and not last
                and hist is not None
                and data.quant is None
                and self._keeps_histograms(data, 2 * k)
            )
            if len(table) == 1 and not c_loops:  # the root: every row reads one column
                work.index.copy_(data.XT[int(column[0])])
                torch.index_select(table_t, 0, work.index, out=slot)
            elif not fused:
                _route(data.XT, slot, column_t, table_t, nb, work)
            if last:
                break
            lefts, rights = host[taken, _LEFT : _LEFT + 4], host[taken, _RIGHT : _RIGHT + 4]
            is_right = small_right[:, None]
            totals = np.concatenate(
                (np.where(is_right, rights, lefts), np.where(is_right, lefts, rights))
            )
            if hist is None or not self._keeps_histograms(data, 2 * k):
                hist = cw = data.hist_q = None  # too wide to keep: histogrammed directly below
                continue
            if data.quant is not None:
                parents = torch.as_tensor(taken, device=device) if k < K else None
                hist, cw = self._next_histograms_q(data, slot, k, parents)
                continue
            if fused:
                parents = torch.as_tensor(taken) if k < K else None
                routing = (column_t, table_t)
                hist, cw = self._next_histograms_c(data, slot, k, hist, cw, parents, routing)
                continue
            small, small_cw = self._reduce(data, *self._small_histograms(data, slot, k))
            if k < K:
                parents = torch.as_tensor(taken, device=device)
                hist = hist.index_select(0, parents)
                cw = None if cw is None else cw.index_select(0, parents)
            hist = torch.cat((small, hist - small))
            if cw is not None:
                cw = torch.cat((small_cw, cw - small_cw))
        return (slot, open_nodes + done_nodes) if data.all_rows else None

    def _grow_best_first(
        self, data: _Data, totals: np.ndarray, total_weight: float, columns
    ) -> None:
        """Split the open leaf of largest gain until ``max_leaf_nodes`` leaves.

        Each open leaf keeps its rows (int64 indices) and histograms.
        """
        device = data.XT.device
        heap: list = []  # (-gain, node)
        open_leaves: dict[int, tuple] = {}  # node -> (rows, hist, cw, host row)

        def consider(nodes, rows, hist, cw, totals):
            depth = self._nodes[nodes[0]][10]
            if self.max_depth is not None and depth >= self.max_depth:
                return
            host = self._find_splits(data, hist, cw, totals, total_weight)
            for i, node in enumerate(nodes):
                if host[i, _ACCEPT] > 0:
                    heapq.heappush(heap, (-host[i, _GAIN], node))
                    open_leaves[node] = (
                        rows[i],
                        hist[i : i + 1],
                        None if cw is None else cw[i : i + 1],
                        host[i],
                    )

        hist, cw = self._root_histograms(data)
        consider([0], [torch.arange(data.XT.shape[1], device=device)], hist, cw, totals)
        n_leaves = 1
        while heap and n_leaves < self.max_leaf_nodes:
            _, node = heapq.heappop(heap)
            rows, hist, cw, row = open_leaves.pop(node)
            left, right = self._split_node(node, row, columns)
            n_leaves += 1
            depth = self._nodes[left][10]
            if n_leaves >= self.max_leaf_nodes or (
                self.max_depth is not None and depth >= self.max_depth
            ):
                continue
            column = data.XT[int(row[_FEATURE])].index_select(0, rows)
            r = column > int(row[_BIN])
            if data.has_missing:
                r = torch.where(column == self.n_bins - 1, not row[_MISSING_LEFT], r)
            left_rows, right_rows = (
                rows.index_select(0, _nonzero(~r)),
                rows.index_select(0, _nonzero(r)),
            )
            small_right = row[_RIGHT + _C] < row[_LEFT + _C]
            small_rows = right_rows if small_right else left_rows
            small, small_cw = self._reduce(data, *self._histograms(data, small_rows, None, 1))
            hists = torch.cat((small, hist - small))
            cws = None if cw is None else torch.cat((small_cw, cw - small_cw))
            stats = np.stack((row[_LEFT : _LEFT + 4], row[_RIGHT : _RIGHT + 4]))
            if small_right:
                consider([right, left], [right_rows, left_rows], hists, cws, stats[::-1].copy())
            else:
                consider([left, right], [left_rows, right_rows], hists, cws, stats)

    # ------------------------------------------------------------------- API
    def fit(
        self,
        Xb: torch.Tensor,
        gradient: torch.Tensor,
        hessian: torch.Tensor,
        *,
        sample_weight=None,
        features=None,
        bin_values=None,
        collective=None,
        negated_gradient: bool = False,
    ) -> "HistTree":
        """Grow the tree on the gradients of one boosting stage.

        Parameters
        ----------
        Xb : uint8 tensor (n_samples, n_features), bins from ``BinMapper.transform``.
        gradient, hessian : tensors or arrays (n_samples,), moved to Xb's device
            and cast to float64.
        sample_weight : (n_samples,) or None. Rows with weight 0 are left out
            entirely (the booster's row subsampling).
        features : sequence of int or None. Columns this tree may split on
            (``max_features``); the others are not even histogrammed.
        bin_values : array (n_features, n_bins - 1) or None. A value of every
            value bin (``BinMapper.bin_value_table``), nondecreasing along each
            row; places each cut midway between the values of a node's rows
            next to it, as an exact tree does (see the class docstring).
        collective : a :class:`._collective.Collective` or None. In a distributed
            fit, this rank's rows are one shard: the tree is grown from every
            rank's rows, its histograms all-reduced level by level, and is the
            same on every rank (see :mod:`._collective` for why the sums are exact).
        negated_gradient : bool, default False. ``gradient`` holds ``-g``, as a
            booster's pseudo-residuals ``r = -dL/dF`` do: the tree is the one
            grown from ``g``, without a negated copy of the rows (the negation is
            folded into the pass that puts them on the grid).
        """
        self._validate_params()
        _train_leaves.clear()
        quantized = Xb.device.type != "cpu" if self.quantized is None else bool(self.quantized)
        data, columns, total_weight = prepare(
            Xb,
            gradient,
            hessian,
            sample_weight,
            features,
            self.n_bins,
            quantized,
            collective,
            negated_gradient,
        )
        if bin_values is not None:
            if isinstance(bin_values, torch.Tensor):
                bin_values = bin_values.detach().cpu().numpy()
            bin_values = np.asarray(bin_values, dtype=np.float64)
            if bin_values.shape != (Xb.shape[1], self.n_bins - 1):
                raise ValueError(
                    f"bin_values has shape {bin_values.shape}, expected "
                    f"{(Xb.shape[1], self.n_bins - 1)} (n_features, n_bins - 1)."
                )
            data.bin_values = bin_values[columns]
        if self.random_state is not None:
            generator = torch.Generator().manual_seed(int(self.random_state))
            data.order = torch.randperm(len(columns), generator=generator).to(device=Xb.device)
        device = Xb.device
        n_rows = data.XT.shape[1]
        if collective is not None and data.quant is None and data.n_all and self.max_depth != 0:
            # the root's histograms, all-reduced (kept for the growth below), hold every
            # row of every rank in each feature's bins: their sum is s, exact on the grid,
            # without a collective of its own
            data.root = self._root_histograms(data)
            s = complex(data.root[0][0, 0].sum())
            n_rows = data.n_all
        else:
            s = self._local_sums(data)
            if collective is not None:  # grid values: an exact sum, the same on every rank
                sums = torch.tensor([s.real, s.imag], dtype=torch.float64)
                s = complex(*collective.all_reduce(sums, "sum", "root sums"))
                n_rows = data.n_all
        if not (math.isfinite(s.real) and math.isfinite(s.imag)):
            raise ValueError(
                "gradient has NaN or infinite values; check the loss and the raw predictions."
            )
        if data.quant is not None and n_rows and collective is None:  # what the histograms sum to
            # (in a distributed fit, s is that already: grid values sum exactly)
            q_sum = data.quant.q[:, :2].sum(0).to(torch.float64).mul_(data.quant.unit[:2]).tolist()
            s = complex(*q_sum)
        root = [s.real, s.imag, float(n_rows), total_weight]
        self._nodes = []
        self._new_node(root, 0)
        routed = None
        if n_rows and self.max_depth != 0:
            totals = np.array([root], dtype=np.float64)
            if self.max_leaf_nodes is None:
                routed = self._grow_depthwise(data, totals, total_weight, columns)
            else:
                self._grow_best_first(data, totals, total_weight, columns)
        self._finalize(device, total_weight)
        del self._nodes
        if routed is not None:
            slot, node_of_slot = routed
            leaf_of_slot = torch.as_tensor(self.leaf_index[node_of_slot], device=device)
            if device.type == "cpu" and _kernels.available():  # by rows, on the threads
                leaves = _kernels.take_leaves(leaf_of_slot, slot, data.work.leaves())
            else:
                leaves = torch.index_select(leaf_of_slot, 0, slot, out=data.work.leaves())
            _train_leaves.put(Xb, leaves, owner=self)
        _workspaces.put(Xb, data.work)
        return self

    @staticmethod
    def _local_sums(data: _Data) -> complex:
        """``sum w*g + 1j * sum w*h`` over this process's rows."""
        if not data.XT.shape[1]:
            return 0j
        if data.XT.device.type != "cpu":
            return complex(data.gh.sum())
        if data.quant is None:  # on the grid: exact, in any order
            return complex(_grid_passes.grid_sum(data.g), _grid_passes.grid_sum(data.h))
        return complex(np.sum(data.g.numpy()), np.sum(data.h.numpy()))
