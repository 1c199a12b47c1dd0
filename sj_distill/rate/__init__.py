"""Rate-based backpropagation for SpikingJelly models (Yu et al., NeurIPS 2024).

``enable(model)`` patches an existing SpikingJelly model in place. In train mode, calling it
with the usual ``[T, B, ...]`` input runs two passes:

1. **spike pass** (``current_phase() == "spike"``, no autograd): the untouched SNN over all
   ``T`` steps with SpikingJelly's own neuron kernels; every neuron keeps its firing rate
   and eligibility, every BatchNorm its batch statistics (running statistics are updated
   here, once).
2. **rate pass** (``current_phase() == "rate"``, autograd): the network once more, in
   single-step mode, on the time-mean input ``[B, ...]``; neurons return their spike-pass
   rate with the gradient ``eligibility * dL/dr``; a max-pool pools the rate map it receives
   (``max_pool="rate"``, the public code's rule) or returns the time-mean of the spike pass's
   pooled output (``max_pool="spikes"``). Stage modules see ``[B, ...]`` rate tensors that
   carry autograd (forward hooks may use them in other graphs).

The call returns the rate-pass output (time-mean logits ``[B, K]``), whose gradient is
scaled by ``1/T`` when ``scale_grad_by_T`` (the value is unchanged). In eval mode the model
is the plain ``T``-step SNN (``[T, B, K]``). Single-step models (``step_mode='s'``) are
called in train mode with the whole ``[T, B, ...]`` sequence too: the spike pass drives
them step by step; in eval mode the user drives them step by step as before. Call
``functional.reset_net(model)`` after every batch, as usual.

Only ``[B, ...]``-sized records outlive a layer's spike-pass call, and only the rate pass
builds a graph, so training memory hardly grows with ``T``. See ``docs/rate_bp.md``.

This module is the user API; the parts live in named modules:

* :mod:`.classify`: which modules are patched, which are refused and why;
* :mod:`.passes`: the pass state, the patched forwards, the spike pass then the rate pass;
* :mod:`.layers`: what a neuron, a BatchNorm, a max-pool and a dropout record and return;
* :mod:`.eligibility`: charge equations and eligibility recurrences of SpikingJelly neurons;
* :mod:`.surrogate_grad`: closed-form surrogate derivatives.
"""
from __future__ import annotations

import types
from typing import Callable, Optional

import torch
from torch import nn

from .. import sj
from .classify import UnsupportedModuleError, patch_plan
from .passes import (MODEL_STATE, PATCHES, STATE, LayerState, ModelState,
                     current_phase, model_forward, model_step_mode, spike_pass, tap)

__all__ = ["enable", "disable", "is_enabled", "current_phase", "tap", "spike_pass_only",
           "UnsupportedModuleError", "MAX_POOL_RULES"]

#: The rate pass's max-pool rules (``enable(max_pool=...)``).
MAX_POOL_RULES = ("rate", "spikes")


def spike_pass_only(model: nn.Module, x: torch.Tensor, *args, **kwargs) -> None:
    """Run only the spike pass of a training step of an enabled model (no autograd; firing
    rates, eligibilities and BatchNorm statistics are computed, running statistics updated,
    then the records are dropped). For benchmarks of the spike pass alone; call
    ``functional.reset_net(model)`` afterwards as after any step."""
    if not is_enabled(model):
        raise RuntimeError("spike_pass_only needs a model switched on with rate.enable(model)")
    state: ModelState = getattr(model, MODEL_STATE)
    try:
        spike_pass(state, x, *args, **kwargs)
    finally:
        for module in state.layers:
            getattr(module, STATE).records = []


