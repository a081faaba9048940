"""Blocks, models and registry of the ResNet backend (residuals.nets)."""

from __future__ import annotations

import copy
import io
import math
import pickle
from functools import cache

import numpy as np
import pytest
import torch
from torch import nn

from residuals.core import Stagewise
from residuals.nets import (
    CIFAR_DEPTHS,
    MODELS,
    BasicBlock,
    BottleneckBlock,
    PreActBlock,
    PreActBottleneckBlock,
    ResNet,
    ResNetConfig,
    ShortcutA,
    ShortcutB,
    build_model,
    cifar_resnet,
    imagenet_resnet,
    model_name,
)

BIG = {"resnet1202", "plain1202"}  # 19.4M parameters: built, never run forward in tests
IMAGENET_STYLE = {
    "resnet18",
    "plain18",
    "resnet34",
    "plain34",
    "resnet50",
    "plain50",
    "d2l-resnet18",
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny convolutions: one thread is ~10x faster than two on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@cache
def _default(name: str) -> ResNet:
    """One default-built model per name (3 channels, 10 classes), shared; tests must not mutate it."""
    torch.manual_seed(0)
    return build_model(name, in_channels=3, num_classes=10)


def _image_size(name: str) -> int:
    return 28 if name in IMAGENET_STYLE else 8


# ---------------------------------------------------------------------- registry
# Every registered model with 1 channel / 7 classes and with the defaults (3 / 10); the
# 1202-layer nets are built once, with the defaults (0.5 s each).
@pytest.mark.parametrize(
    "name,in_channels,num_classes",
    [(n, 1, 7) for n in MODELS if n not in BIG] + [(n, 3, 10) for n in MODELS],
)
def test_registry_builds_and_runs(name, in_channels, num_classes):
    model = (
        _default(name)
        if (in_channels, num_classes) == (3, 10)
        else build_model(name, in_channels=in_channels, num_classes=num_classes)
    )
    assert isinstance(model, ResNet) and isinstance(model, Stagewise)
    assert model.name == name
    assert model.config.in_channels == in_channels and model.config.num_classes == num_classes
    head_out = (
        model.head.fc.out_features if hasattr(model.head, "fc") else model.head.conv.out_channels
    )
    assert head_out == num_classes
    if name in BIG:
        return
    size = _image_size(name)
    x = torch.randn(2, in_channels, size, size)
    out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["resnet20", "plain20", "preresnet20", "resnet18", "plain18"])
@pytest.mark.parametrize("size", [8, 28, 32])
def test_forward_on_small_image_sizes(name, size):
    model = _default(name)
    assert model(torch.randn(2, 3, size, size)).shape == (2, 10)


def test_registry_has_the_required_names():
    for depth in CIFAR_DEPTHS + (18, 34, 50):
        assert f"resnet{depth}" in MODELS and f"plain{depth}" in MODELS


# One model per block type and shortcut kind (pickling the 20M-parameter nets only costs time).
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet20", {}),
        ("plain20", {}),
        ("resnet20", {"shortcut": "B"}),
        ("preresnet20", {}),
        ("preresnet164", {"shortcut": "B"}),
        ("resnet18", {}),
        ("plain50", {"width": 16}),
        ("resnet50", {"stem": "small", "width": 8}),
    ],
)
def test_pickle_and_deepcopy_round_trip(name, kwargs):
    model = build_model(name, **kwargs).eval()
    x = torch.randn(2, 3, _image_size(name), _image_size(name))
    with torch.no_grad():
        expected = model(x)
        for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            assert clone.config == model.config
            torch.testing.assert_close(clone.eval()(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet56", {}),
        ("plain56", {}),
        ("preresnet164", {}),
        ("resnet18", {}),
        ("plain50", {"width": 16}),
    ],
)
def test_state_dict_loads_into_a_fresh_model(name, kwargs):
    trained = build_model(name, **kwargs).eval()
    torch.manual_seed(123)
    fresh = build_model(name, **kwargs).eval()
    x = torch.randn(2, 3, _image_size(name), _image_size(name))
    with torch.no_grad():
        assert not torch.allclose(fresh(x), trained(x))
        buf = io.BytesIO()
        torch.save(trained.state_dict(), buf)
        buf.seek(0)
        fresh.load_state_dict(torch.load(buf, weights_only=True), strict=True)
        torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)


def test_build_model_rejects_unknown_names_with_the_list():
    with pytest.raises(ValueError, match="unknown model 'resnet57x'") as err:
        build_model("resnet57x")
    for name in ("resnet56", "plain56", "resnet18", "plain1202"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match="Did you mean 'resnet56'"):
        build_model("resnt56")


