"""Spiking VGGs (multi-step, ``[T,B,C,H,W] -> [T,B,K]``).

Each stage ``layerI`` is ``(conv3x3-BN-SN) x n`` followed by a 2x2 pool (average by default,
so the network is linear between neurons, as rate-based backprop assumes); the head is
``flatten -> fc``. Stage boundaries sit at the pools, where timm's VGG ``feature_info`` also
places its features.

  * ``cifar_vgg11`` / ``cifar_vgg13``: VGG-11/13 for 32x32 (5 pools -> 1x1x512).
  * ``vggsnn``: VGGSNN (Deng et al., ICLR 2022, "TET") for CIFAR10-DVS: 2 input channels,
    48x48, ``64,128,P,256,256,P,512,512,P,512,512,P`` -> 3x3x512 -> fc.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from spikingjelly.activation_based import layer

from ._layers import conv_bn, feature_entry, neuron_builder, split_neuron_params
from ._registry import register_model

VGG11 = ((64,), (128,), (256, 256), (512, 512), (512, 512))
VGG13 = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))
VGGSNN = ((64, 128), (256, 256), (512, 512), (512, 512))


class SpikingVGG(nn.Module):
    """Multi-step spiking VGG.

    Args:
        stages: channels of each conv, grouped by stage (each stage ends with a 2x2 pool).
        img_size: input height/width (sets the fc input size).
        pool: ``avg`` or ``max``.
        neuron params: see :func:`sj_distill.sj.make_neuron`.

    Input ``[T, B, in_chans, img_size, img_size]``; output ``[T, B, num_classes]``.
    """

    def __init__(self, stages: Sequence[Sequence[int]], num_classes: int = 10, in_chans: int = 3,
                 img_size: int = 32, pool: str = "avg", **neuron_params):
        super().__init__()
        if pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        make_sn = neuron_builder(neuron_params)
        pool_cls = layer.AvgPool2d if pool == "avg" else layer.MaxPool2d
        self.num_classes = num_classes
        self.feature_info = []
        in_ch, size, reduction = in_chans, img_size, 1
        for i, widths in enumerate(stages, start=1):
            mods = []
            for w in widths:
                mods += [*conv_bn(in_ch, w), make_sn()]
                in_ch = w
            mods.append(pool_cls(2, 2, step_mode="m"))
            size //= 2
            reduction *= 2
            setattr(self, f"layer{i}", nn.Sequential(*mods))
            self.feature_info.append(feature_entry(f"layer{i}", in_ch, reduction))
        if size < 1:
            raise ValueError(f"img_size {img_size} is too small for {len(stages)} pooling stages")
        self.num_stages = len(stages)
        self.num_features = in_ch * size * size
        self.flatten = layer.Flatten(1, step_mode="m")
        self.fc = layer.Linear(self.num_features, num_classes, step_mode="m")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages(self):
        """``(name, module)`` of every stage, in order."""
        return [(f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, self.num_stages + 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for _, stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != (5 if self.fc.step_mode == "m" else 4):  # single-step: one [B,C,H,W]
            layout = "[T, B, C, H, W]" if self.fc.step_mode == "m" else "[B, C, H, W]"
            raise ValueError(f"expected input {layout}, got shape {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))


def _build(stages, num_classes, in_chans, img_size, **kwargs) -> SpikingVGG:
    neuron_params = split_neuron_params(kwargs)
    in_chans = kwargs.pop("in_chans", in_chans)
    img_size = kwargs.pop("img_size", img_size)
    return SpikingVGG(stages, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                      **kwargs, **neuron_params)


@register_model
def cifar_vgg11(num_classes: int = 10, **kwargs) -> SpikingVGG:
    """VGG-11 with BN for 32x32 inputs."""
    return _build(VGG11, num_classes, 3, 32, **kwargs)


@register_model
def cifar_vgg13(num_classes: int = 10, **kwargs) -> SpikingVGG:
    """VGG-13 with BN for 32x32 inputs."""
    return _build(VGG13, num_classes, 3, 32, **kwargs)


@register_model
def vggsnn(num_classes: int = 10, in_chans: int = 2, img_size: int = 48, **kwargs) -> SpikingVGG:
    """VGGSNN for CIFAR10-DVS: 2 polarity channels, 48x48 frames."""
    return _build(VGGSNN, num_classes, in_chans, img_size, **kwargs)
