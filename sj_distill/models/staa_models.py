"""STAA backbones (Zhang, Yu et al., CVPR 2025): a spiking backbone whose chosen neurons (by
default the last of every stage) are wrapped by :func:`sj_distill.staa.patch`.

STAA options (``where``, ``time_steps``, ``reduction``, ``beta``, ``pe``, ``gc``, ``alif``,
``sa``, ``tsrd``, ``sa_kernel``, ``norm``, ``gc_gate``, ``tsrd_unit``, ``alif_maps``,
``staa_neuron``) are keyword arguments of each builder; ``img_size`` sets the probe input
(and, for ``alif_maps="full"``, the only size the model then accepts); the rest goes to the
backbone (neuron parameters included).
"""
from __future__ import annotations

from torch import nn

from .. import staa
from ._layers import split_neuron_params
from ._registry import create_model, register_model
from .resnet import BasicBlock, SpikingResNet

STAA_KEYS = ("where", "time_steps", "reduction", "beta", "pe", "gc", "alif", "sa", "tsrd",
             "sa_kernel", "norm", "gc_gate", "tsrd_unit", "alif_maps")


def _split(kwargs: dict) -> dict:
    """Pop the STAA options out of ``kwargs`` (``staa_neuron`` becomes ``neuron``)."""
    options = {k: kwargs.pop(k) for k in list(kwargs) if k in STAA_KEYS}
    if "staa_neuron" in kwargs:
        options["neuron"] = kwargs.pop("staa_neuron")
    return options


@register_model
def staa_resnet19(num_classes: int = 10, img_size: int = 32, **kwargs) -> nn.Module:
    """STAA-ResNet-19: ``resnet19`` (CIFAR, 3 stages of 128/256/512, head 512-256-K) with
    STAA on the last neuron of each stage (the paper's CIFAR backbone, T=4)."""
    options = _split(kwargs)
    model = create_model("resnet19", num_classes=num_classes, **kwargs)
    return staa.patch(model, (kwargs.get("in_chans", 3), img_size, img_size), **options)


@register_model
def staa_resnet34(num_classes: int = 1000, img_size: int = 224, **kwargs) -> nn.Module:
    """STAA-ResNet-34 (the paper's ImageNet backbone): spiking ResNet-34 with basic blocks
    (``SN(BN(conv(...)) + shortcut)``), ImageNet stem, stages [3,4,6,3] x [64..512], with STAA
    on the last neuron of each stage."""
    options = _split(kwargs)
    neuron_params = split_neuron_params(kwargs)
    stem = kwargs.pop("stem", "imagenet")
    model = SpikingResNet(BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512), num_classes=num_classes,
                          stem=stem, **kwargs, **neuron_params)
    return staa.patch(model, (kwargs.get("in_chans", 3), img_size, img_size), **options)


@register_model
def staa_vggsnn(num_classes: int = 10, img_size: int = 48, **kwargs) -> nn.Module:
    """STAA-VGGSNN (the paper's CIFAR10-DVS backbone): ``vggsnn`` (2x48x48 input) with STAA
    on the last neuron of each of its 4 pooling stages."""
    options = _split(kwargs)
    model = create_model("vggsnn", num_classes=num_classes, img_size=img_size, **kwargs)
    return staa.patch(model, (kwargs.get("in_chans", 2), img_size, img_size), **options)
