"""The Triton kernel of quantized histograms (:mod:`._quantized`), for CUDA.

One launch per level histograms every node of the level: a grid of row
blocks times feature blocks; each program loads its rows' node (``slot``) and
integer values once, then for each of its features adds every row whose node
is in ``[lo, hi)`` to its ``(node, feature, bin)`` cell with an int64 atomic
add. Integer adds are exact, so the result does not depend on the order the
GPU's threads run in: the same integers as torch's ``scatter_add_``
(``tests/test_quantized.py`` checks it under ``TRITON_INTERPRET=1`` on the CPU).
Rows outside the level's open nodes are masked out, never compacted: no
``nonzero``, so no host sync.

Triton comes with CUDA builds of torch; without it hist mode uses the torch
fallback (same integers, more launches). The kernel is compiled on first use.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["available", "level_hist"]

# Rows per program and features per program (each program reuses its rows'
# node and values for that many features). The row block fills 4 warps.
_BLOCK_ROWS = 1024
_FEATURES_PER_PROGRAM = 2
_MAX_GRID_Y = 65535


@functools.cache
def available() -> bool:
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernel():
    import triton
    import triton.language as tl

    # no specialization on the sizes: the warm-up fit and the real one share one compiled kernel
    @triton.jit(do_not_specialize=["n", "F", "lo", "width", "row0"])
    def level_hist_kernel(
        XT,
        Q,
        SLOT,
        OUT,
        n,
        F,
        lo,
        width,
        row0,
        NB: tl.constexpr,
        C: tl.constexpr,
        BLOCK: tl.constexpr,
        FEATURES: tl.constexpr,
        ALL_ROWS: tl.constexpr,
    ):
        # axis 0: feature blocks, so that the programs running at once spread their atomic
        # adds over every feature's cells (not all on one feature's 256 bins)
        rows = row0 + tl.program_id(1).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        in_range = rows < n
        if ALL_ROWS:  # the root: every row, in node 0
            node = tl.zeros((BLOCK,), dtype=tl.int64)
            keep = in_range
        else:
            node = tl.load(SLOT + rows, mask=in_range, other=-1).to(tl.int64) - lo
            keep = in_range & (node >= 0) & (node < width)
        q0 = tl.load(Q + rows * C, mask=keep, other=0)
        q1 = tl.load(Q + rows * C + 1, mask=keep, other=0)
        if C == 4:
            q2 = tl.load(Q + rows * C + 2, mask=keep, other=0)
            q3 = tl.load(Q + rows * C + 3, mask=keep, other=0)
        for j in range(FEATURES):
            f = tl.program_id(0).to(tl.int64) * FEATURES + j
            mask = keep & (f < F)
            b = tl.load(XT + f * n + rows, mask=mask, other=0).to(tl.int64)
            cell = OUT + ((node * F + f) * NB + b) * C
            tl.atomic_add(cell, q0, mask=mask, sem="relaxed")
            tl.atomic_add(cell + 1, q1, mask=mask, sem="relaxed")
            if C == 4:
                tl.atomic_add(cell + 2, q2, mask=mask, sem="relaxed")
                tl.atomic_add(cell + 3, q3, mask=mask, sem="relaxed")

    return level_hist_kernel, triton.cdiv


def level_hist(
    XT: torch.Tensor, q: torch.Tensor, slot: torch.Tensor, lo: int, hi: int, out: torch.Tensor
) -> None:
    """``out[slot[i] - lo, f, XT[f, i], c] += q[i, c]`` for the rows with ``lo <= slot[i] < hi``.

    XT : (F, n) uint8, C-contiguous; q : (n, C) int64, C in (2, 4), contiguous;
    slot : (n,) int32 or int64; out : (hi - lo, F, nb, C) int64, zeroed, contiguous.
    """
    F, n = XT.shape
    C, nb = q.shape[1], out.shape[2]
    if not (
        XT.dtype == torch.uint8
        and XT.is_contiguous()
        and q.dtype == torch.int64
        and q.is_contiguous()
        and C in (2, 4)
        and out.is_contiguous()
        and out.shape == (hi - lo, F, nb, C)
        and (slot.shape == (n,) and slot.is_contiguous() if slot is not None else hi == lo + 1)
    ):
        raise ValueError(
            "the quantized histogram kernel was handed tensors of an unexpected layout "
            "(an internal error of residuals; RESIDUALS_TRITON=0 avoids the kernel)"
        )
    if n == 0 or F == 0:
        return
    kernel, cdiv = _kernel()
    row_blocks = cdiv(n, _BLOCK_ROWS)
    for first in range(0, row_blocks, _MAX_GRID_Y):  # CUDA grids have at most 65535 rows
        grid = (cdiv(F, _FEATURES_PER_PROGRAM), min(_MAX_GRID_Y, row_blocks - first))
        kernel[grid](
            XT,
            q,
            q if slot is None else slot,  # not read when ALL_ROWS
            out,
            n,
            F,
            lo,
            hi - lo,
            first * _BLOCK_ROWS,
            NB=nb,
            C=C,
            BLOCK=_BLOCK_ROWS,
            FEATURES=_FEATURES_PER_PROGRAM,
            ALL_ROWS=slot is None,
        )
