"""Quantized histograms: integer gradients, so that every sum is exact in any order.

On a GPU, thousands of threads add rows into a level's histograms with atomic
adds, in an order that changes from run to run; float sums would then change
in their last bits, and so could the trees. As LightGBM's and XGBoost's GPU
builders do, the per-row values are quantized to integers instead: each
channel ``x`` (``w*g``, ``w*h``, the row count, ``w``) becomes the int64
``q = round(x * 2**e)``, with the power of two ``2**e`` chosen per fit so that
``max|x| * 2**e <= 2**B`` and ``B = min(52, 62 - ceil(log2(n + 1)))``: any sum
of up to ``n`` rows then fits in int64, and integer addition is exact and
associative. Histograms, the subtraction trick (parent minus sibling) and any
cross-process reduction are exact; the split search reads ``sum(q) * 2**-e``.

What it costs: each row's value moves by at most half a quantum, ``2**-e / 2 <=
max|x| * 2**-(B+1)``, so a node's sums of ``m`` rows move by at most ``m`` times
that, and a split score ``G_L**2/H_L + G_R**2/H_R`` by at most about ``delta =
2 * m * max|w*g|**2 * 2**-B / min(H)`` (with ``H`` in rows for the squared
error, ``delta = 2 * m * max|g|**2 * 2**-B``). That is the rule for
trees fitted here against the CPU's float sums: where a node's best split
beats every split that partitions its rows differently by more than ``delta``
(plus the float sums' own rounding, ``m * 2**-53``-relative), both pick the
same split; exact ties (identical histograms, e.g. duplicated features) go to
the same feature by the same tie-break order; near-ties within ``delta`` may
go either way. At a million rows ``B = 42``: ``delta`` is ``2**-41 m
max|g|**2``, about ``5e-13`` of the largest possible score.

Where the histograms are built: :func:`level_hist` runs the Triton kernel of
:mod:`._triton` on CUDA (when Triton is installed, as it is with CUDA builds of
torch), else torch's ``scatter_add_`` on int64 -- the fallback, on any
device. Both give the same integers (integer sums are exact).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

__all__ = ["Quantized", "dequantize", "level_hist", "quantize"]

# The torch fallback scatters this many row-features per chunk (an int64 index each).
_FALLBACK_ELEMENTS = 1 << 21


@dataclass
class Quantized:
    """A fit's rows as integers: ``q`` (n, C) int64, channels ``w*g, w*h[, count, w]``,
    and ``unit`` (C,) float64: the value of one unit of each channel (a power of two,
    or the constant ``w*h`` when channel 1 counts rows)."""

    q: torch.Tensor
    unit: torch.Tensor
    bits: int  # B: every |q| <= 2**B


def _bits(n: int) -> int:
    return min(52, 62 - math.ceil(math.log2(n + 1)))


def _quantum(v: torch.Tensor, bits: int) -> float:
    """``2**-e``: the largest power of two with ``max|v| / 2**-e <= 2**bits``."""
    top = float(v.abs().max()) if v.numel() else 0.0
    if not (top > 0 and math.isfinite(top)):  # all zero, or not finite (an error for the caller)
        return 1.0
    exponent = math.frexp(top)[1]  # top < 2**exponent
    return math.ldexp(1.0, exponent - bits)


def quantize(
    gw: torch.Tensor,
    hw: torch.Tensor,
    w: torch.Tensor | None,
    count_unit: float,
    with_counts: bool,
    quanta: list | None = None,
) -> Quantized:
    """Quantize one fit's rows (see the module docstring).

    gw, hw : (n,) float64 ``w*g``, ``w*h``; w : (n,) weights or None for unit
    ones; count_unit : the constant ``w*h`` of every row, or 0; with_counts :
    also the channels ``count, w`` (when counts cannot be read off ``w*h``).
    When ``count_unit > 0`` channel 1 counts rows and its unit is ``count_unit``.
    quanta : the quanta of ``gw, hw, w`` when the caller chose them (a distributed
    fit: the grid every rank agreed on, :mod:`._collective`), else found here.
    """
    n, device = gw.shape[0], gw.device
    bits = _bits(n)
    channels, units = [], []
    for i, (v, constant) in enumerate(((gw, 0.0), (hw, count_unit))):
        if constant > 0:
            channels.append(torch.ones(n, dtype=torch.int64, device=device))
            units.append(constant)
        else:
            quantum = _quantum(v, bits) if quanta is None else quanta[i]
            channels.append(torch.round(v / quantum).to(torch.int64))
            units.append(quantum)
    if with_counts:
        channels.append(torch.ones(n, dtype=torch.int64, device=device))
        units.append(1.0)
        if w is None:
            channels.append(channels[-1])
            units.append(1.0)
        else:
            quantum = _quantum(w, bits) if quanta is None else quanta[2]
            channels.append(torch.round(w / quantum).to(torch.int64))
            units.append(quantum)
    q = torch.stack(channels, 1).contiguous()
    return Quantized(q, torch.tensor(units, dtype=torch.float64, device=device), bits)


def dequantize(
    hist_q: torch.Tensor, unit: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(K, F, nb, C) int64 sums -> the split search's ``(gh, cw)`` complex128
    histograms (K, F, nb), ``cw`` None for 2 channels."""
    x = hist_q.to(torch.float64).mul_(unit)
    gh = torch.complex(x[..., 0], x[..., 1])
    return gh, (torch.complex(x[..., 2], x[..., 3]) if x.shape[-1] == 4 else None)


