"""Quantized histograms (the GPU's path): their trees against the CPU's float ones.

The quantized path runs anywhere: here on the CPU with ``HistTree(quantized=True)``
through its torch fallback (what CI tests), and through the Triton kernel under
``TRITON_INTERPRET=1`` when Triton is installed (skipped otherwise; Triton comes
with CUDA builds of torch). The rule for ties and near-ties is in
``residuals/boosting/_quantized.py``; these tests check each part of it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from residuals.boosting import _quantized
from residuals.boosting._binning import BinMapper
from residuals.boosting._hist import HistTree
from residuals.boosting._hist_data import prepare

requires_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None,
    reason="triton is not installed (it comes with CUDA builds of torch)",
)
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _data(n=6000, seed=0, nan=True):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, 6)
    y = np.sin(6 * X[:, 0]) + 2 * (X[:, 1] > 0.4) + X[:, 2] * X[:, 3] + 0.3 * rng.randn(n)
    if nan:
        X[::13, 2] = np.nan
    mapper = BinMapper(max_bins=63).fit(X)
    return X, y, mapper, mapper.transform(X)


def _fits(Xb, g, h, mapper, **fit):
    params = dict(max_depth=5, n_bins=mapper.missing_bin + 1, random_state=2)
    max_leaf_nodes = fit.pop("max_leaf_nodes", None)
    return [
        HistTree(max_leaf_nodes=max_leaf_nodes, quantized=q, **params).fit(Xb, g, h, **fit)
        for q in (False, True)
    ]


@pytest.mark.parametrize(
    "case", ["squared_error", "weights_and_hessians", "best_first", "subsample"]
)
def test_quantized_trees_equal_float_trees_where_gains_are_not_tied(case):
    X, y, mapper, Xb = _data(seed=1)
    rng = np.random.RandomState(1)
    g = torch.as_tensor(-y)
    h = torch.ones_like(g)
    fit = {}
    if case == "weights_and_hessians":  # counts get their own (integer) channel
        h = torch.as_tensor(rng.uniform(0.5, 1.5, len(y)))
        fit["sample_weight"] = torch.as_tensor(rng.uniform(0.2, 3.0, len(y)))
    elif case == "best_first":
        fit["max_leaf_nodes"] = 12
    elif case == "subsample":  # rows of weight 0 are left out
        fit["sample_weight"] = torch.as_tensor((rng.rand(len(y)) < 0.7).astype(float))
    plain, quant = _fits(Xb, g, h, mapper, **fit)
    assert plain.n_leaves == quant.n_leaves > 8
    for name in ("feature", "threshold_bin", "missing_left", "children_left", "n_node_samples"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(quant, name), err_msg=name)
    np.testing.assert_allclose(
        quant.leaf_values.numpy(), plain.leaf_values.numpy(), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(quant.gain, plain.gain, rtol=1e-9, atol=1e-9)


def test_exact_ties_go_to_the_same_feature():
    """Duplicated features have identical histograms, so identical scores on both
    paths: the tie-break order (seeded) picks the same one."""
    X, y, _, _ = _data(seed=2, nan=False)
    X = np.hstack([X, X[:, :2]])  # features 6 and 7 copy 0 and 1
    mapper = BinMapper(max_bins=63).fit(X)
    Xb = mapper.transform(X)
    g = torch.as_tensor(-y)
    for seed in range(4):
        trees = [
            HistTree(max_depth=4, n_bins=64, random_state=seed, quantized=q).fit(
                Xb, g, torch.ones_like(g)
            )
            for q in (False, True)
        ]
        np.testing.assert_array_equal(trees[0].feature, trees[1].feature)
        np.testing.assert_array_equal(trees[0].threshold_bin, trees[1].threshold_bin)
    assert {0, 6} & set(trees[0].feature.tolist()) and {1, 7} & set(trees[0].feature.tolist())


@pytest.mark.parametrize("hessians", [False, True])
def test_split_scores_move_less_than_the_stated_bound(hessians):
    """The near-tie rule: quantization moves every candidate's score by at most
    ``delta = m 2**-B (4 gmax**2 / hmin + 2 hmax (gmax / hmin)**2)``, so a split
    that beats the others by more than that wins on both paths."""
    X, y, mapper, Xb = _data(n=20000, seed=3)
    rng = np.random.RandomState(3)
    g = torch.as_tensor(rng.standard_cauchy(len(y)).clip(-50, 50))  # heavy tails: a large gmax
    h = torch.as_tensor(rng.uniform(0.2, 2.0, len(y))) if hessians else torch.ones_like(g)
    tree = HistTree(n_bins=64)

    def root_scores(quantized):
        data, _, _ = prepare(Xb, g, h, None, None, 64, quantized)
        hist, cw = tree._root_histograms(data)
        cum = torch.view_as_real(hist[0, :, :-1]).cumsum(1)  # (F, cuts, 2), NaN going right
        total = torch.view_as_real(hist[0]).sum(1, keepdim=True)
        GL, HL = cum[..., 0], cum[..., 1]
        GR, HR = total[..., 0] - GL, total[..., 1] - HL
        counts = HL if cw is None else cw[0, :, :-1].real.cumsum(1)  # rows going left
        ok = (counts > 0) & (
            counts < len(y) - (Xb == 63).sum(0).unsqueeze(1)
        )  # both sides non-empty
        return torch.where(ok, GL**2 / HL + GR**2 / HR, 0.0), data

    plain, _ = root_scores(False)
    quant, data = root_scores(True)
    gmax, hmin, hmax = g.abs().max().item(), h.min().item(), h.max().item()
    bits = data.quant.bits
    delta = (
        len(y)
        * 2.0**-bits
        * (4 * gmax**2 / hmin + (2 * hmax * (gmax / hmin) ** 2 if hessians else 0))
    )
    moved = (quant - plain).abs().max().item()
    assert 0 < moved <= delta, (moved, delta)


def _level_hist_case(interpret: bool) -> dict:
    """The quantized histograms of a few level shapes (run in a subprocess for Triton)."""
    code = """
