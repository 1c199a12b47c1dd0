"""Make SpikingJelly zoo models CIFAR-ready multi-step students, in place.

Works on ``spikingjelly.activation_based.model`` ResNets (``spiking_resnet*``,
``sew_resnet*``) and VGGs (``spiking_vgg*``), which follow torchvision's layout.
"""
from __future__ import annotations

from torch import nn
from spikingjelly.activation_based import layer

from . import sj


def _is_resnet(model: nn.Module) -> bool:
    return all(hasattr(model, n) for n in ("conv1", "maxpool", "layer1", "fc"))


def _is_vgg(model: nn.Module) -> bool:
    return all(hasattr(model, n) for n in ("features", "avgpool", "classifier"))


def _resnet_feature_info(model: nn.Module):
    info = [dict(module="sn1", num_chs=model.conv1.out_channels, reduction=1)]
    reduction, i = 1, 1
    while hasattr(model, f"layer{i}"):
        stage = getattr(model, f"layer{i}")
        convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
        reduction *= max(m.stride[0] for m in convs)
        last_block = stage[-1]
        out_ch = [m for m in last_block.modules() if isinstance(m, nn.Conv2d)][-1].out_channels
        info.append(dict(module=f"layer{i}", num_chs=out_ch, reduction=reduction))
        i += 1
    return info


def cifar_student(model: nn.Module, num_classes: int, in_chans: int = 3,
                  avgpool_vgg: bool = False) -> nn.Module:
    """Turn a SpikingJelly zoo model into a multi-step CIFAR student, in place, and return it.

    ResNets (``spiking_resnet*``, ``sew_resnet*``): the 7x7/2 stem conv becomes a 3x3/1 conv
    with ``in_chans`` inputs, the stem max-pool is removed, ``fc`` gets ``num_classes``
    outputs, and ``model.feature_info`` (timm-style: stem ``sn1`` and ``layer1..4``) is set.
    VGGs (``spiking_vgg*``): the first conv takes ``in_chans``; the 7x7 pooling and the
    4096-wide classifier become global average pooling and one linear layer; with
    ``avgpool_vgg`` every max-pool becomes a 2x2 average pool.
    Everything is switched to ``step_mode='m'``: input ``[T,B,C,H,W]``, output ``[T,B,K]``.
    """
    if _is_resnet(model):
        old = model.conv1
        model.conv1 = layer.Conv2d(in_chans, old.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
        model.fc = layer.Linear(model.fc.in_features, num_classes)
        model.feature_info = _resnet_feature_info(model)
    elif _is_vgg(model):
        first = next(i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d))
        old = model.features[first]
        model.features[first] = layer.Conv2d(in_chans, old.out_channels, 3, 1, 1,
                                              bias=old.bias is not None)
        if avgpool_vgg:
            for i, m in enumerate(model.features):
                if isinstance(m, nn.MaxPool2d):
                    model.features[i] = layer.AvgPool2d(2, 2)
        width = [m for m in model.features if isinstance(m, nn.Conv2d)][-1].out_channels
        model.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        model.classifier = nn.Sequential(layer.Linear(width, num_classes))
    else:
        raise TypeError(
            f"cifar_student() supports SpikingJelly zoo ResNets and VGGs (torchvision layout); "
            f"got {type(model).__name__} without conv1/maxpool/layer1/fc or features/classifier"
        )
    model.num_classes = num_classes
    sj.set_step_mode(model, "m")
    return model
