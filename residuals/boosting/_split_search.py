"""The split search of the histogram tree: the best split of every node of a level.

For each node, every candidate split (the side of the missing bin, feature,
cut) is scored ``G_L**2 / H_L + G_R**2 / H_R`` from cumulative sums of the
node's histograms (see :mod:`residuals.boosting._hist` for the math); ties go
to the tree's feature order (:func:`_first_best`). On the CPU with the C loops
built, one C pass per level (:func:`._kernels.best_splits`); elsewhere
vectorised torch on the histograms' device, then cheap numpy on the host.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import _kernels
from ._hist_data import _C, _G, _H, _W, _Data

# A split must improve on the parent by more than this fraction of its score,
# so rounding noise never splits a node whose gradients are all equal.
_REL_GAIN_TOL = 1e-10
# Split scores within this fraction of the best are ties (rounding noise): the
# first of them in the tree's feature order wins.
_TIE_TOL = 1e-13
# Columns of a split's host row (see HistTree._find_splits).
_ACCEPT, _GAIN, _FEATURE, _BIN, _MISSING_LEFT, _LEFT, _RIGHT = 0, 1, 2, 3, 4, 5, 9
# The split search in torch handles at most _SEARCH_ELEMENTS candidate splits per
# pass (8 bytes each per temporary): on the CPU, small enough for its ~15
# elementwise passes to stay in cache (1 << 17 searched 128 nodes x 20 features
# 1.5x faster than one pass over all of them, measured); on an accelerator, where
# each pass ends in a host copy, 1 << 24 (about 128 nodes x 50 features, both sides
# of the missing bin, in one pass).
_SEARCH_ELEMENTS = 1 << 17
_ACCEL_SEARCH_ELEMENTS = 1 << 24


def _inverse_permutation(order: np.ndarray) -> np.ndarray:
    """``rank`` with ``rank[order[i]] == i``: each index's position in ``order``."""
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank


def _first_best(
    score: torch.Tensor,
    order_flat: torch.Tensor | None,
    rank: np.ndarray | None = None,
    use_numpy: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
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


class _SplitSearch:
    """The split search of :class:`~residuals.boosting._hist.HistTree` (a mixin)."""

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

    def _find_splits(
        self, data: _Data, hist, cw, totals: np.ndarray, total_weight: float
    ) -> np.ndarray:
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
        budget = _SEARCH_ELEMENTS if hist.device.type == "cpu" else _ACCEL_SEARCH_ELEMENTS
        group = max(1, budget // per_node)
        if K > group:  # bound the temporaries: search the nodes in groups
            return np.concatenate(
                [
                    self._find_splits(
                        data,
                        hist[a : a + group],
                        None if cw is None else cw[a : a + group],
                        totals[a : a + group],
                        total_weight,
                    )
                    for a in range(0, K, group)
                ]
            )
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

    def _find_splits_c(
        self, data: _Data, hist, cw, totals: np.ndarray, total_weight: float
    ) -> np.ndarray:
        """:meth:`_find_splits` and :meth:`_split_rows` by the C loop
        (:func:`._kernels.best_splits`): the same scores, tie-break and host
        rows, with no temporaries but one node's scores."""
        K, F, nb = hist.shape
        floor = self._hessian_floor(data) if cw is None else 0.0
        mid = self.min_impurity_decrease
        out, uncentred = _kernels.best_splits(
            hist,
            cw,
            2 if data.has_missing else 1,
            data.order,
            floor,
            float(self.min_samples_leaf),
            float(self.min_weight_leaf),
            _TIE_TOL,
            totals,
            (data.count_unit, data.weight_unit, data.hess_unit),
            _REL_GAIN_TOL,
            mid * total_weight if mid > 0 else -1.0,
        )
        if uncentred.any():
            mass = torch.view_as_real(hist if cw is None else cw)[
                ..., 1 if cw is None else 0
            ].numpy()  # (K, F, nb)
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
            flat = (
                (np.arange(D)[:, None, None] * F + order[None, :, None]) * c + np.arange(c)
            ).reshape(-1)
            cached = data.order_flat[D] = (
                torch.from_numpy(flat).to(data.order.device),
                _inverse_permutation(flat),
            )
        return cached

    def _split_rows(
        self,
        data: _Data,
        host: np.ndarray,
        totals: np.ndarray,
        F: int,
        total_weight: float,
        mass: np.ndarray | None = None,
    ) -> np.ndarray:
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
