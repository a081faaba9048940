"""Where a booster's rows are: all in this process (:class:`Rows`) or sharded over ranks.

The boosting loop (``_gb.py``) asks its rows for everything that reads more
than one row at a time -- the start of the model, the subsample of each stage,
the scores, the TreeBoost leaf values, the class labels -- so that the same loop
fits one process's rows or, with ``distributed=True``, each rank's shard of
them (:class:`ShardedRows`, over a :class:`._collective.Collective`).

What a distributed fit computes, for a model that does not depend on the
number of ranks nor on where the shards are cut (the shards are the rows of
one data set in rank order: rank 0's rows first):

* sums over the rows -- every histogram, the scores, the Newton leaf values
  of the log and exponential losses -- are exact fixed-point sums
  (:meth:`._collective.Collective.exact_sums`, and ``on_grid`` in the trees);
* order statistics -- the medians and quantiles of the absolute, quantile and
  huber losses, and the start of every model -- are computed from the rows
  gathered on every rank, with the one-process code;
* random draws -- the subsample of each stage, the rows binning samples, the
  features of each tree -- come from the same seeded ``RandomState`` on every
  rank, drawn over all the rows, each rank keeping its own.

A 1-rank distributed fit is the single-process reference: at any number of
ranks the model equals it bit for bit (``tests/test_boosting_distributed.py``).
A ``distributed=False`` fit puts its rows on the same grid, so its trees and a
regressor's predictions are the same bits too; only means over the rows (the
scores, a classifier's Newton leaves) differ in their last bits
(``docs/distributed.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets

from residuals.boosting._collective import Collective, ShardError
from residuals.boosting._losses import BoostingLoss, update_terminal_regions

__all__ = ["Rows", "ShardedRows", "fit_bins", "random_sample_mask"]


def random_sample_mask(n_total: int, n_in_bag: int, rng: np.random.RandomState) -> np.ndarray:
    """Exactly ``n_in_bag`` rows drawn without replacement by sequential selection.

    Row ``i`` is taken with probability (still needed) / (still available)
    (Knuth, TAOCP vol. 2, Algorithm S), from one ``rng.uniform(size=n_total)``.
    """
    rand = rng.uniform(size=n_total).tolist()
    mask = np.zeros(n_total, dtype=bool)
    n_bagged = 0
    for i, u in enumerate(rand):
        if u * (n_total - i) < (n_in_bag - n_bagged):
            mask[i] = True
            n_bagged += 1
    return mask


class Rows:
    """All the rows in this process: the one-process fit, as scikit-learn's."""

    collective: Collective | None = None

    def __init__(self, n_samples: int = 0):
        self.n_total = n_samples

    def validated(self, est, validate: Callable[[], tuple]) -> tuple:
        """``validate()``'s ``(X, y, sample_weight, sample_weight_is_none, device)``."""
        out = validate()
        self.n_total = out[0].shape[0]
        return out

    def encode_labels(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(classes, encoded)``: the sorted labels and ``y`` as their indices."""
        check_classification_targets(y)
        encoder = LabelEncoder()
        encoded = encoder.fit_transform(y)
        return encoder.classes_, encoded

    def class_weights(self, encoded: np.ndarray, sample_weight: np.ndarray, n: int) -> np.ndarray:
        return np.bincount(encoded, sample_weight, minlength=n)

    def init_prediction(self, loss: BoostingLoss, y, sample_weight):
        return loss.init_prediction(y, sample_weight)

    def sample_mask(self, n_in_bag: int, rng: np.random.RandomState) -> np.ndarray:
        return random_sample_mask(self.n_total, n_in_bag, rng)

    def begin_stage(self, loss: BoostingLoss, y, raw, sample_weight) -> None:
        loss.begin_stage(y, raw, sample_weight)

    def score(self, loss: BoostingLoss, y, raw, sample_weight=None) -> float:
        return loss.score(y, raw, sample_weight)

    def line_search(
        self,
        loss: BoostingLoss,
        leaf_ids,
        leaves,
        values,
        target,
        neg_gradient,
        raw,
        sample_weight,
        sample_mask,
    ) -> None:
        update_terminal_regions(
            loss,
            leaf_ids,
            leaves,
            values,
            target,
            neg_gradient,
            raw,
            sample_weight,
            sample_mask,
        )

    def any(self, flag: bool) -> bool:
        return bool(flag)


class ShardedRows(Rows):
    """This rank's shard of the rows of a distributed fit (see the module docstring)."""

    collective: Collective

    def __init__(self, collective: Collective):
        super().__init__()
        self.collective = collective
        self.offset = 0
        self.n_local = 0

    def validated(self, est, validate: Callable[[], tuple]) -> tuple:
        """Validate this shard and agree with every rank on the shards' shape and the
        estimator's parameters; a disagreement raises :class:`ShardError` on every rank."""
        out: list = []

        def check() -> dict:
            out.extend(validate())
            X, sw_none = out[0], out[3]
            params = {k: repr(v) for k, v in sorted(est.get_params(deep=False).items())}
            return {
                "device": str(torch.device(out[4]).type),
                "rows": X.shape[0],
                "features": X.shape[1],
                "params": params,
                "weights": not sw_none,
                "positive": bool(np.any(out[2] > 0)),
            }

        shards = self.collective.agree("validating the shards", check)
        _check_shards(shards)
        rows = [s["rows"] for s in shards]
        rank = self.collective.rank
        self.offset, self.n_local = sum(rows[:rank]), rows[rank]
        self.n_total = self.collective.n_total = sum(rows)
        self.collective.offset = self.offset
        X, y, sample_weight, _, device = out
        return X, y, sample_weight, not any(s["weights"] for s in shards), device

    def encode_labels(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The classes of every rank's labels (a class may be missing from a shard)."""

        def check() -> np.ndarray:
            check_classification_targets(y)
            return np.unique(y)

        labels = self.collective.agree("the class labels", check)
        kinds = {part.dtype.kind for part in labels}
        if not (kinds <= set("biuf") or len(kinds) == 1):  # numbers with strings, say
            dtypes = [str(part.dtype) for part in labels]
            raise ShardError(
                f"distributed fit: the ranks' class labels cannot be merged: "
                f"their dtypes are {dtypes} by rank; give every rank labels of "
                "one kind (all numbers or all strings)."
            )
        classes = np.unique(np.concatenate(labels))
        return classes, np.searchsorted(classes, y)

    def class_weights(self, encoded, sample_weight, n: int) -> np.ndarray:
        return self.collective.exact_sums(sample_weight[:, None], encoded, n, "class weights")[:, 0]

    def _gather(self, *arrays) -> list:
        return [None if a is None else self.collective.gather_rows(np.asarray(a)) for a in arrays]

    def init_prediction(self, loss: BoostingLoss, y, sample_weight):
        """The start of the model from every rank's rows, by the one-process code."""
        y_all, sw_all = self._gather(y, sample_weight)
        return loss.init_prediction(y_all, sw_all)

    def sample_mask(self, n_in_bag: int, rng: np.random.RandomState) -> np.ndarray:
        """This shard's part of the mask a one-process fit would draw over all rows."""
        full = random_sample_mask(self.n_total, n_in_bag, rng)
        return full[self.offset : self.offset + self.n_local]

    def begin_stage(self, loss: BoostingLoss, y, raw, sample_weight) -> None:
        if type(loss).begin_stage is not BoostingLoss.begin_stage:  # e.g. huber's quantile
            loss.begin_stage(*self._gather(y, raw, sample_weight))

    def score(self, loss: BoostingLoss, y, raw, sample_weight=None) -> float:
        """``score_factor`` times the weighted mean loss, from exact sums."""
        w = np.ones(y.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)
        terms = np.stack((w * loss.pointwise(y, raw), w), 1)
        total, weight = self.collective.exact_sums(terms, what="scores")[0]
        return float(loss.score_factor * (total / weight)) if weight else float("nan")

    def line_search(
        self,
        loss: BoostingLoss,
        leaf_ids,
        leaves,
        values,
        target,
        neg_gradient,
        raw,
        sample_weight,
        sample_mask,
    ) -> None:
        """TreeBoost leaf values from every rank's in-bag rows: Newton steps from exact
        sums; medians and quantiles from the gathered rows."""
        if not loss.line_search:
            return
        keep = slice(None) if sample_mask is None else sample_mask
        ids, w = leaf_ids[keep], sample_weight[keep]
        terms = loss.newton_terms(target[keep], neg_gradient[keep], raw[keep])
        if terms is None:  # an order statistic: the one-process code on the gathered rows
            ids_all, y_all, g_all, raw_all, w_all = self._gather(
                ids, target[keep], neg_gradient[keep], raw[keep], w
            )
            update_terminal_regions(
                loss, ids_all, leaves, values, y_all, g_all, raw_all, w_all, None
            )
            return
        n_leaves = int(values.shape[0])
        per_row = np.column_stack((terms * w[:, None], w, np.ones(w.shape[0])))
        sums = self.collective.exact_sums(per_row, ids, n_leaves, "leaf values")
        for leaf in leaves.tolist():
            *numerators, weight, rows = sums[leaf]
            if rows:  # a leaf with no in-bag rows keeps the tree's value, as in one process
                values[leaf] = loss.newton_step(*(s / weight for s in numerators))

    def any(self, flag: bool) -> bool:
        return self.collective.any(flag, "the monitor's decision")


def _check_shards(shards: list[dict]) -> None:
    """Raise :class:`ShardError` (on every rank: all see the same list) for bad shards."""
    empty = [r for r, s in enumerate(shards) if s["rows"] == 0]
    if empty:
        raise ShardError(
            f"distributed fit: rank(s) {empty} of {len(shards)} have no rows; "
            "every rank needs at least one row of the data set."
        )
    if not any(s["positive"] for s in shards):
        raise ShardError("Sample weights must contain at least one non-zero number (on some rank).")
    devices = [s["device"] for s in shards]
    if len(set(devices)) > 1:
        raise ShardError(
            f"distributed fit: the ranks fit on different kinds of device, "
            f"{devices} by rank; give every rank the same device."
        )
    features = [s["features"] for s in shards]
    if len(set(features)) > 1:
        raise ShardError(
            f"distributed fit: the shards have different numbers of features, "
            f"{features} by rank; every rank needs the same columns."
        )
    params = shards[0]["params"]
    for r, s in enumerate(shards[1:], 1):
        differ = sorted(k for k in params if s["params"].get(k) != params[k])
        if differ:
            detail = ", ".join(
                f"{k}={params[k]} on rank 0, {s['params'][k]} on rank {r}" for k in differ
            )
            raise ShardError(f"distributed fit: every rank must fit the same estimator; {detail}.")


def fit_bins(mapper, X: np.ndarray, collective: Collective) -> None:
    """Fit ``mapper`` (a BinMapper) on every rank's rows as one process would: the same
    subsample drawn over all the rows, each rank contributing its own, gathered in order;
    the features' cut points are found once, shared out between the ranks."""
    mapper._validate_params()
    rows = mapper.subsample_rows(collective.n_total)
    lo = collective.offset
    if isinstance(rows, slice):
        mine = np.arange(X.shape[0])
    else:
        mine = rows[(rows >= lo) & (rows < lo + X.shape[0])] - lo
    values = collective.gather_rows(np.asarray(X[mine], dtype=np.float64), "the rows to bin")
    # each rank finds the cut points of every world-th feature, then they swap them: the
    # same computation on the same gathered rows, done once instead of on every rank
    n_features, world = values.shape[1], collective.world
    parts = collective.gather_objects(
        mapper.column_cuts(values, slice(None), range(collective.rank, n_features, world)),
        "the bin edges",
    )
    cuts: list = [None] * n_features
    for r, part in enumerate(parts):
        for j, found in zip(range(r, n_features, world), part):
            cuts[j] = found
    mapper.set_cuts(cuts)
