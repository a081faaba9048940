"""The rows a histogram tree is fitted on, and the scratch reused from fit to fit.

:func:`prepare` validates a fit's inputs and keeps the rows with positive
weight and the allowed features (:class:`_Data`); :class:`_Workspace` holds the
per-row buffers a fit reuses from level to level and from tree to tree, kept
for the next tree fitted on the same matrix by a one-entry cache
(:class:`_OneSlotCache`). See :mod:`residuals.boosting._hist` for the tree.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from . import _grid_passes, _kernels
from ._grid import grid_bits, grid_step, to_grid
from ._quantized import Quantized, quantize

# Columns of the per-node statistics: sum w*g, sum w*h, row count, sum w.
_G, _H, _C, _W = range(4)


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
    work: _Workspace | None = None  # per-row scratch of this fit
    order: torch.Tensor | None = None  # (F,) int64 feature order of the tie-break, on the device
    order_flat: dict = field(default_factory=dict)  # D -> _order_flat's index
    quant: Quantized | None = None  # the rows as integers, when histograms are quantized
    hist_q: torch.Tensor | None = None  # (K, F, n_bins, C) int64 sums of the level's open nodes
    n_all: int = 0  # rows with positive weight, over every rank of a distributed fit
    root: tuple | None = None  # the root's (gh, cw) histograms when made before the growth
    collective: Any = None  # a distributed fit's Collective (._collective), None in one process


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


class _Workspace:
    """Per-row scratch of a fit, reused from level to level and from tree to tree.

    Fresh row-sized temporaries at every level fragment the C heap: fitting on
    1M x 20 (glibc malloc), its free-but-resident memory grew by ~4 MB per
    tree, to 25x the binned data after 100 trees (measured). In here: ``slot``
    (the node of each row), ``index``/``bins`` (the routing's temporaries),
    ``gh`` (``w*g + 1j*w*h``), ``w*g`` on its grid (when rounded here) and the
    training rows' leaves: 41 bytes per row with int32 slots; the int64 index of
    one histogram chunk (:func:`_scatter_hist`); and the per-thread histograms of
    a level whose rows are cut between threads (:meth:`part_buffers`).
    """

    def __init__(self, n: int, device, dtype: torch.dtype):
        self.slot = torch.empty(n, dtype=dtype, device=device)
        self.index = torch.empty(n, dtype=dtype, device=device)
        self.bins = torch.empty(n, dtype=torch.uint8, device=device)
        self.gh = torch.empty(n, dtype=torch.complex128, device=device)
        self._chunk = torch.empty(0, dtype=torch.int64, device=device)
        self._levels: dict[int, list[torch.Tensor]] = {}
        self._leaves = None
        self._g = None
        self._parts: list[torch.Tensor] = []

    def g_buffer(self) -> torch.Tensor:
        """(n,) float64 for ``w*g`` on its grid (when the fit rounds it here)."""
        if self._g is None:
            self._g = torch.empty(self.slot.shape[0], dtype=torch.float64, device=self.slot.device)
        return self._g

    def part_buffers(self, count: int, numel: int) -> list[torch.Tensor]:
        """``count`` float64 buffers of ``numel`` values: the per-thread histograms
        of a level whose rows are cut between threads (:func:`._kernels.level_hist`),
        kept from level to level and tree to tree."""
        while len(self._parts) < count:
            self._parts.append(torch.empty(0, dtype=torch.float64))
        for i in range(count):
            if self._parts[i].numel() < numel:
                self._parts[i] = torch.empty(numel, dtype=torch.float64)
        return [p[:numel] for p in self._parts[:count]]

    def leaves(self) -> torch.Tensor:
        """(n,) int64 for the training rows' leaves, kept after the fit for
        ``apply`` (a fresh vector per tree, alive across the stage, was what
        fragmented the heap most, measured); overwritten by the next fit."""
        if self._leaves is None:
            self._leaves = torch.empty(
                self.slot.shape[0], dtype=torch.int64, device=self.slot.device
            )
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
    if (
        last is None
        or last.shape[0] != n
        or last.device != torch.device(device)
        or last.dtype != dtype
    ):
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


def columns_of(features, n_features: int) -> np.ndarray:
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


def prepare(
    Xb,
    gradient,
    hessian,
    sample_weight,
    features,
    n_bins: int,
    quantized: bool = False,
    collective=None,
    negated: bool = False,
) -> tuple[_Data, np.ndarray, float]:
    """Validate the inputs; keep the rows with positive weight and the allowed columns.

    ``negated``: ``gradient`` holds ``-g`` (see :meth:`._hist.HistTree.fit`).

    ``quantized``: also the rows as integers (:func:`._quantized.quantize`).
    ``collective``: this rank's view of a distributed fit (:mod:`._collective`):
    ``w*g``, ``w*h`` and ``w`` go on their fixed-point grids, so that every sum
    over the rows is exact in any order, and every decision below is taken on
    all ranks' rows. Returns the data, the allowed columns (sorted) and the
    total sample weight.
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
    columns = columns_of(features, n_features)
    XT = _feature_major(Xb)
    source = Xb if columns.size == n_features else None
    if columns.size < n_features:
        XT = XT.index_select(0, torch.as_tensor(columns, device=device))
    w = None if sample_weight is None else vector(sample_weight, "sample_weight")
    all_rows = True
    if w is not None and (n or collective is not None):
        lo = hi = finite = lo_here = math.inf
        if n:
            lo, hi, finite = torch.stack(
                (*torch.aminmax(w), torch.isfinite(w).all().double())
            ).tolist()
            lo_here, hi = lo, -hi
        if collective is not None:  # the same decision on every rank
            bounds = torch.tensor([lo, hi, finite], dtype=torch.float64)
            lo, hi, finite = collective.all_reduce(bounds, "min", "the weights' range").tolist()
        hi = -hi
        if lo < 0 or not finite:
            raise ValueError("sample_weight must be finite and >= 0.")
        if lo == hi == 1.0:  # unit weights are no weights (and cost nothing)
            w = None
        elif lo_here == 0:  # rows left out, e.g. by the booster's subsampling
            rows = _nonzero(w > 0)
            XT = XT.gather(1, rows.expand(XT.shape[0], -1))
            g, h, w = (v.index_select(0, rows) for v in (g, h, w))
            all_rows, source = False, None
    if n_bins < 256 and XT.numel() and int(XT.max()) >= n_bins:
        raise ValueError(
            f"Xb holds bin index {int(XT.max())}, but n_bins={n_bins}; pass "
            "n_bins=BinMapper.missing_bin + 1."
        )
    gw, hw = (g, h) if w is None else (g * w, h * w)
    if negated and (collective is not None or quantized):  # else negated on the grid below
        gw = -gw
    n_rows = XT.shape[1]
    work = _checkout_workspace(Xb, n_rows, _slot_dtype(XT))
    steps = None
    gh_done = False
    if collective is not None:  # fixed point: sums over the rows are exact, in any order
        (gw, hw, w), steps = collective.on_grid(gw, hw, w)
    elif not quantized:  # the same in one process: any thread count, C or torch, same bits
        gw, hw, w, gh_done = _on_local_grid(gw, hw, w, n, work, negated)
    # One sync: are w*h, h and w constant over the kept rows?
    s = [0.0] * 7
    if n_rows:
        parts = [*_extremes(hw)]
        parts += parts if w is None else [*_extremes(h), *torch.aminmax(w)]
        if w is not None and device.type != "cpu":
            parts.append(w.sum())
        s[: len(parts)] = torch.stack(parts).tolist()
        if w is not None and device.type == "cpu":  # numpy's sum: the same bits at any thread count
            s[6] = float(np.sum(w.numpy()))
    n_all = n_rows
    if collective is not None:
        s, n_all = _agreed_stats(collective, s, n_rows)
    if n_all and (not all(map(math.isfinite, s)) or min(s[0], s[2]) < 0):
        raise ValueError(
            f"hessian must be finite and >= 0 (a convex loss), got values in [{s[2]}, {s[3]}]."
        )
    count_unit = s[0] if s[0] == s[1] and s[0] > 0 else 0.0
    hess_unit = s[2] if s[2] == s[3] and s[2] > 0 else 0.0
    weight_unit = 1.0 if w is None else (s[4] if s[4] == s[5] else 0.0)
    total_weight = float(n_all) if w is None else s[6]
    cw = None
    if count_unit == 0.0 or (weight_unit == 0.0 and hess_unit == 0.0):
        cw = torch.complex(torch.ones_like(hw), torch.ones_like(hw) if w is None else w)
    if not gh_done:
        torch.complex(gw, hw, out=work.gh)  # one pass (two strided copies took twice as long)
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
        n_all=n_all,
        collective=collective,
    )
    if quantized:
        data.quant = quantize(gw, hw, w, count_unit, cw is not None, steps)
    return data, columns, total_weight


