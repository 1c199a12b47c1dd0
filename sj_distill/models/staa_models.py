"""STAA backbones (Zhang, Yu et al., CVPR 2025): a spiking backbone with a
:class:`sj_distill.staa.STAABlock` after every stage (:func:`sj_distill.staa.patch`).

Options of the STAA blocks (``time_steps``, ``reduction``, ``beta``, ``pe``, ``gc``, ``alif``,
``sa``, ``tsrd``, ``sa_kernel``, ``staa_neuron``) are keyword arguments of each builder; the
rest goes to the backbone (neuron parameters included).
"""
from __future__ import annotations

from torch import nn

from .. import staa
from ._layers import split_neuron_params
from ._registry import create_model, register_model
from .resnet import BasicBlock, SpikingResNet

STAA_KEYS = ("time_steps", "reduction", "beta", "pe", "gc", "alif", "sa", "tsrd", "sa_kernel")


def _with_staa(model: nn.Module, kwargs: dict) -> nn.Module:
    return staa.patch(model, neuron=kwargs.pop("staa_neuron", None), **kwargs)


def _split(kwargs: dict) -> dict:
    return {k: kwargs.pop(k) for k in list(kwargs) if k in STAA_KEYS + ("staa_neuron",)}


@register_model
def staa_resnet19(num_classes: int = 10, **kwargs) -> nn.Module:
    """STAA-ResNet-19: ``resnet19`` (CIFAR, 3 stages of 128/256/512) + STAA after each
    stage (the paper's CIFAR backbone, T=4)."""
    staa_kwargs = _split(kwargs)
    return _with_staa(create_model("resnet19", num_classes=num_classes, **kwargs),
                      staa_kwargs)


@register_model
def staa_resnet34(num_classes: int = 1000, **kwargs) -> nn.Module:
    """STAA-ResNet-34 (the paper's ImageNet backbone): spiking ResNet-34 with basic blocks
    (``SN(BN(conv(...)) + shortcut)``), ImageNet stem, stages [3,4,6,3] x [64..512], + STAA
    after each stage."""
    staa_kwargs = _split(kwargs)
    neuron_params = split_neuron_params(kwargs)
    stem = kwargs.pop("stem", "imagenet")
    model = SpikingResNet(BasicBlock, (3, 4, 6, 3), (64, 128, 256, 512), num_classes=num_classes,
                          stem=stem, **kwargs, **neuron_params)
    return _with_staa(model, staa_kwargs)


@register_model
def staa_vggsnn(num_classes: int = 10, **kwargs) -> nn.Module:
    """STAA-VGGSNN (the paper's CIFAR10-DVS backbone): ``vggsnn`` (2x48x48 input) + STAA after
    each of its 4 pooling stages."""
    staa_kwargs = _split(kwargs)
    return _with_staa(create_model("vggsnn", num_classes=num_classes, **kwargs), staa_kwargs)
