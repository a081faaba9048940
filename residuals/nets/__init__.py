"""The ResNet backend: residual blocks and their plain twins, models, probes.

Example::

    from residuals.nets import build_model, layer_responses
    model = build_model("plain56", in_channels=3, num_classes=10)
    ...                                   # train it
    model.eval().stage_contributions(x)   # ||F(x)|| / ||shortcut(x)|| per block
    layer_responses(model, test_loader)   # He et al. 2015, Fig. 7

Modules: :mod:`~residuals.nets.blocks` (basic, bottleneck, pre-activation
blocks; shortcut options A and B), :mod:`~residuals.nets.models` (the
:class:`ResNet` class, CIFAR 6n+2 and ImageNet-style builders, the
:data:`MODELS` registry), :mod:`~residuals.nets.probes` (layer responses,
gradient norms, block contributions as tidy tables).
"""

from residuals.nets.blocks import (BasicBlock, BottleneckBlock, PreActBlock,
                                   PreActBottleneckBlock, ShortcutA, ShortcutB)
from residuals.nets.models import (CIFAR_DEPTHS, IMAGENET_DEPTHS, MODELS, ResNet, ResNetConfig,
                                   build_model, cifar_resnet, imagenet_resnet, model_name)
from residuals.nets.probes import block_contributions, gradient_norms, layer_responses

__all__ = [
    "CIFAR_DEPTHS", "IMAGENET_DEPTHS", "MODELS",
    "BasicBlock", "BottleneckBlock", "PreActBlock", "PreActBottleneckBlock",
    "ResNet", "ResNetConfig", "ShortcutA", "ShortcutB",
    "block_contributions", "build_model", "cifar_resnet", "gradient_norms",
    "imagenet_resnet", "layer_responses", "model_name",
]
