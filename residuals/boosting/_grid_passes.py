"""The fixed-point grid's passes over the rows (:mod:`._grid`), as C loops on the
threads of :mod:`._kernels`: the largest ``|g|`` (which sizes the grid), ``g``
rounded to it together with ``w*g + 1j*w*h``, and exact sums of grid values. Each
is the same bits as its torch form, at any thread count (a maximum, a rounding and
an exact sum do not depend on where the rows are cut)."""

from __future__ import annotations

import math

import numpy as np
import torch

# the C loops' library and pool by module attribute (benchmarks/hist_threads.py times
# every call by wrapping _kernels._run)
from . import _kernels

__all__ = ["abs_max", "grid_gh", "grid_sum"]


def abs_max(x: torch.Tensor) -> float:
    """``float(x.abs().max())`` of a contiguous float64 CPU vector (0 when empty, NaN
    when any value is NaN or infinite: no grid fits it), on the threads: a maximum
    is the same in any order."""
    _kernels._check(x.dtype == torch.float64 and x.is_contiguous() and x.dim() == 1)
    n = x.shape[0]
    return max(
        _kernels._run(
            _kernels._lib.residuals_abs_max, (_kernels._ptr(x),), _kernels._parts(n, 4 * n)
        ),
        key=_nan_first,
    )


def grid_sum(v: torch.Tensor) -> float:
    """The sum of a float64 CPU vector whose values lie on one grid (:mod:`._grid`),
    in row blocks on the threads: exact, so the same bits in any order. An expanded
    scalar (stride 0) sums as ``n * v[0]``, exact on the grid too."""
    n = v.shape[0]
    if not n:
        return 0.0
    if v.stride(0) == 0:
        return n * float(v[0])
    x = v.contiguous().numpy()
    return math.fsum(
        _kernels._run(lambda a, b: float(np.sum(x[a:b])), (), _kernels._parts(n, 4 * n))
    )


def _nan_first(top: float) -> float:
    return math.inf if top != top else top


def grid_gh(
    g: torch.Tensor,
    h: torch.Tensor,
    step: float,
    g_out: torch.Tensor,
    gh: torch.Tensor,
    negate: bool = False,
):
    """``g_out = round(g / step) * step`` (of ``-g`` with ``negate``) and ``gh = g_out +
    1j * h`` in one pass on the threads (:mod:`._grid`; ``h`` already on its grid,
    contiguous or an expanded scalar). All (n,) on the CPU: g, h, g_out float64, gh
    complex128."""
    n = g.shape[0]
    _kernels._check(
        all(t.dtype == torch.float64 and t.shape == (n,) for t in (g, h, g_out))
        and g.is_contiguous()
        and g_out.is_contiguous()
        and h.stride(0) in (0, 1)
        and gh.dtype == torch.complex128
        and gh.shape == (n,)
        and gh.is_contiguous()
    )
    gh_ptr = _kernels._ptr(torch.view_as_real(gh))
    args = (
        _kernels._ptr(g),
        -1.0 if negate else 1.0,
        _kernels._ptr(h),
        h.stride(0),
        step,
        _kernels._ptr(g_out),
        gh_ptr,
    )
    _kernels._run(_kernels._lib.residuals_grid_gh, args, _kernels._parts(n, 8 * n))
