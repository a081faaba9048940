"""The C loops of hist mode on the CPU (``_kernels.c``), loaded with ctypes.

Hist mode's hot loops on the CPU are the histogram scatter (``out[f, node *
nb + bin] += w*g, w*h`` over a node's rows), the routing of rows one level
down, and the split search over a level's histograms. In torch each is
several kernels with temporaries (the uint8 bins widened to an int64 index
for ``scatter_add_``; a dozen passes over ``(K, F, n_bins)`` planes for the
split scores); in C each is one pass. Measured on 100k x 20, one thread: the
root histogram 2.3x faster, a gathered child's 1.2-1.8x.

The C file is built as an *optional* extension module when the package is
installed (``setup.py``). Without a C compiler the package installs anyway,
:func:`available` is False, and ``_hist.py`` runs the same arithmetic in
torch: the results are bit-identical either way (every histogram cell sums
values on a fixed-point grid, exactly, in both; ``tests/test_hist_kernels.py``
checks it), only the speed differs. Set ``RESIDUALS_C_KERNELS=0`` to use torch's loops anyway.

Threads: ctypes releases the GIL during a call, so a large call is split
between :func:`threads` threads: a level's histograms by rows, each thread
filling histograms of its own that are added at the end (and by features too
where a thread's histograms would not fit in its core's cache); the root's by
features, the split search by nodes, routing and binning by rows. The
histograms' values lie on a fixed-point grid (:mod:`._grid`), so every sum is
exact whatever the cut of the rows, and the result is the same bits at any
thread count. :func:`parallel_rows` puts the booster's elementwise numpy passes
(which release the GIL too) on the same threads.

How many threads: as scikit-learn's HistGradientBoosting, all the machine's
physical cores (within the process's CPU affinity and cgroup quota), unless
``OMP_NUM_THREADS`` is set (then that many) or a ``threadpoolctl`` limit is in
force::

    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=4):
        booster.fit(X, y)  # hist mode's C loops on 4 threads

The count is read at every call (about a microsecond), so a limit applies from
the next C call on.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

__all__ = [
    "available",
    "best_splits",
    "bin_rows",
    "disabled",
    "hist",
    "level_hist",
    "parallel_map",
    "parallel_rows",
    "route",
    "take_leaves",
    "threads",
]

# The C file's RESIDUALS_KERNELS_VERSION this module was written for.
KERNELS_VERSION = 11
# Below this many row-features (about a millisecond of one thread's work) a call
# runs on the calling thread alone: handing work to the pool costs ~0.1 ms.
_PARALLEL_MIN = 1 << 21


def _load():
    if os.environ.get("RESIDUALS_C_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    spec = importlib.util.find_spec("residuals.boosting._kernels_c")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        lib.residuals_kernels_version.restype = ctypes.c_int64
        version = lib.residuals_kernels_version()
    except (OSError, AttributeError):
        version = None
    if version != KERNELS_VERSION:
        warnings.warn(
            f"{spec.origin} was built from another version of residuals ({version}, expected "
            f"{KERNELS_VERSION}): hist mode uses torch's loops, which are slower on the CPU. "
            "Rebuild it with `pip install -e .` (or reinstall the package).",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    P, I, D = ctypes.c_void_p, ctypes.c_int64, ctypes.c_double
    lib.residuals_hist.argtypes = [P, I, P, I, P, P, I, I, I, P, I, I]
    lib.residuals_hist.restype = None
    lib.residuals_best_splits.argtypes = [
        P,
        P,
        I,
        I,
        I,
        I,
        P,
        D,
        D,
        D,
        D,
        P,
        D,
        D,
        D,
        D,
        D,
        P,
        P,
        P,
        I,
        I,
    ]
    for name in ("residuals_level_hist32", "residuals_level_hist64"):
        getattr(lib, name).argtypes = [P, I, P, I, P, I, I, I, I, P, I, I]
        getattr(lib, name).restype = I
    lib.residuals_bin.argtypes = [P, I, I, I, I, I, P, I, I, I, P, I, I]
    lib.residuals_bin.restype = I
    lib.residuals_best_splits.restype = None
    lib.residuals_abs_max.argtypes = [P, I, I]
    lib.residuals_abs_max.restype = D
    lib.residuals_grid_gh.argtypes = [P, D, P, I, D, P, P, I, I]
    lib.residuals_grid_gh.restype = None
    for name in ("residuals_level_hist_rows32", "residuals_level_hist_rows64"):
        getattr(lib, name).argtypes = [P, I, P, I, P, I, I, I, I, P, P, P, I, I, I, I, I]
        getattr(lib, name).restype = I
    for name in ("residuals_take32", "residuals_take64"):
        getattr(lib, name).argtypes = [P, P, P, I, I]
        getattr(lib, name).restype = None
    lib.residuals_sum_parts.argtypes = [P, I, I, I]
    lib.residuals_sum_parts.restype = None
    for name in ("residuals_route32", "residuals_route64"):
        getattr(lib, name).argtypes = [P, I, P, P, P, I, I, I]
        getattr(lib, name).restype = None
    return lib


_lib = _load()
_state = {"on": _lib is not None}


def available() -> bool:
    """True when the C loops are built, loaded and not switched off."""
    return _state["on"]


@contextlib.contextmanager
def disabled():
    """Within this block hist mode uses torch's loops (for tests and A/B timing)."""
    before = _state["on"]
    _state["on"] = False
    try:
        yield
    finally:
        _state["on"] = before


