"""Spiking ResNets (multi-step, ``[T,B,C,H,W] -> [T,B,K]``) with torchvision/timm stage names.

Families:
  * ``cifar_resnet18/19/20``: spiking ResNet basic blocks (conv-BN-SN-conv-BN, add, SN),
    3x3 stem without max-pool (CIFAR).
  * ``sew_resnet34``: SEW-ResNet (Fang et al., NeurIPS 2021) with ADD connection:
    ``SN(BN(conv(SN(BN(conv(x)))))) + shortcut(x)``, ImageNet stem.
  * ``preact_resnet34``: pre-activation spiking ResNet (BN-SN-conv, BN-SN-conv, add),
    ImageNet stem, final BN-SN before pooling.
Stage names: ``conv1, bn1, sn1, maxpool, layer1..layerK, avgpool, flatten, fc``, as in
torchvision / timm ResNets, so a timm teacher of the same family lines up stage by stage.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn
from spikingjelly.activation_based import layer

from ._layers import conv_bn, feature_entry, neuron_builder, split_neuron_params
from ._registry import register_model


class BasicBlock(nn.Module):
    """Spiking basic block: ``SN(BN(conv(SN(BN(conv(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, make_sn: Callable[[], nn.Module]):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_ch, out_ch, 3, stride)
        self.sn1 = make_sn()
        self.conv2, self.bn2 = conv_bn(out_ch, out_ch, 3, 1)
        self.downsample = (
            nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride))
            if stride != 1 or in_ch != out_ch else None
        )
        self.sn2 = make_sn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.sn1(self.bn1(self.conv1(x)))
        return self.sn2(self.bn2(self.conv2(out)) + identity)


class SEWBlock(nn.Module):
    """SEW basic block with ADD: ``SN(BN(conv(SN(BN(conv(x)))))) + shortcut(x)``; the
    shortcut is ``SN(BN(conv1x1(x)))`` when the shape changes, else identity."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, make_sn: Callable[[], nn.Module]):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_ch, out_ch, 3, stride)
        self.sn1 = make_sn()
        self.conv2, self.bn2 = conv_bn(out_ch, out_ch, 3, 1)
        self.sn2 = make_sn()
        self.downsample = (
            nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride), make_sn())
            if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.sn1(self.bn1(self.conv1(x)))
        return self.sn2(self.bn2(self.conv2(out))) + identity


class PreActBlock(nn.Module):
    """Pre-activation spiking block: ``conv(SN(BN(conv(SN(BN(x)))))) + shortcut(x)``; the
    shortcut is ``BN(conv1x1(x))`` when the shape changes."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, make_sn: Callable[[], nn.Module]):
        super().__init__()
        self.bn1 = layer.BatchNorm2d(in_ch, step_mode="m")
        self.sn1 = make_sn()
        self.conv1 = layer.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False, step_mode="m")
        self.bn2 = layer.BatchNorm2d(out_ch, step_mode="m")
        self.sn2 = make_sn()
        self.conv2 = layer.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False, step_mode="m")
        self.downsample = (
            nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride))
            if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv1(self.sn1(self.bn1(x)))
        return self.conv2(self.sn2(self.bn2(out))) + identity


