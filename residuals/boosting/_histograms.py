"""Histograms of the histogram tree: per node, per feature, the sums of ``(w*g, w*h)`` per bin.

A level's histograms: the root's from all rows; below it the smaller child's
of every split from its rows and the larger one's as parent minus sibling (the
subtraction trick). On the CPU with the C loops built they are C passes
(:mod:`._kernels`), else torch ``scatter_add_`` over flat ``(node, bin)``
indices. The values lie on a fixed-point grid (:mod:`._grid`), so every cell's
sum is exact: the two agree bit for bit, at any thread count and however the C
loops cut the rows. Rows are routed one level down by :func:`_route`.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _kernels
from ._hist_data import _arange, _Data, _nonzero, _root_counts_cache, _Workspace
from ._quantized import dequantize, level_hist

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
# Memory bound: a level keeps its nodes' histograms for the subtraction trick only
# while they fit in _HIST_BYTES; deeper (wider) levels histogram their nodes
# directly, in groups that fit (the split search bounds its own passes).
_HIST_BYTES = 256 * 2**20


def _chunk_rows(F: int, device: torch.device, gathered: bool) -> int:
    """Rows per chunk of a histogram: bounds its int64 index to a few MiB."""
    if device.type != "cpu":
        return max(1, _ACCEL_INDEX_ELEMENTS // max(F, 1))
    return max(1, (_GATHER_INDEX_ELEMENTS if gathered else _SLICE_INDEX_ELEMENTS) // max(F, 1))


def _scatter_hist(
    XT: torch.Tensor,
    values: torch.Tensor,
    n_cols: int,
    nb: int,
    rows=None,
    slots=None,
    fused: bool | None = None,
    work: _Workspace | None = None,
    select: tuple | None = None,
) -> torch.Tensor:
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


def _scatter_hist_c(
    XT: torch.Tensor, values: torch.Tensor, n_cols: int, nb: int, rows, slots, select: tuple | None
) -> torch.Tensor:
    """:func:`_scatter_hist` by the C loop (:mod:`._kernels`): no int64 index,
    no gathered copy of the bins; the same sums, added in the same order."""
    out = torch.zeros((XT.shape[0], n_cols), dtype=values.dtype)
    for part_rows, part_slots in [(rows, slots)] if select is None else _selected(*select):
        _kernels.hist(XT, values, out, nb, part_rows, part_slots)
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


def _route(
    XT: torch.Tensor,
    slot: torch.Tensor,
    column: torch.Tensor,
    table: torch.Tensor,
    n_bins: int,
    work: _Workspace | None = None,
) -> torch.Tensor:
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


class _Histograms:
    """The histograms of :class:`~residuals.boosting._hist.HistTree` (a mixin)."""

    def _histograms(self, data: _Data, rows, slots, n_slots: int, select: tuple | None = None):
        """Histograms of the rows ``rows`` (all if None) into ``n_slots`` nodes.

        rows : (m,) int64 or None; slots : (m,) int64 node of each row, or None
        for one node; or ``select``, as in :func:`_scatter_hist`. Returns
        ``(gh, cw)``: complex tensors of shape
        (n_slots, F, n_bins), ``cw`` None when counts are read off ``gh``.
        """
        nb, F = self.n_bins, data.XT.shape[0]
        if data.quant is not None:  # one node of rows (best-first growth) or a level's nodes
            assert slots is None and (rows is None or n_slots == 1)
            slot, lo, hi = select if select is not None else (None, 0, n_slots)
            return dequantize(self._level_sums(data, slot, lo, hi, rows), data.quant.unit)
        if data.XT.device.type == "cpu" and _kernels.available():
            return self._histograms_c(data, rows, slots, n_slots, select)

        def hist_of(values):
            out = _scatter_hist(
                data.XT, values, n_slots * nb, nb, rows, slots, work=data.work, select=select
            )
            return out.view(F, n_slots, nb).transpose(0, 1)

        return hist_of(data.gh), None if data.cw is None else hist_of(data.cw)

    def _histograms_c(
        self,
        data: _Data,
        rows,
        slots,
        n_slots: int,
        select: tuple | None,
        out: tuple | None = None,
        routing: tuple | None = None,
    ):
        """:meth:`_histograms` by the C loop, written straight in the split search's
        (n_slots, F, n_bins) layout, into ``out = (gh, cw)`` when given (contiguous).
        ``routing``: route the rows one level down first, in the same pass
        (:func:`._kernels.level_hist`; ``select`` only)."""
        shape = (n_slots, data.XT.shape[0], self.n_bins)
        pairs = []
        for i, values in enumerate((data.gh, data.cw)):
            if values is not None:
                fresh = torch.empty if select is not None else torch.zeros  # level_hist zeroes
                hist = fresh(shape, dtype=values.dtype) if out is None else out[i]
                pairs.append((values, hist))
        if select is not None:  # a level's nodes in one pass (see level_hist for the threads)
            scratch = None if data.work is None else data.work.part_buffers
            for values, hist in pairs:
                _kernels.level_hist(
                    data.XT, values, hist, self.n_bins, *select, scratch=scratch, routing=routing
                )
                routing = None  # routed once
        else:
            for values, hist in pairs:
                _kernels.hist(data.XT, values, hist, self.n_bins, rows, slots, node_major=True)
        return pairs[0][1], pairs[1][1] if len(pairs) > 1 else None

    def _next_histograms_c(
        self, data: _Data, slot: torch.Tensor, k: int, hist, cw, parents, routing=None
    ):
        """The next level's histograms on the CPU with the C loops: the k smaller
        children's from their rows (slots [0, k)), the larger ones' as parent
        minus sibling, written into one (2k, F, n_bins) buffer of the workspace (no
        concatenation, no fresh tensor: :meth:`_Workspace.level_histograms`).
        ``routing=(column, table)``: the rows are first routed to this level, in the
        same pass over them."""
        shape = (2 * k, *hist.shape[1:])
        new = data.work.level_histograms(0, shape, hist)
        new_cw = None if cw is None else data.work.level_histograms(1, shape, cw)
        small = (new[:k], None if cw is None else new_cw[:k])
        self._histograms_c(data, None, None, k, (slot, 0, k), out=small, routing=routing)
        self._reduce(data, *small)
        for old, fresh in ((hist, new), (cw, new_cw)):
            if old is not None:
                parent = old if parents is None else old.index_select(0, parents)
                torch.sub(parent, fresh[:k], out=fresh[k:])
        return new, new_cw

    def _level_sums(self, data: _Data, slot, lo: int, hi: int, rows=None) -> torch.Tensor:
        """(hi - lo, F, n_bins, C) int64: the quantized sums of the rows in slots [lo, hi)
        (slot None: every row, or the int64 ``rows``, in one node).

        The one place a level's histograms are made from rows, root included: a fit
        spread over processes would all-reduce (sum) the result here, as integers,
        exactly and in any order; everything after it (subtraction, split search,
        routing) is then the same on every process.
        """
        sums = level_hist(data.XT, data.quant, slot, lo, hi, self.n_bins, rows)
        if data.collective is not None:  # every rank's rows: integers, exact in any order
            data.collective.all_reduce(sums, "sum", "a level's quantized histograms")
        return sums

    def _next_histograms_q(self, data: _Data, slot: torch.Tensor, k: int, parents):
        """The next level's histograms from quantized rows: the k smaller children's
        in one pass (slots [0, k)), the larger ones' as parent minus sibling, in
        int64 (exact); kept in ``data.hist_q``, returned dequantized for the search.

        The histograms themselves come from :meth:`_level_sums`.
        """
        small = self._level_sums(data, slot, 0, k)
        parent = data.hist_q if parents is None else data.hist_q.index_select(0, parents)
        data.hist_q = torch.cat((small, parent - small))
        return dequantize(data.hist_q, data.quant.unit)

    def _reduce(self, data: _Data, hist: torch.Tensor, cw: torch.Tensor | None):
        """In a distributed fit, sum a level's new histograms over the ranks, in place.

        The one hook of a distributed fit in the tree's growth: called on the
        root's histograms and on each level's freshly built ones (the smaller
        children's; the larger ones follow by subtraction, as in one process).
        The values are on a fixed-point grid (:mod:`._collective`), so the sums
        are exact: every rank gets the histograms of all the rows, bit for bit.
        Quantized histograms are summed as integers in :meth:`_level_sums` instead.
        """
        if data.collective is not None and data.quant is None:  # else reduced as integers
            for t in (hist, cw):
                if t is not None:
                    data.collective.all_reduce(torch.view_as_real(t), "sum", "a level's histograms")
        return hist, cw

    def _small_histograms(self, data: _Data, slot: torch.Tensor, k: int):
        """Histograms of the k smaller children of a level: the rows with slot < k."""
        if k > _PER_CHILD_SCATTER:
            return self._histograms(data, None, None, k, select=(slot, 0, k))
        parts = [self._histograms(data, None, None, 1, select=(slot, j, j + 1)) for j in range(k)]
        hist = torch.cat([p[0] for p in parts])
        return hist, None if data.cw is None else torch.cat([p[1] for p in parts])

    def _hist_bytes(self, data: _Data, n_nodes: int) -> int:
        return n_nodes * data.XT.shape[0] * self.n_bins * (16 if data.cw is None else 32)

    def _keeps_histograms(self, data: _Data, n_nodes: int) -> bool:
        """Whether a level of ``n_nodes`` keeps its histograms for the subtraction trick."""
        return self._hist_bytes(data, n_nodes) <= _HIST_BYTES

    def _find_splits_direct(
        self, data: _Data, slot: torch.Tensor, K: int, totals: np.ndarray, total_weight: float
    ) -> np.ndarray:
        """Split search of the K open nodes (slots [0, K)) without kept histograms:
        each group of nodes that fits in ``_HIST_BYTES`` is histogrammed from its rows."""
        group = max(1, _HIST_BYTES // self._hist_bytes(data, 1))
        hosts = []
        for a in range(0, K, group):
            b = min(K, a + group)
            hist, cw = self._reduce(
                data, *self._histograms(data, None, None, b - a, select=(slot, a, b))
            )
            hosts.append(self._find_splits(data, hist, cw, totals[a:b], total_weight))
        return np.concatenate(hosts)

    def _root_histograms(self, data: _Data):
        """Root histograms; also records whether any row is in a missing bin (one sync).

        When ``w*h`` is one constant, the hessian histogram is that constant
        times the row counts (computed once per matrix, then cached), and only
        the gradients are scattered (a real scatter, ~20% cheaper than a complex one).
        """
        if data.root is not None:  # made already (a distributed fit's root sums)
            made, data.root = data.root, None
            return made
        if data.quant is not None:
            data.hist_q = self._level_sums(data, None, 0, 1)
            # channel 1 counts rows (or sums w*h > 0); with 4 channels, channel 2 counts them
            rows_in_missing = data.hist_q[0, :, -1, 2 if data.quant.q.shape[1] == 4 else 1]
            data.has_missing = bool((rows_in_missing != 0).any())
            return dequantize(data.hist_q, data.quant.unit)
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
            hist = torch.complex(grad, entry[0] * data.count_unit).unsqueeze(0)
            if data.collective is None:
                data.has_missing = entry[1]
                return hist, None
            hist, cw = self._reduce(data, hist, None)  # counts * unit: exact on the grid
        else:
            hist, cw = self._reduce(data, *self._histograms(data, None, None, 1))
        missing = hist[0, :, -1].imag if cw is None else cw[0, :, -1].real  # hessians or counts
        data.has_missing = bool((missing != 0).any())
        return hist, cw
