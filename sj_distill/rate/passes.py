"""The two passes of a rate-BP training step: the pass state, the patched forwards of every
kind of layer, and the model forward that runs the spike pass then the rate pass.

:func:`sj_distill.rate.enable` installs these forwards; the pass in progress lives in a
context variable (:func:`current_phase`), so unpatched code and eval mode see the plain SNN.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional

import torch
from torch import nn

from .layers import BatchNormRecord, DropoutRecord, MaxPoolRecord, NeuronRecord
from .sweep import FrontierReached, Replayer

STATE = "_sj_rate"  # attribute holding the per-module state on patched modules
MODEL_STATE = "_sj_rate_model"  # attribute holding the model-level state


@dataclass
class _Pass:
    phase: str  # "spike" or "rate"
    T: int
    multi_step: bool
    time_chunk: Optional[int] = None
    step: int = 0
    steps: int = 0  # time steps in the current call of the model's forward (spike pass)
    sweep: bool = False  # the spike pass runs the whole network on chunks of steps
    touched: set = field(default_factory=set)  # records a sweep added steps to
    grad_scale: float = 1.0  # gradient factor of every rate-pass tensor that leaves the model
    max_pool: str = "rate"  # the rate pass's max-pool rule (see sj_distill.rate.enable)


_CURRENT: ContextVar[Optional[_Pass]] = ContextVar("sj_distill_rate_pass", default=None)


def current_phase() -> Optional[str]:
    """``"spike"`` during the no-grad spike pass, ``"rate"`` during the rate pass, else None.

    Forward hooks on a model's modules use it to tell the passes apart: in the rate pass a
    stage receives and returns ``[B, ...]`` rate tensors carrying autograd. A hook that takes
    such a tensor out of the model into another loss should pass it through :func:`tap`."""
    current = _CURRENT.get()
    return None if current is None else current.phase


def tap(t: torch.Tensor) -> torch.Tensor:
    """A rate-pass tensor taken out of the model (e.g. a stage's output, by a forward hook),
    with its gradient scaled like the model's output (``1/T`` when ``scale_grad_by_T``).

    The model's output passes through it too: this is the one place the scale is applied, so
    a loss on the output and a loss on tapped features (BRD's hybrids) train the SNN at the
    same scale. Outside a rate pass ``t`` is returned unchanged."""
    current = _CURRENT.get()
    if current is None or current.phase != "rate" or current.grad_scale == 1.0:
        return t
    return _ScaleGrad.apply(t, current.grad_scale)


@dataclass
class LayerState:
    """Per-module patch state: the original forward and this step's records, one per use."""

    kind: str  # "neuron" | "batchnorm" | "maxpool" | "dropout" | "seq_to_ann"
    name: str
    original_forward: Callable
    had_instance_forward: bool
    had_v_seq_memory: bool = True
    records: list = field(default_factory=list)
    uses: int = 0

    def next_record(self, phase: str, step: int, make: Callable):
        index, self.uses = self.uses, self.uses + 1
        if phase == "spike" and step == 0 and index == len(self.records):
            self.records.append(make())
        if index >= len(self.records):
            raise RuntimeError(
                f"module '{self.name}' was called more often in this pass than in the first "
                "step of the spike pass; rate-based backprop needs the same calls in every step"
            )
        return self.records[index]


@dataclass
class ModelState:
    original_forward: Callable
    had_instance_forward: bool
    scale_grad_by_T: bool
    layers: List[nn.Module]
    time_chunk: Optional[int] = None
    max_pool: str = "rate"
    spike_pass: str = "layer"


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; multiplies the gradient by ``scale`` backward."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


# --------------------------------------------------------------------------- patched forwards

def _neuron_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: LayerState = getattr(self, STATE)
    current = _CURRENT.get()
    if current is None:
        return state.original_forward(x)
    record = state.next_record(current.phase, current.step, lambda: NeuronRecord(self))
    if current.phase == "spike":
        if current.sweep:
            if record.sealed:  # its steps were added in an earlier sweep
                return state.original_forward(x)
            current.touched.add(record)
        if current.multi_step and x.shape[0] != current.steps:
            raise OwnTimeLoopError(
                f"neuron '{state.name}' got {x.shape[0]} time steps from an input with "
                f"{current.steps} along its first dimension")
        return record.spike_forward(self, state.original_forward, x, self.step_mode == "m",
                                    current.time_chunk)
    return record.rate_forward(self, x, state.name)


def _batchnorm_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: LayerState = getattr(self, STATE)
    current = _CURRENT.get()
    if current is None:
        return state.original_forward(x)
    record = state.next_record(current.phase, current.step, BatchNormRecord)
    if current.phase == "rate":
        return record.rate_forward(self, x, state.name)
    folded = x.flatten(0, 1) if getattr(self, "step_mode", "s") == "m" else x  # [T*B,C,...]
    if current.sweep and record.uses_batch_stats(self):
        if not record.settled:  # the sweep's frontier: learn its statistics, stop the sweep
            record.accumulate(self, folded)
            raise FrontierReached
        return record.settled_forward(self, folded).view(x.shape)
    return record.spike_forward(self, folded).view(x.shape)


def _maxpool_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: LayerState = getattr(self, STATE)
    current = _CURRENT.get()
    if current is None or current.max_pool == "rate":  # the rate pass pools the rate map
        return state.original_forward(x)
    record = state.next_record(current.phase, current.step, MaxPoolRecord)
    if current.phase == "rate":
        return record.rate_forward(state.original_forward, x, state.name)
    pooled = state.original_forward(x)
    if current.sweep:
        if record.sealed:
            return pooled
        current.touched.add(record)
    if getattr(self, "step_mode", "s") == "m":  # [T,B,...]
        record.add(pooled.sum(0), pooled.shape[0])
    elif current.multi_step:  # inside a SeqToANNContainer: [T*B,...]
        record.add(pooled.view(current.steps, -1, *pooled.shape[1:]).sum(0), current.steps)
    else:  # single-step model: one step [B,...]
        record.add(pooled, 1)
    return pooled


def _dropout_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: LayerState = getattr(self, STATE)
    current = _CURRENT.get()
    if current is None or not self.training or self.p == 0:
        return state.original_forward(x)
    record = state.next_record(current.phase, current.step, DropoutRecord)
    if current.phase == "rate":
        return record.rate_forward(x, state.name)
    mask = state.original_forward(torch.ones_like(x))  # the module's own mask, scaled by 1/(1-p)
    if current.sweep:
        if record.sealed:
            return x * mask
        current.touched.add(record)
    steps = current.steps if current.multi_step else 1  # multi-step: [T,B,...] or [T*B,...]
    record.add(x, mask, steps)
    return x * mask


def _seq_to_ann_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: LayerState = getattr(self, STATE)
    current = _CURRENT.get()
    if current is not None and current.phase == "rate":
        return nn.Sequential.forward(self, x)  # [B,...]: no time dimension to fold
    return state.original_forward(x)


PATCHES = {"neuron": _neuron_forward, "batchnorm": _batchnorm_forward,
            "maxpool": _maxpool_forward, "dropout": _dropout_forward,
            "seq_to_ann": _seq_to_ann_forward}


def model_forward(self: nn.Module, x: torch.Tensor, *args, **kwargs):
    state: ModelState = getattr(self, MODEL_STATE)
    if not self.training:
        return state.original_forward(x, *args, **kwargs)
    if _CURRENT.get() is not None:
        raise RuntimeError("a rate-BP model was called inside another rate-BP pass")
    multi_step = spike_pass(self, state, x, *args, **kwargs)
    T = x.shape[0]
    x_mean = x.mean(0) if x.is_floating_point() else x.to(torch.get_default_dtype()).mean(0)
    grad_scale = 1.0 / T if state.scale_grad_by_T else 1.0
    try:
        with _phase(_Pass("rate", T, multi_step, grad_scale=grad_scale,
                                 max_pool=state.max_pool)) as current, \
                _single_step_mode(self):
            _begin_step(state.layers, current, 0)
            out = _map_tensors(state.original_forward(x_mean, *args, **kwargs), tap)
    finally:
        for module in state.layers:
            getattr(module, STATE).records = []
    return out


# --------------------------------------------------------------------------- pass helpers

class OwnTimeLoopError(RuntimeError):
    """A multi-step neuron saw another number of time steps than the model's input holds."""


def _own_time_loop_advice(state: ModelState, x: torch.Tensor, found: str) -> TypeError:
    """One line for a model whose forward makes its own time dimension (it repeats a
    ``[B,C,H,W]`` image over its own T, as SpikingJelly's example ``CSNN`` does)."""
    from .classify import UnsupportedModuleError

    parts = sorted({getattr(m, STATE).name.split(".")[0] for m in state.layers
                    if getattr(m, STATE).kind == "neuron"})
    part = (f"rate.enable(net.{parts[0]}) and call net.{parts[0]} on "
            "x.unsqueeze(0).repeat(T, 1, 1, 1, 1)" if len(parts) == 1 and parts[0] else
            "rate.enable on the part of the model that maps [T,B,...] to [T,B,...] step by "
            "step, and call that part on the repeated input")
    return UnsupportedModuleError(
        f"rate-based backprop needs a model whose forward maps [T,B,...] to [T,B,...] step by "
        f"step, but on input {list(x.shape)} {found}. A forward that makes its own time "
        f"dimension (e.g. repeats a [B,C,H,W] image over its own T) cannot run once on the "
        f"time-mean input: use {part}, or train it with BPTT.")


def spike_pass(model: nn.Module, state: ModelState, x: torch.Tensor, *args, **kwargs) -> bool:
    """The spike pass over ``x`` ``[T, B, ...]`` (no autograd): fills every layer's records;
    returns whether the model is multi-step. A multi-step model whose neurons see another T
    than ``x.shape[0]``, or whose forward fails on ``[T, B, ...]`` before any neuron ran, is
    refused with :class:`~sj_distill.rate.classify.UnsupportedModuleError` (one line)."""
    multi_step = model_step_mode(
        [m for m in state.layers if getattr(m, STATE).kind == "neuron"]) == "m"
    T = x.shape[0]
    with torch.no_grad():
        if not multi_step:
            with _phase(_Pass("spike", T, False, state.time_chunk, steps=T,
                              max_pool=state.max_pool)) as current:
                for t in range(T):
                    _begin_step(state.layers, current, t)
                    state.original_forward(x[t], *args, **kwargs)
                _finish_spike_pass(state.layers)
            return multi_step
        try:
            if state.spike_pass == "sweep":
                _sweep_spike_pass(model, state, x, *args, **kwargs)
                return multi_step
            with _phase(_Pass("spike", T, True, state.time_chunk, steps=T,
                              max_pool=state.max_pool)) as current:
                _begin_step(state.layers, current, 0)
                state.original_forward(x, *args, **kwargs)
                _finish_spike_pass(state.layers)
        except OwnTimeLoopError as err:
            raise _own_time_loop_advice(state, x, str(err)) from None
        except RuntimeError as err:
            if any(getattr(m, STATE).records for m in state.layers
                   if getattr(m, STATE).kind == "neuron"):
                raise
            first_line = (str(err).splitlines() or [""])[0]
            raise _own_time_loop_advice(
                state, x, f"its forward failed before any neuron ran ({first_line})") from None
    return multi_step


def _sweep_spike_pass(model: nn.Module, state: ModelState, x: torch.Tensor, *args,
                      **kwargs) -> None:
    """The spike pass of a multi-step model in sweeps over chunks of ``time_chunk`` steps
    (default 1) through the whole network; see :mod:`.sweep`."""
    T = x.shape[0]
    chunk = min(state.time_chunk or 1, T)
    neurons = [m for m in state.layers if getattr(m, STATE).kind == "neuron"]
    starts = [_memories(m) for m in neurons]
    rng = _rng_state(x)
    replay = not any(getattr(m, STATE).kind == "dropout" for m in state.layers)
    replayer = Replayer(model) if replay else None
    forward = replayer.root_forward(model, state.original_forward) if replay \
        else state.original_forward
    for module in state.layers:
        getattr(module, STATE).records = []
    try:
        while True:
            for module, start in zip(neurons, starts):
                _restore_memories(module, start)
            _set_rng_state(x, rng)
            frontier = False
            with _phase(_Pass("spike", T, True, state.time_chunk, sweep=True,
                              max_pool=state.max_pool)) as current:
                for index, begin in enumerate(range(0, T, chunk)):
                    x_chunk = x[begin:begin + chunk]
                    current.steps = x_chunk.shape[0]
                    _begin_step(state.layers, current, index, clear=False)
                    if replayer is not None:
                        replayer.begin_chunk(index)
                    try:
                        forward(x_chunk, *args, **kwargs)
                    except FrontierReached:
                        frontier = True
            for record in current.touched:
                record.sealed = True
            if replayer is not None:
                replayer.end_sweep(index + 1)
            if not frontier:
                break
            for module in state.layers:
                layer_state = getattr(module, STATE)
                if layer_state.kind == "batchnorm":
                    for record in layer_state.records:
                        if record.chunks:
                            record.settle()
    finally:
        if replayer is not None:
            replayer.close()
    _finish_spike_pass(state.layers)


def _memories(module: nn.Module) -> dict:
    """A copy of a SpikingJelly module's state (its ``_memories``: the neuron's ``v``)."""
    return {name: value.clone() if isinstance(value, torch.Tensor) else value
            for name, value in getattr(module, "_memories", {}).items()}


def _restore_memories(module: nn.Module, saved: dict) -> None:
    for name, value in saved.items():
        setattr(module, name, value.clone() if isinstance(value, torch.Tensor) else value)


def _rng_state(x: torch.Tensor):
    return (torch.get_rng_state(),
            torch.cuda.get_rng_state(x.device) if x.is_cuda else None)


def _set_rng_state(x: torch.Tensor, state) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], x.device)