def _on_local_grid(gw, hw, w, n: int, work: _Workspace, negated: bool = False):
    """``w*g``, ``w*h`` and ``w`` on their grids for sums of up to ``n`` values (the
    rows before those of weight 0 are left out, as a distributed fit's grid is sized:
    the two fits then agree bit for bit) (:mod:`._grid`), and whether ``work.gh``
    already holds ``w*g + 1j*w*h``. ``negated``: ``gw`` holds ``-w*g``, negated here.

    An expanded scalar (a unit hessian) stays one: the scalar is rounded. The
    booster's common case, unit weights and one hessian on the CPU with the C
    loops, is two threaded C passes (the largest ``|g|``, then ``g`` rounded into
    ``work.g`` and ``work.gh`` at once); elsewhere torch's ops, the same bits.
    """
    bits = grid_bits(max(n, 1))

    def rounded(v, top_of=_top):
        if v is None:
            return None
        if v.numel() and v.stride(0) == 0:  # an expanded scalar: round it once
            return to_grid(v[:1], grid_step(top_of(v[:1]), bits)).expand(v.shape[0])
        return to_grid(v, grid_step(top_of(v), bits))

    fast = (
        w is None
        and gw.numel()
        and gw.device.type == "cpu"
        and hw.stride(0) == 0
        and _kernels.available()
        and gw.is_contiguous()
    )
    if not fast:
        g = rounded(gw, _finite_top)
        return (-g if negated else g), rounded(hw), rounded(w), False
    g_top = _finite_top(gw, _grid_passes.abs_max(gw))
    h = rounded(hw)
    g = work.g_buffer()
    _grid_passes.grid_gh(gw, h, grid_step(g_top, bits), g, work.gh, negated)
    return g, h, None, True


