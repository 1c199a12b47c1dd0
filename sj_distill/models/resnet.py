"""Spiking ResNets (multi-step, ``[T,B,C,H,W] -> [T,B,K]``) with torchvision/timm stage names.

Layouts follow the rate-based backprop public code (Yu et al., NeurIPS 2024,
github.com/Tab-ct/rate-based-backpropagation, ``model/*.py``):

  * ``resnet18``: CIFAR ResNet-18: 3x3 stem (64, no max-pool), basic blocks
    (conv-BN-SN-conv-BN, add, SN), stages [2,2,2,2] x [64,128,256,512], head ``fc`` 512->K.
  * ``resnet19``: ResNet-19 (Zheng et al., AAAI 2021): 3x3 stem (128), stages [3,3,2] x
    [128,256,512], head ``head_fc`` 512->256, ``head_sn``, ``fc`` 256->K.
  * ``sew_resnet34``: SEW-ResNet-34 (Fang et al., NeurIPS 2021) with ADD:
    ``SN(BN(conv(SN(BN(conv(x)))))) + shortcut(x)``, shortcut ``SN(BN(conv1x1))``, ImageNet
    stem (7x7/2 conv-BN-SN + 3x3/2 max-pool), convs with bias.
  * ``preact_resnet34``: the public code's pre-activation ResNet-34: block
    ``BN(conv(SN(BN(conv(SN(x)))))) + shortcut(x)``, shortcut ``BN(conv1x1)``, stem 7x7/2
    conv-BN (no neuron) + max-pool, no neuron before the pool, convs with bias.
  * ``cifar_resnet20`` (not in the public code; the ``digits`` recipes' student): the He et
    al. CIFAR ResNet-20, stages [3,3,3] x [w,2w,4w], basic blocks as ``resnet18``.

Stage names: ``conv1, bn1, sn1, maxpool, layer1..layerK, avgpool, flatten, fc``, as in
torchvision / timm ResNets, so a timm teacher of the same family lines up stage by stage.
The public code names the shortcut ``shortcut``; here it is ``downsample`` (torchvision).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn
from spikingjelly.activation_based import layer

from ._layers import (conv_bn, feature_entry, initialise, neuron_builder, resolve_init,
                      split_neuron_params)
from ._registry import register_model


class BasicBlock(nn.Module):
    """Spiking basic block: ``SN(BN(conv(SN(BN(conv(x))))) + shortcut(x))``; the shortcut is
    ``BN(conv1x1(x))`` when the shape changes, else the identity."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, make_sn: Callable[[], nn.Module],
                 bias: bool = False):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_ch, out_ch, 3, stride, bias)
        self.sn1 = make_sn()
        self.conv2, self.bn2 = conv_bn(out_ch, out_ch, 3, 1, bias)
        self.downsample = (
            nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride, bias))
            if stride != 1 or in_ch != out_ch else None
        )
        self.sn2 = make_sn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x)))))
        return self.sn2(out + (x if self.downsample is None else self.downsample(x)))


