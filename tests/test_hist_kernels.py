"""Hist mode's C loops (residuals/boosting/_kernels.c) against torch's.

The C loops are an optional build: where they are missing, the tests that
need them skip, except under CI (``CI`` set), where the build must have worked.
Everything hist mode computes must be bit-identical either way.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from residuals.boosting import BoostingClassifier, BoostingRegressor, _grid_passes, _kernels
from residuals.boosting._grid import grid_bits, grid_step, to_grid
from residuals.boosting._histograms import _route, _scatter_hist

requires_c = pytest.mark.skipif(
    not _kernels.available(), reason="the C loops of hist mode are not built"
)


def test_built_under_ci():
    """CI installs from a clean clone with a C compiler: the extension must be there."""
    if not os.environ.get("CI"):
        pytest.skip("only checked under CI")
    assert _kernels.available(), (
        "the optional C extension residuals.boosting._kernels_c did not build"
    )


@pytest.mark.slow
def test_switched_off_by_the_environment():
    code = "from residuals.boosting import _kernels; print(_kernels.available())"
    env = {**os.environ, "RESIDUALS_C_KERNELS": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_disabled_restores_the_state():
    before = _kernels.available()
    with _kernels.disabled():
        assert not _kernels.available()
    assert _kernels.available() == before


def _data(F=7, n=5003, nb=32, seed=0):
    rng = np.random.RandomState(seed)
    XT = torch.as_tensor(rng.randint(0, nb, size=(F, n)), dtype=torch.uint8)
    g = torch.as_tensor(rng.randn(n))
    gh = torch.complex(g, torch.as_tensor(rng.rand(n)))
    return rng, XT, g, gh


@requires_c
@pytest.mark.parametrize("complex_values", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_histograms_equal_torch_bit_for_bit(monkeypatch, complex_values, threads):
    rng, XT, g, gh = _data()
    values = gh if complex_values else g
    rows = torch.as_tensor(np.flatnonzero(rng.rand(XT.shape[1]) < 0.37))
    nodes = torch.as_tensor(rng.randint(0, 5, size=len(rows)))
    slot = torch.as_tensor(rng.randint(0, 6, size=XT.shape[1]), dtype=torch.int32)
    ones = torch.ones((), dtype=torch.float64).expand(
        XT.shape[1]
    )  # an expanded scalar, as the root counts
    cases = [
        dict(n_cols=32),
        dict(n_cols=32, rows=rows),
        dict(n_cols=5 * 32, rows=rows, slots=nodes),
        dict(n_cols=4 * 32, select=(slot, 1, 5)),
        dict(n_cols=32, select=(slot, 2, 3)),
    ]
    monkeypatch.setattr(
        _kernels, "_PARALLEL_MIN", 1
    )  # split even these small calls between threads
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # torch's loops (the fallback) and ...
    monkeypatch.setattr(_kernels, "threads", lambda: threads)  # ... the C loops
    try:
        for case in cases:
            n_cols = case.pop("n_cols")
            c = _scatter_hist(XT, values, n_cols, 32, **case)
            with _kernels.disabled():
                t = _scatter_hist(XT, values, n_cols, 32, **case)
            assert c.dtype == t.dtype and c.shape == t.shape == (XT.shape[0], n_cols)
            assert torch.equal(c, t), f"C and torch histograms differ for {sorted(case)}"
        c = _scatter_hist(XT, ones, 32, 32)
        with _kernels.disabled():
            assert torch.equal(c, _scatter_hist(XT, ones, 32, 32))
        assert torch.equal(
            c.sum(1), torch.full((XT.shape[0],), float(XT.shape[1]), dtype=torch.float64)
        )
    finally:
        torch.set_num_threads(before)


@requires_c
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("lo,hi", [(1, 4), (2, 3), (0, 6)])
@pytest.mark.parametrize("threads", [1, 3])
def test_level_histograms_equal_torch_bit_for_bit(monkeypatch, dtype, lo, hi, threads):
    """One C pass over a level's rows gives torch's histograms of its nodes, at any thread count."""
    rng, XT, g, gh = _data()
    slot = torch.as_tensor(rng.randint(0, 6, size=XT.shape[1]), dtype=dtype)
    monkeypatch.setattr(_kernels, "_PARALLEL_MIN", 1)  # split even this small call between threads
    for values in (g, gh):
        with _kernels.disabled():
            expected = _scatter_hist(XT, values, (hi - lo) * 32, 32, select=(slot, lo, hi))
        got = torch.full((hi - lo, XT.shape[0], 32), float("nan"), dtype=values.dtype)  # ignored
        monkeypatch.setattr(_kernels, "threads", lambda: threads)
        _kernels.level_hist(XT, values, got, 32, slot, lo, hi)
        assert torch.equal(got, expected.view(XT.shape[0], hi - lo, 32).transpose(0, 1))


def _on_grid(values: torch.Tensor) -> torch.Tensor:
    """``values`` on the grid for sums of their count (real and imaginary parts)."""
    bits = grid_bits(values.shape[0])
    if values.is_complex():
        return torch.complex(_on_grid(values.real.contiguous()), _on_grid(values.imag.contiguous()))
    return to_grid(values, grid_step(float(values.abs().max()), bits))


@requires_c
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize(
    "threads,thread_bytes", [(2, 1 << 30), (3, 1 << 30), (4, 1 << 30), (4, 9000), (5, 9000)]
)
def test_level_histograms_with_rows_cut_between_threads(monkeypatch, dtype, threads, thread_bytes):
    """Rows cut between threads (and features too, where a thread's histograms would
    exceed ``_LEVEL_THREAD_BYTES``), each cut into a histogram of its own, summed at
    the end: on grid values every cell is exact, so torch's row-order sums, bit for bit."""
    rng, XT, g, gh = _data()
    slot = torch.as_tensor(rng.randint(0, 6, size=XT.shape[1]), dtype=dtype)
    monkeypatch.setattr(_kernels, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(_kernels, "_LEVEL_MIN_ROWS", 1000)
    monkeypatch.setattr(_kernels, "_LEVEL_THREAD_BYTES", thread_bytes)
    monkeypatch.setattr(_kernels, "threads", lambda: threads)
    n_rows, n_features = _kernels._level_split(XT.shape[1], XT.shape[0], 3 * 7 * 32 * 16)
    assert n_rows > 1 and n_rows * n_features <= threads
    assert (n_features > 1) == (thread_bytes < 1 << 30)
    kept = []
    for values in (_on_grid(g), _on_grid(gh)):
        with _kernels.disabled():
            expected = _scatter_hist(XT, values, 3 * 32, 32, select=(slot, 1, 4))
        got = torch.full((3, XT.shape[0], 32), float("nan"), dtype=values.dtype)
        _kernels.level_hist(
            XT, values, got, 32, slot, 1, 4, scratch=lambda c, s: kept or _fresh(c, s)
        )
        assert torch.equal(got, expected.view(XT.shape[0], 3, 32).transpose(0, 1))


@requires_c
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("threads,thread_bytes", [(1, 1 << 30), (2, 1 << 30), (3, 9000)])
def test_level_histograms_route_first_in_the_same_pass(monkeypatch, dtype, threads, thread_bytes):
    """``routing=(column, table)``: the rows go one level down, then are histogrammed;
    the same slots and histograms as routing and histogramming apart."""
    rng, XT, g, gh = _data()
    n, nb = XT.shape[1], 32
    slot = torch.as_tensor(rng.randint(0, 3, size=n), dtype=dtype)
    column = torch.as_tensor(rng.randint(0, XT.shape[0], size=3), dtype=dtype)
    table = torch.as_tensor(rng.randint(0, 6, size=3 * nb), dtype=dtype)
    monkeypatch.setattr(_kernels, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(_kernels, "_LEVEL_MIN_ROWS", 1000)
    monkeypatch.setattr(_kernels, "_LEVEL_THREAD_BYTES", thread_bytes)
    monkeypatch.setattr(_kernels, "threads", lambda: threads)
    values = _on_grid(gh)
    apart = slot.clone()
    _kernels.route(XT, apart, column, table, nb)
    expected = torch.empty((4, XT.shape[0], nb), dtype=values.dtype)
    _kernels.level_hist(XT, values, expected, nb, apart, 0, 4)
    got = torch.empty_like(expected)
    _kernels.level_hist(XT, values, got, nb, slot, 0, 4, routing=(column, table))
    assert torch.equal(slot, apart)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("c_loops", [True, False], ids=["C", "torch"])
@pytest.mark.parametrize("weighted", [False, True])
def test_a_negated_gradient_grows_the_same_tree(c_loops, weighted):
    """``negated_gradient=True`` with ``-g`` is the tree of ``g``, bit for bit."""
    from residuals.boosting._binning import BinMapper
    from residuals.boosting._hist import HistTree

    if c_loops and not _kernels.available():
        pytest.skip("the C loops of hist mode are not built")
    rng = np.random.RandomState(2)
    X = rng.randn(3000, 4)
    g = torch.as_tensor(np.sin(3 * X[:, 0]) + X[:, 1] + 0.1 * rng.randn(3000))
    h = torch.ones((), dtype=torch.float64).expand(3000)
    w = torch.as_tensor(rng.uniform(0, 2, 3000)) if weighted else None
    Xb = BinMapper().fit_transform(X)
    with contextlib.nullcontext() if c_loops else _kernels.disabled():
        a = HistTree(max_depth=4).fit(Xb, g, h, sample_weight=w)
        b = HistTree(max_depth=4).fit(Xb, -g, h, sample_weight=w, negated_gradient=True)
    for name in ("feature", "threshold_bin", "node_sum_gradient", "node_sum_hessian"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.leaf_values, b.leaf_values)


@requires_c
def test_take_leaves_equals_index_select(monkeypatch):
    monkeypatch.setattr(_kernels, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(_kernels, "threads", lambda: 3)
    table = torch.arange(10, dtype=torch.int64) * 7
    for dtype in (torch.int32, torch.int64):
        slot = torch.as_tensor(np.random.RandomState(0).randint(0, 10, 999), dtype=dtype)
        out = torch.empty(999, dtype=torch.int64)
        assert torch.equal(_kernels.take_leaves(table, slot, out), table[slot.long()])


def _fresh(count, size):
    return [torch.full((size,), float("nan"), dtype=torch.float64) for _ in range(count)]


def test_level_split_cuts_rows_then_features(monkeypatch):
    """Rows as far as they go; features only to keep a thread's histograms in cache."""
    monkeypatch.setattr(_kernels, "threads", lambda: 16)
    mb = 1 << 20
    assert _kernels._level_split(10**6, 20, mb) == (15, 1)  # 10**6 // 65536 = 15 cuts of rows
    assert _kernels._level_split(4 * 10**6, 20, mb) == (16, 1)
    assert _kernels._level_split(4 * 10**6, 20, 5 * mb) == (5, 3)  # 3 features cuts: 1.7 MB each
    assert _kernels._level_split(110_000, 20, mb) == (1, 16)  # too few rows to cut: features
    assert _kernels._level_split(100_000, 20, mb) == (1, 1)  # too little work to split
    monkeypatch.setattr(_kernels, "threads", lambda: 1)
    assert _kernels._level_split(4 * 10**6, 20, mb) == (1, 1)
    assert _kernels._cuts(0, 3, 2048) == [(0, 0)]  # a rank with no rows of weight > 0
    assert _kernels._cuts(5003, 4, 2048) == [(0, 2048), (2048, 4096), (4096, 5003)]


@requires_c
def test_grid_passes_equal_torch():
    """The C passes that put the gradients on their grid: torch's rounding, bit for bit
    (ties to even, signed zeros, steps whose inverse is not a double); the largest |g|
    (NaN for any NaN or infinity) and an exact sum, at any cut of the rows."""
    rng = np.random.RandomState(3)
    for n in (1, 7, 8, 9, 10_000):
        for scale in (1.0, 1e-300, 1e300):
            g = torch.as_tensor(rng.randn(n) * scale)
            bits = grid_bits(n)
            step = grid_step(float(g.abs().max()), bits)
            g[: min(n, 4)] = (
                torch.tensor([0.5, -0.0, 2.5, -1.5], dtype=torch.float64)[: min(n, 4)] * step
            )
            out = torch.empty(n, dtype=torch.float64)
            gh = torch.empty(n, dtype=torch.complex128)
            h = torch.full((), 0.75, dtype=torch.float64).expand(n)
            _grid_passes.grid_gh(g, h, step, out, gh)
            expected = to_grid(g, step)
            assert expected.numpy().tobytes() == out.numpy().tobytes()
            assert torch.equal(gh, torch.complex(expected, h))
            _grid_passes.grid_gh(-g, h, step, out, gh, negate=True)  # -round(-g): the same bits
            assert expected.numpy().tobytes() == out.numpy().tobytes()
            assert _grid_passes.abs_max(g) == float(g.abs().max())
            assert _grid_passes.grid_sum(out) == float(np.sum(out.numpy()))
    for bad in (float("nan"), float("inf"), -float("inf")):
        g = torch.as_tensor(rng.randn(33))
        g[20] = bad
        assert math.isnan(_grid_passes.abs_max(g))
    assert _grid_passes.abs_max(torch.zeros(0, dtype=torch.float64)) == 0.0
    assert _grid_passes.grid_sum(torch.full((), 0.5, dtype=torch.float64).expand(9)) == 4.5


@requires_c
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("threads", [1, 2])
def test_routing_equals_torch(monkeypatch, dtype, threads):
    rng, XT, _, _ = _data()
    n_slots, nb = 6, 32
    slot = torch.as_tensor(rng.randint(0, n_slots, size=XT.shape[1]), dtype=dtype)
    column = torch.as_tensor(rng.randint(0, XT.shape[0], size=n_slots), dtype=dtype)
    table = torch.as_tensor(rng.randint(0, 2 * n_slots, size=n_slots * nb), dtype=dtype)
    expected = table[
        slot.long() * nb + XT[column[slot.long()].long(), torch.arange(XT.shape[1])].long()
    ]
    monkeypatch.setattr(_kernels, "_PARALLEL_MIN", 1)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # torch's loops (the fallback) and ...
    monkeypatch.setattr(_kernels, "threads", lambda: threads)  # ... the C loops
    try:
        kept = slot.clone()
        out = _route(XT, slot, column, table, nb)  # no workspace: a new tensor, slot untouched
        assert torch.equal(slot, kept) and torch.equal(out, expected)
        with _kernels.disabled():
            assert torch.equal(_route(XT, slot, column, table, nb), expected)
    finally:
        torch.set_num_threads(before)


def _fits(make, X, y, **fit):
    model = make().fit(X, y, **fit)
    with _kernels.disabled():
        reference = make().fit(X, y, **fit)
    return model, reference


@requires_c
@pytest.mark.parametrize(
    "params",
    [
        dict(loss="squared_error"),
        dict(loss="absolute_error", subsample=0.7),
        dict(loss="huber", max_leaf_nodes=9, max_depth=None),
        dict(loss="quantile", alpha=0.8, max_features=0.5),
    ],
    ids=["squared_error", "absolute_error-subsample", "huber-best_first", "quantile-max_features"],
)
def test_boosting_regressor_is_bit_identical_with_torch_loops(params):
    rng = np.random.RandomState(3)
    X = rng.randn(3000, 8)
    X[rng.rand(3000) < 0.05, 2] = np.nan
    y = X[:, 0] * 2 + np.sin(3 * X[:, 1]) + np.nan_to_num(X[:, 2]) + 0.3 * rng.randn(3000)
    w = rng.uniform(0.5, 2.0, size=3000)

    def make():
        return BoostingRegressor(tree_method="hist", n_estimators=25, random_state=0, **params)

    model, reference = _fits(make, X, y, sample_weight=w)
    for a, b in zip(model.staged_predict(X), reference.staged_predict(X)):
        assert np.array_equal(a, b)
    assert np.array_equal(model.train_score_, reference.train_score_)
    assert np.array_equal(model.feature_importances_, reference.feature_importances_)


@requires_c
def test_boosting_classifier_is_bit_identical_with_torch_loops():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)

    def make():
        return BoostingClassifier(tree_method="hist", n_estimators=10, max_depth=4, random_state=0)

    model, reference = _fits(make, X, y)
    assert np.array_equal(model.predict_proba(X), reference.predict_proba(X))
    assert np.array_equal(model.train_score_, reference.train_score_)


@pytest.mark.parametrize("c_loops", [True, False], ids=["C", "torch"])
def test_same_model_whatever_the_thread_count(monkeypatch, c_loops):
    """Every sum hist mode makes on the CPU is exact (grid values) or has a fixed order:
    1 or 3 threads, same bits."""
    if c_loops and not _kernels.available():
        pytest.skip("the C loops of hist mode are not built")
    rng = np.random.RandomState(5)
    X = rng.randn(40000, 6)
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + 0.2 * rng.randn(40000)
    w = rng.uniform(0.5, 2.0, size=40000)  # weights: their total is a sum over rows too
    monkeypatch.setattr(
        _kernels, "_PARALLEL_MIN", 1
    )  # the C loops split every call between threads
    monkeypatch.setattr(_kernels, "_ROW_BLOCK", 4096)  # and the elementwise passes by rows
    monkeypatch.setattr(_kernels, "_LEVEL_MIN_ROWS", 4096)  # a level's rows cut between threads
    before = torch.get_num_threads()
    preds, scores = [], []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            monkeypatch.setattr(_kernels, "threads", lambda t=threads: t)
            with contextlib.nullcontext() if c_loops else _kernels.disabled():
                model = BoostingRegressor(
                    tree_method="hist", n_estimators=15, max_depth=5, random_state=0
                )
                model.fit(X, y, sample_weight=w)
            preds.append(model.predict(X))
            scores.append(model.train_score_)
    finally:
        torch.set_num_threads(before)
    assert np.array_equal(preds[0], preds[1])
    assert np.array_equal(scores[0], scores[1])


@pytest.mark.parametrize("threads", [1, 3])
def test_parallel_rows_covers_every_row_once(monkeypatch, threads):
    """The row blocks of ``parallel_rows`` tile [0, n) exactly, on any thread count."""
    monkeypatch.setattr(_kernels, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(_kernels, "_ROW_BLOCK", 1000)
    monkeypatch.setattr(_kernels, "threads", lambda: threads)
    for n in (0, 1, 999, 1000, 1001, 7321):
        hits = np.zeros(n, dtype=np.int64)

        def add(a, b, hits=hits):
            hits[a:b] += 1

        _kernels.parallel_rows(add, n)
        assert np.array_equal(hits, np.ones(n, dtype=np.int64))


@pytest.mark.parametrize("threads", [1, 3])
def test_hist_losses_in_row_blocks_are_the_same_bits(monkeypatch, threads):
    """Hist mode's gradients and mean losses, computed block by block on threads, equal
    the whole-array expressions bit for bit (the mean keeps its order: one call)."""
    from residuals.boosting._losses import make_loss

    monkeypatch.setattr(_kernels, "_PARALLEL_MIN", 1)
    monkeypatch.setattr(_kernels, "_ROW_BLOCK", 1000)
    monkeypatch.setattr(_kernels, "threads", lambda: threads)
    rng = np.random.RandomState(0)
    n = 5500
    w = rng.uniform(0.5, 2.0, n)
    cases = [(name, None, rng.randn(n)) for name in ("squared_error", "absolute_error")]
    cases += [(name, None, rng.randn(n)) for name in ("huber", "quantile")]
    cases += [(name, 2, rng.randint(0, 2, n).astype(float)) for name in ("log_loss", "exponential")]
    cases.append(("log_loss", 3, rng.randint(0, 3, n).astype(float)))
    for name, n_classes, y in cases:
        loss = make_loss(name, n_classes=n_classes, exact=False)
        raw = 3 * rng.randn(n, loss.n_trees)
        loss.begin_stage(y, raw, w)
        assert np.array_equal(loss.negative_gradient(y, raw), -loss.gradient(y, raw)), name
        for weights in (None, w):
            expected = float(np.average(loss.pointwise(y, raw), weights=weights))
            assert loss(y, raw, weights) == expected, name


@requires_c
def test_unexpected_layouts_are_refused():
    """The C loops read raw memory: a wrong dtype or a strided tensor is an error, not a bad read."""
    rng, XT, g, gh = _data()
    out = torch.zeros((XT.shape[0], 32), dtype=torch.complex128)
    with pytest.raises(ValueError, match="unexpected dtype or layout"):
        _kernels.hist(XT[:, ::2], gh[::2], out, 32)  # strided bins
    with pytest.raises(ValueError, match="unexpected dtype or layout"):
        _kernels.hist(XT, gh, out.T, 32)  # strided output
    with pytest.raises(ValueError, match="unexpected dtype or layout"):
        _kernels.hist(XT, g.float(), out.real.contiguous(), 32)  # float32 values
    slot = torch.zeros(XT.shape[1], dtype=torch.int32)
    with pytest.raises(ValueError, match="unexpected dtype or layout"):
        _kernels.route(
            XT, slot, torch.zeros(1, dtype=torch.int64), torch.zeros(32, dtype=torch.int32), 32
        )
    with pytest.raises(ValueError, match="unexpected dtype or layout"):
        _kernels.level_hist(XT, gh, out.view(1, -1, 16), 32, slot, 0, 1)  # not (nodes, F, nb)


@pytest.mark.slow
def test_default_thread_count_follows_threadpoolctl_and_omp_num_threads():
    """As HistGradientBoosting: the cores, or a threadpoolctl limit, or OMP_NUM_THREADS."""
    from threadpoolctl import threadpool_limits

    from residuals.boosting import cpu_threads

    assert cpu_threads() == _kernels.threads() >= 1
    with threadpool_limits(limits=1):
        assert cpu_threads() == 1
    code = "from residuals.boosting import cpu_threads; print(cpu_threads())"
    env = {**os.environ, "OMP_NUM_THREADS": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "3"


@requires_c
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("round_to_float32", [False, True])
def test_binning_equals_torch(monkeypatch, dtype, round_to_float32):
    """The C binning gives the torch search's bins: NaN, infinities, strided input, any thread count."""
    from residuals.boosting._binning import BinMapper

    rng = np.random.RandomState(5)
    X = rng.randn(3000, 7).astype(dtype)
    X[:, 3] = np.round(X[:, 3] * 3)  # few distinct values: cuts at midpoints, values on bins' edges
    X[::17, 1] = np.nan
    X[5, 2], X[6, 2] = np.inf, -np.inf
    mapper = BinMapper(max_bins=63, round_to_float32=round_to_float32).fit(X)
    new = np.asfortranarray(rng.randn(2000, 7).astype(dtype) * 2)  # other values, column-major
    new[::11, 4] = np.nan
    monkeypatch.setattr(_kernels, "_PARALLEL_MIN", 1)
    for data in (X, new, X[::3]):
        with _kernels.disabled():
            expected = mapper.transform(data)
        for threads in (1, 3):
            monkeypatch.setattr(_kernels, "threads", lambda t=threads: t)
            assert torch.equal(mapper.transform(data), expected)
    if dtype == np.float64 and round_to_float32:
        with pytest.raises(ValueError, match="too large for dtype"):
            mapper.transform(np.full((4, 7), 1e300))
