"""The C loops of hist mode on the CPU (``_kernels.c``), loaded with ctypes.

Hist mode's two hot loops on the CPU are the histogram scatter
(``out[f, node * nb + bin] += w*g, w*h`` over a node's rows) and the routing
of rows one level down. In torch each is several kernels with row-sized
temporaries (the uint8 bins widened to an int64 index, then ``scatter_add_``);
in C each is one pass over the bins. Measured on 100k x 20, one thread: the
root histogram 2.3x faster, a gathered child's 1.2-1.8x.

The C file is built as an *optional* extension module when the package is
installed (``setup.py``). Without a C compiler the package installs anyway,
:func:`available` is False, and ``_hist.py`` runs the same arithmetic in
torch: the results are bit-identical either way (every histogram cell adds its
rows in row order in both; ``tests/test_hist_kernels.py`` checks it), only the
speed differs. Set ``RESIDUALS_C_KERNELS=0`` to use torch's loops anyway.

Threads: ctypes releases the GIL during a call, so with
``torch.get_num_threads() > 1`` a large call is split between that many
threads, by features (histograms: each feature owns its part of the output)
or by rows (routing), so the result is the same whatever the thread count.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor

import torch

__all__ = ["available", "disabled", "hist", "route"]

# Below this many row-features a call runs on the calling thread alone.
_PARALLEL_MIN = 1 << 17


def _load():
    if os.environ.get("RESIDUALS_C_KERNELS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    spec = importlib.util.find_spec("residuals.boosting._kernels_c")
    if spec is None or not spec.origin:
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
    except OSError:
        return None
    P, I = ctypes.c_void_p, ctypes.c_int64
    lib.residuals_hist.argtypes = [P, I, P, I, P, P, I, I, I, P, I, I]
    lib.residuals_hist.restype = None
    for name in ("residuals_route32", "residuals_route64"):
        getattr(lib, name).argtypes = [P, I, P, P, P, I, I, I]
        getattr(lib, name).restype = None
    return lib


_lib = _load()
_state = {"on": _lib is not None}
_pool: list = [None, 0]  # the executor and its thread count


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


def _parts(total: int, work: int) -> list[tuple[int, int]]:
    """[a, b) ranges covering [0, total): one per thread for large ``work``."""
    threads = torch.get_num_threads()
    if threads <= 1 or work < _PARALLEL_MIN or total < 2:
        return [(0, total)]
    step = -(-total // min(threads, total))
    return [(a, min(total, a + step)) for a in range(0, total, step)]


def _run(fn, args: tuple, parts: list[tuple[int, int]]) -> None:
    if len(parts) == 1:
        fn(*args, *parts[0])
        return
    if _pool[0] is None or _pool[1] < len(parts):
        if _pool[0] is not None:
            _pool[0].shutdown(wait=False)
        _pool[:] = [ThreadPoolExecutor(len(parts), thread_name_prefix="residuals-hist"), len(parts)]
    for future in [_pool[0].submit(fn, *args, a, b) for a, b in parts]:
        future.result()


def _ptr(t: torch.Tensor | None):
    return None if t is None else t.data_ptr()


def hist(XT: torch.Tensor, values: torch.Tensor, out: torch.Tensor, nb: int,
         rows: torch.Tensor | None = None, nodes: torch.Tensor | None = None) -> None:
    """``out[f, nodes[i] * nb + XT[f, rows[i]]] += values[rows[i]]``, in place.

    XT : (F, n) uint8, C-contiguous; values : (n,) float64 or complex128,
    contiguous; out : (F, n_cols) of values' dtype, C-contiguous, zeroed by the
    caller; rows : (m,) int64 or None for all rows; nodes : (m,) int64 or None
    for node 0. All on the CPU.
    """
    F, n = XT.shape
    k = 2 if values.is_complex() else 1
    if rows is not None:  # read once here, not once per feature in the loop
        values = values.index_select(0, rows)
    v = torch.view_as_real(values) if k == 2 else values
    m = n if rows is None else rows.shape[0]
    args = (_ptr(XT), n, _ptr(v), k, _ptr(rows), _ptr(nodes), m, nb, out.shape[1], _ptr(out))
    _run(_lib.residuals_hist, args, _parts(F, F * m))


def route(XT: torch.Tensor, slot: torch.Tensor, column: torch.Tensor, table: torch.Tensor, nb: int) -> None:
    """``slot[i] = table[slot[i] * nb + XT[column[slot[i]], i]]``, in place.

    XT : (F, n) uint8, C-contiguous; slot : (n,), column and table : (n_slots,)
    and (n_slots * nb,), contiguous, all three int32 or all int64. On the CPU.
    """
    n = XT.shape[1]
    fn = _lib.residuals_route32 if slot.dtype == torch.int32 else _lib.residuals_route64
    _run(fn, (_ptr(XT), n, _ptr(slot), _ptr(column), _ptr(table), nb), _parts(n, n))
