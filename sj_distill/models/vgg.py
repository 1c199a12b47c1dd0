"""Spiking VGGs (multi-step, ``[T,B,C,H,W] -> [T,B,K]``) laid out as in the rate-based backprop
public code (Yu et al., NeurIPS 2024, github.com/Tab-ct/rate-based-backpropagation,
``model/vgg.py``).

A layout is a list: a number is a 3x3 conv with bias + BN + SN with that many output channels,
``"A"`` a 2x2 average pool (so the network is linear between neurons, as rate-based backprop
assumes). The head is a global average pool + ``fc`` (``vgg11``, ``vgg13``) or a flatten +
``fc`` (``vggsnn``).

  * ``vgg11``: ``64, A, 128, 256, A, 512, 512, A, 512, A, 512, 512``, global pool, fc 512->K.
  * ``vgg13``: ``64, 64, A, 128, 128, A, 256, 256, A, 512, 512, 512, A, 512``, global pool,
    fc 512->K.
  * ``vggsnn``: VGGSNN (Deng et al., ICLR 2022, "TET") for CIFAR10-DVS, 2 x 48 x 48 input:
    ``64, 128, A, 256, 256, A, 512, 512, A, 512, 512, A``, flatten (3x3x512 = 4608), fc.

Stage ``layerI`` is the run of convs up to and including the I-th pool; convs after the last
pool form the last stage. Each stage's output is where timm's VGG ``feature_info`` places
its features (after each pool), so BRD pairs them with a timm VGG teacher.
"""
from __future__ import annotations

from typing import List, Sequence, Union

import torch
from torch import nn
from spikingjelly.activation_based import layer

from ._layers import (conv_bn, feature_entry, initialise, neuron_builder, resolve_init,
                      split_neuron_params)
from ._registry import register_model

POOL = "A"
VGG11 = (64, POOL, 128, 256, POOL, 512, 512, POOL, 512, POOL, 512, 512)
VGG13 = (64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, 512, POOL, 512)
VGGSNN = (64, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL)


def split_stages(layout: Sequence[Union[int, str]]) -> List[List[Union[int, str]]]:
    """Cut ``layout`` after every pool: ``[64, "A", 128]`` -> ``[[64, "A"], [128]]``."""
    stages, current = [], []
    for item in layout:
        if item != POOL and not (isinstance(item, int) and item > 0):
            raise ValueError(f"VGG layout items are positive channel counts or {POOL!r}, "
                             f"got {item!r}")
        current.append(item)
        if item == POOL:
            stages.append(current)
            current = []
    if current:
        stages.append(current)
    return stages


