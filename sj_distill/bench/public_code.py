"""The rate-BP paper's public code (github.com/Tab-ct/rate-based-backpropagation) as one more
method of ``sj-distill bench train``, run from a checkout the user gives (never bundled).

Its CIFAR training step, as its ``experiment/cifar/main.py`` does it: the model with the
paper's neuron settings (LIF decay 0.2 passed as ``logit(0.2)``, threshold 1, soft detached
reset), ``rate_model_setting(model, time_step=T, step_mode='m')``, the input repeated over
``T`` and folded into ``[T*B, C, H, W]``, the cross entropy of the returned rates scaled by
``1/T`` in the gradient, ``backward``, SGD with momentum. The model is the checkout's own
module of the same name as ours (``resnet18``, ``resnet19``, ``vgg11``, ``vgg13``,
``sew_resnet34``, ``preact_resnet34``).
"""
from __future__ import annotations

import math
import os
import sys
from typing import Callable, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .methods import Unavailable

PUBLIC_MODELS = ("resnet18", "resnet19", "vgg11", "vgg13", "sew_resnet34", "preact_resnet34")


def build_public(path: str, model_name: str, x: torch.Tensor,
                 device: torch.device) -> Tuple[nn.Module, Callable]:
    """``(model, step)`` of the public code's ``model_name`` from the checkout at ``path``."""
    if not path or not os.path.isfile(os.path.join(path, "model", "model_setting.py")):
        raise Unavailable(f"--public-code {path!r} is not a checkout of github.com/Tab-ct/"
                          "rate-based-backpropagation (no model/model_setting.py)")
    if model_name not in PUBLIC_MODELS:
        raise Unavailable(f"the public code has no model {model_name!r} "
                          f"(it has {', '.join(PUBLIC_MODELS)})")
    sys.path.insert(0, os.path.abspath(path))
    try:
        import model as public_models
        from model.model_setting import rate_model_setting
    except Exception as err:  # the checkout's own imports (its SpikingJelly API, ...)
        raise Unavailable(f"the public code does not import here: {type(err).__name__}: "
                          f"{err}") from None
    from spikingjelly.activation_based import functional

    T = x.shape[0]
    settings = dict(v_reset=None, thresh=1.0, decay=torch.tensor(math.log(0.2 / 0.8)),
                    detach_reset=True, rate_flag=True)
    model = getattr(public_models, model_name)(num_classes=10, **settings)
    rate_model_setting(model, time_step=T, step_mode="m")
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step(x_seq: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        functional.reset_net(model)
        rates = model(x_seq.reshape(-1, *x_seq.shape[2:]))
        loss = F.cross_entropy(rates, y)
        (loss.detach() + (loss / T - (loss / T).detach())).backward()
        opt.step()
    return model, step
