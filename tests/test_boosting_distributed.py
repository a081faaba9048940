"""The booster's distributed hist fit on gloo ranks (CPU processes, 127.0.0.1).

The claim tested: fitted with ``distributed=True`` on shards of the rows, every
rank ends with the same model, and it is bit for bit the model a single
process fits on all the rows (a 1-rank process group), at 2 and 3 ranks, with
uneven shards (one of 12 rows), NaNs, sample weights (zeros included: one
shard's rows all weigh 0), row subsampling, max_features, best-first growth,
levels too wide to keep (histogrammed directly), torch's loops on some ranks,
and every loss. And bad input fails on every rank, never hangs.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from dist_helpers import run_ranks

N_ROWS = 800
# Shard boundaries as fractions of the rows, by number of ranks: uneven on purpose.
CUTS = {1: [0.0, 1.0], 2: [0.0, 0.3, 1.0], 3: [0.0, 0.55, 0.56, 1.0]}

# name: (estimator, its parameters, labels, sample weights?, options)
CASES = {
    "squared_error": ("reg", {"subsample": 0.7, "max_features": 0.8}, None, True, {}),
    # the integer histograms of the GPU path (here on the CPU): the same model as above
    "quantized": ("reg", {"subsample": 0.7, "max_features": 0.8}, None, True, {"quantized": 1}),
    "absolute_error": (
        "reg",
        {"loss": "absolute_error", "subsample": 0.8},
        None,
        True,
        {},
    ),
    "huber": ("reg", {"loss": "huber", "alpha": 0.8}, None, True, {}),
    "quantile": (
        "reg",
        {"loss": "quantile", "alpha": 0.3, "subsample": 0.6},
        None,
        False,
        {},
    ),
    "best_first": (
        "reg",
        {
            "max_leaf_nodes": 6,
            "max_depth": None,
            "min_samples_leaf": 0.01,
            "min_weight_fraction_leaf": 0.02,
        },
        None,
        True,
        {},
    ),
    "wide_levels": (
        "reg",
        {"max_depth": 5, "min_impurity_decrease": 1e-4},
        None,
        False,
        {"hist_bytes": 60_000, "torch_loops_on": 1},
    ),
    "log_loss": ("clf", {"subsample": 0.8}, "binary", True, {}),
    "exponential": ("clf", {"loss": "exponential"}, "binary", False, {}),
    "multiclass": ("clf", {"subsample": 0.9, "max_depth": 2}, "three", True, {}),
    # the second and third shards hold no row of class "c"
    "missing_class": ("clf", {"max_depth": 2}, "three_sorted", False, {}),
}


def _data(labels):
    rng = np.random.RandomState(0)
    X = rng.normal(size=(N_ROWS, 5))
    X[:, 4] = np.round(X[:, 4] * 2)  # ties
    z = np.nan_to_num(X)
    y = 2 * z[:, 0] + np.sin(3 * z[:, 1]) + z[:, 2] * z[:, 3] + 0.3 * rng.normal(size=N_ROWS)
    X[rng.rand(*X.shape) < 0.08] = np.nan
    w = rng.uniform(0.2, 3.0, N_ROWS)
    w[rng.rand(N_ROWS) < 0.05] = 0.0
    w[int(0.55 * N_ROWS) : int(0.56 * N_ROWS)] = 0.0  # 3 ranks: the middle shard weighs nothing
    if labels == "binary":
        y = (y > np.median(y)).astype(int)
    elif labels is not None:
        y = np.array(["a", "b", "c"])[np.digitize(y, np.quantile(y, [0.3, 0.7]))]
        if labels == "three_sorted":
            order = np.argsort(y != "c", kind="stable")  # every "c" first
            X, y, w = X[order], y[order], w[order]
    return X, y, w


def _signature(model) -> dict:
    """Everything a fitted model is, as arrays (compared bit for bit)."""
    out = {
        "train_score": model.train_score_,
        "init": np.atleast_1d(model.init_prediction_),
    }
    if hasattr(model, "oob_scores_"):
        out["oob"] = model.oob_scores_
    mapper = model._learner.bin_mapper
    out["bins"] = np.concatenate([np.r_[t, -1.0] for t in mapper.bin_thresholds_])
    for i, tree in enumerate(model.estimators_.ravel()):
        for name in (
            "feature",
            "threshold_bin",
            "missing_left",
            "node_sum_gradient",
            "node_sum_hessian",
            "weighted_n_node_samples",
            "n_node_samples",
        ):
            out[f"{i}.{name}"] = getattr(tree, name)
        out[f"{i}.leaves"] = tree.leaf_values.numpy()
    return out


def fit_cases(rank, world, names, distributed=True):
    """On each rank: fit every case on this rank's shard; return the signatures
    (``distributed=False``: a plain fit, no process group)."""
    from residuals.boosting import (
        BoostingClassifier,
        BoostingRegressor,
        _hist,
        _histograms,
        _kernels,
    )

    cuts = (np.array(CUTS[world]) * N_ROWS).astype(int)
    rows = slice(cuts[rank], cuts[rank + 1])
    out = {}
    for name in names:
        kind, params, labels, weighted, options = CASES[name]
        X, y, w = _data(labels)
        cls = BoostingRegressor if kind == "reg" else BoostingClassifier
        model = cls(
            tree_method="hist",
            distributed=distributed,
            n_estimators=4,
            learning_rate=0.3,
            random_state=3,
            **params,
        )
        saved = _histograms._HIST_BYTES
        _histograms._HIST_BYTES = options.get("hist_bytes", saved)
        torch_loops = options.get("torch_loops_on") == rank
        before = _kernels._state["on"]
        _kernels._state["on"] = before and not torch_loops
        validate = _hist.HistTree._validate_params
        if options.get("quantized"):

            def quantized(tree, validate=validate):
                tree.quantized = True
                validate(tree)

            _hist.HistTree._validate_params = quantized
        try:
            model.fit(X[rows], y[rows], sample_weight=w[rows] if weighted else None)
        finally:
            _histograms._HIST_BYTES = saved
            _kernels._state["on"] = before
            _hist.HistTree._validate_params = validate
        signature = _signature(model)
        signature["predict"] = model.predict(X) if kind == "reg" else model.decision_function(X)
        signature["classes"] = getattr(model, "classes_", None)
        signature["pickle"] = pickle.dumps(model)
        out[name] = signature
    return out


def _ok(results):
    errors = [value for status, value in results if status != "ok"]
    assert not errors, "\n".join(e[2] for e in errors)
    return [value for _, value in results]


def _assert_same(a: dict, b: dict, where: str, skip: tuple = ()) -> None:
    assert a.keys() == b.keys(), where
    for key, value in a.items():
        if key in ("pickle", "classes", *skip):
            continue
        x, y = np.asarray(value), np.asarray(b[key])
        assert x.dtype == y.dtype and x.shape == y.shape, f"{where}: {key}"
        assert x.tobytes() == y.tobytes(), f"{where}: {key} differs: {x} vs {y}"
    if a["classes"] is not None:
        assert list(a["classes"]) == list(b["classes"]), where


@pytest.fixture(scope="module")
def one_process():
    """The single-process reference: every case fitted on all the rows, one rank."""
    return _ok(run_ranks(1, fit_cases, list(CASES)))[0]


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_every_rank_equals_the_single_process_fit_bit_for_bit(one_process, world):
    by_rank = _ok(run_ranks(world, fit_cases, list(CASES)))
    for name in CASES:
        for rank, result in enumerate(by_rank):
            _assert_same(one_process[name], result[name], f"{name}, rank {rank} of {world}")


def test_integer_histograms_give_the_same_model(one_process):
    """Quantized (int64) histograms of grid values are the float ones, exactly."""
    _assert_same(one_process["squared_error"], one_process["quantized"], "quantized")


def test_the_cases_exercise_what_they_claim(one_process):
    # a missing class on some shards still gives the three classes of all the rows
    assert list(one_process["missing_class"]["classes"]) == ["a", "b", "c"]
    assert one_process["best_first"]["0.feature"].size <= 11  # at most 6 leaves
    assert "oob" in one_process["quantile"]


def test_the_fitted_model_predicts_without_a_process_group(one_process):
    model = pickle.loads(one_process["squared_error"]["pickle"])
    X, _y, _ = _data(None)
    assert model._learner.collective is None
    np.testing.assert_array_equal(model.predict(X), one_process["squared_error"]["predict"])


def test_a_plain_fit_equals_the_distributed_one(one_process):
    """A plain fit puts its rows on the same fixed-point grid as a distributed one
    (sized by the row count, as a 1-rank group's), so its histograms and node sums are
    the same bits. The regressors (every case but the quantized one, whose quanta a
    plain fit picks itself) then give the same model bit for bit, but for the scores:
    a mean of per-row losses, which a plain fit adds in row order and a distributed
    one on a grid. The classifiers' leaves are Newton steps, means over the leaf's rows
    added the same two ways: their last bits differ, so the next stages' gradients do."""
    names = [name for name in CASES if name != "quantized"]
    plain = fit_cases(0, 1, names, distributed=False)
    for name in names:
        if CASES[name][0] == "reg":
            _assert_same(one_process[name], plain[name], name, ("train_score", "oob"))
            continue
        np.testing.assert_allclose(
            one_process[name]["predict"], plain[name]["predict"], rtol=1e-9, atol=1e-9
        )
        first = [key for key in plain[name] if key.split(".")[0] == "0" and "leaves" not in key]
        for key in first:  # the first stage's trees: same gradients, same trees
            assert np.array_equal(one_process[name][key], plain[name][key]), (name, key)


# ------------------------------------------------------------------ bad input
def bad_shards(rank, world):
    """Each scenario must fail on every rank (and leave the group usable for the next)."""
    from residuals.boosting import BoostingClassifier, BoostingRegressor

    X, y, _w = _data(None)
    half = slice(0, 400) if rank == 0 else slice(400, 800)
    reg = {"tree_method": "hist", "distributed": True, "n_estimators": 2}
    scenarios = {
        "no rows": lambda: BoostingRegressor(**reg).fit(
            X[half][: 0 if rank == 1 else None], y[half][: 0 if rank == 1 else None]
        ),
        "features": lambda: BoostingRegressor(**reg).fit(X[half][:, : 5 - rank], y[half]),
        "params": lambda: BoostingRegressor(**{**reg, "n_estimators": 2 + rank}).fit(
            X[half], y[half]
        ),
        "label types": lambda: BoostingClassifier(**reg).fit(
            X[half],
            (y[half] > 0).astype(int) if rank else np.where(y[half] > 0, "p", "n"),
        ),
        "zero weights": lambda: BoostingRegressor(**reg).fit(
            X[half], y[half], sample_weight=np.zeros(400)
        ),
    }
    out = {}
    for name, fit in scenarios.items():
        try:
            fit()
            out[name] = None
        except Exception as e:  # noqa: BLE001 -- every failure is the expected outcome
            out[name] = (type(e).__name__, str(e))
    # the group is still in step: a good fit after the bad ones works
    out["good"] = BoostingRegressor(**reg).fit(X[half], y[half]).predict(X[:5])
    return out


@pytest.mark.slow
def test_bad_shards_fail_on_every_rank():
    by_rank = _ok(run_ranks(2, bad_shards))
    expected = {
        "no rows": "rank 1",
        "features": "different numbers of features",
        "params": "n_estimators",
        "label types": "cannot be merged",
        "zero weights": "non-zero",
    }
    for rank, out in enumerate(by_rank):
        for name, needle in expected.items():
            assert out[name] is not None, f"{name}: rank {rank} did not fail"
            kind, message = out[name]
            assert "Error" in kind
            if not (name == "no rows" and rank == 1):  # rank 1 raises its own validation error
                assert needle in message, f"{name}, rank {rank}: {message}"
    np.testing.assert_array_equal(by_rank[0]["good"], by_rank[1]["good"])


def one_rank_walks_away(rank, world):
    from residuals.boosting import BoostingRegressor

    if rank == 1:
        return "left"
    X, y, _ = _data(None)
    BoostingRegressor(tree_method="hist", distributed=True, n_estimators=2).fit(X, y)


@pytest.mark.slow
def test_a_rank_that_stops_makes_the_others_fail_not_hang():
    results = run_ranks(2, one_rank_walks_away, group_timeout_s=5, timeout=60)
    assert results[1] == ("ok", "left")
    status, (kind, message, _) = results[0]
    assert status == "error" and kind == "RuntimeError", message


def test_no_process_group_and_exact_trees_are_clear_errors():
    from residuals.boosting import BoostingRegressor

    X, y, _ = _data(None)
    with pytest.raises(RuntimeError, match="init_process_group"):
        BoostingRegressor(tree_method="hist", distributed=True).fit(X, y)
    with pytest.raises(ValueError, match="tree_method='hist'"):
        BoostingRegressor(distributed=True).fit(X, y)
    with pytest.raises(ValueError, match="early stopping"):
        BoostingRegressor(tree_method="hist", distributed=True, n_iter_no_change=3).fit(X, y)
