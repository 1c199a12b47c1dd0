"""Surrogate derivatives ``g'(x)`` for the eligibility trace, in closed form where known.

The spike pass needs ``g'(h - theta)`` for every neuron and step. Taking it from the
surrogate's own backward (:func:`sj_distill.sj.surrogate_derivative`) builds an autograd
graph with several temporaries of the input's size; for SpikingJelly's Sigmoid, ATan and Rect
surrogates the formula is applied directly instead (one or two temporaries, no graph):

* Sigmoid: ``g'(x) = alpha * s * (1 - s)`` with ``s = sigmoid(alpha * x)``;
* ATan: ``g'(x) = (alpha / 2) / (1 + (pi / 2 * alpha * x)^2)``;
* Rect: ``g'(x) = alpha * [|x| < 0.5 / alpha]``.

Only these exact classes are treated in closed form (a subclass may change the backward);
every other surrogate goes through autograd.
"""
from __future__ import annotations

import math
from typing import Callable, Dict

import torch
from torch import nn
from spikingjelly.activation_based import surrogate

from .. import sj


def _sigmoid(x: torch.Tensor, alpha: float) -> torch.Tensor:
    s = (x * alpha).sigmoid_()
    return (1.0 - s).mul_(s).mul_(alpha)


def _atan(x: torch.Tensor, alpha: float) -> torch.Tensor:
    scaled = x * (math.pi / 2 * alpha)
    return scaled.mul_(scaled).add_(1.0).reciprocal_().mul_(alpha / 2)


def _rect(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return (x.abs() < 0.5 / alpha).to(x.dtype).mul_(alpha)


#: Surrogate class -> ``g'(x, alpha)``. ``sj.make_surrogate("rect")`` is SpikingJelly's own
#: Rect where it ships one and :class:`sj.RectSurrogate` otherwise; both have the same backward.
CLOSED_FORMS: Dict[type, Callable[[torch.Tensor, float], torch.Tensor]] = {
    surrogate.Sigmoid: _sigmoid,
    surrogate.ATan: _atan,
    sj.RectSurrogate: _rect,
    type(sj.make_surrogate("rect")): _rect,
}


def surrogate_derivative(surrogate_function: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``d spike / d x`` of ``surrogate_function`` at ``x`` (elementwise, a new tensor shaped
    like ``x``): closed form for the classes in :data:`CLOSED_FORMS`, else the surrogate's
    own backward through autograd."""
    closed_form = CLOSED_FORMS.get(type(surrogate_function))
    if closed_form is None:
        return sj.surrogate_derivative(surrogate_function, x)
    return closed_form(x, float(surrogate_function.alpha))
