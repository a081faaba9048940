"""Probes of the ResNet backend: layer responses, gradient norms, block contributions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from test_nets import _one_thread  # noqa: F401  (autouse, module scope: one torch thread)
from torch import nn

from residuals.nets import (
    block_contributions,
    build_model,
    cifar_resnet,
    gradient_norms,
    layer_responses,
)


def _batch(n=4, size=8, channels=3, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, channels, size, size, generator=g),
        torch.randint(0, classes, (n,), generator=g),
    )


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_untouched(model: nn.Module, before: dict[str, torch.Tensor], training: bool):
    assert model.training == training
    after = model.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------- layer responses
@pytest.mark.parametrize("name", ["resnet20", "plain20", "preresnet20", "resnet18"])
def test_layer_responses_table(name):
    torch.manual_seed(0)
    model = build_model(name)
    x, _ = _batch(size=16)
    before = _state(model)
    table = layer_responses(model, x)
    assert list(table.columns) == ["block", "stage", "std", "mean", "n_elements"]
    assert len(table) == len(model.blocks)
    assert table["block"].tolist() == list(range(len(model.blocks)))
    n_stages = len(model.config.stage_blocks)
    assert table["stage"].tolist() == sorted(table["stage"]) and set(table["stage"]) == set(
        range(1, n_stages + 1)
    )
    assert (table["std"] > 0).all() and np.isfinite(table["std"]).all()
    _assert_untouched(model, before, training=True)


def test_layer_responses_is_the_std_of_the_branch_output_in_eval_mode():
    torch.manual_seed(0)
    model = cifar_resnet(20)
    x, _ = _batch(size=8)
    table = layer_responses(model, x)
    model.eval()
    with torch.no_grad():
        h = model.stem(x)
        for i, block in enumerate(model.blocks):
            f = block.branch(h)
            assert table["std"][i] == pytest.approx(f.double().std().item(), rel=1e-6)
            assert table["n_elements"][i] == f.numel()
            h = block(h)


@pytest.mark.parametrize(
    "name,per_block",
    [("resnet20", 2), ("plain20", 2), ("preresnet20", 2), ("preresnet164", 3), ("resnet50", 3)],
)
def test_layer_responses_of_every_layer(name, per_block):
    torch.manual_seed(0)
    model = build_model(name, **({"stem": "small", "width": 8} if name == "resnet50" else {}))
    x, _ = _batch(size=8)
    table = layer_responses(model, x, layers="all")
    assert list(table.columns) == ["block", "stage", "layer", "std", "mean", "n_elements"]
    assert len(table) == per_block * len(model.blocks)
    assert table["layer"].tolist() == list(range(1, len(table) + 1))
    assert table["block"].tolist() == [
        i for i in range(len(model.blocks)) for _ in range(per_block)
    ]
    # A block's last layer is its branch output: the same numbers as the default table.
    last = table.groupby("block").tail(1).reset_index(drop=True)
    np.testing.assert_allclose(last["std"], layer_responses(model, x)["std"], rtol=1e-9)
    # The first layer of a post-activation block is its first BN, measured before the ReLU
    # that then overwrites that tensor in place.
    if not model.config.preact:
        model.eval()
        with torch.no_grad():
            first_bn = model.blocks[0].branch[1](model.blocks[0].branch[0](model.stem(x)))
        assert table["mean"][0] == pytest.approx(first_bn.double().mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="layers must be 'branch'"):
        layer_responses(model, x, layers="every")


def test_layer_responses_accumulates_over_batches():
    torch.manual_seed(0)
    model = cifar_resnet(20)
    x, y = _batch(n=6, size=8)
    whole = layer_responses(model, x)
    chunked = layer_responses(model, x, batch_size=4)  # tensor split into 4 + 2
    loader = [(x[:3], y[:3]), (x[3:], y[3:])]  # (x, y) batches, as a DataLoader yields
    batched = layer_responses(model, loader)
    for other in (chunked, batched):
        np.testing.assert_allclose(other["std"], whole["std"], rtol=1e-9)
        np.testing.assert_allclose(other["mean"], whole["mean"], rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="no data"):
        layer_responses(model, [])


# ---------------------------------------------------------------------- gradient norms
@pytest.mark.parametrize("name", ["resnet20", "plain20", "preresnet20"])
def test_gradient_norms_table_and_no_side_effects(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x, y = _batch()
    before = _state(model)
    table = gradient_norms(model, x, y)
    assert list(table.columns) == [
        "block",
        "stage",
        "input_grad_norm",
        "param_grad_norm",
        "input_norm",
        "loss",
    ]
    assert len(table) == len(model.blocks)
    for col in ("input_grad_norm", "param_grad_norm", "input_norm"):
        assert (table[col] > 0).all() and np.isfinite(table[col]).all()
    assert table["loss"].nunique() == 1
    # Train-mode BN ran (default train=True), but running statistics, mode and .grad are restored.
    _assert_untouched(model, before, training=False)


def test_gradient_norms_match_autograd():
    torch.manual_seed(0)
    model = cifar_resnet(20, shortcut="B")
    x, y = _batch()
    table = gradient_norms(model, x, y, train=True)
    # Reference: backward() with the block inputs retained.
    inputs = []
    hooks = [b.register_forward_pre_hook(lambda _m, a: inputs.append(a[0])) for b in model.blocks]
    loss = F.cross_entropy(model(x), y)
    for t in inputs:
        t.retain_grad()
    loss.backward()
    for h in hooks:
        h.remove()
    assert table["loss"][0] == pytest.approx(loss.item(), rel=1e-6)
    for i, block in enumerate(model.blocks):
        assert table["input_grad_norm"][i] == pytest.approx(inputs[i].grad.norm().item(), rel=1e-4)
        assert table["input_norm"][i] == pytest.approx(inputs[i].norm().item(), rel=1e-5)
        pnorm = torch.cat([p.grad.flatten() for p in block.parameters()]).norm().item()
        assert table["param_grad_norm"][i] == pytest.approx(pnorm, rel=1e-4)
    # The projection shortcut's parameters count towards their block.
    assert any(n.startswith("shortcut.conv") for n, _ in model.blocks[3].named_parameters())


def test_gradient_norms_takes_another_loss():
    model = cifar_resnet(20, num_classes=1)
    x, _ = _batch()
    table = gradient_norms(model, x, torch.randn(4, 1), loss_fn=F.mse_loss)
    assert (table["input_grad_norm"] > 0).all()
    with pytest.raises(ValueError, match="scalar"):
        gradient_norms(model, x, torch.randn(4, 1), loss_fn=lambda o, t: (o - t) ** 2)


def _first_over_last(name: str, train: bool, seed: int) -> tuple[float, float]:
    torch.manual_seed(seed)
    model = build_model(name)
    x, y = _batch(n=8, size=16, seed=seed)
    g = gradient_norms(model, x, y, train=train)["input_grad_norm"]
    return g.iloc[0], g.iloc[0] / g.iloc[-1]


def test_deep_plain_net_gradients_at_init_explode_in_train_mode():
    """What SGD sees at initialisation (BN on batch statistics), measured, seeds 0-5:
    the gradient reaching plain-56's first block is 4.5e3-1e4 times the one at its last
    block, against 27-32 times in ResNet-56. Not vanishing -- exploding (He et al. 2015
    Sec. 4.1 already rule out vanishing gradients in BN plain nets)."""
    for seed in (0, 1):
        plain_first, plain_ratio = _first_over_last("plain56", train=True, seed=seed)
        res_first, res_ratio = _first_over_last("resnet56", train=True, seed=seed)
        assert plain_ratio > 1000 and res_ratio < 100
        assert plain_first > 50 * res_first


def test_deep_plain_net_gradients_at_init_vanish_without_normalisation():
    """In eval mode at initialisation BN's running statistics are (0, 1), so nothing is
    normalised: then plain-56's gradient vanishes towards the input (first block ~1e-3,
    against ~1e2 for ResNet-56; seeds 0-5)."""
    plain_first, plain_ratio = _first_over_last("plain56", train=False, seed=0)
    res_first, _ = _first_over_last("resnet56", train=False, seed=0)
    assert plain_ratio < 0.5
    assert plain_first < 1e-3 * res_first


# ---------------------------------------------------------------------- contributions
def test_block_contributions_table():
    torch.manual_seed(0)
    model = cifar_resnet(20).train()
    x, _ = _batch()
    before = _state(model)
    table = block_contributions(model, x)
    assert list(table.columns) == ["block", "stage", "correction_norm", "base_norm", "ratio"]
    assert table["stage"].tolist() == [1] * 3 + [2] * 3 + [3] * 3
    assert (table["ratio"] > 0).all() and np.isfinite(table["ratio"]).all()
    np.testing.assert_allclose(table["ratio"], table["correction_norm"] / table["base_norm"])
    _assert_untouched(model, before, training=True)
    model.eval()
    np.testing.assert_allclose(table["ratio"], model.stage_contributions(x))

    plain = block_contributions(cifar_resnet(20, skip=False), x)
    assert np.isinf(plain["ratio"]).all() and (plain["base_norm"] == 0).all()


def test_probes_reject_other_models():
    with pytest.raises(TypeError, match="residuals.nets.ResNet"):
        layer_responses(nn.Linear(3, 3), torch.randn(2, 3))
    assert isinstance(block_contributions(cifar_resnet(8), _batch()[0]), pd.DataFrame)