def _top(v: torch.Tensor) -> float:
    """The largest ``|v|`` (0 when empty), which sizes ``v``'s grid."""
    return float(v.abs().max()) if v.numel() else 0.0


def _finite_top(g: torch.Tensor, top: float | None = None) -> float:
    """The largest ``|g|`` (``top`` when already known); a gradient that is not
    finite has no grid, and no tree can be grown from it."""
    top = _top(g) if top is None else top
    if not math.isfinite(top):
        raise ValueError(
            "gradient has NaN or infinite values; check the loss and the raw predictions."
        )
    return top


def _extremes(v: torch.Tensor):
    """``torch.aminmax(v)`` of a non-empty 1-D ``v``, read off one element when
    ``v`` is an expanded scalar (a unit hessian): every element is that one."""
    return torch.aminmax(v[:1] if v.stride(0) == 0 else v)


def _agreed_stats(collective, s: list, n_rows: int) -> tuple[list, int]:
    """:func:`prepare`'s row statistics over every rank: ``s`` = min, max of
    ``w*h``, ``h``, ``w`` and the sum of ``w`` (on its grid: exact); and the rows."""
    signs = [1.0, -1.0] * 3
    local = [v * sign if n_rows else math.inf for v, sign in zip(s[:6], signs)]
    bad = float(n_rows > 0 and not all(map(math.isfinite, s)))
    extremes = collective.all_reduce(torch.tensor(local, dtype=torch.float64), "min", "row stats")
    sums = torch.tensor([s[6], n_rows, bad], dtype=torch.float64)
    total, n_all, bad = collective.all_reduce(sums, "sum", "row stats").tolist()
    if not n_all:
        return [0.0] * 7, 0
    agreed = [v * sign for v, sign in zip(extremes.tolist(), signs)] + [total]
    return (agreed if not bad else [math.nan] * 7), int(n_all)