class SpikingVGG(nn.Module):
    """Multi-step spiking VGG.

    Args:
        layout: channel counts and ``"A"`` (2x2 average pool), see the module docstring.
        img_size: input height/width (checked against the pools; sets the fc input size of
            a ``flatten`` head).
        head: ``avg`` (global average pool, fc C -> K) or ``flatten`` (fc C*H*W -> K).
        conv_bias: give every conv a bias (the public code does).
        init: weight initialisation, a key of ``INIT_SCHEMES`` (``kaiming``, ``normal``,
            ``pytorch``); see :mod:`sj_distill.models._layers`.
        neuron params: see :func:`sj_distill.sj.make_neuron`.

    Input ``[T, B, in_chans, img_size, img_size]``; output ``[T, B, num_classes]``.
    """

    def __init__(self, layout: Sequence[Union[int, str]], num_classes: int = 10,
                 in_chans: int = 3, img_size: int = 32, head: str = "avg",
                 conv_bias: bool = True, init: str = "kaiming", **neuron_params):
        super().__init__()
        if head not in ("avg", "flatten"):
            raise ValueError(f"head must be 'avg' or 'flatten', got {head!r}")
        make_sn = neuron_builder(neuron_params)
        self.num_classes = num_classes
        self.feature_info = []
        in_ch, size, reduction = in_chans, img_size, 1
        stages = split_stages(layout)
        for i, stage in enumerate(stages, start=1):
            mods = []
            for item in stage:
                if item == POOL:
                    mods.append(layer.AvgPool2d(2, 2, step_mode="m"))
                    size //= 2
                    reduction *= 2
                else:
                    mods += [*conv_bn(in_ch, item, 3, 1, conv_bias), make_sn()]
                    in_ch = item
            setattr(self, f"layer{i}", nn.Sequential(*mods))
            self.feature_info.append(feature_entry(f"layer{i}", in_ch, reduction))
        if size < 1:
            raise ValueError(f"img_size {img_size} is too small for the "
                             f"{layout.count(POOL)} pools of this VGG (needs at least "
                             f"{2 ** layout.count(POOL)})")
        self.num_stages = len(stages)
        self.head = head
        self.avgpool = (layer.AdaptiveAvgPool2d((1, 1), step_mode="m") if head == "avg"
                        else None)
        self.num_features = in_ch if head == "avg" else in_ch * size * size
        self.flatten = layer.Flatten(1, step_mode="m")
        self.fc = layer.Linear(self.num_features, num_classes, step_mode="m")
        initialise(self, init)

    def stages(self):
        """``(name, module)`` of every stage, in order."""
        return [(f"layer{i}", getattr(self, f"layer{i}")) for i in range(1, self.num_stages + 1)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[T,B,C,H,W]`` -> last-stage features ``[T,B,C',H',W']``."""
        for _, stage in self.stages():
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage features -> logits ``[T,B,K]``."""
        if self.avgpool is not None:
            x = self.avgpool(x)
        return self.fc(self.flatten(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != (5 if self.fc.step_mode == "m" else 4):  # single-step: one [B,C,H,W]
            layout = "[T, B, C, H, W]" if self.fc.step_mode == "m" else "[B, C, H, W]"
            raise ValueError(f"expected input {layout}, got shape {tuple(x.shape)}")
        return self.forward_head(self.forward_features(x))


def _build(name: str, layout, num_classes: int, in_chans: int, init: str, kwargs: dict,
           **defaults) -> SpikingVGG:
    """Builder body: ``kwargs`` holds neuron parameters and ``SpikingVGG`` options, which
    override ``defaults``."""
    neuron_params = split_neuron_params(kwargs)
    options = {**defaults, **kwargs}
    return SpikingVGG(layout, num_classes=num_classes, in_chans=in_chans,
                      init=resolve_init(init, "normal", name), **options, **neuron_params)


@register_model
def vgg11(num_classes: int = 10, in_chans: int = 3, init: str = "kaiming", **kwargs) -> SpikingVGG:
    """VGG-11 of the rate-BP public code (32x32): 4 pools, global pool, fc 512->K.
    ``init="public"``: conv/linear weights N(0, 0.5), biases 0."""
    return _build("vgg11", VGG11, num_classes, in_chans, init, kwargs, img_size=32, head="avg")


@register_model
def vgg13(num_classes: int = 10, in_chans: int = 3, init: str = "kaiming", **kwargs) -> SpikingVGG:
    """VGG-13 of the rate-BP public code (32x32): 4 pools, global pool, fc 512->K.
    ``init="public"``: conv/linear weights N(0, 0.5), biases 0."""
    return _build("vgg13", VGG13, num_classes, in_chans, init, kwargs, img_size=32, head="avg")


@register_model
def vggsnn(num_classes: int = 10, in_chans: int = 2, init: str = "kaiming",
           **kwargs) -> SpikingVGG:
    """VGGSNN for CIFAR10-DVS: 2 polarity channels, 48x48 frames, 4 pools, flatten
    (3x3x512 = 4608), fc 4608->K. ``init="public"``: conv/linear weights N(0, 0.5), biases 0."""
    return _build("vggsnn", VGGSNN, num_classes, in_chans, init, kwargs, img_size=48,
                  head="flatten")
