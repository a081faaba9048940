"""The ResNet backend: residual blocks and their plain twins, models, probes.

Example::

    from residuals.nets import build_model, layer_responses
    model = build_model("plain56", in_channels=3, num_classes=10)
    ...                                   # train it
    model.eval().stage_contributions(x)   # ||F(x)|| / ||shortcut(x)|| per block
    layer_responses(model, test_loader)   # He et al. 2015, Fig. 7

Modules: :mod:`~residuals.nets.blocks` (basic, bottleneck, pre-activation
blocks; shortcut options A and B; ReLU, ELU or GELU), :mod:`~residuals.nets.models`
(the :class:`ResNet` class, its config and heads), :mod:`~residuals.nets.registry`
(CIFAR 6n+2 and ImageNet-style builders, the two seed articles' nets, the
:data:`MODELS` registry), :mod:`~residuals.nets.probes` (layer
responses, gradient norms, block contributions as tidy tables),
:mod:`~residuals.nets.shapes` (shapes through a net, the input sizes it can take).
"""

from residuals.nets.blocks import (
    ACTIVATIONS,
    BasicBlock,
    BottleneckBlock,
    PreActBlock,
    PreActBottleneckBlock,
    ShortcutA,
    ShortcutB,
)
from residuals.nets.models import CIFAR_DEPTHS, HEADS, IMAGENET_DEPTHS, ResNet, ResNetConfig
from residuals.nets.probes import block_contributions, gradient_norms, layer_responses
from residuals.nets.registry import (
    MODELS,
    build_model,
    cifar_resnet,
    d2l_resnet18,
    imagenet_resnet,
    model_name,
    tf_preact_resnet,
)
from residuals.nets.shapes import InputSizeError, check_input_size, layer_shapes, min_input_size

__all__ = [
    "ACTIVATIONS",
    "CIFAR_DEPTHS",
    "HEADS",
    "IMAGENET_DEPTHS",
    "MODELS",
    "BasicBlock",
    "BottleneckBlock",
    "InputSizeError",
    "PreActBlock",
    "PreActBottleneckBlock",
    "ResNet",
    "ResNetConfig",
    "ShortcutA",
    "ShortcutB",
    "block_contributions",
    "build_model",
    "check_input_size",
    "cifar_resnet",
    "d2l_resnet18",
    "gradient_norms",
    "imagenet_resnet",
    "layer_responses",
    "layer_shapes",
    "min_input_size",
    "model_name",
    "tf_preact_resnet",
]