def test_build_model_passes_builder_options_and_guards_the_name():
    assert build_model("resnet18", stem="small").config.stem == "small"
    assert build_model("resnet56", shortcut="B").config.shortcut == "B"
    with pytest.raises(TypeError, match="the name fixes skip"):
        build_model("resnet56", skip=False)


def test_build_model_accepts_any_cifar_depth_by_pattern():
    model = build_model("plain14", in_channels=1)
    assert model.depth == 14 and not model.skip and len(model.blocks) == 6
    assert build_model("preresnet26").config.block == "preact"
    assert build_model("preresnet18").config.block == "preact"
    assert build_model("plain101", width=8).config.stage_blocks == (3, 4, 23, 3)
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("resnet57")


def test_model_name():
    assert model_name(56, False) == "plain56"
    assert model_name(56, True) == "resnet56"
    assert model_name(18, False) == "plain18"
    assert model_name(110, True, preact=True) == "preresnet110"
    assert model_name(14, True) == "resnet14"
    with pytest.raises(ValueError, match="20, 32, 44, 56, 110, 1202"):
        model_name(57, True)
    for depth, skip in [(20, True), (56, False), (50, True)]:
        assert build_model(model_name(depth, skip)).depth == depth


# ---------------------------------------------------------------------- paper facts
# He et al. 2015, Table 6 (CIFAR-10), rounded as the paper prints them.
@pytest.mark.parametrize(
    "depth,millions,digits",
    [(20, 0.27, 2), (32, 0.46, 2), (44, 0.66, 2), (56, 0.85, 2), (110, 1.7, 1), (1202, 19.4, 1)],
)
def test_cifar_parameter_counts_match_the_paper(depth, millions, digits):
    residual = _default(f"resnet{depth}")
    plain = _default(f"plain{depth}")
    assert round(residual.num_parameters() / 1e6, digits) == millions
    assert plain.num_parameters() == residual.num_parameters()  # option A: no shortcut parameters
    assert residual.depth == depth == plain.depth


def test_imagenet_style_parameter_counts():
    # d2l's ResNet-18 on Fashion-MNIST: 1 input channel, 10 classes, ~11.2M parameters.
    assert round(build_model("resnet18", in_channels=1).num_parameters() / 1e6, 1) == 11.2
    # torchvision's ResNet-50 has 25.56M with 1000 classes; 23.5M with 10.
    assert round(_default("resnet50").num_parameters() / 1e6, 1) == 23.5
    assert round(_default("resnet34").num_parameters() / 1e6, 1) == 21.3


def test_preactivation_parameter_counts_match_he_2016():
    # He et al. 2016, Table 2: pre-activation ResNet-164 on CIFAR, 1.7M.
    # (ResNet-1001 builds with 10.29M here, against the paper's 10.2M.)
    assert round(_default("preresnet164").num_parameters() / 1e6, 1) == 1.7


@pytest.mark.parametrize("depth", [21, 57, 2, 0, -4, 1203])
def test_invalid_cifar_depth_lists_the_valid_ones(depth):
    with pytest.raises(ValueError) as err:
        cifar_resnet(depth)
    msg = str(err.value)
    assert "6n+2" in msg and "20, 32, 44, 56, 110, 1202" in msg and str(depth) in msg


def test_invalid_bottleneck_and_imagenet_depths():
    with pytest.raises(ValueError, match="9n\\+2.*164, 1001"):
        cifar_resnet(57, block="bottleneck")
    with pytest.raises(ValueError, match="valid: 18, 34, 50, 101, 152"):
        imagenet_resnet(20)


def test_config_validation_messages():
    with pytest.raises(ValueError, match="shortcut must be one of"):
        cifar_resnet(20, shortcut="C")
    with pytest.raises(ValueError, match="block must be one of"):
        cifar_resnet(20, block="dense")
    with pytest.raises(ValueError, match="stem must be one of"):
        imagenet_resnet(18, stem="big")
    with pytest.raises(ValueError, match="zero_init_residual=True with skip=False"):
        cifar_resnet(20, skip=False, zero_init_residual=True)
    with pytest.raises(ValueError, match="same length"):
        ResNetConfig(stage_blocks=(1, 1), widths=(16,))


def test_wrong_input_channels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expects images of shape \(N, 3, H, W\).*in_channels=1"):
        _default("resnet20")(torch.randn(2, 1, 8, 8))


