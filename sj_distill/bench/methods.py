"""The training methods ``sj-distill bench train`` compares, each built on the same registered
model: a training step ``step(x, y)`` (``x``: ``[T, B, C, H, W]``, ``y``: ``[B]``) or the
reason it cannot be applied.

* ``bptt``: the multi-step model, cross entropy on the time-mean logits, ``backward``.
* ``rate`` / ``rate_sweep``: the same model after :func:`sj_distill.rate.enable` with
  ``spike_pass="layer"`` / ``"sweep"``.
* ``sltt``: every ``LIFNode`` replaced by SpikingJelly's ``SLTTLIFNode`` (same parameters),
  the model in single-step mode, trained online: one forward and ``backward`` per time step
  (loss ``CE / T`` each), one optimiser step (Meng et al., ICCV 2023).
* ``ottt``: the model's leaf modules in an ``layer.OTTTSequential`` with ``OTTTLIFNode``
  neurons, single-step, trained online as ``sltt`` (Xiao et al., NeurIPS 2022). Only a model
  that is a chain of leaf modules (each one's input is the previous one's output) can be put
  in such a sequence; a residual sum is not.
* ``memopt1`` .. ``memopt4``: BPTT after SpikingJelly's ``memopt.optimize_memory`` at that
  level (levels 2-4 search with CUDA memory measurements and need CUDA).
"""
from __future__ import annotations

import copy
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .names import METHODS

Step = Callable[[torch.Tensor, torch.Tensor], None]


class Unavailable(Exception):
    """A method that cannot run on this model, SpikingJelly version or device (the message
    says why)."""


def build(method: str, model: nn.Module, x: torch.Tensor,
          lr: float = 0.01) -> Tuple[nn.Module, Step]:
    """``(model, step)`` of ``method`` on ``model`` (a multi-step SpikingJelly model in train
    mode, changed in place or replaced); ``x`` is a sample input ``[T, B, ...]``. Raises
    :class:`Unavailable` when the method does not apply."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method == "bptt":
        return model, _sgd_step(model, lr, _bptt_loss(model))
    if method in ("rate", "rate_sweep"):
        from .. import rate

        rate.enable(model, spike_pass="layer" if method == "rate" else "sweep")
        return model, _sgd_step(model, lr, lambda x, y: F.cross_entropy(model(x), y))
    if method == "sltt":
        model = _online_model(model, "SLTTLIFNode")
        return model, _online_step(model, lr)
    if method == "ottt":
        model = _ottt_chain(_online_model(model, "OTTTLIFNode"), x)
        return model, _online_step(model, lr)
    level = int(method[len("memopt"):])
    _memopt(model, x, level)
    return model, _sgd_step(model, lr, _bptt_loss(model))


def _bptt_loss(model: nn.Module):
    return lambda x, y: F.cross_entropy(model(x).mean(0), y)


def _sgd_step(model: nn.Module, lr: float, loss_fn) -> Step:
    from .. import sj

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sj.reset(model)
    return step


def _online_step(model: nn.Module, lr: float) -> Step:
    """Online training through time: forward and backward one step at a time (the
    per-step graphs are independent: the neurons cut the temporal path), gradients summed
    over the steps, one optimiser step."""
    from .. import sj

    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        T = x.shape[0]
        for t in range(T):
            (F.cross_entropy(model(x[t]), y) / T).backward()
        opt.step()
        sj.reset(model)
    return step


def _online_model(model: nn.Module, neuron_class: str) -> nn.Module:
    """``model`` in single-step mode with every ``LIFNode`` replaced by SpikingJelly's
    ``neuron_class`` (same parameters)."""
    from spikingjelly.activation_based import functional, neuron

    online = getattr(neuron, neuron_class, None)
    if online is None:
        raise Unavailable(f"this SpikingJelly version has no neuron.{neuron_class}")
    for name, module in list(model.named_modules()):
        if isinstance(module, neuron.BaseNode) and type(module) is not neuron.LIFNode:
            raise Unavailable(f"neuron '{name}' is a {type(module).__name__}; "
                              f"{neuron_class} replaces LIFNode only")
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is neuron.LIFNode:
                setattr(parent, child_name, online(
                    tau=float(child.tau), decay_input=bool(child.decay_input),
                    v_threshold=float(child.v_threshold), v_reset=child.v_reset,
                    surrogate_function=copy.deepcopy(child.surrogate_function),
                    detach_reset=bool(child.detach_reset), step_mode="s"))
    functional.set_step_mode(model, "s")
    return model


def _leaf_modules(model: nn.Module) -> List[nn.Module]:
    from spikingjelly.activation_based import neuron

    leaves = []

    def visit(module: nn.Module) -> None:
        children = list(module.children())
        if isinstance(module, neuron.BaseNode) or not children:
            leaves.append(module)
            return
        for child in children:
            visit(child)
    visit(model)
    return leaves


def _ottt_chain(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The leaf modules of single-step ``model`` in one ``layer.OTTTSequential``, after
    checking on one step of ``x`` that the model is exactly that chain: each leaf called once
    on the previous leaf's output object, the first on the input, the last giving the
    output."""
    from spikingjelly.activation_based import layer

    from .. import sj

    if not hasattr(layer, "OTTTSequential"):
        raise Unavailable("this SpikingJelly version has no layer.OTTTSequential")
    names = {id(m): n for n, m in model.named_modules()}
    calls: List[Tuple[nn.Module, torch.Tensor, torch.Tensor]] = []
    leaves = _leaf_modules(model)
    hooks = [m.register_forward_hook(lambda m, i, o: calls.append((m, i[0], o)))
             for m in leaves]
    first = x[0]
    try:
        with torch.no_grad():
            model.eval()
            out = model(first)
    finally:
        model.train()
        for h in hooks:
            h.remove()
        sj.reset(model)
    previous = first
    for module, given, produced in calls:
        if given is not previous or sum(1 for c in calls if c[0] is module) != 1:
            raise Unavailable(
                f"module '{names[id(module)]}' does not take the previous module's output "
                "(a residual sum or a reused module): OTTT's [spike, trace] outputs pass only "
                "through a plain chain of layers (layer.OTTTSequential)")
        previous = produced
    if previous is not out:
        raise Unavailable("the model's output is not its last module's output")
    return layer.OTTTSequential(*[module for module, _, _ in calls])


def _memopt(model: nn.Module, x: torch.Tensor, level: int) -> None:
    """SpikingJelly's ``memopt.optimize_memory`` at ``level`` on ``model``'s blocks (the
    children of its stages that have children, else the stages)."""
    try:
        from spikingjelly.activation_based import memopt
    except ImportError:
        raise Unavailable("this SpikingJelly version has no activation_based.memopt") from None
    if level > 1 and not x.is_cuda:
        raise Unavailable(f"memopt level {level} measures CUDA memory: it needs a CUDA device")
    stages = [stage for _, stage in model.stages()] if hasattr(model, "stages") else []
    blocks = [child for stage in stages for child in stage.children()
              if list(child.children())]
    targets = tuple({type(m) for m in (blocks or stages)})
    if not targets:
        raise Unavailable("the model has no stages() whose blocks memopt could checkpoint")
    from .. import sj

    def example(current: nn.Module) -> None:
        current(x)
        sj.reset(current)
    memopt.optimize_memory(model, targets, example, level=level)