def use_triton(device: torch.device) -> bool:
    """The Triton kernel runs on CUDA, or anywhere under ``TRITON_INTERPRET=1``
    (tests); ``RESIDUALS_TRITON=0`` switches it off (the torch fallback)."""
    if os.environ.get("RESIDUALS_TRITON", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return False
    from . import _triton

    return _triton.available()


def level_hist(
    XT: torch.Tensor,
    quant: Quantized,
    slot: torch.Tensor | None,
    lo: int,
    hi: int,
    nb: int,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """(hi - lo, F, nb, C) int64: the sums of ``quant.q`` per node, feature and bin.

    The rows with ``lo <= slot < hi``, in node ``slot - lo`` (slot None: all
    rows, in node 0; or ``rows``, int64 indices, in node 0). XT : (F, n) uint8,
    C-contiguous. This is where a level's histograms are made: a distributed fit
    would all-reduce (sum) the result here, exactly, as integers.
    """
    F, n = XT.shape
    K, C = hi - lo, quant.q.shape[1]
    if rows is None and use_triton(XT.device):
        from . import _triton

        out = torch.zeros((K, F, nb, C), dtype=torch.int64, device=XT.device)
        _triton.level_hist(XT, quant.q, slot, lo, hi, out)
        return out
    # torch: cell (node, f, bin) of channel c is cells[(node * F + f) * nb + bin, c]; the
    # rows of other nodes go to one more cell at the end, dropped
    m_all = n if rows is None else rows.shape[0]
    cells = torch.zeros((K * F * nb + 1, C), dtype=torch.int64, device=XT.device)
    features = torch.arange(F, device=XT.device).unsqueeze(1)
    step = max(1, _FALLBACK_ELEMENTS // max(F, 1))
    for a in range(0, m_all, step):  # chunks of rows: the int64 index stays a few MiB
        b = min(m_all, a + step)
        if rows is None:
            bins, values = XT[:, a:b], quant.q[a:b]
            node = None if slot is None else slot[a:b].long() - lo
        else:
            r = rows[a:b]
            bins, values, node = XT.index_select(1, r), quant.q.index_select(0, r), None
        index = (features * nb + bins.long()) if node is None else (node * F + features) * nb + bins
        if node is not None:
            index = torch.where((node >= 0) & (node < K), index, K * F * nb)
        index = index.reshape(-1, 1).expand(-1, C)
        cells.scatter_add_(0, index, values.unsqueeze(0).expand(F, -1, -1).reshape(-1, C))
    return cells[:-1].view(K, F, nb, C)