def threads() -> int:
    """Threads the C loops use: scikit-learn's rule for HistGradientBoosting (see
    the module docstring): physical cores, ``OMP_NUM_THREADS``, ``threadpoolctl``."""
    try:
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    except ImportError:  # a private helper of scikit-learn: the same rule, by hand
        env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
        if env.isdigit() and int(env) > 0:
            return int(env)
        return max(
            1,
            min(
                torch.get_num_threads(),
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else os.cpu_count() or 1,
            ),
        )
    return max(1, _openmp_effective_n_threads())


def _parts(total: int, work: int) -> list[tuple[int, int]]:
    """[a, b) ranges covering [0, total): one per thread for large ``work``."""
    n_threads = threads()
    if n_threads <= 1 or work < _PARALLEL_MIN or total < 2:
        return [(0, total)]
    step = -(-total // min(n_threads, total))
    return [(a, min(total, a + step)) for a in range(0, total, step)]


@functools.cache
def _executor() -> ThreadPoolExecutor:
    """One pool for the process; it starts its threads only as calls need them."""
    return ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="residuals-hist")


def parallel_map(fn, items: list) -> list:
    """``[fn(x) for x in items]`` on up to :func:`threads` threads, in order: for work
    that releases the GIL (numpy sorts, say); each item's result is its own."""
    parts = min(threads(), len(items))
    if parts <= 1:
        return [fn(x) for x in items]
    step = -(-len(items) // parts)
    chunks = [items[a : a + step] for a in range(0, len(items), step)]
    futures = [_executor().submit(lambda chunk: [fn(x) for x in chunk], c) for c in chunks[1:]]
    first = [fn(x) for x in chunks[0]]
    return first + [y for future in futures for y in future.result()]


# Rows per block of parallel_rows: a block's float64 temporaries (512 KiB each) stay in
# the core's cache between the passes of one expression.
_ROW_BLOCK = 1 << 16


def parallel_rows(fn, n: int) -> None:
    """``fn(a, b)`` for consecutive row ranges ``[a, b)`` covering ``[0, n)``, on up to
    :func:`threads` threads, each range cut into blocks of ``_ROW_BLOCK`` rows: for
    elementwise numpy work that writes rows ``[a, b)`` of its outputs (numpy's ufuncs
    release the GIL), so the results are the same bits at any thread count. Block
    edges are multiples of ``_ROW_BLOCK``, so SIMD loops see the same alignment."""

    def elementwise(a: int, b: int) -> None:
        for lo in range(a, b, _ROW_BLOCK):
            fn(lo, min(b, lo + _ROW_BLOCK))

    n_blocks = -(-n // _ROW_BLOCK)
    # a few elementwise passes per row, each about a row-feature's histogram work
    parts = _parts(n_blocks, 8 * n)
    _run(elementwise, (), [(a * _ROW_BLOCK, min(n, b * _ROW_BLOCK)) for a, b in parts])


def _run(fn, args: tuple, parts: list[tuple]) -> list:
    """``fn(*args, *part)`` for each part (``(a, b)`` ranges, mostly): the first on
    the calling thread, the others on the pool (one hand-off fewer per call); their
    results, in order."""
    futures = [_executor().submit(fn, *args, *part) for part in parts[1:]]
    first = fn(*args, *parts[0])
    return [first] + [future.result() for future in futures]


def _check(ok: bool) -> None:
    """The C loops read raw memory: a layout or dtype they were not written for
    would read or write out of bounds, so it is an error here, never a guess."""
    if not ok:
        raise ValueError(
            "hist mode's C loops were handed tensors of an unexpected dtype or layout "
            "(an internal error of residuals; RESIDUALS_C_KERNELS=0 avoids the C loops)"
        )


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def hist(
    XT: torch.Tensor,
    values: torch.Tensor,
    out: torch.Tensor,
    nb: int,
    rows: torch.Tensor | None = None,
    nodes: torch.Tensor | None = None,
    node_major: bool = False,
) -> None:
    """Add each row's value to its bin's histogram cell, in place.

    ``out[f, nodes[i] * nb + XT[f, rows[i]]] += values[rows[i]]`` for ``out`` of
    shape (F, n_cols), or with ``node_major``, ``out[nodes[i], f, XT[f, rows[i]]]``
    for ``out`` of shape (n_nodes, F, nb). XT : (F, n) uint8, C-contiguous;
    values : (n,) float64 or complex128; out : of values' dtype, C-contiguous,
    zeroed by the caller; rows : (m,) int64 or None for all rows; nodes : (m,)
    int64 or None for node 0. All on the CPU.
    """
    F, n = XT.shape
    k = 2 if values.is_complex() else 1
    _check(
        XT.dtype == torch.uint8
        and XT.is_contiguous()
        and out.is_contiguous()
        and out.dtype == values.dtype
        and values.dtype in (torch.float64, torch.complex128)
        and all(t is None or (t.dtype == torch.int64 and t.is_contiguous()) for t in (rows, nodes))
    )
    if rows is not None:  # read once here, not once per feature in the loop
        values = values.index_select(0, rows)
    else:  # a no-op unless strided, e.g. an expanded scalar (the root's row counts)
        values = values.contiguous()
    v = torch.view_as_real(values) if k == 2 else values
    m = n if rows is None else rows.shape[0]
    node_stride, feature_stride = (F * nb, nb) if node_major else (nb, out.shape[1])
    args = (
        _ptr(XT),
        n,
        _ptr(v),
        k,
        _ptr(rows),
        _ptr(nodes),
        m,
        node_stride,
        feature_stride,
        _ptr(out),
    )
    _run(_lib.residuals_hist, args, _parts(F, F * m))


def level_hist(
    XT: torch.Tensor,
    values: torch.Tensor,
    out: torch.Tensor,
    nb: int,
    slot: torch.Tensor,
    lo: int,
    hi: int,
    scratch=None,
    routing: tuple | None = None,
) -> None:
    """The histograms of the nodes ``lo <= slot < hi`` of a level, in one pass, in place.

    ``routing=(column, table)``: first send every row one level down, as :func:`route`
    does (``slot`` updated in place), in the same pass where the threads' cuts allow
    (each thread routes its rows, then histograms them while their slots are in cache).

    ``out[slot[i] - lo, f, XT[f, i]] += values[i]`` for the rows with ``lo <=
    slot[i] < hi``. XT : (F, n) uint8, C-contiguous; values : (n,) float64 or
    complex128; slot : (n,) int32 or int64; out : (hi - lo, F, nb) of values'
    dtype, C-contiguous, its contents ignored (each thread zeroes its own cells,
    in its own core's cache). On the CPU.

    Threads (:func:`_level_split`): the rows are cut between them, each cut into
    a histogram of its own (``out`` or a ``scratch(count, size)`` buffer), and the
    cuts' histograms are added at the end; where a thread's histograms would not
    fit in its core's cache, the features are cut too. Each cell adds its rows in
    row order within a cut: **the values must lie on a fixed-point grid**
    (:mod:`._grid`, as hist mode's do) for the sums to be the same bits at any
    thread count.
    """
    F, n = XT.shape
    k = 2 if values.is_complex() else 1
    _check(
        XT.dtype == torch.uint8
        and XT.is_contiguous()
        and out.is_contiguous()
        and out.dtype == values.dtype
        and values.dtype in (torch.float64, torch.complex128)
        and out.shape == (hi - lo, F, nb)
        and slot.dtype in (torch.int32, torch.int64)
        and slot.is_contiguous()
        and slot.shape == (n,)
    )
    values = values.contiguous()
    v = torch.view_as_real(values) if k == 2 else values
    wide = slot.dtype == torch.int64
    n_rows, n_features = _level_split(n, F, (hi - lo) * F * nb * k * 8)
    if routing is not None and n_features > 1:  # features cut: a row's threads would race
        route(XT, slot, *routing, nb)
        routing = None
    if n_rows == 1 and routing is None:  # threads over features, straight into out
        fn = _lib.residuals_level_hist64 if wide else _lib.residuals_level_hist32
        args = (_ptr(XT), n, _ptr(v), k, _ptr(slot), lo, hi, F, nb, _ptr(out))
        if any(_run(fn, args, _cuts(F, n_features))):
            raise MemoryError("hist mode's C loops could not allocate their scratch")
        return
    # rows cut between threads, each cut into a histogram of its own, summed at the end
    row_cuts = _cuts(n, n_rows, _LEVEL_BLOCK)
    n_rows = len(row_cuts)  # the block alignment may leave fewer cuts than asked
    size = out.numel() * k
    extra = (scratch or _fresh)(n_rows - 1, size)
    buffers = [out] + extra
    _check(all(b.is_contiguous() and b.dtype == torch.float64 for b in extra))
    outs = (ctypes.c_void_p * n_rows)(*(b.data_ptr() for b in buffers))
    column, table = (None, None) if routing is None else routing
    _check(
        routing is None or all(t.dtype == slot.dtype and t.is_contiguous() for t in (column, table))
    )
    fn = _lib.residuals_level_hist_rows64 if wide else _lib.residuals_level_hist_rows32
    args = (_ptr(XT), n, _ptr(v), k, _ptr(slot), lo, hi, F, nb, ctypes.addressof(outs))
    args += (_ptr(column), _ptr(table))
    tasks = [
        (r, f0, f1, i0, i1)
        for r, (i0, i1) in enumerate(row_cuts)
        for f0, f1 in _cuts(F, n_features)
    ]
    if any(_run(fn, args, tasks)):
        raise MemoryError("hist mode's C loops could not allocate their scratch")
    if n_rows > 1:
        outs_ptr = ctypes.addressof(outs)
        _run(_lib.residuals_sum_parts, (outs_ptr, n_rows), _parts(size, size * n_rows))


def take_leaves(table: torch.Tensor, slot: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``out[i] = table[slot[i]]`` (``torch.index_select(table, 0, slot, out=out)``) by
    rows on the threads. table, out : int64; slot : int32 or int64; all contiguous
    CPU vectors, ``slot`` indexing ``table``."""
    n = slot.shape[0]
    _check(
        table.dtype == torch.int64
        and out.dtype == torch.int64
        and out.shape == (n,)
        and slot.dtype in (torch.int32, torch.int64)
        and all(t.is_contiguous() for t in (table, slot, out))
    )
    fn = _lib.residuals_take64 if slot.dtype == torch.int64 else _lib.residuals_take32
    _run(fn, (_ptr(table), _ptr(slot), _ptr(out)), _parts(n, 4 * n))
    return out


# Rows per block of the C loop residuals_level_hist (LEVEL_BLOCK): row cuts fall on them.
_LEVEL_BLOCK = 2048
# The most bytes of histograms one thread of level_hist fills: more spills its core's
# cache (1M x 20, 2 threads: 1.3 MB per thread 1.18x faster with rows cut than with
# features cut, 2.6 MB 1.32x slower; benchmarks/README.md).
_LEVEL_THREAD_BYTES = 2 << 20
# The fewest rows a thread of level_hist takes when rows are cut.
_LEVEL_MIN_ROWS = 1 << 16


def _level_split(n: int, F: int, hist_bytes: int) -> tuple[int, int]:
    """``(row cuts, feature cuts)`` of a level's histograms for :func:`threads`
    threads: rows cut as far as the rows allow (each thread then scans only its own
    rows), features cut as far as needed to keep each thread's histograms within
    ``_LEVEL_THREAD_BYTES``."""
    n_threads = threads()
    if n_threads <= 1 or F * n < _PARALLEL_MIN:
        return 1, 1
    n_features = min(F, n_threads, max(1, -(-hist_bytes // _LEVEL_THREAD_BYTES)))
    n_rows = max(1, min(n_threads // n_features, n // _LEVEL_MIN_ROWS))
    if n_rows == 1:
        n_features = min(F, n_threads)
    return n_rows, n_features


def _cuts(total: int, count: int, align: int = 1) -> list[tuple[int, int]]:
    """``count`` (at most) consecutive ranges covering ``[0, total)``, their edges
    multiples of ``align``."""
    if total <= 0:
        return [(0, 0)]
    step = -(-total // max(count, 1))
    step = -(-step // align) * align
    return [(a, min(total, a + step)) for a in range(0, total, step)]


def _fresh(count: int, size: int) -> list[torch.Tensor]:
    return [torch.empty(size, dtype=torch.float64) for _ in range(count)]


def bin_rows(X: np.ndarray, table: np.ndarray, round32: bool, missing: int) -> torch.Tensor:
    """BinMapper's bins of ``X`` by the C loop: (F, n) uint8, C-contiguous.

    X : (n, F) float32 or float64 numpy array, any strides; table : (F, width)
    float64 cuts, each row sorted and padded with +inf, width a power of two;
    round32 : bin ``float32(x)``. NaN gets ``missing``. Raises ValueError for a
    finite value too large for float32 when round32 (as scikit-learn's validation).
    """
    n, F = X.shape
    _check(
        X.dtype in (np.float32, np.float64)
        and table.dtype == np.float64
        and table.flags.c_contiguous
        and table.shape[0] == F
        and table.shape[1] & (table.shape[1] - 1) == 0
    )
    out = torch.empty((F, n), dtype=torch.uint8)
    args = (
        X.ctypes.data,
        X.itemsize,
        X.strides[0],
        X.strides[1],
        n,
        F,
        table.ctypes.data,
        table.shape[1],
        int(round32),
        missing,
        _ptr(out),
    )
    if sum(_run(_lib.residuals_bin, args, _parts(n, n * F))):
        raise ValueError("Input X contains infinity or a value too large for dtype('float32').")
    return out


def route(
    XT: torch.Tensor, slot: torch.Tensor, column: torch.Tensor, table: torch.Tensor, nb: int
) -> None:
    """``slot[i] = table[slot[i] * nb + XT[column[slot[i]], i]]``, in place.

    XT : (F, n) uint8, C-contiguous; slot : (n,), column and table : (n_slots,)
    and (n_slots * nb,), contiguous, all three int32 or all int64. On the CPU.
    """
    n = XT.shape[1]
    _check(
        XT.dtype == torch.uint8
        and XT.is_contiguous()
        and slot.dtype in (torch.int32, torch.int64)
        and all(t.dtype == slot.dtype and t.is_contiguous() for t in (slot, column, table))
    )
    fn = _lib.residuals_route32 if slot.dtype == torch.int32 else _lib.residuals_route64
    # a row's routing (two dependent loads) costs about what several histogram cells do
    _run(fn, (_ptr(XT), n, _ptr(slot), _ptr(column), _ptr(table), nb), _parts(n, 4 * n))


def best_splits(
    hist: torch.Tensor,
    cw: torch.Tensor | None,
    D: int,
    order: torch.Tensor | None,
    h_floor: float,
    min_count: float,
    min_weight: float,
    tie_tol: float,
    totals: np.ndarray,
    units: tuple[float, float, float],
    rel_gain_tol: float,
    min_gain: float,
):
    """The best split of each of K nodes, as ``HistTree._find_splits`` and
    ``_split_rows`` find it in torch and numpy.

    hist, cw : (K, F, n_bins) complex128 histograms (``cw`` None when counts
    are read off the hessians); D : 2 when the missing bin may go either way,
    else 1; order : (F,) int64 tie-break order of the features, or None;
    totals : (K, 4) the nodes' G, H, count, weight; units : ``(count_unit,
    weight_unit, hess_unit)``; min_gain : < 0 for none. Returns numpy ``(rows,
    uncentred)``: (K, 13) host rows as ``_split_rows`` lays them out (cuts not
    yet centred) and (K,) bool, True where the bin after the cut is empty (the
    only case ``_centred_cuts`` moves a cut). See ``residuals_best_splits``.
    """
    K, F, nb = hist.shape
    _check(
        hist.dtype == torch.complex128
        and (cw is None or (cw.dtype == torch.complex128 and cw.shape == hist.shape))
        and (order is None or (order.dtype == torch.int64 and order.shape == (F,)))
        and totals.shape == (K, 4)
    )
    hist = hist.contiguous()
    cw = None if cw is None else cw.contiguous()
    order = None if order is None else order.contiguous()
    totals = np.ascontiguousarray(totals, dtype=np.float64)
    rows, uncentred = np.empty((K, 13)), np.empty(K, dtype=np.int8)

    def search(k0: int, k1: int) -> None:  # nodes [k0, k1), with a scratch of their own
        scratch = np.empty((D * F + 4) * (nb - 1))
        _lib.residuals_best_splits(
            _ptr(hist),
            _ptr(cw),
            K,
            F,
            nb,
            D,
            _ptr(order),
            h_floor,
            min_count,
            min_weight,
            tie_tol,
            totals.ctypes.data,
            *units,
            rel_gain_tol,
            min_gain,
            scratch.ctypes.data,
            rows.ctypes.data,
            uncentred.ctypes.data,
            k0,
            k1,
        )

    _run(search, (), _parts(K, K * F * nb * 8))  # ~8 row-features' time per candidate
    return rows, uncentred.view(bool)