# ---------------------------------------------------------------------- plain vs residual
@pytest.mark.parametrize("depth", [20, 56])
@pytest.mark.parametrize("block", ["basic", "preact"])
def test_plain_and_residual_have_identical_parameters_with_option_a(depth, block):
    residual = cifar_resnet(depth, skip=True, block=block, shortcut="A")
    plain = cifar_resnet(depth, skip=False, block=block, shortcut="A")
    shapes = lambda m: [(n, tuple(p.shape)) for n, p in m.named_parameters()]  # noqa: E731
    assert shapes(plain) == shapes(residual)
    assert [n for n, _ in plain.named_buffers()] == [n for n, _ in residual.named_buffers()]
    # ...and a plain net's state_dict loads into the residual net and back.
    residual.load_state_dict(plain.state_dict(), strict=True)
    plain.load_state_dict(residual.state_dict(), strict=True)
    assert all(b.shortcut is None and not b.skip for b in plain.blocks)
    assert all(b.skip for b in residual.blocks)


@pytest.mark.parametrize("block", ["basic", "preact"])
def test_same_seed_gives_the_plain_twin_the_same_weights(block):
    # Option A: the twins consume the RNG identically, so a seeded pair differs only in the
    # identity paths -- the cleanest plain-versus-residual comparison.
    torch.manual_seed(7)
    residual = cifar_resnet(20, block=block)
    torch.manual_seed(7)
    plain = cifar_resnet(20, block=block, skip=False)
    for (name, a), (_, b) in zip(residual.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), name


def test_option_b_projects_only_where_the_shape_changes():
    model = cifar_resnet(20, shortcut="B")
    kinds = [type(b.shortcut).__name__ for b in model.blocks]
    # 3 blocks per stage; the first block of stages 2 and 3 halves the map and doubles the width.
    assert kinds == ["Identity"] * 3 + ["ShortcutB", "Identity", "Identity"] * 2
    for b in model.blocks:
        changes = b.stride != 1 or b.in_ch != b.out_ch
        assert isinstance(b.shortcut, ShortcutB) == changes
    # option B adds exactly the two 1x1 convs + BNs: 16*32 + 2*32 + 32*64 + 2*64
    assert (
        model.num_parameters() - _default("resnet20").num_parameters()
        == 16 * 32 + 64 + 32 * 64 + 128
    )


@pytest.mark.parametrize("name,n_projections", [("resnet18", 3), ("resnet34", 3), ("resnet50", 4)])
def test_imagenet_style_projections(name, n_projections):
    model = _default(name)
    assert sum(isinstance(b.shortcut, ShortcutB) for b in model.blocks) == n_projections
    plain = _default(name.replace("resnet", "plain"))
    assert not any("shortcut" in n for n, _ in plain.named_parameters())
    assert all(b.shortcut is None for b in plain.blocks)


def test_option_a_has_no_parameters_anywhere():
    model = cifar_resnet(56)
    assert sum(isinstance(b.shortcut, ShortcutA) for b in model.blocks) == 2
    assert not any("shortcut" in n for n, _ in model.named_parameters())
    assert not any("shortcut" in n for n, _ in model.named_buffers())


# ---------------------------------------------------------------------- blocks
def test_shortcut_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    sc = ShortcutA(16, 32, stride=2)
    y = sc(x)
    assert y.shape == (2, 32, 4, 4)
    assert list(sc.parameters()) == []
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert (y[:, :8] == 0).all() and (y[:, 24:] == 0).all()
    # Odd sizes round up like a strided 3x3 conv with padding 1 does.
    assert sc(torch.randn(1, 16, 7, 7)).shape == (1, 32, 4, 4)
    assert BasicBlock(16, 32, 2)(torch.randn(1, 16, 7, 7)).shape == (1, 32, 4, 4)
    # channels_last in, channels_last out (cheap on GPU with channels_last training).
    y_cl = sc(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y)
    with pytest.raises(ValueError, match="use shortcut='B'"):
        ShortcutA(32, 16)


