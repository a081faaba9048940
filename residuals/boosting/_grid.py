"""Fixed-point grids: float64 values whose sums are exact in any order.

A value on the grid of step ``2**-e`` is ``k * 2**-e`` for an integer ``k``. When
every value of a set lies on one grid and ``|k| <= 2**bits``, any sum of up to
``n`` of them, with ``n * 2**bits <= 2**53``, is a multiple of the step below
``2**53`` steps: float64 holds it exactly, so no addition rounds and the sum has
the same bits whatever the order of its terms. This is the fixed-point form of the
integer gradients of LightGBM's and XGBoost's quantized training, at full float64
resolution (33 bits of each value kept at a million rows, 29 at ten million).

Hist mode puts ``w*g``, ``w*h`` and ``w`` on their grids before a tree is grown
(:func:`._hist_data.prepare`): a histogram cell, a node's totals and the
subtraction trick's differences are then the same bits however the rows are cut
between threads, between processes (:mod:`._collective`, which agrees on the
steps over the ranks) or between the C and torch loops.
"""

from __future__ import annotations

import math

import torch

__all__ = ["FLOAT_BITS", "INT_BITS", "grid_bits", "grid_step", "to_grid"]

# Fixed-point bits of a float64 grid whose sums of n values stay exact: every
# partial sum is at most n * 2**bits grid steps <= 2**53 (float64's mantissa).
FLOAT_BITS = 53
# The same for int64 counts of grid steps, kept below 2**62 (room for the sign).
INT_BITS = 62


def grid_bits(n_total: int, total_bits: int = FLOAT_BITS) -> int:
    """Bits of one value on the grid so that any sum of ``n_total`` of them is exact."""
    return min(52, total_bits - math.ceil(math.log2(n_total + 1)))


def grid_step(top: float, bits: int) -> float:
    """``2**-e``: the finest power of two with ``top / 2**-e <= 2**bits`` (1 for ``top == 0``)."""
    if not (top > 0 and math.isfinite(top)):
        return 1.0
    return math.ldexp(1.0, math.frexp(top)[1] - bits)


def to_grid(values: torch.Tensor, step: float) -> torch.Tensor:
    """``values`` rounded to the nearest multiple of ``step`` (ties to even), a new
    tensor; exact arithmetic, as ``step`` is a power of two."""
    return torch.round(values / step).mul_(step)