class SpikingResNet(nn.Module):
    """Multi-step spiking ResNet.

    Args:
        block: block class (:class:`BasicBlock`, :class:`SEWBlock`, :class:`PreActBlock`).
        depths: blocks per stage; ``widths``: channels per stage.
        stem: ``cifar`` (3x3 conv, stride 1, no max-pool) or ``imagenet`` (7x7/2 conv +
            3x3/2 max-pool).
        stem_width: channels of the stem conv (default ``widths[0]``).
        neuron params: see :func:`sj_distill.sj.make_neuron`.

    Input ``[T, B, in_chans, H, W]``; output logits ``[T, B, num_classes]``.
    ``feature_info`` lists the stem and every stage as timm does (module, num_chs, reduction).
    """

    def __init__(self, block, depths: Sequence[int], widths: Sequence[int], num_classes: int = 10,
                 in_chans: int = 3, stem: str = "cifar", stem_width: int | None = None,
                 **neuron_params):
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        if len(depths) != len(widths):
            raise ValueError(f"depths {list(depths)} and widths {list(widths)} differ in length")
        make_sn = neuron_builder(neuron_params)
        self.num_classes = num_classes
        self.preact = block is PreActBlock
        stem_width = stem_width or widths[0]
        kernel, stride = (3, 1) if stem == "cifar" else (7, 2)
        self.conv1, self.bn1 = conv_bn(in_chans, stem_width, kernel, stride)
        self.sn1 = make_sn()
        self.maxpool = (nn.Identity() if stem == "cifar"
                        else layer.MaxPool2d(3, 2, 1, step_mode="m"))
        reduction = stride * (1 if stem == "cifar" else 2)
        self.feature_info = [feature_entry("sn1", stem_width, stride)]
        in_ch = stem_width
        for i, (depth, width) in enumerate(zip(depths, widths), start=1):
            first_stride = 1 if i == 1 else 2
            reduction *= first_stride
            blocks = [block(in_ch if j == 0 else width, width, first_stride if j == 0 else 1, make_sn)
                      for j in range(depth)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            self.feature_info.append(feature_entry(f"layer{i}", width, reduction))
            in_ch = width
        self.num_stages = len(depths)
        if self.preact:
            self.final_bn = layer.BatchNorm2d(in_ch, step_mode="m")
            self.final_sn = make_sn()
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1), step_mode="m")
        self.flatten = layer.Flatten(1, step_mode="m")
        self.fc = layer.Linear(in_ch, num_classes, step_mode="m")
        self.num_features = in_ch
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages(self):
        """``(name, module)`` of every residual stage, in order."""
        return [(f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, self.num_stages + 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[T,B,C,H,W]`` -> last-stage features ``[T,B,C',H',W']``."""
        x = self.maxpool(self.sn1(self.bn1(self.conv1(x))))
        for _, stage in self.stages():
            x = stage(x)
        if self.preact:
            x = self.final_sn(self.final_bn(x))
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage features -> logits ``[T,B,K]``."""
        return self.fc(self.flatten(self.avgpool(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != (5 if self.fc.step_mode == "m" else 4):  # single-step: one [B,C,H,W]
            layout = "[T, B, C, H, W]" if self.fc.step_mode == "m" else "[B, C, H, W]"
            raise ValueError(f"expected input {layout}, got shape {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))


def _build(block, depths, widths, num_classes, stem, **kwargs) -> SpikingResNet:
    neuron_params = split_neuron_params(kwargs)
    stem = kwargs.pop("stem", stem)
    return SpikingResNet(block, depths, widths, num_classes=num_classes, stem=stem,
                         **kwargs, **neuron_params)


@register_model
def cifar_resnet18(num_classes: int = 10, **kwargs) -> SpikingResNet:
    """ResNet-18 for 32x32 inputs: 3x3 stem, stages [2,2,2,2] x [64,128,256,512]."""
    return _build(BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512), num_classes, "cifar", **kwargs)


@register_model
def cifar_resnet19(num_classes: int = 10, **kwargs) -> SpikingResNet:
    """ResNet-19 (Zheng et al., AAAI 2021): 3x3 stem (128), stages [3,3,2] x [128,256,512].
    The original's extra 256-unit FC layer is left out: the head is one linear layer."""
    return _build(BasicBlock, (3, 3, 2), (128, 256, 512), num_classes, "cifar", **kwargs)


@register_model
def cifar_resnet20(num_classes: int = 10, width: int = 16, **kwargs) -> SpikingResNet:
    """ResNet-20 (He et al. CIFAR family): stages [3,3,3] x [w, 2w, 4w], ``width`` w=16."""
    return _build(BasicBlock, (3, 3, 3), (width, 2 * width, 4 * width), num_classes, "cifar",
                  **kwargs)


@register_model
def sew_resnet34(num_classes: int = 1000, **kwargs) -> SpikingResNet:
    """SEW-ResNet-34 (ADD) for ImageNet: 7x7/2 stem + max-pool, stages [3,4,6,3]."""
    return _build(SEWBlock, (3, 4, 6, 3), (64, 128, 256, 512), num_classes, "imagenet", **kwargs)


@register_model
def preact_resnet34(num_classes: int = 1000, **kwargs) -> SpikingResNet:
    """Pre-activation spiking ResNet-34 for ImageNet: 7x7/2 stem + max-pool, stages [3,4,6,3]."""
    return _build(PreActBlock, (3, 4, 6, 3), (64, 128, 256, 512), num_classes, "imagenet",
                  **kwargs)