@pytest.mark.parametrize("cls", [BasicBlock, BottleneckBlock, PreActBlock, PreActBottleneckBlock])
@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize("in_ch,out_ch,stride", [(16, 16, 1), (16, 32, 2), (16, 64, 1)])
def test_block_forward_is_the_residual_equation(cls, shortcut, in_ch, out_ch, stride):
    x = torch.randn(2, in_ch, 8, 8)
    residual = cls(in_ch, out_ch, stride, skip=True, shortcut=shortcut).eval()
    plain = cls(in_ch, out_ch, stride, skip=False, shortcut=shortcut).eval()
    plain.load_state_dict(
        {k: v for k, v in residual.state_dict().items() if not k.startswith("shortcut.")},
        strict=True,
    )
    with torch.no_grad():
        f = residual.branch(x)
        assert f.shape == (2, out_ch, 8 // stride, 8 // stride)
        torch.testing.assert_close(residual(x), residual.act(f + residual.shortcut(x)))
        torch.testing.assert_close(plain(x), plain.act(f))
    post = cls in (BasicBlock, BottleneckBlock)
    assert isinstance(residual.act, nn.ReLU if post else nn.Identity)
    assert isinstance(residual.last_layer(), nn.BatchNorm2d if post else nn.Conv2d)
    assert plain.shortcut is None and not any(k.startswith("shortcut") for k in plain.state_dict())


def test_block_validation():
    with pytest.raises(ValueError, match="multiple of its expansion 4"):
        BottleneckBlock(16, 30)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        BasicBlock(16, 16, 3)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        BasicBlock(16, 32, 2, skip=False, shortcut="a")


# ---------------------------------------------------------------------- init
def test_he_initialisation():
    model = cifar_resnet(20)
    conv = model.blocks[4].branch[0]  # 32 -> 32 3x3
    expected_std = math.sqrt(2.0 / (conv.out_channels * 9))  # Kaiming normal, fan_out
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.05
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in bns)
    zero = cifar_resnet(20, zero_init_residual=True)
    assert all((b.last_layer().weight == 0).all() for b in zero.blocks)
    assert all((b.branch[1].weight == 1).all() for b in zero.blocks)


def test_zero_init_residual_makes_blocks_start_as_the_identity():
    model = cifar_resnet(20, block="preact", zero_init_residual=True).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        h = model.stem(x)
        for block in model.blocks:  # every block reduces to its shortcut
            h = block.shortcut(h)
        torch.testing.assert_close(model.forward_features(x), h)
        assert (model.stage_contributions(x) == 0).all()


# ---------------------------------------------------------------------- Stagewise contract
@pytest.mark.parametrize(
    "name", ["resnet20", "plain20", "preresnet20", "preresnet164", "resnet18", "plain50"]
)
def test_stagewise_contract(name):
    model = _default(name).eval()
    x = torch.randn(3, 3, _image_size(name), _image_size(name))
    with torch.no_grad():
        features = model.forward_features(x)
    n = len(model.blocks)
    assert model.n_stages_ == n
    torch.testing.assert_close(model.final_state(x), features)
    states = list(model.staged_states(x))
    assert len(states) == n
    torch.testing.assert_close(states[-1], features)
    for step in model.staged_steps(x):
        assert step.base.shape == step.correction.shape == step.state.shape
    ratios = model.stage_contributions(x)
    assert ratios.shape == (n,)
    if model.skip:
        assert np.isfinite(ratios).all() and (ratios > 0).all()
    else:
        assert np.isinf(ratios).all()  # no identity path: base is zero
    for m in (0, n // 2, n - 1):
        dropped = model.drop_stage(x, m)
        assert dropped.shape == features.shape
        assert not torch.allclose(dropped, features)
    assert not model.final_state(x).requires_grad  # measured under no_grad
    with pytest.raises(ValueError, match="not a stage index"):
        model.final_state(x, drop=n)


def test_stagewise_accepts_numpy_and_the_lesion_is_act_of_the_shortcut():
    model = _default("resnet20").eval()
    x = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).astype(np.float32)
    torch.testing.assert_close(model.final_state(x), model.forward_features(torch.from_numpy(x)))
    # Dropping the last block leaves relu(shortcut(x_{L-1})) = relu(x_{L-1}) (identity shortcut).
    states = list(model.staged_states(x))
    torch.testing.assert_close(model.drop_stage(x, len(states) - 1), torch.relu(states[-2]))


def test_channels_last_gives_the_same_output():
    model = _default("resnet20").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        out = cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["resnet56", "plain56", "preresnet20", "resnet18"])
def test_gpu_channels_last_bf16_no_sync_and_compile(name):
    model = build_model(name).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,), device="cuda")
    # Eager training step under bf16 autocast, with any host synchronisation an error.
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    # torch.compile captures the whole forward in one graph, and agrees with eager.
    compiled = torch.compile(model, fullgraph=True)
    model.eval()
    with torch.no_grad():
        eager, comp = model(x), compiled(x)
    assert ((comp - eager).abs().max() / eager.abs().max()).item() < 1e-2