import json, numpy as np, torch
from residuals.boosting import _quantized
rng = np.random.RandomState(4)
n, F, nb = 5000, 7, 32
XT = torch.as_tensor(rng.randint(0, nb, size=(F, n)), dtype=torch.uint8)
g, h, w = (torch.as_tensor(v) for v in (rng.randn(n), rng.rand(n), rng.rand(n) + 0.5))
slot = torch.as_tensor(rng.randint(0, 6, size=n), dtype=torch.int32)
out = {"triton": _quantized.use_triton(XT.device)}
for counts in (False, True):
    quant = _quantized.quantize(g, h, w, 0.0, counts)
    for lo, hi in ((0, 1), (1, 4), (2, 3), (0, 6)):
        hist = _quantized.level_hist(XT, quant, slot, lo, hi, nb)
        out[f"{counts}-{lo}-{hi}"] = hist.flatten().tolist()
    out[f"{counts}-root"] = _quantized.level_hist(XT, quant, None, 0, 1, nb).flatten().tolist()
print(json.dumps(out))
"""
    env = {
        **os.environ,
        "TRITON_INTERPRET": "1" if interpret else "0",
        "RESIDUALS_TRITON": "1" if interpret else "0",
    }
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@requires_triton
def test_triton_kernel_equals_the_torch_fallback():
    """The Triton kernel (interpreted on the CPU here) adds the same integers as torch."""
    kernel, fallback = _level_hist_case(True), _level_hist_case(False)
    assert kernel.pop("triton") is True and fallback.pop("triton") is False
    assert kernel.keys() == fallback.keys()
    for key in kernel:
        assert kernel[key] == fallback[key], key


def test_torch_fallback_counts_every_selected_row_once():
    rng = np.random.RandomState(5)
    n, F, nb = 3000, 4, 16
    XT = torch.as_tensor(rng.randint(0, nb, size=(F, n)), dtype=torch.uint8)
    g = torch.as_tensor(rng.randn(n))
    quant = _quantized.quantize(g, torch.ones_like(g), None, 1.0, True)
    slot = torch.as_tensor(rng.randint(0, 5, size=n))
    hist = _quantized.level_hist(XT, quant, slot, 1, 4, nb)
    for node in range(3):
        rows = np.flatnonzero(slot.numpy() == node + 1)
        for f in range(F):
            expected = np.bincount(
                XT[f, rows].numpy(), weights=quant.q[rows, 0].numpy(), minlength=nb
            )
            np.testing.assert_array_equal(hist[node, f, :, 0].numpy(), expected.astype(np.int64))
            np.testing.assert_array_equal(
                hist[node, f, :, 1].numpy(), np.bincount(XT[f, rows].numpy(), minlength=nb)
            )
    rows = torch.as_tensor(rng.choice(n, 700, replace=False))
    by_rows = _quantized.level_hist(XT, quant, None, 0, 1, nb, rows=rows)
    mask = torch.zeros(n, dtype=torch.int64)
    mask[rows] = 1
    assert torch.equal(by_rows, _quantized.level_hist(XT, quant, mask, 1, 2, nb))


def test_quantization_bits_keep_every_sum_in_int64():
    for n in (1, 1000, 10**6, 10**7, 2 * 10**9):
        bits = _quantized._bits(n)
        assert bits <= 52 and n * 2.0**bits <= 2.0**62
    g = torch.tensor([3.0, -1.5, 0.25], dtype=torch.float64)
    quant = _quantized.quantize(g, torch.ones_like(g), None, 1.0, False)
    assert quant.q[:, 0].abs().max() <= 2**quant.bits
    torch.testing.assert_close(
        quant.q[:, 0].double() * quant.unit[0], g, rtol=0, atol=float(quant.unit[0])
    )


@pytest.mark.gpu
@requires_cuda
def test_booster_on_cuda_equals_quantized_cpu_trees():
    from residuals.boosting import BoostingRegressor

    X, y, _, _ = _data(n=20000, seed=6)
    fits = [
        BoostingRegressor(
            tree_method="hist", n_estimators=20, max_depth=5, random_state=0, device=d
        ).fit(X, y)
        for d in ("cpu", "cuda")
    ]
    np.testing.assert_allclose(fits[0].predict(X), fits[1].predict(X), rtol=1e-9, atol=1e-9)
