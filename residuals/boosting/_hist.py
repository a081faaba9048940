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
  histograms (on CUDA, two float64 scatters); the rows of a small child are
  gathered as uint8 bins, then widened to the int64 index ``scatter_add_`` needs,
  a chunk of rows at a time;
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
histograms, the row selection and routing, and the split search with its
host rows run as C loops instead of the torch and numpy code below them; each
adds in the same order, so the trees are bit-identical either way
(``tests/test_hist_kernels.py``). The torch code is what runs on a GPU, and on
a CPU without the extension.

Row counts per node (for ``min_samples_leaf``) are read off the hessian
histogram when ``w*h`` is the same for every row (squared error, unit or 0/1
weights); otherwise a second histogram of ``(1, w)`` is built.

Memory: beyond the binned matrix (1 byte per value), a fit keeps 33 bytes per
row (:class:`_Workspace`: node of each row, routing temporaries, ``w*g +
1j*w*h``, leaves), reused from tree to tree; the int64 index ``scatter_add_``
needs is built a chunk of rows at a time (a few MiB, whatever n; the C loops
need none), and a level's rows are selected range by range (with the C loops,
into two int64 buffers of one range); ``n_nodes * n_features * n_bins``
complex sums: a level keeps those for the subtraction trick up to
``_HIST_BYTES`` (with the C loops, in two buffers per channel used in turn);
wider levels are histogrammed directly, group by group. Fresh row-sized
temporaries at every level are avoided on purpose: besides their size, they
fragment the C heap (see :class:`_Workspace`).
"""

from __future__ import annotations

import heapq
import math
import numbers
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch

from . import _kernels

__all__ = ["HistTree"]

# A split must improve on the parent by more than this fraction of its score,
# so rounding noise never splits a node whose gradients are all equal.
_REL_GAIN_TOL = 1e-10
# Split scores within this fraction of the best are ties (rounding noise): the
# first of them in the tree's feature order wins.
_TIE_TOL = 1e-13
# Columns of the per-node statistics: sum w*g, sum w*h, row count, sum w.
_G, _H, _C, _W = range(4)
# Columns of a split's host row (see HistTree._find_splits).
_ACCEPT, _GAIN, _FEATURE, _BIN, _MISSING_LEFT, _LEFT, _RIGHT = 0, 1, 2, 3, 4, 5, 9


@dataclass
class _Data:
    """The rows a tree is fitted on (only rows with positive weight)."""

    XT: torch.Tensor  # (F, n) uint8 bins of the allowed features, C-contiguous (feature-major)
    gh: torch.Tensor  # (n,) complex128: w*g + 1j * w*h
    g: torch.Tensor  # (n,) float64: w*g, contiguous (the root's real scatter reads it)
    h: torch.Tensor  # (n,) float64: w*h (possibly an expanded scalar)
    cw: torch.Tensor | None  # (n,) complex128: 1 + 1j * w, when counts can't be read off H
    count_unit: float  # w*h of every row when cw is None: count = H / count_unit
    weight_unit: float  # if > 0: sum w = count * weight_unit ...
    hess_unit: float  # ... else sum w = H / hess_unit
    all_rows: bool  # True if no row was dropped (weights all positive)
    source: torch.Tensor | None  # the caller's Xb when XT is exactly Xb.T (for the index cache)
    has_missing: bool = True  # any row in the missing bin of an allowed feature
    bin_values: np.ndarray | None = None  # (F, n_bins - 1) host values of the value bins
    work: "_Workspace | None" = None  # per-row scratch of this fit
    order: torch.Tensor | None = None  # (F,) int64 feature order of the tie-break, on the device
    order_flat: dict = field(default_factory=dict)  # D -> _order_flat's index


def _chunk_rows(F: int, device: torch.device, gathered: bool) -> int:
    """Rows per chunk of a histogram: bounds its int64 index to a few MiB."""
    if device.type != "cpu":
        return max(1, _ACCEL_INDEX_ELEMENTS // max(F, 1))
    return max(1, (_GATHER_INDEX_ELEMENTS if gathered else _SLICE_INDEX_ELEMENTS) // max(F, 1))


def _scatter_hist(XT: torch.Tensor, values: torch.Tensor, n_cols: int, nb: int, rows=None, slots=None,
                  fused: bool | None = None, work: "_Workspace | None" = None,
                  select: tuple | None = None) -> torch.Tensor:
    """``out[f, slots[i] * nb + XT[f, rows[i]]] += values[rows[i]]``: (F, n_cols) histogram.

    XT : (F, n) uint8 bins; values : (n,) float64 or complex128, one per row of
    XT; rows : (m,) int64 rows to count, or None for all; slots : (m,) int64 node
    of each counted row, or None for one node. Or ``select=(slot, lo, hi)``: the
    rows with ``lo <= slot < hi`` (slot: (n,) int tensor), in node ``slot - lo``.

    ``scatter_add_`` needs an int64 index, 8 bytes per value: it is built chunk
    by chunk (:func:`_chunk_rows`), in ``work``'s buffer when given, so it never
    costs more than a few MiB whatever n. ``select`` finds its rows range by
    range (:func:`_selected`), so no row-sized index is made either: fresh
    row-sized temporaries fragment the heap, and fresh chunk buffers cost page
    faults when the heap gives freed memory back (both measured). ``fused``:
    complex values in one complex pass (default on the CPU) or two real ones
    (default elsewhere: complex atomics are not available on every accelerator).
    """
    F, device = XT.shape[0], values.device
    if device.type == "cpu" and _kernels.available() and fused is not False:
        return _scatter_hist_c(XT, values, n_cols, nb, rows, slots, select)
    if fused is None:
        fused = device.type == "cpu"
    split = values.is_complex() and not fused
    dtype = torch.float64 if split else values.dtype
    outs = [torch.zeros((F, n_cols), dtype=dtype, device=device) for _ in range(2 if split else 1)]
    gathered = rows is not None or select is not None
    step = _chunk_rows(F, device, gathered)
    buffer = None if work is None else work.chunk_index(F * step)
    groups = [(rows, slots)] if select is None else _selected(*select)
    for rows, slots in groups:
        m = XT.shape[1] if rows is None else rows.shape[0]
        for a in range(0, m, step):
            b = min(m, a + step)
            if rows is None:
                bins, part = XT[:, a:b], values[a:b]
            else:  # gathering uint8 bins is 4x faster than gathering an int64 index (measured)
                r = rows[a:b]
                bins, part = XT.gather(1, r.expand(F, -1)), values.index_select(0, r)
            out_index = None if buffer is None else buffer[: F * (b - a)].view(F, b - a)
            if slots is None:
                index = bins.long() if out_index is None else out_index.copy_(bins)
            else:
                index = torch.add(bins, slots[a:b], alpha=nb, out=out_index)
            parts = (part.real, part.imag) if split else (part,)
            for out, p in zip(outs, parts):
                out.scatter_add_(1, index, p.unsqueeze(0).expand(F, -1))
    return torch.complex(*outs) if split else outs[0]


def _scatter_hist_c(XT: torch.Tensor, values: torch.Tensor, n_cols: int, nb: int, rows, slots,
                    select: tuple | None) -> torch.Tensor:
    """:func:`_scatter_hist` by the C loop (:mod:`._kernels`): no int64 index,
    no gathered copy of the bins; the same sums, added in the same order."""
    out = torch.zeros((XT.shape[0], n_cols), dtype=values.dtype)
    for rows, slots in [(rows, slots)] if select is None else _selected(*select):
        _kernels.hist(XT, values, out, nb, rows, slots)
    return out


def _selected(slot: torch.Tensor, lo: int, hi: int):
    """Yield ``(rows, nodes)``: the rows with ``lo <= slot < hi`` and their node
    ``slot - lo`` (None when ``hi == lo + 1``), int64, range by range.

    On the CPU the ranges are of ``max(_SELECT_ROWS, n / 8)`` rows, so each index
    is small; on an accelerator one range (one host sync for ``nonzero``).
    """
    n = slot.shape[0]
    size = max(_SELECT_ROWS, -(-n // 8)) if slot.device.type == "cpu" else max(n, 1)
    for a in range(0, n, size):
        s = slot[a : a + size]
        rows = _nonzero(s == lo if hi == lo + 1 else (s >= lo) & (s < hi))
        nodes = None if hi == lo + 1 else s.index_select(0, rows).long().sub_(lo)
        yield (rows.add_(a) if a else rows), nodes


def _selected_c(slot: torch.Tensor, lo: int, hi: int, work: "_Workspace"):
    """:func:`_selected` on the CPU by the C loop, into ``work``'s buffers: the
    same ranges, rows and nodes (None when ``hi == lo + 1``). Each yielded pair
    is valid until the next one is made."""
    n = slot.shape[0]
    size = max(_SELECT_ROWS, -(-n // 8))
    rows_buf, nodes_buf = work.select_buffers(min(size, n))
    one = hi == lo + 1
    for a in range(0, n, size):
        m = _kernels.select(slot, a, min(n, a + size), lo, hi, rows_buf, None if one else nodes_buf)
        if m:
            yield rows_buf[:m], None if one else nodes_buf[:m]


def _inverse_permutation(order: np.ndarray) -> np.ndarray:
    """``rank`` with ``rank[order[i]] == i``: each index's position in ``order``."""
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank


