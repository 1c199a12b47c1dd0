"""Small multi-step building blocks shared by the backbones (SpikingJelly layers + factory
neurons) and the weight initialisations they offer."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from torch import nn
from spikingjelly.activation_based import layer

from .. import sj

NEURON_KEYS = ("kind", "tau", "decay", "decay_input", "v_threshold", "reset", "v_reset",
               "detach_reset", "surrogate_fn", "alpha", "backend")

#: Standard deviation of the normal init the rate-BP public code gives VGG conv/linear weights.
PUBLIC_VGG_WEIGHT_STD = 0.5


def split_neuron_params(kwargs: Dict) -> Dict:
    """Pop the neuron parameters out of ``kwargs`` (in place) and return them."""
    return {k: kwargs.pop(k) for k in list(kwargs) if k in NEURON_KEYS}


def neuron_builder(params: Dict) -> Callable[[], nn.Module]:
    """A callable building multi-step factory neurons with ``params``."""
    return sj.neuron_factory(step_mode="m", **params)


def conv_bn(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
            bias: bool = False) -> List[nn.Module]:
    """``[Conv2d, BatchNorm2d]``, both multi-step, ``padding = kernel // 2``; the conv has a
    bias only if ``bias``."""
    return [
        layer.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, bias=bias, step_mode="m"),
        layer.BatchNorm2d(out_ch, step_mode="m"),
    ]


def feature_entry(module: str, num_chs: int, reduction: int) -> Dict:
    """One timm-style ``feature_info`` row: stage module name, channels, input/feature stride."""
    return dict(module=module, num_chs=num_chs, reduction=reduction)


def init_kaiming(model: nn.Module) -> None:
    """Conv weights ~ Kaiming normal (fan-out, ReLU gain), as torchvision's ResNets; every
    other parameter keeps its PyTorch default (BatchNorm 1/0, Linear uniform)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def init_normal(model: nn.Module, std: float = PUBLIC_VGG_WEIGHT_STD) -> None:
    """Conv and Linear weights ~ N(0, ``std``), their biases 0, BatchNorm weight 1 and bias 0:
    the rate-BP public code's VGG initialisation (``std = 0.5``)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_pytorch(model: nn.Module) -> None:
    """Keep PyTorch's default initialisation of every layer (what the rate-BP public code's
    CIFAR ResNets do)."""


INIT_SCHEMES: Dict[str, Callable[[nn.Module], None]] = {
    "kaiming": init_kaiming, "normal": init_normal, "pytorch": init_pytorch}


def initialise(model: nn.Module, init: str) -> None:
    """Initialise ``model`` in place with the scheme named ``init`` (a key of INIT_SCHEMES)."""
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init {init!r}; choose one of {sorted(INIT_SCHEMES)}")
    INIT_SCHEMES[init](model)


def resolve_init(init: str, public: Optional[str], model_name: str) -> str:
    """The scheme name for a builder's ``init``: ``"public"`` becomes ``public``, the scheme
    the rate-BP public code uses for ``model_name`` (``None``: the model is not in that code)."""
    if init != "public":
        return init
    if public is None:
        raise ValueError(f"{model_name} has no counterpart in the rate-BP public code, so it has "
                         f"no init='public'; choose one of {sorted(INIT_SCHEMES)}")
    return public