class SEWBlock(nn.Module):
    """SEW basic block with ADD: ``SN(BN(conv(SN(BN(conv(x)))))) + shortcut(x)``; the
    shortcut is ``SN(BN(conv1x1(x)))`` when the shape changes, else the identity."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, make_sn: Callable[[], nn.Module],
                 bias: bool = False):
        super().__init__()
        self.conv1, self.bn1 = conv_bn(in_ch, out_ch, 3, stride, bias)
        self.sn1 = make_sn()
        self.conv2, self.bn2 = conv_bn(out_ch, out_ch, 3, 1, bias)
        self.sn2 = make_sn()
        self.downsample = (
            nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride, bias), make_sn())
            if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.sn2(self.bn2(self.conv2(self.sn1(self.bn1(self.conv1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class PreActBlock(nn.Module):
    """Pre-activation spiking block of the rate-BP public code:
    ``BN(conv(SN(BN(conv(SN(x)))))) + shortcut(x)``; the shortcut is ``BN(conv1x1(x))`` when
    the shape changes, else the identity. Input and output are real-valued (not spikes)."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int, make_sn: Callable[[], nn.Module],
                 bias: bool = False):
        super().__init__()
        self.sn1 = make_sn()
        self.conv1, self.bn1 = conv_bn(in_ch, out_ch, 3, stride, bias)
        self.sn2 = make_sn()
        self.conv2, self.bn2 = conv_bn(out_ch, out_ch, 3, 1, bias)
        self.downsample = (
            nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride, bias))
            if stride != 1 or in_ch != out_ch else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.sn2(self.bn1(self.conv1(self.sn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class SpikingResNet(nn.Module):
    """Multi-step spiking ResNet.

    Args:
        block: block class (:class:`BasicBlock`, :class:`SEWBlock`, :class:`PreActBlock`).
        depths: blocks per stage; ``widths``: channels per stage.
        stem: ``cifar`` (3x3 conv, stride 1, no max-pool) or ``imagenet`` (7x7/2 conv +
            3x3/2 max-pool). The stem is conv-BN-SN, or conv-BN for :class:`PreActBlock`
            (whose blocks start with a neuron).
        stem_width: channels of the stem conv (default ``widths[0]``).
        head_hidden: if set, the head is ``head_fc`` (C -> head_hidden), ``head_sn``, ``fc``
            (head_hidden -> num_classes), as ResNet-19's; else one ``fc`` (C -> num_classes).
        conv_bias: give every conv a bias (the public code's SEW / pre-activation ResNets).
        init: weight initialisation, a key of ``INIT_SCHEMES`` (``kaiming``, ``normal``,
            ``pytorch``); see :mod:`sj_distill.models._layers`.
        neuron params: see :func:`sj_distill.sj.make_neuron`.

    Input ``[T, B, in_chans, H, W]``; output logits ``[T, B, num_classes]``.
    ``feature_info`` lists the stem and every stage as timm does (module, num_chs, reduction).
    """

    def __init__(self, block, depths: Sequence[int], widths: Sequence[int], num_classes: int = 10,
                 in_chans: int = 3, stem: str = "cifar", stem_width: Optional[int] = None,
                 head_hidden: Optional[int] = None, conv_bias: bool = False,
                 init: str = "kaiming", **neuron_params):
        super().__init__()
        if stem not in ("cifar", "imagenet"):
            raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
        if len(depths) != len(widths):
            raise ValueError(f"depths {list(depths)} and widths {list(widths)} differ in length")
        make_sn = neuron_builder(neuron_params)
        self.num_classes = num_classes
        stem_width = stem_width or widths[0]
        kernel, stride = (3, 1) if stem == "cifar" else (7, 2)
        self.conv1, self.bn1 = conv_bn(in_chans, stem_width, kernel, stride, conv_bias)
        self.sn1 = None if block is PreActBlock else make_sn()
        self.maxpool = (nn.Identity() if stem == "cifar"
                        else layer.MaxPool2d(3, 2, 1, step_mode="m"))
        reduction = stride * (1 if stem == "cifar" else 2)
        stem_out = "bn1" if self.sn1 is None else "sn1"
        self.feature_info = [feature_entry(stem_out, stem_width, stride)]
        in_ch = stem_width
        for i, (depth, width) in enumerate(zip(depths, widths), start=1):
            first_stride = 1 if i == 1 else 2
            reduction *= first_stride
            blocks = [block(in_ch if j == 0 else width, width, first_stride if j == 0 else 1,
                            make_sn, conv_bias) for j in range(depth)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            self.feature_info.append(feature_entry(f"layer{i}", width, reduction))
            in_ch = width
        self.num_stages = len(depths)
        self.avgpool = layer.AdaptiveAvgPool2d((1, 1), step_mode="m")
        self.flatten = layer.Flatten(1, step_mode="m")
        self.num_features = in_ch
        if head_hidden:
            self.head_fc = layer.Linear(in_ch, head_hidden, step_mode="m")
            self.head_sn = make_sn()
            in_ch = head_hidden
        self.head_hidden = head_hidden
        self.fc = layer.Linear(in_ch, num_classes, step_mode="m")
        initialise(self, init)

    def stages(self):
        """``(name, module)`` of every residual stage, in order."""
        return [(f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, self.num_stages + 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[T,B,C,H,W]`` -> last-stage features ``[T,B,C',H',W']``."""
        x = self.bn1(self.conv1(x))
        if self.sn1 is not None:
            x = self.sn1(x)
        x = self.maxpool(x)
        for _, stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage features -> logits ``[T,B,K]``."""
        x = self.flatten(self.avgpool(x))
        if self.head_hidden:
            x = self.head_sn(self.head_fc(x))
        return self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != (5 if self.fc.step_mode == "m" else 4):  # single-step: one [B,C,H,W]
            layout = "[T, B, C, H, W]" if self.fc.step_mode == "m" else "[B, C, H, W]"
            raise ValueError(f"expected input {layout}, got shape {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))


def _build(name: str, public_init: Optional[str], block, depths, widths, num_classes: int,
           in_chans: int, init: str, kwargs: dict, **layout) -> SpikingResNet:
    """Builder body: ``kwargs`` holds neuron parameters and ``SpikingResNet`` options
    (``stem`` and the ``layout`` ones may be overridden)."""
    neuron_params = split_neuron_params(kwargs)
    options = {**layout, **kwargs}
    return SpikingResNet(block, depths, widths, num_classes=num_classes, in_chans=in_chans,
                         init=resolve_init(init, public_init, name), **options, **neuron_params)


@register_model
def resnet18(num_classes: int = 10, in_chans: int = 3, init: str = "kaiming",
             **kwargs) -> SpikingResNet:
    """CIFAR ResNet-18 (rate-BP public code): 3x3 stem (64), stages [2,2,2,2] x
    [64,128,256,512], head Linear(512, K). ``init="public"``: PyTorch defaults."""
    return _build("resnet18", "pytorch", BasicBlock, (2, 2, 2, 2), (64, 128, 256, 512),
                  num_classes, in_chans, init, kwargs, stem="cifar")


@register_model
def resnet19(num_classes: int = 10, in_chans: int = 3, init: str = "kaiming",
             **kwargs) -> SpikingResNet:
    """ResNet-19 (Zheng et al., AAAI 2021; rate-BP public code): 3x3 stem (128), stages
    [3,3,2] x [128,256,512], head Linear(512,256) + SN + Linear(256,K).
    ``init="public"``: PyTorch defaults."""
    return _build("resnet19", "pytorch", BasicBlock, (3, 3, 2), (128, 256, 512), num_classes,
                  in_chans, init, kwargs, stem="cifar", head_hidden=256)


@register_model
def cifar_resnet20(num_classes: int = 10, in_chans: int = 3, init: str = "kaiming",
                   width: int = 16, **kwargs) -> SpikingResNet:
    """ResNet-20 (He et al. CIFAR family): stages [3,3,3] x [w, 2w, 4w], ``width`` w=16,
    head Linear(4w, K). Not in the rate-BP public code (no ``init="public"``)."""
    return _build("cifar_resnet20", None, BasicBlock, (3, 3, 3), (width, 2 * width, 4 * width),
                  num_classes, in_chans, init, kwargs, stem="cifar")


@register_model
def sew_resnet18(num_classes: int = 1000, in_chans: int = 3, init: str = "kaiming",
                 **kwargs) -> SpikingResNet:
    """SEW-ResNet-18 (ADD) for ImageNet (the TSER paper's student): 7x7/2 stem + max-pool,
    stages [2,2,2,2], laid out as :func:`sew_resnet34`."""
    return _build("sew_resnet18", "kaiming", SEWBlock, (2, 2, 2, 2), (64, 128, 256, 512),
                  num_classes, in_chans, init, kwargs, stem="imagenet", conv_bias=True)


@register_model
def sew_resnet34(num_classes: int = 1000, in_chans: int = 3, init: str = "kaiming",
                 **kwargs) -> SpikingResNet:
    """SEW-ResNet-34 (ADD) for ImageNet: 7x7/2 stem + max-pool, stages [3,4,6,3], convs with
    bias. ``init="public"``: Kaiming normal (fan-out) conv weights."""
    return _build("sew_resnet34", "kaiming", SEWBlock, (3, 4, 6, 3), (64, 128, 256, 512),
                  num_classes, in_chans, init, kwargs, stem="imagenet", conv_bias=True)


@register_model
def preact_resnet34(num_classes: int = 1000, in_chans: int = 3, init: str = "kaiming",
                    **kwargs) -> SpikingResNet:
    """Pre-activation spiking ResNet-34 for ImageNet (rate-BP public code): 7x7/2 conv-BN stem
    + max-pool, blocks SN-conv-BN-SN-conv-BN + shortcut, stages [3,4,6,3], convs with bias.
    ``init="public"``: Kaiming normal (fan-out) conv weights."""
    return _build("preact_resnet34", "kaiming", PreActBlock, (3, 4, 6, 3), (64, 128, 256, 512),
                  num_classes, in_chans, init, kwargs, stem="imagenet", conv_bias=True)
