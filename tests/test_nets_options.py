"""Builder options (activation, head, init), the seed articles' nets, names, input sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from residuals.nets import (
    MODELS,
    InputSizeError,
    ResNetConfig,
    build_model,
    check_input_size,
    cifar_resnet,
    imagenet_resnet,
    layer_shapes,
    min_input_size,
)
from residuals.nets.models import ConvHead


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _kinds(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


@pytest.mark.parametrize(
    "name",
    ["resnet20", "plain20", "preresnet20", "resnet18", "preresnet164", "resnet50"],
)
@pytest.mark.parametrize("activation,cls", [("elu", nn.ELU), ("gelu", nn.GELU)])
def test_activation_is_a_builder_option_through_the_registry(name, activation, cls):
    model = build_model(name, activation=activation, in_channels=1, width=8)
    kinds = _kinds(model)
    assert cls in kinds and nn.ReLU not in kinds
    assert model.config.activation == activation
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_default_activation_is_relu_and_unknown_ones_are_refused():
    assert nn.ReLU in _kinds(build_model("resnet20")) and nn.ELU not in _kinds(
        build_model("resnet20")
    )
    with pytest.raises(ValueError, match="activation must be one of relu, elu, gelu"):
        build_model("resnet20", activation="tanh")
    with pytest.raises(ValueError, match="head must be one of linear, conv"):
        build_model("resnet20", head="attention")


def test_conv_head_is_the_tf_articles_and_any_net_can_have_it():
    model = build_model("resnet20", head="conv", num_classes=7).eval()
    assert isinstance(model.head, ConvHead)
    x = torch.randn(3, 3, 8, 8)
    h = model.forward_features(x)
    expected = model.head.bn(model.head.conv(h)).mean(dim=(2, 3))
    torch.testing.assert_close(model(x), expected)
    assert model(x).shape == (3, 7)


def test_tf_preact_elu_is_the_seed_000_net():
    # resnet(X, 3, 64, C, 5): conv_0 (3x3, 64, BN, slim's default ReLU), 5 BN-ELU-conv
    # blocks of width 64 at full resolution, conv_top (3x3 to C, BN) averaged over space
    model = build_model("tf-preact-elu", in_channels=1, num_classes=10)
    assert model.name == "tf-preact-elu"
    assert [type(m) for m in model.stem] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert len(model.blocks) == 5
    for block in model.blocks:
        assert [type(m) for m in block.branch] == [
            nn.BatchNorm2d,
            nn.ELU,
            nn.Conv2d,
        ] * 2
        assert block.stride == 1 and block.in_ch == block.out_ch == 64
        assert isinstance(block.shortcut, nn.Identity) and isinstance(block.act, nn.Identity)
        assert all(c.kernel_size == (3, 3) for c in block.branch if isinstance(c, nn.Conv2d))
    assert isinstance(model.head, ConvHead) and model.head.conv.kernel_size == (3, 3)
    assert [shape for _, shape in layer_shapes(model, (1, 1, 28, 28))] == [
        (1, 64, 28, 28),
        (1, 64, 28, 28),
        (1, 10, 28, 28),
        (1, 10, 28, 28),
        (1, 10),
    ]


def test_d2l_resnet18_has_the_articles_shapes_and_runs_its_loop():
    net = build_model("d2l-resnet18")
    assert (net.config.in_channels, net.config.num_classes, net.config.init) == (
        1,
        10,
        "xavier",
    )
    # the article's printout for X = torch.rand(size=(1, 1, 224, 224))
    assert layer_shapes(net, (1, 1, 224, 224)) == [
        ("Sequential", (1, 64, 56, 56)),
        ("Sequential", (1, 64, 56, 56)),
        ("Sequential", (1, 128, 28, 28)),
        ("Sequential", (1, 256, 14, 14)),
        ("Sequential", (1, 512, 7, 7)),
        ("AdaptiveAvgPool2d", (1, 512, 1, 1)),
        ("Flatten", (1, 512)),
        ("Linear", (1, 10)),
    ]
    assert net.num_parameters() == 11_175_370  # d2l's own: 11,178,378 (conv biases, no BN on 1x1)
    # the loop as the article writes it, on real tensors: it computes the net's output
    net.eval()
    X = x = torch.rand(size=(2, 1, 96, 96))
    for layer in net:
        X = layer(X)
    torch.testing.assert_close(X, net(x))


def test_xavier_init_is_an_option():
    he, xavier = build_model("resnet20"), build_model("resnet20", init="xavier")
    w_he, w_x = he.stem[0].weight, xavier.stem[0].weight
    bound = (6 / (w_x.shape[1] * 9 + w_x.shape[0] * 9)) ** 0.5
    assert w_x.abs().max() <= bound and w_he.abs().max() > bound  # normal vs uniform in a bound


def _builders():
    yield cifar_resnet(20)
    yield cifar_resnet(56, block="bottleneck")
    yield cifar_resnet(164, block="preact")
    yield cifar_resnet(164, block="preact_bottleneck")
    yield cifar_resnet(50)
    yield cifar_resnet(101, block="bottleneck", skip=False)
    yield cifar_resnet(1001, block="preact_bottleneck", width=4)
    yield imagenet_resnet(34, preact=True, width=8)
    yield imagenet_resnet(50, width=8)


@pytest.mark.parametrize("model", list(_builders()), ids=lambda m: m.name)
def test_names_and_builders_agree(model):
    """Whatever a builder builds, its name builds again (same architecture)."""
    again = build_model(model.name, width=model.config.stem_width)
    assert again.config == model.config


def test_preresnet1001_is_buildable_by_name():
    with torch.device("meta"):
        model = build_model("preresnet1001")
    assert model.config.block == "preact_bottleneck" and model.depth == 1001
    assert "preresnet1001" in MODELS
    assert build_model("resnet50").config.stem == "imagenet"  # the ImageNet-style net
    assert build_model("resnet50-basic").config.stage_blocks == (
        8,
        8,
        8,
    )  # the CIFAR one


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_name_builds_its_own_name(name):
    with torch.device("meta"):
        assert build_model(name).name == name


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean .*'resnet20'"):
        build_model("resnet2O")
    with pytest.raises(ValueError, match="Did you mean 'd2l-resnet18'"):
        build_model("d2l-resnet-18")


def test_input_sizes_a_net_can_take():
    d2l = build_model("d2l-resnet18")
    assert min_input_size(d2l, 1) == 17  # five halvings: 17 -> 9 -> 5 -> 3 -> 2 -> 1
    check_input_size(d2l, 1, 96)
    check_input_size(d2l, 1, 28)
    with pytest.raises(InputSizeError, match=r"cannot take 8x8 images.*at least 17x17"):
        check_input_size(d2l, 1, 8)
    with pytest.raises(InputSizeError, match="such as resnet20"):  # which takes 8x8 images
        check_input_size(d2l, 1, 8)
    resnet20 = build_model("resnet20", in_channels=1)
    assert min_input_size(resnet20, 1) == 3
    check_input_size(resnet20, 1, 8)
    with pytest.raises(InputSizeError, match="cannot take 2x2") as too_small:
        check_input_size(resnet20, 1, 2)
    assert "such as resnet20" not in str(too_small.value)  # no net for smaller images to offer
    assert min_input_size(build_model("tf-preact-elu"), 3) == 1
    with pytest.raises(InputSizeError, match="fails"):  # wrong channels: the forward fails
        check_input_size(resnet20, 3, 8)


def test_config_records_options_for_run_metadata():
    cfg = build_model("tf-preact-elu").to_dict()
    assert cfg["activation"] == "elu" and cfg["head"] == "conv" and cfg["stem_activation"] == "relu"
    assert ResNetConfig(**cfg) == build_model("tf-preact-elu").config