def _first_best(score: torch.Tensor, order_flat: torch.Tensor | None, rank: np.ndarray | None = None,
                use_numpy: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Best score per node and the flat index of the first split that ties it.

    score : (K, D, F, c) split scores, >= 0, or -inf where invalid; order_flat
    : (D * F * c,) the flat indices in tie-break order (:meth:`HistTree._order_flat`),
    or None for 0, 1, ...; rank: the position of each flat index in that order
    (computed if None). Ties (within ``_TIE_TOL`` of the best) go to NaN
    going right (``D`` index 0), then the first feature in the tree's order,
    then the lowest cut. Returns (best, arg): (K,) float64 and (K,) int64
    indices into ``score.view(K, -1)``. ``use_numpy``: default on the CPU.
    """
    flat = score.view(score.shape[0], -1)
    if use_numpy is None:
        use_numpy = flat.device.type == "cpu"
    if use_numpy:  # in numpy: ~16 us a call against ~190 (measured, 2 nodes)
        f = flat.numpy()
        best = f.max(1)
        tie = f >= (best * (1 - _TIE_TOL))[:, None]  # all True when best is -inf
        if order_flat is None or (np.count_nonzero(tie, axis=1) == 1).all():
            arg = tie.argmax(1)  # the first True
        else:  # the tied candidate that comes first in the order
            if rank is None:
                rank = _inverse_permutation(order_flat.numpy())
            arg = np.where(tie, rank, rank.size).argmin(1)  # an index of the flat scores
        return torch.from_numpy(best), torch.from_numpy(arg)
    if order_flat is not None:
        flat = flat.index_select(1, order_flat)
    best = flat.amax(1)
    tie = flat >= (best * (1 - _TIE_TOL)).unsqueeze(1)  # all True when best is -inf
    arg = tie.view(torch.uint8).argmax(1)  # argmax: the first of equal maxima
    return best, arg if order_flat is None else order_flat.index_select(0, arg)


def _nonzero(mask: torch.Tensor, use_numpy: bool | None = None) -> torch.Tensor:
    """Indices of the True entries of a 1-D mask (int64, same device).

    On the CPU numpy's flatnonzero is ~10x faster than torch.nonzero (measured,
    100k rows, one thread); on an accelerator torch.nonzero is the only way.
    """
    if use_numpy is None:
        use_numpy = mask.device.type == "cpu"
    if use_numpy:
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return torch.nonzero(mask).squeeze(1)


def _route(XT: torch.Tensor, slot: torch.Tensor, column: torch.Tensor, table: torch.Tensor, n_bins: int,
           work: "_Workspace | None" = None) -> torch.Tensor:
    """Send every row one level down: ``table[slot, XT[column[slot], row]]``.

    XT : (F, n) uint8, C-contiguous; slot : (n,) node of each row; column :
    (n_slots,) split feature of each node; table : (n_slots * n_bins,), the node
    a bin leads to; all three of :func:`_slot_dtype`. ``index_select`` on flat
    views: 3x faster on the CPU than advanced indexing or ``gather``, and int32
    1.6x faster than int64 (measured). With a workspace, the temporaries live in
    it and the result overwrites ``slot`` (no allocation).
    """
    n = XT.shape[1]
    if XT.device.type == "cpu" and _kernels.available():
        if work is None:
            slot = slot.clone()
        _kernels.route(XT, slot, column.contiguous(), table.contiguous(), n_bins)
        return slot
    flat = torch.index_select(column * n, 0, slot, out=None if work is None else work.index)
    flat.add_(_arange(n, XT.device, slot.dtype))
    b = torch.index_select(XT.view(-1), 0, flat, out=None if work is None else work.bins)
    index = torch.add(b, slot, alpha=n_bins, out=None if work is None else flat)
    return torch.index_select(table, 0, index, out=None if work is None else slot)


class _Workspace:
    """Per-row scratch of a fit, reused from level to level and from tree to tree.

    Fresh row-sized temporaries at every level fragment the C heap: fitting on
    1M x 20 (glibc malloc), its free-but-resident memory grew by ~4 MB per
    tree, to 25x the binned data after 100 trees (measured). In here: ``slot``
    (the node of each row), ``index``/``bins`` (the routing's temporaries),
    ``gh`` (``w*g + 1j*w*h``) and the training rows' leaves: 33 bytes per row
    with int32 slots; and the int64 index of one histogram chunk
    (:func:`_scatter_hist`).
    """

    def __init__(self, n: int, device, dtype: torch.dtype):
        self.slot = torch.empty(n, dtype=dtype, device=device)
        self.index = torch.empty(n, dtype=dtype, device=device)
        self.bins = torch.empty(n, dtype=torch.uint8, device=device)
        self.gh = torch.empty(n, dtype=torch.complex128, device=device)
        self._chunk = torch.empty(0, dtype=torch.int64, device=device)
        self._levels: dict[int, list[torch.Tensor]] = {}
        self._select = (torch.empty(0, dtype=torch.int64),) * 2
        self._leaves = None

    def leaves(self) -> torch.Tensor:
        """(n,) int64 for the training rows' leaves, kept after the fit for
        ``apply`` (a fresh vector per tree, alive across the stage, was what
        fragmented the heap most, measured); overwritten by the next fit."""
        if self._leaves is None:
            self._leaves = torch.empty(self.slot.shape[0], dtype=torch.int64, device=self.slot.device)
        return self._leaves

    def level_histograms(self, channel: int, shape: tuple, current: torch.Tensor) -> torch.Tensor:
        """An uninitialised contiguous tensor of ``shape`` for the next level's
        histograms of ``channel`` (0: ``gh``, 1: ``cw``), never sharing memory
        with ``current`` (the level they are computed from): two buffers per
        channel, used in turn and kept from tree to tree (fresh multi-MB
        tensors at every level cost page faults, measured)."""
        numel = math.prod(shape)
        pair = self._levels.setdefault(channel, [torch.empty(0, dtype=current.dtype)] * 2)
        for i, buf in enumerate(pair):
            if buf.numel() and buf.data_ptr() == current.data_ptr():
                continue  # the level being read
            if buf.numel() < numel or buf.dtype != current.dtype:
                buf = pair[i] = torch.empty(numel, dtype=current.dtype, device=current.device)
            return buf[:numel].view(shape)
        raise AssertionError("unreachable: two buffers, at most one in use")

    def select_buffers(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two int64 buffers of at least ``size`` elements: selected rows and their nodes."""
        if self._select[0].numel() < size:
            self._select = (torch.empty(size, dtype=torch.int64), torch.empty(size, dtype=torch.int64))
        return self._select

    def chunk_index(self, size: int) -> torch.Tensor:
        """An int64 buffer of at least ``size`` elements for one histogram chunk."""
        if self._chunk.numel() < size:
            self._chunk = torch.empty(size, dtype=torch.int64, device=self._chunk.device)
        return self._chunk

    def fits(self, n: int, device, dtype: torch.dtype) -> bool:
        s = self.slot
        return s.shape[0] == n and s.device == torch.device(device) and s.dtype == dtype


def _checkout_workspace(Xb: torch.Tensor, n: int, dtype: torch.dtype) -> _Workspace:
    """The workspace kept for ``Xb``, taken out of the cache while a fit uses it
    (so two concurrent fits never share one), or a new one."""
    work = _workspaces.get(Xb)
    if work is not None and work.fits(n, Xb.device, dtype):
        _workspaces.clear()
        return work
    return _Workspace(n, Xb.device, dtype)


_arange_last: list = [None]


def _arange(n: int, device, dtype) -> torch.Tensor:
    """``torch.arange(n)``, remembered for the last (n, device, dtype) asked for (read-only)."""
    last = _arange_last[0]
    if last is None or last.shape[0] != n or last.device != torch.device(device) or last.dtype != dtype:
        last = _arange_last[0] = torch.arange(n, device=device, dtype=dtype)
    return last


def _slot_dtype(XT: torch.Tensor) -> torch.dtype:
    """int32 for routing indices when every flat position of XT fits, else int64."""
    return torch.int32 if XT.numel() < 2**31 else torch.int64


def _feature_major(Xb: torch.Tensor) -> torch.Tensor:
    """(F, n) C-contiguous bins: free for ``BinMapper.transform``'s output, a copy otherwise."""
    return Xb.T.contiguous()


class _OneSlotCache:
    """Remembers one value computed from one tensor, until that tensor is
    modified in place, garbage-collected, or another value is stored.

    The entry is one tuple swapped atomically, so concurrent fits can at worst
    miss the cache, never read a mismatched entry.
    """

    def __init__(self):
        self._entry = None

    def get(self, key_tensor: torch.Tensor, owner=None):
        entry = self._entry
        if entry is None:
            return None
        ref, version, owner_ref, value, _ = entry
        if ref() is not key_tensor or version != key_tensor._version:
            return None
        if owner_ref is not None and owner_ref() is not owner:
            return None
        return value

    def put(self, key_tensor: torch.Tensor, value, owner=None) -> None:
        token = object()  # the finalizer holds only this, never the value
        owner_ref = None if owner is None else weakref.ref(owner)
        self._entry = (weakref.ref(key_tensor), key_tensor._version, owner_ref, value, token)
        weakref.finalize(key_tensor, self._drop, token)

    def _drop(self, token) -> None:
        entry = self._entry
        if entry is not None and entry[4] is token:
            self._entry = None

    def clear(self) -> None:
        self._entry = None


# The leaves of the training rows of the most recent fit (one vector of n ints
# at most): the booster's next call is nearly always apply/predict on the very
# matrix it just fitted on, which then costs nothing.
_train_leaves = _OneSlotCache()
# The per-row scratch of the most recent fit (see _Workspace), for the next tree
# fitted on the same matrix; released with the matrix.
_workspaces = _OneSlotCache()
# The root's row counts per bin (F, n_bins) and whether any row is missing, of
# the most recently fitted bins: the same for every tree fitted on one matrix.
_root_counts_cache = _OneSlotCache()
# Rows per histogram chunk, as int64 index elements (8 bytes each): at 100k x 20,
# one thread, a root histogram in chunks of 1 << 18 took 1.26 ms against 1.09 ms
# with an int64 index of all rows kept (8x the binned matrix, no longer kept),
# and a gathered child's in chunks of 1 << 16 took 1.22 ms against 1.41 ms in
# one piece (measured). Accelerators take large chunks (fewer launches).
_SLICE_INDEX_ELEMENTS = 1 << 18
_GATHER_INDEX_ELEMENTS = 1 << 16
_ACCEL_INDEX_ELEMENTS = 1 << 24
# Rows per range when a level's rows are selected by node (see _selected).
_SELECT_ROWS = 1 << 16
# Up to this many smaller children are histogrammed one by one, which needs no
# per-value node offset (cheaper than one scatter with offsets, measured).
_PER_CHILD_SCATTER = 4
# Memory bounds. A level keeps its nodes' histograms for the subtraction trick
# only while they fit in _HIST_BYTES; deeper (wider) levels histogram their
# nodes directly, in groups that fit. The split search handles at most
# _SEARCH_ELEMENTS candidate splits per pass (8 bytes each per temporary): small
# enough for its ~15 elementwise passes to stay in cache (1 << 17 searched 128
# nodes x 20 features 1.5x faster than one pass over all of them, measured).
_HIST_BYTES = 256 * 2**20
_SEARCH_ELEMENTS = 1 << 17


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
    random_state : int or None, default=None
        Seeds the order in which features win ties. Splits whose scores agree
        to ``_TIE_TOL`` (relative) are ties; the first feature in a random
        permutation drawn at each fit wins, as in ``DecisionTreeRegressor``,
        which visits the features in a random order and keeps the first best.
        None: the lowest feature index wins (deterministic, as HistGradientBoosting).

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
    ):
        self.max_depth = max_depth
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.min_weight_leaf = min_weight_leaf
        self.min_impurity_decrease = min_impurity_decrease
        self.n_bins = n_bins
        self.random_state = random_state

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

    @staticmethod
    def _columns(features, n_features: int) -> np.ndarray:
        if features is None:
            return np.arange(n_features)
        if isinstance(features, torch.Tensor):
            features = features.cpu()
        columns = np.asarray(features).reshape(-1)
        if columns.size == 0 or not np.issubdtype(columns.dtype, np.integer):
            raise ValueError(f"features must be a non-empty list of column indices, got {features!r}.")
        if columns.min() < 0 or columns.max() >= n_features:
            raise ValueError(
                f"features must index the {n_features} columns of Xb, got {columns.tolist()}."
            )
        return np.unique(columns)

    def _prepare(self, Xb, gradient, hessian, sample_weight, features) -> tuple[_Data, np.ndarray, float]:
        """Validate the inputs; keep the rows with positive weight and the allowed columns.

        Returns the data, the allowed columns (sorted) and the total sample weight.
        """
        if not isinstance(Xb, torch.Tensor) or Xb.dtype != torch.uint8 or Xb.dim() != 2:
            got = type(Xb).__name__
            if isinstance(Xb, torch.Tensor):
                got += f" of dtype {Xb.dtype} and shape {tuple(Xb.shape)}"
            raise TypeError(
                "HistTree.fit expects Xb as a 2-D uint8 torch tensor of bin indices "
                f"(BinMapper.transform's output), got {got}."
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
        columns = self._columns(features, n_features)
        XT = _feature_major(Xb)
        source = Xb if columns.size == n_features else None
        if columns.size < n_features:
            XT = XT.index_select(0, torch.as_tensor(columns, device=device))
        w = None if sample_weight is None else vector(sample_weight, "sample_weight")
        all_rows = True
        if w is not None and n:
            lo, hi, finite = torch.stack((*torch.aminmax(w), torch.isfinite(w).all().double())).tolist()
            if lo < 0 or not finite:
                raise ValueError("sample_weight must be finite and >= 0.")
            if lo == hi == 1.0:  # unit weights are no weights (and cost nothing)
                w = None
            elif lo == 0:  # rows left out, e.g. by the booster's subsampling
                rows = _nonzero(w > 0)
                XT = XT.gather(1, rows.expand(XT.shape[0], -1))
                g, h, w = (v.index_select(0, rows) for v in (g, h, w))
                all_rows, source = False, None
        if self.n_bins < 256 and XT.numel() and int(XT.max()) >= self.n_bins:
            raise ValueError(
                f"Xb holds bin index {int(XT.max())}, but n_bins={self.n_bins}; pass "
                "n_bins=BinMapper.missing_bin + 1."
            )
        gw, hw = (g, h) if w is None else (g * w, h * w)
        n_rows = XT.shape[1]
        # One sync: are w*h, h and w constant over the kept rows?
        s = [0.0] * 7
        if n_rows:
            parts = [*torch.aminmax(hw)]
            parts += parts if w is None else [*torch.aminmax(h), *torch.aminmax(w)]
            if w is not None and device.type != "cpu":
                parts.append(w.sum())
            s[: len(parts)] = torch.stack(parts).tolist()
            if w is not None and device.type == "cpu":  # numpy's sum: the same bits at any thread count
                s[6] = float(np.sum(w.numpy()))
            if not all(map(math.isfinite, s)) or min(s[0], s[2]) < 0:
                raise ValueError(
                    "hessian must be finite and >= 0 (a convex loss), got values in "
                    f"[{s[2]}, {s[3]}]."
                )
        count_unit = s[0] if s[0] == s[1] and s[0] > 0 else 0.0
        hess_unit = s[2] if s[2] == s[3] and s[2] > 0 else 0.0
        weight_unit = 1.0 if w is None else (s[4] if s[4] == s[5] else 0.0)
        total_weight = float(n_rows) if w is None else s[6]
        cw = None
        if count_unit == 0.0 or (weight_unit == 0.0 and hess_unit == 0.0):
            cw = torch.complex(torch.ones_like(hw), torch.ones_like(hw) if w is None else w)
        work = _checkout_workspace(Xb, n_rows, _slot_dtype(XT))
        pair = torch.view_as_real(work.gh)
        pair[:, 0].copy_(gw)
        pair[:, 1].copy_(hw)
        data = _Data(
            XT=XT,
            gh=work.gh,
            work=work,
            g=gw.contiguous(),
            h=hw,
            cw=cw,
            count_unit=count_unit,
            weight_unit=weight_unit,
            hess_unit=hess_unit,
            all_rows=all_rows,
            source=source,
        )
        return data, columns, total_weight

    # -------------------------------------------------------------- histograms
    def _histograms(self, data: _Data, rows, slots, n_slots: int, select: tuple | None = None):
        """Histograms of the rows ``rows`` (all if None) into ``n_slots`` nodes.

        rows : (m,) int64 or None; slots : (m,) int64 node of each row, or None
        for one node; or ``select``, as in :func:`_scatter_hist`. Returns
        ``(gh, cw)``: complex tensors of shape
        (n_slots, F, n_bins), ``cw`` None when counts are read off ``gh``.
        """
        nb, F = self.n_bins, data.XT.shape[0]
        if data.XT.device.type == "cpu" and _kernels.available():
            return self._histograms_c(data, rows, slots, n_slots, select)

        def hist_of(values):
            out = _scatter_hist(data.XT, values, n_slots * nb, nb, rows, slots, work=data.work,
                                select=select)
            return out.view(F, n_slots, nb).transpose(0, 1)

        return hist_of(data.gh), None if data.cw is None else hist_of(data.cw)

    def _histograms_c(self, data: _Data, rows, slots, n_slots: int, select: tuple | None, out: tuple | None = None):
        """:meth:`_histograms` by the C loop, written straight in the split search's
        (n_slots, F, n_bins) layout, into ``out = (gh, cw)`` when given (contiguous)."""
        shape = (n_slots, data.XT.shape[0], self.n_bins)
        pairs = []
        for i, values in enumerate((data.gh, data.cw)):
            if values is not None:
                hist = torch.zeros(shape, dtype=values.dtype) if out is None else out[i]
                pairs.append((values, hist))
        # the selected rows come range by range, in reused buffers: each range goes to every channel
        groups = [(rows, slots)] if select is None else _selected_c(*select, data.work)
        for r, s in groups:
            for values, hist in pairs:
                _kernels.hist(data.XT, values, hist, self.n_bins, r, s, node_major=True)
        return pairs[0][1], pairs[1][1] if len(pairs) > 1 else None

    def _next_histograms_c(self, data: _Data, slot: torch.Tensor, k: int, hist, cw, parents):
        """The next level's histograms on the CPU with the C loops: the k smaller
        children's from their rows (slots [0, k)), the larger ones' as parent
        minus sibling, written into one (2k, F, n_bins) buffer of the workspace (no
        concatenation, no fresh tensor: :meth:`_Workspace.level_histograms`)."""
        shape = (2 * k, *hist.shape[1:])
        new = data.work.level_histograms(0, shape, hist)
        new_cw = None if cw is None else data.work.level_histograms(1, shape, cw)
        for fresh in (new, new_cw):
            if fresh is not None:
                fresh[:k].zero_()  # the larger children's half is overwritten below
        self._histograms_c(data, None, None, k, (slot, 0, k), out=(new[:k], None if cw is None else new_cw[:k]))
        for old, fresh in ((hist, new), (cw, new_cw)):
            if old is not None:
                parent = old if parents is None else old.index_select(0, parents)
                torch.sub(parent, fresh[:k], out=fresh[k:])
        return new, new_cw

    def _small_histograms(self, data: _Data, slot: torch.Tensor, k: int):
        """Histograms of the k smaller children of a level: the rows with slot < k."""
        if k > _PER_CHILD_SCATTER:
            return self._histograms(data, None, None, k, select=(slot, 0, k))
        parts = [self._histograms(data, None, None, 1, select=(slot, j, j + 1)) for j in range(k)]
        hist = torch.cat([p[0] for p in parts])
        return hist, None if data.cw is None else torch.cat([p[1] for p in parts])

    def _hist_bytes(self, data: _Data, n_nodes: int) -> int:
        return n_nodes * data.XT.shape[0] * self.n_bins * (16 if data.cw is None else 32)

    def _find_splits_direct(self, data: _Data, slot: torch.Tensor, K: int, totals: np.ndarray, total_weight: float) -> np.ndarray:
        """Split search of the K open nodes (slots [0, K)) without kept histograms:
        each group of nodes that fits in ``_HIST_BYTES`` is histogrammed from its rows."""
        group = max(1, _HIST_BYTES // self._hist_bytes(data, 1))
        hosts = []
        for a in range(0, K, group):
            b = min(K, a + group)
            hist, cw = self._histograms(data, None, None, b - a, select=(slot, a, b))
            hosts.append(self._find_splits(data, hist, cw, totals[a:b], total_weight))
        return np.concatenate(hosts)

    def _root_histograms(self, data: _Data):
        """Root histograms; also records whether any row is in a missing bin (one sync).

        When ``w*h`` is one constant, the hessian histogram is that constant
        times the row counts (computed once per matrix, then cached), and only
        the gradients are scattered (a real scatter, ~20% cheaper than a complex one).
        """
        if data.cw is None and data.source is not None:
            XT, nb = data.XT, self.n_bins
            entry = _root_counts_cache.get(data.source)
            if entry is None or entry[0].shape != (XT.shape[0], nb):
                ones = torch.ones((), dtype=torch.float64, device=XT.device).expand(XT.shape[1])
                counts = _scatter_hist(XT, ones, nb, nb, work=data.work)
                # every row weighs count_unit > 0: a missing value is a row in the missing bin
                entry = (counts, bool((counts[:, -1] != 0).any()))
                _root_counts_cache.put(data.source, entry)
            grad = _scatter_hist(XT, data.g, nb, nb, work=data.work)
            data.has_missing = entry[1]
            return torch.complex(grad, entry[0] * data.count_unit).unsqueeze(0), None
        hist, cw = self._histograms(data, None, None, 1)
        missing = hist[0, :, -1].imag if cw is None else cw[0, :, -1].real  # hessians or counts
        data.has_missing = bool((missing != 0).any())
        return hist, cw

    # ----------------------------------------------------------- split search
    def _hessian_floor(self, data: _Data) -> float:
        """Least ``H`` of a child, when counts and weights are read off ``H``.

        ``count = H / count_unit`` (an integer up to rounding), so ``count >=
        min_samples_leaf`` is ``H >= (min_samples_leaf - 1/2) * count_unit``;
        the weight condition is translated the same way.
        """
        floor = (self.min_samples_leaf - 0.5) * data.count_unit
        mwl = self.min_weight_leaf
        if mwl > 0:
            if data.weight_unit > 0:
                rows = math.ceil(mwl / data.weight_unit * (1 - 1e-12))
                floor = max(floor, (rows - 0.5) * data.count_unit)
            else:
                floor = max(floor, mwl * data.hess_unit * (1 - 1e-12))
        return floor

    def _find_splits(self, data: _Data, hist, cw, totals: np.ndarray, total_weight: float) -> np.ndarray:
        """Best split of each node over features, cut points and the NaN side.

        hist, cw : (K, F, n_bins) complex histograms on the device; totals : (K, 4)
        host stats (G, H, count, weight) of the nodes. The search runs on the
        device; its K winners come to the host in one copy, where the rest is
        cheap numpy. Ties: see :func:`_first_best`; the winning cut is then
        centred in its run of equal cuts (:meth:`_centred_cuts`).

        Returns (K, 13) float64 host rows: accept, gain, feature, bin,
        missing_left, left stats (4), right stats (4).
        """
        if hist.device.type == "cpu" and _kernels.available():
            return self._find_splits_c(data, hist, cw, totals, total_weight)
        K, F, nb = hist.shape
        per_node = (2 if data.has_missing else 1) * F * (nb - 1)
        group = max(1, _SEARCH_ELEMENTS // per_node)
        if K > group:  # bound the temporaries: search the nodes in groups
            return np.concatenate([
                self._find_splits(
                    data, hist[a : a + group], None if cw is None else cw[a : a + group],
                    totals[a : a + group], total_weight,
                )
                for a in range(0, K, group)
            ])
        # Channels as planes (c, K, F, nb): G, H[, count, weight]. The cumulative sum
        # writes them contiguous: strided (interleaved complex) operands made every
        # op below 3-5x slower (measured).
        ch = torch.view_as_real(hist)
        if cw is not None:
            ch = torch.cat((ch, torch.view_as_real(cw)), -1)
        ch = ch.permute(3, 0, 1, 2)
        nc = ch.shape[0]
        left = ch[..., :-1].cumsum(-1)  # (c, K, F, nb-1): cut after bin t, NaN going right
        node = left[..., -1:] + ch[..., -1:]  # (c, K, F, 1) node sums, as this feature sees them
        if data.has_missing:  # second direction: NaN going left
            left = torch.stack((left, left + ch[..., -1:]), 2)
        else:
            left = left.unsqueeze(2)  # (c, K, D, F, nb-1), D = 1 or 2
        right = node.unsqueeze(2) - left
        GL, HL, GR, HR = left[_G], left[_H], right[_G], right[_H]
        if cw is None:
            valid = torch.minimum(HL, HR) >= self._hessian_floor(data)
        else:
            valid = (torch.minimum(left[_C], right[_C]) >= self.min_samples_leaf) & (
                torch.minimum(HL, HR) > 0
            )
            if self.min_weight_leaf > 0:
                valid &= torch.minimum(left[_W], right[_W]) >= self.min_weight_leaf
        score = GL.square().div_(HL).addcdiv_(GR.square(), HR)  # in place: fewer passes
        score.masked_fill_(valid.logical_not_(), -math.inf)
        order = self._order_flat(data, left.shape[2], F)
        best, arg = _first_best(score, *(order or (None, None)))
        picked = left.view(nc, K, -1).gather(2, arg.view(1, K, 1).expand(nc, K, 1)).squeeze(2).T
        parts = [best.unsqueeze(1), arg.unsqueeze(1).double(), picked]
        # rows (hessian or count) per bin of each node's winning feature, to centre its cut:
        # read in place on the CPU; gathered before the copy to the host elsewhere
        mass = ch[_H if cw is None else _C]  # (K, F, nb)
        if mass.device.type == "cpu":
            mass_host = mass.numpy()
        else:
            mass_host = None
            feature = arg.div(nb - 1, rounding_mode="floor").remainder_(F)
            parts.append(mass.gather(1, feature.view(K, 1, 1).expand(K, 1, nb)).squeeze(1))
        if data.has_missing:  # NaN mass per feature (hessian or count)
            parts.append(mass[:, :, -1])
        host = torch.cat(parts, 1).cpu().numpy()
        return self._split_rows(data, host, totals, F, total_weight, mass_host)

    def _find_splits_c(self, data: _Data, hist, cw, totals: np.ndarray, total_weight: float) -> np.ndarray:
        """:meth:`_find_splits` and :meth:`_split_rows` by the C loop
        (:func:`._kernels.best_splits`): the same scores, tie-break and host
        rows, with no temporaries but one node's scores."""
        K, F, nb = hist.shape
        floor = self._hessian_floor(data) if cw is None else 0.0
        mid = self.min_impurity_decrease
        out, uncentred = _kernels.best_splits(
            hist, cw, 2 if data.has_missing else 1, data.order, floor, float(self.min_samples_leaf),
            float(self.min_weight_leaf), _TIE_TOL, totals, (data.count_unit, data.weight_unit, data.hess_unit),
            _REL_GAIN_TOL, mid * total_weight if mid > 0 else -1.0)
        if uncentred.any():
            mass = torch.view_as_real(hist if cw is None else cw)[..., 1 if cw is None else 0].numpy()  # (K, F, nb)
            winners = mass[np.arange(K), out[:, _FEATURE].astype(np.int64)]
            out[:, _BIN] = self._centred_cuts(data, out, winners[:, :-1])
        return out

    def _order_flat(self, data: _Data, D: int, F: int) -> tuple | None:
        """The tie-break order of the split search's flat (D, F, n_bins - 1)
        candidates, features in ``data.order``: ``(order, rank)``, the (D * F *
        (n_bins - 1),) int64 tensor of flat indices in that order, and (numpy)
        each flat index's position in it. Built once per tree, in numpy."""
        if data.order is None:
            return None
        cached = data.order_flat.get(D)
        if cached is None:
            c = self.n_bins - 1
            order = data.order.cpu().numpy()
            flat = ((np.arange(D)[:, None, None] * F + order[None, :, None]) * c + np.arange(c)).reshape(-1)
            cached = data.order_flat[D] = (torch.from_numpy(flat).to(data.order.device),
                                           _inverse_permutation(flat))
        return cached

    def _split_rows(self, data: _Data, host: np.ndarray, totals: np.ndarray, F: int, total_weight: float,
                    mass: np.ndarray | None = None) -> np.ndarray:
        """The host half of the split search: decode the argmax, derive the stats.

        host : (K, 2 + nc [+ n_bins] [+ F]) from :meth:`_find_splits`; mass : (K, F,
        n_bins) per-bin mass of every feature (CPU), else its winning rows are in host.
        """
        K, nb = host.shape[0], self.n_bins
        nc = 2 if data.cw is None else 4
        out = np.empty((K, 13))
        best, arg = host[:, 0], host[:, 1].astype(np.int64)
        arg, out[:, _BIN] = np.divmod(arg, nb - 1)
        direction, out[:, _FEATURE] = np.divmod(arg, F)
        left, right = out[:, _LEFT : _LEFT + 4], out[:, _RIGHT : _RIGHT + 4]
        left[:, :nc] = host[:, 2 : 2 + nc]
        feature, col = out[:, _FEATURE].astype(np.int64), 2 + nc
        if mass is not None:
            winners = mass[np.arange(K), feature]
        else:
            winners, col = host[:, col : col + nb], col + nb
        out[:, _BIN] = self._centred_cuts(data, out, winners[:, :-1])
        if nc == 2:  # counts and weights read off the hessian sums
            left[:, _C] = np.round(left[:, _H] / data.count_unit)
            if data.weight_unit > 0:
                left[:, _W] = left[:, _C] * data.weight_unit
            else:
                left[:, _W] = left[:, _H] / data.hess_unit
        np.subtract(totals, left, out=right)
        G, H = totals[:, _G], totals[:, _H]
        parent = np.divide(G * G, H, out=np.zeros(K), where=H > 0)
        with np.errstate(invalid="ignore"):
            gain = out[:, _GAIN] = best - parent
            accept = np.isfinite(gain) & (gain > _REL_GAIN_TOL * np.abs(best))
        if self.min_impurity_decrease > 0:
            accept &= gain >= self.min_impurity_decrease * total_weight
        out[:, _ACCEPT] = accept
        # With no NaN in the node, unseen NaNs follow the larger child (as HistGradientBoosting).
        missing_left = left[:, _C] >= right[:, _C]
        if data.has_missing:
            missing = host[np.arange(K), col + feature]
            missing_left = np.where(missing > 0, direction == 1, missing_left)
        out[:, _MISSING_LEFT] = missing_left
        return out

    def _centred_cuts(self, data: _Data, out: np.ndarray, mass: np.ndarray) -> np.ndarray:
        """The cut of each winning split, moved to the middle of its run of equal cuts.

        The search finds the lowest cut ``t`` of the best partition; every cut
        ``t .. j-1`` makes the same partition of the node's rows when the bins
        ``t+1 .. j-1`` hold none of them (``j`` the next bin that does). With
        ``bin_values`` ``v``, the cut ``c`` in that run whose midpoint
        ``(v[c] + v[c+1]) / 2`` is nearest ``(v[t] + v[j]) / 2`` (an exact tree's
        threshold between the node's neighbouring values); else ``(t + j - 1) // 2``.

        out : (K, 13) rows with the feature and lowest cut; mass : (K, n_bins - 1)
        rows per value bin of that feature. Returns (K,) cuts.
        """
        t = out[:, _BIN].astype(np.int64)
        K, n_cuts = mass.shape[0], mass.shape[1] - 1  # value bins 0 .. n_cuts; cuts 0 .. n_cuts - 1
        if (mass[np.arange(K), np.minimum(t + 1, n_cuts)] > 0).all():
            return t  # no empty bin after any cut: the usual case on large data
        after = (mass > 0) & (np.arange(n_cuts + 1) > t[:, None])
        j = np.where(after.any(1), after.argmax(1), t + 1)  # next occupied bin (t + 1: no run)
        if not (j > t + 1).any():
            return t
        if data.bin_values is None:
            return (t + j - 1) // 2
        v = data.bin_values[out[:, _FEATURE].astype(np.int64)]  # (K, n_cuts + 1)
        rows = np.arange(K)
        target = v[rows, t] + v[rows, np.minimum(j, n_cuts)]
        distance = np.abs(v[:, :-1] + v[:, 1:] - target[:, None])  # (K, n_cuts): twice the offset
        cuts = np.arange(n_cuts)
        distance[(cuts < t[:, None]) | (cuts >= j[:, None])] = np.inf
        return np.where(j > t + 1, distance.argmin(1), t)

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
        table[taken] = np.where(self._goes_right(host[taken]), right_slot[:, None], left_slot[:, None])
        stays = [i for i in range(K) if host[i, _ACCEPT] == 0]
        finished = [open_nodes[i] for i in stays] + done_nodes
        stays += range(K, K + len(done_nodes))
        table[stays] = (2 * k + np.arange(len(stays)))[:, None]
        column = np.zeros(len(table), dtype=np_dtype)
        column[taken] = host[taken, _FEATURE]
        return table, column, children, finished

    def _grow_depthwise(self, data: _Data, totals: np.ndarray, total_weight: float, columns) -> tuple | None:
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
            if len(table) == 1:  # the root: every row reads the same column
                work.index.copy_(data.XT[int(column[0])])
                torch.index_select(table_t, 0, work.index, out=slot)
            else:
                _route(data.XT, slot, torch.as_tensor(column, device=device), table_t, nb, work)
            if last:
                break
            lefts, rights = host[taken, _LEFT : _LEFT + 4], host[taken, _RIGHT : _RIGHT + 4]
            is_right = small_right[:, None]
            totals = np.concatenate((np.where(is_right, rights, lefts), np.where(is_right, lefts, rights)))
            if hist is None or self._hist_bytes(data, 2 * k) > _HIST_BYTES:
                hist = cw = None  # too wide to keep: the next level is histogrammed directly
                continue
            if device.type == "cpu" and _kernels.available():
                parents = torch.as_tensor(taken) if k < K else None
                hist, cw = self._next_histograms_c(data, slot, k, hist, cw, parents)
                continue
            small, small_cw = self._small_histograms(data, slot, k)
            if k < K:
                parents = torch.as_tensor(taken, device=device)
                hist = hist.index_select(0, parents)
                cw = None if cw is None else cw.index_select(0, parents)
            hist = torch.cat((small, hist - small))
            if cw is not None:
                cw = torch.cat((small_cw, cw - small_cw))
        return (slot, open_nodes + done_nodes) if data.all_rows else None

    def _grow_best_first(self, data: _Data, totals: np.ndarray, total_weight: float, columns) -> None:
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
                    open_leaves[node] = (rows[i], hist[i : i + 1], None if cw is None else cw[i : i + 1], host[i])

        hist, cw = self._root_histograms(data)
        consider([0], [torch.arange(data.XT.shape[1], device=device)], hist, cw, totals)
        n_leaves = 1
        while heap and n_leaves < self.max_leaf_nodes:
            _, node = heapq.heappop(heap)
            rows, hist, cw, row = open_leaves.pop(node)
            left, right = self._split_node(node, row, columns)
            n_leaves += 1
            depth = self._nodes[left][10]
            if n_leaves >= self.max_leaf_nodes or (self.max_depth is not None and depth >= self.max_depth):
                continue
            column = data.XT[int(row[_FEATURE])].index_select(0, rows)
            r = column > int(row[_BIN])
            if data.has_missing:
                r = torch.where(column == self.n_bins - 1, not row[_MISSING_LEFT], r)
            left_rows, right_rows = rows.index_select(0, _nonzero(~r)), rows.index_select(0, _nonzero(r))
            small_right = row[_RIGHT + _C] < row[_LEFT + _C]
            small_rows = right_rows if small_right else left_rows
            small, small_cw = self._histograms(data, small_rows, None, 1)
            hists = torch.cat((small, hist - small))
            cws = None if cw is None else torch.cat((small_cw, cw - small_cw))
            stats = np.stack((row[_LEFT : _LEFT + 4], row[_RIGHT : _RIGHT + 4]))
            if small_right:
                consider([right, left], [right_rows, left_rows], hists, cws, stats[::-1].copy())
            else:
                consider([left, right], [left_rows, right_rows], hists, cws, stats)

    # ------------------------------------------------------------------- API
    def fit(self, Xb: torch.Tensor, gradient: torch.Tensor, hessian: torch.Tensor, *, sample_weight=None, features=None, bin_values=None) -> "HistTree":
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
        """
        self._validate_params()
        _train_leaves.clear()
        data, columns, total_weight = self._prepare(Xb, gradient, hessian, sample_weight, features)
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
        if not n_rows:
            s = 0j
        elif device.type == "cpu":  # numpy's sums: the same bits whatever torch's thread count
            s = complex(np.sum(data.g.numpy()), np.sum(data.h.numpy()))
        else:
            s = complex(data.gh.sum())
        if not (math.isfinite(s.real) and math.isfinite(s.imag)):
            raise ValueError("gradient has NaN or infinite values; check the loss and the raw predictions.")
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
            leaves = torch.index_select(leaf_of_slot, 0, slot, out=data.work.leaves())
            _train_leaves.put(Xb, leaves, owner=self)
        _workspaces.put(Xb, data.work)
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
            raise TypeError("HistTree.apply expects a 2-D uint8 tensor of bins (BinMapper.transform).")
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
