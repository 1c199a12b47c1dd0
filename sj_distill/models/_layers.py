"""Small multi-step building blocks shared by the backbones (SpikingJelly layers + factory neurons)."""
from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn
from spikingjelly.activation_based import layer

from .. import sj

NEURON_KEYS = ("kind", "tau", "decay", "decay_input", "v_threshold", "reset", "v_reset",
               "detach_reset", "surrogate_fn", "alpha", "backend")


def split_neuron_params(kwargs: Dict) -> Dict:
    """Pop the neuron parameters out of ``kwargs`` (in place) and return them."""
    return {k: kwargs.pop(k) for k in list(kwargs) if k in NEURON_KEYS}


def neuron_builder(params: Dict) -> Callable[[], nn.Module]:
    """A callable building multi-step factory neurons with ``params``."""
    return sj.neuron_factory(step_mode="m", **params)


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1) -> List[nn.Module]:
    """``[Conv2d (no bias), BatchNorm2d]``, both multi-step, ``padding = kernel // 2``."""
    return [
        layer.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=False, step_mode="m"),
        layer.BatchNorm2d(out_ch, step_mode="m"),
    ]


def feature_entry(module: str, num_chs: int, reduction: int) -> Dict:
    """One timm-style ``feature_info`` row: stage module name, channels, input/feature stride."""
    return dict(module=module, num_chs=num_chs, reduction=reduction)
