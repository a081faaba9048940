"""Small pieces of the boosting fit loop: where the rows are, sample weights, a stage's step
added to the scores, and the verbose per-stage report, each with scikit-learn's exact semantics."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING

import numpy as np
from sklearn.utils.validation import check_array

from residuals.boosting._loss_base import in_row_blocks
from residuals.boosting._sharded import Rows

if TYPE_CHECKING:
    from residuals.boosting._gb import _BaseBoosting

__all__ = ["_VerboseReporter", "_add_step", "_check_sample_weight", "_rows_of"]


def _rows_of(est) -> Rows:
    """Where ``fit``'s rows are: in this process, or this rank's shard (``distributed``)."""
    if not est.distributed:
        return Rows()
    est._validate_params()  # e.g. distributed with exact trees: an error before any collective
    # torch.distributed is imported only here
    from residuals.boosting._collective import Collective
    from residuals.boosting._sharded import ShardedRows

    return ShardedRows(Collective())


def _check_sample_weight(sample_weight, n_samples: int, one_positive: bool = True) -> np.ndarray:
    """Validated weights: float32/float64 kept, else float64; ``None`` -> ones."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=np.float64)
    if np.isscalar(sample_weight):
        return np.full(n_samples, sample_weight, dtype=np.float64)
    sw = check_array(
        sample_weight,
        ensure_2d=False,
        dtype=[np.float64, np.float32],
        order="C",
        input_name="sample_weight",
    )
    if sw.ndim != 1 or sw.shape[0] != n_samples:
        raise ValueError(f"sample_weight.shape == {sw.shape}, expected {(n_samples,)}!")
    if np.any(sw < 0):
        raise ValueError("Negative values in data passed to `sample_weight`.")
    if one_positive and np.all(sw == 0):
        raise ValueError("Sample weights must contain at least one non-zero number.")
    return sw


class _VerboseReporter:
    """Progress lines: iteration, train loss, OOB improvement, remaining time."""

    def __init__(self, est: _BaseBoosting, begin_at_stage: int):
        self.est, self.begin = est, begin_at_stage
        self.do_oob = est.subsample < 1
        header = ["Iter", "Train Loss"] + (["OOB Improve"] if self.do_oob else [])
        print(("%10s " + "%16s " * len(header)) % tuple(header + ["Remaining Time"]))
        self.verbose_mod, self.start = 1, perf_counter()

    def update(self, j: int) -> None:
        est, i = self.est, j - self.begin
        if (i + 1) % self.verbose_mod:
            return
        remaining = (est.n_estimators - (j + 1)) * (perf_counter() - self.start) / (i + 1)
        rem = f"{remaining / 60:.2f}m" if remaining > 60 else f"{remaining:.2f}s"
        oob = f"{est.oob_improvement_[j]:>16.4f} " if self.do_oob else ""
        print(f"{j + 1:>10d} {est.train_score_[j]:>16.4f} {oob}{rem:>16s}")
        if est.verbose == 1 and (i + 1) // (self.verbose_mod * 10) > 0:
            self.verbose_mod *= 10


def _add_step(raw_k, lr: float, values, leaf_ids, step: np.ndarray, threaded: bool) -> None:
    """``raw_k += lr * values[leaf_ids]`` in place, through ``step``: block by block of
    rows, on threads when ``threaded`` (elementwise: the same bits either way)."""

    def rows(a: int, b: int) -> None:
        s = step[a:b]
        np.take(values, leaf_ids[a:b], axis=0, out=s, mode="clip")  # "raise" would buffer
        raw_k[a:b] += np.multiply(lr, s, out=s)

    in_row_blocks(rows, step.shape[0], threaded)