@contextlib.contextmanager
def _phase(current: _Pass) -> Iterator[_Pass]:
    token = _CURRENT.set(current)
    try:
        yield current
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def _single_step_mode(model: nn.Module) -> Iterator[None]:
    """Temporarily put every multi-step SpikingJelly module of ``model`` in single-step mode."""
    switched = [m for m in model.modules() if getattr(m, "step_mode", None) == "m"]
    for m in switched:
        m.step_mode = "s"
    try:
        yield
    finally:
        for m in switched:
            m.step_mode = "m"


def _begin_step(layers: List[nn.Module], current: _Pass, step: int, clear: bool = True) -> None:
    current.step = step
    for module in layers:
        state: LayerState = getattr(module, STATE)
        state.uses = 0
        if clear and current.phase == "spike" and step == 0:
            state.records = []


def _finish_spike_pass(layers: List[nn.Module]) -> None:
    for module in layers:
        state: LayerState = getattr(module, STATE)
        for record in state.records:
            if state.kind == "neuron":
                record.finish()
            elif state.kind == "batchnorm":
                record.finish(module)


def model_step_mode(neurons: List[nn.Module]) -> str:
    modes = {m.step_mode for m in neurons}
    if len(modes) != 1:
        raise ValueError(
            "rate-based backprop needs all spiking neurons in one step mode, found "
            f"{sorted(modes)}; use functional.set_step_mode(model, 'm') (or 's')"
        )
    return modes.pop()


def _map_tensors(out, fn):
    if isinstance(out, torch.Tensor):
        return fn(out)
    if isinstance(out, (tuple, list)):
        return type(out)(_map_tensors(o, fn) for o in out)
    return out