def enable(model: nn.Module, scale_grad_by_T: bool = True,
           time_chunk: Optional[int] = None, max_pool: str = "rate") -> nn.Module:
    """Switch rate-based backprop on for ``model``, in place; returns ``model``.

    Train mode: ``model(x)`` with ``x`` ``[T, B, ...]`` returns time-mean outputs ``[B, ...]``
    with rate-based gradients; ``scale_grad_by_T`` multiplies the gradient reaching the
    output by ``1/T`` (as the paper's code does; the value is unchanged). In the spike pass
    each multi-step neuron is called on ``time_chunk`` steps at a time (same spikes; its own
    temporaries shrink from ``[T, ...]`` to ``[time_chunk, ...]``; larger chunks mean fewer
    kernel calls). ``time_chunk=None`` (default): all ``T`` steps in one fused-kernel call
    on CUDA, one step per call on the CPU.

    ``max_pool``: what a max-pool does in the rate pass. ``"rate"`` (default; the public
    code's rule) max-pools the rate map it receives: the value is each window's largest rate,
    the gradient goes to that arg-max (exact ties: the first in the window, torch's rule).
    ``"spikes"`` keeps the SNN's own value, the time-mean of the step-by-step pooled spikes
    (which is larger wherever the most active input changes over time), with the same
    gradient routing; at ``T = 1`` both equal BPTT. See docs/rate_bp.md.

    Eval mode: the original SNN. Raises :class:`UnsupportedModuleError` naming the first
    module it cannot treat, and :class:`sj_distill.sj.MixedStepModeError` for a model in
    mixed step modes. Enabling an enabled model only updates ``scale_grad_by_T``,
    ``time_chunk`` and ``max_pool``."""
    if time_chunk is not None and (isinstance(time_chunk, bool)
                                   or not isinstance(time_chunk, int) or time_chunk < 1):
        raise ValueError(f"time_chunk must be a positive int (time steps per neuron call) or "
                         f"None (T on CUDA, 1 on the CPU), got {time_chunk!r}")
    if max_pool not in MAX_POOL_RULES:
        raise ValueError(f"max_pool must be 'rate' (max-pool the rate map, the public code's "
                         f"rule) or 'spikes' (the time-mean of the pooled spikes), got "
                         f"{max_pool!r}")
    if is_enabled(model):
        getattr(model, MODEL_STATE).scale_grad_by_T = bool(scale_grad_by_T)
        getattr(model, MODEL_STATE).time_chunk = time_chunk
        getattr(model, MODEL_STATE).max_pool = max_pool
        return model
    sj.check_step_mode(model, "rate.enable")
    plan = patch_plan(model)
    model_step_mode([m for _, m, kind in plan if kind == "neuron"])
    layers = []
    for path, module, kind in plan:
        memories = getattr(module, "_memories", {})
        state = LayerState(kind, path, module.forward, "forward" in module.__dict__,
                            had_v_seq_memory="v_seq" in memories)
        setattr(module, STATE, state)
        module.forward = types.MethodType(PATCHES[kind], module)
        layers.append(module)
    state = ModelState(model.forward, "forward" in model.__dict__, bool(scale_grad_by_T), layers,
                       time_chunk, max_pool)
    setattr(model, MODEL_STATE, state)
    model.forward = types.MethodType(model_forward, model)
    return model


def disable(model: nn.Module) -> nn.Module:
    """Switch rate-based backprop off and restore every patched module; returns ``model``."""
    if not is_enabled(model):
        return model
    state: ModelState = getattr(model, MODEL_STATE)
    for module in state.layers:
        layer_state: LayerState = getattr(module, STATE)
        _restore_forward(module, layer_state.original_forward, layer_state.had_instance_forward)
        if not layer_state.had_v_seq_memory:
            # the spike pass switched store_v_seq on, which registers a 'v_seq' memory on
            # SpikingJelly 0.0.0.0.14: remove it so the module is as it was
            for memories in (getattr(module, "_memories", {}), getattr(module, "_memories_rv", {})):
                memories.pop("v_seq", None)
        delattr(module, STATE)
    _restore_forward(model, state.original_forward, state.had_instance_forward)
    delattr(model, MODEL_STATE)
    return model


def _restore_forward(module: nn.Module, original: Callable, had_instance_forward: bool) -> None:
    if had_instance_forward:
        module.forward = original
    else:
        del module.__dict__["forward"]


def is_enabled(model: nn.Module) -> bool:
    """True when :func:`enable` patched ``model`` (and :func:`disable` did not undo it)."""
    return hasattr(model, MODEL_STATE)
