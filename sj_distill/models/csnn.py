"""``csnn``: the convolutional SNN of SpikingJelly's Fashion-MNIST example
(``spikingjelly.activation_based.examples.conv_fashion_mnist``, class ``CSNN``), multi-step and
with stage names, so rate-based backprop, BRD and STAA take it like the other backbones.

Layout for a ``[T, B, in_chans, 28, 28]`` input and width ``w`` (the example's ``channels``):

* ``layer1``: conv 3x3 (no bias) - BN - SN - max-pool 2 (14x14);
* ``layer2``: conv 3x3 (no bias) - BN - SN - max-pool 2 (7x7);
* head: ``flatten``, ``fc1`` (w*7*7 -> w*4*4, no bias) - ``sn_fc``, ``fc`` (w*4*4 -> K).

The first conv is the encoder: the static image is repeated T times outside the model (the
engine does it, as the example's ``forward`` does). Differences from the example, ours: the
neurons are :func:`sj_distill.sj.make_neuron` neurons (the recipes use rate-BP's LIF, the
example an IF neuron with an ATan surrogate), and the model returns the last linear layer's
output as logits ``[T, B, K]`` for a cross-entropy loss, where the example ends in a fifth
neuron whose firing rate it fits with an MSE loss. ``img_size`` may be any multiple of 4.
"""
from __future__ import annotations

import torch
from torch import nn
from spikingjelly.activation_based import layer

from ._layers import conv_bn, feature_entry, neuron_builder, split_neuron_params
from ._registry import register_model


class CSNN(nn.Module):
    """SpikingJelly's Fashion-MNIST CSNN (see the module docstring).

    Input ``[T, B, in_chans, img_size, img_size]``; output ``[T, B, num_classes]``.
    ``feature_info`` lists ``layer1`` (w channels, stride 2) and ``layer2`` (w, stride 4);
    ``stages()`` returns both, so BRD can replace after either (pass ``points=["layer1",
    "layer2"]`` for both; its default is every stage but the last)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 128,
                 img_size: int = 28, **neuron_params):
        super().__init__()
        if img_size % 4:
            raise ValueError(f"csnn needs img_size divisible by 4 (two 2x2 pools), got {img_size}")
        make_sn = neuron_builder(neuron_params)
        self.num_classes, self.width = num_classes, width
        self.layer1 = nn.Sequential(*conv_bn(in_chans, width), make_sn(),
                                    layer.MaxPool2d(2, 2, step_mode="m"))
        self.layer2 = nn.Sequential(*conv_bn(width, width), make_sn(),
                                    layer.MaxPool2d(2, 2, step_mode="m"))
        side = img_size // 4
        self.flatten = layer.Flatten(1, step_mode="m")
        self.fc1 = layer.Linear(width * side * side, width * 16, bias=False, step_mode="m")
        self.sn_fc = make_sn()
        self.fc = layer.Linear(width * 16, num_classes, bias=False, step_mode="m")
        self.num_features = width * 16
        self.feature_info = [feature_entry("layer1", width, 2), feature_entry("layer2", width, 4)]

    def stages(self):
        """``(name, module)`` of both convolutional stages."""
        return [("layer1", self.layer1), ("layer2", self.layer2)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != (5 if self.fc.step_mode == "m" else 4):  # single-step: the rate pass
            raise ValueError(f"csnn takes [T, B, C, H, W] (repeat a static image T times), got "
                             f"shape {tuple(x.shape)}")
        x = self.layer2(self.layer1(x))
        return self.fc(self.sn_fc(self.fc1(self.flatten(x))))


@register_model
def csnn(num_classes: int = 10, in_chans: int = 1, width: int = 128, **kwargs) -> CSNN:
    """SpikingJelly's Fashion-MNIST example network; ``width`` is its ``channels`` (the
    example's default 128). Neuron parameters as :func:`sj_distill.sj.make_neuron`."""
    neuron_params = split_neuron_params(kwargs)
    return CSNN(num_classes=num_classes, in_chans=in_chans, width=width, **kwargs,
                **neuron_params)
