"""Rate-based backpropagation for SpikingJelly models (Yu et al., NeurIPS 2024).

``enable(model)`` patches an existing SpikingJelly model in place. In train mode, calling it
with the usual ``[T, B, ...]`` input runs two passes:

1. **spike pass** (``current_phase() == "spike"``, no autograd): the untouched SNN over all
   ``T`` steps with SpikingJelly's own neuron kernels; every neuron keeps its firing rate
   and eligibility, every BatchNorm its batch statistics (running statistics are updated
   here, once), every max-pool the time-mean of its output.
2. **rate pass** (``current_phase() == "rate"``, autograd): the network once more, in
   single-step mode, on the time-mean input ``[B, ...]``; neurons return their spike-pass
   rate with the gradient ``eligibility * dL/dr``. Stage modules see ``[B, ...]`` rate
   tensors that carry autograd (forward hooks may use them in other graphs).

The call returns the rate-pass output (time-mean logits ``[B, K]``), whose gradient is
scaled by ``1/T`` when ``scale_grad_by_T`` (the value is unchanged). In eval mode the model
is the plain ``T``-step SNN (``[T, B, K]``). Single-step models (``step_mode='s'``) are
called in train mode with the whole ``[T, B, ...]`` sequence too: the spike pass drives
them step by step; in eval mode the user drives them step by step as before. Call
``functional.reset_net(model)`` after every batch, as usual.

Only ``[B, ...]``-sized records outlive a layer's spike-pass call, and only the rate pass
builds a graph, so training memory hardly grows with ``T``. See ``docs/rate_bp.md``.
"""
from __future__ import annotations

import contextlib
import types
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable, Iterator, List, Optional, Tuple

import torch
from torch import nn
from spikingjelly.activation_based import layer, neuron

from .neurons import BatchNormRecord, MaxPoolRecord, NeuronRecord, SUPPORTED_NEURONS
from .sync_bn import SyncBatchNorm

__all__ = ["enable", "disable", "is_enabled", "current_phase", "tap", "spike_pass_only",
           "UnsupportedModuleError"]


def _ottt_scale() -> tuple:
    """OTTT's ``Scale`` (``x * constant``), on SpikingJelly versions that ship it."""
    try:
        from spikingjelly.activation_based.model.spiking_vggws_ottt import Scale
    except ImportError:
        return ()
    return (Scale,)


#: Leaf modules that are linear in their input (they commute with the time-mean).
#: ``layer.Dropout`` draws one mask per sequence (kept until ``reset_net``), so the rate pass
#: reuses the spike pass's mask; ``layer.VotingLayer`` is an average pool over the last dim.
LINEAR_LEAVES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Identity,
    layer.Dropout, layer.VotingLayer,
) + _ottt_scale()
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, SyncBatchNorm)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
#: torch's dropouts draw a new mask on every call: the spike pass records its masks.
TORCH_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
#: SpikingJelly zoo models whose forward cannot be rate-trained, and why (by module name).
_ZOO_REFUSALS = {
    "spikformer": "its spiking self-attention multiplies spike tensors (Q K^T V)",
    "spike_driven_transformer": "its spike-driven self-attention multiplies spike tensors "
                                "(Q * column-sum(K * V))",
    "qkformer": "its Q-K attention multiplies spike tensors (a query spike mask gates the keys)",
    "maxformer": "its spiking self-attention multiplies spike tensors (Q K^T V)",
    "masnn": "its attention (temporal / channel / spatial gates computed from the activations) "
             "multiplies activations by data-dependent gates",
}
_PRODUCT_WHY = ("the time-mean of a product of spike trains is not the product of their "
                "firing rates, so no rate pass can reproduce its value")

_STATE = "_sj_rate"  # attribute holding the per-module state on patched modules
_MODEL_STATE = "_sj_rate_model"  # attribute holding the model-level state


class UnsupportedModuleError(TypeError):
    """A module that rate-based backprop cannot train correctly."""


@dataclass
class _Pass:
    phase: str  # "spike" or "rate"
    T: int
    multi_step: bool
    time_chunk: Optional[int] = None
    step: int = 0
    grad_scale: float = 1.0  # gradient factor of every rate-pass tensor that leaves the model


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
class _LayerState:
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
        if phase == "spike" and step == 0:
            self.records.append(make())
        if index >= len(self.records):
            raise RuntimeError(
                f"module '{self.name}' was called more often in this pass than in the first "
                "step of the spike pass; rate-based backprop needs the same calls in every step"
            )
        return self.records[index]


@dataclass
class _ModelState:
    original_forward: Callable
    had_instance_forward: bool
    scale_grad_by_T: bool
    layers: List[nn.Module]
    time_chunk: Optional[int] = None


class DropoutRecord:
    """Time-means of one torch dropout's spike-pass output and mask.

    A torch dropout draws a fresh mask on every call (per time step, per element). The spike
    pass keeps its masks (so it is the plain SNN); the rate pass returns the recorded time-mean
    of the dropped-out input (the value is exact) with the gradient of multiplying the rate
    input by the time-mean of the masks (exact at ``T = 1``)."""

    def __init__(self):
        self.output: Optional[torch.Tensor] = None
        self.mask: Optional[torch.Tensor] = None
        self.steps = 0

    def add(self, x: torch.Tensor, mask: torch.Tensor, steps: int) -> None:
        """``x``, ``mask``: ``steps`` time steps stacked in the leading dimension."""
        output = (x * mask).reshape(steps, -1).sum(0)
        mask = mask.reshape(steps, -1).sum(0)
        if self.output is None:
            self.output, self.mask = output, mask
        else:
            self.output, self.mask = self.output + output, self.mask + mask
        self.steps += steps

    def rate_forward(self, x: torch.Tensor, name: str) -> torch.Tensor:
        if self.output.numel() != x.numel():
            raise RuntimeError(
                f"dropout '{name}': the rate pass gave shape {tuple(x.shape)} but the spike pass "
                f"recorded {self.output.numel()} values per step; the model's forward must do "
                "the same computation for the time-mean input [B,...] as for each time step")
        value = (self.output / self.steps).view_as(x)
        gated = x * (self.mask / self.steps).view_as(x)
        return value + (gated - gated.detach())


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
    state: _LayerState = getattr(self, _STATE)
    current = _CURRENT.get()
    if current is None:
        return state.original_forward(x)
    record = state.next_record(current.phase, current.step, lambda: NeuronRecord(self))
    if current.phase == "spike":
        return record.spike_forward(self, state.original_forward, x, self.step_mode == "m",
                                    current.time_chunk)
    return record.rate_forward(self, x, state.name)


def _batchnorm_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: _LayerState = getattr(self, _STATE)
    current = _CURRENT.get()
    if current is None:
        return state.original_forward(x)
    record = state.next_record(current.phase, current.step, BatchNormRecord)
    if current.phase == "rate":
        return record.rate_forward(self, x, state.name)
    if getattr(self, "step_mode", "s") == "m":  # SpikingJelly BN on [T,B,C,...]
        return record.spike_forward(self, x.flatten(0, 1)).view(x.shape)
    return record.spike_forward(self, x)


def _maxpool_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: _LayerState = getattr(self, _STATE)
    current = _CURRENT.get()
    if current is None:
        return state.original_forward(x)
    record = state.next_record(current.phase, current.step, MaxPoolRecord)
    if current.phase == "rate":
        return record.rate_forward(state.original_forward, x, state.name)
    pooled = state.original_forward(x)
    if getattr(self, "step_mode", "s") == "m":  # [T,B,...]
        record.add(pooled.sum(0), pooled.shape[0])
    elif current.multi_step:  # inside a SeqToANNContainer: [T*B,...]
        record.add(pooled.view(current.T, -1, *pooled.shape[1:]).sum(0), current.T)
    else:  # single-step model: one step [B,...]
        record.add(pooled, 1)
    return pooled


def _dropout_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: _LayerState = getattr(self, _STATE)
    current = _CURRENT.get()
    if current is None or not self.training or self.p == 0:
        return state.original_forward(x)
    record = state.next_record(current.phase, current.step, DropoutRecord)
    if current.phase == "rate":
        return record.rate_forward(x, state.name)
    mask = state.original_forward(torch.ones_like(x))  # the module's own mask, scaled by 1/(1-p)
    steps = current.T if current.multi_step else 1  # multi-step: [T,B,...] or [T*B,...]
    record.add(x, mask, steps)
    return x * mask


def _seq_to_ann_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    state: _LayerState = getattr(self, _STATE)
    current = _CURRENT.get()
    if current is not None and current.phase == "rate":
        return nn.Sequential.forward(self, x)  # [B,...]: no time dimension to fold
    return state.original_forward(x)


_PATCHES = {"neuron": _neuron_forward, "batchnorm": _batchnorm_forward,
            "maxpool": _maxpool_forward, "dropout": _dropout_forward,
            "seq_to_ann": _seq_to_ann_forward}


def _model_forward(self: nn.Module, x: torch.Tensor, *args, **kwargs):
    state: _ModelState = getattr(self, _MODEL_STATE)
    if not self.training:
        return state.original_forward(x, *args, **kwargs)
    if _CURRENT.get() is not None:
        raise RuntimeError("a rate-BP model was called inside another rate-BP pass")
    multi_step = _spike_pass(state, x, *args, **kwargs)
    T = x.shape[0]
    x_mean = x.mean(0) if x.is_floating_point() else x.to(torch.get_default_dtype()).mean(0)
    grad_scale = 1.0 / T if state.scale_grad_by_T else 1.0
    try:
        with _phase(_Pass("rate", T, multi_step, grad_scale=grad_scale)) as current, \
                _single_step_mode(self):
            _begin_step(state.layers, current, 0)
            out = _map_tensors(state.original_forward(x_mean, *args, **kwargs), tap)
    finally:
        for module in state.layers:
            getattr(module, _STATE).records = []
    return out


# --------------------------------------------------------------------------- pass helpers

def _spike_pass(state: _ModelState, x: torch.Tensor, *args, **kwargs) -> bool:
    """The spike pass over ``x`` ``[T, B, ...]`` (no autograd): fills every layer's records;
    returns whether the model is multi-step."""
    multi_step = _model_step_mode(
        [m for m in state.layers if getattr(m, _STATE).kind == "neuron"]) == "m"
    T = x.shape[0]
    with _phase(_Pass("spike", T, multi_step, state.time_chunk)) as current, torch.no_grad():
        if multi_step:
            _begin_step(state.layers, current, 0)
            state.original_forward(x, *args, **kwargs)
        else:
            for t in range(T):
                _begin_step(state.layers, current, t)
                state.original_forward(x[t], *args, **kwargs)
        _finish_spike_pass(state.layers)
    return multi_step


def spike_pass_only(model: nn.Module, x: torch.Tensor, *args, **kwargs) -> None:
    """Run only the spike pass of a training step of an enabled model (no autograd; firing
    rates, eligibilities and BatchNorm statistics are computed, running statistics updated,
    then the records are dropped). For benchmarks of the spike pass alone; call
    ``functional.reset_net(model)`` afterwards as after any step."""
    if not is_enabled(model):
        raise RuntimeError("spike_pass_only needs a model switched on with rate.enable(model)")
    state: _ModelState = getattr(model, _MODEL_STATE)
    try:
        _spike_pass(state, x, *args, **kwargs)
    finally:
        for module in state.layers:
            getattr(module, _STATE).records = []


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


def _begin_step(layers: List[nn.Module], current: _Pass, step: int) -> None:
    current.step = step
    for module in layers:
        state: _LayerState = getattr(module, _STATE)
        state.uses = 0
        if current.phase == "spike" and step == 0:
            state.records = []


def _finish_spike_pass(layers: List[nn.Module]) -> None:
    for module in layers:
        state: _LayerState = getattr(module, _STATE)
        for record in state.records:
            if state.kind == "neuron":
                record.finish()
            elif state.kind == "batchnorm":
                record.finish(module)


def _model_step_mode(neurons: List[nn.Module]) -> str:
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


# --------------------------------------------------------------------------- enable / disable

def _refuse_model(model: nn.Module) -> None:
    """Refuse a model whose forward rate-based backprop cannot run or cannot reproduce."""
    for name, module in model.named_modules():
        cls = type(module)
        family = cls.__module__.rpartition(".")[2]
        what = f"{cls.__name__}" + (f" (module '{name}')" if name else "")
        if cls.__module__.startswith("spikingjelly.") and family in _ZOO_REFUSALS:
            raise UnsupportedModuleError(
                f"rate-based backprop cannot train {what}: {_ZOO_REFUSALS[family]}, and "
                f"{_PRODUCT_WHY}. Train it with BPTT (plain loss.backward()).")
        if callable(getattr(module, "_to_sequence", None)):
            raise UnsupportedModuleError(
                f"rate-based backprop cannot train {what}: its forward repeats a [B,C,H,W] "
                "image over its own T (_to_sequence) and averages the outputs over time itself, "
                "so it cannot run once on the time-mean input. Train it with BPTT (plain "
                "loss.backward()), or use a model whose forward maps [T,B,...] to [T,B,K] step "
                "by step (e.g. spiking_resnet, sew_resnet, spiking_vgg).")


def _refuse_product_join(where: str, module: nn.Module) -> None:
    """SEW blocks joining their branches with AND / IAND (a product of spike trains)."""
    cnf = getattr(module, "cnf", None)
    if isinstance(cnf, str) and cnf.upper() != "ADD":
        raise UnsupportedModuleError(
            f"rate-based backprop cannot train {where}: it joins its branches with "
            f"cnf='{cnf}', a product of spike trains, and {_PRODUCT_WHY}. Build the model "
            "with cnf='ADD', or train it with BPTT.")


def _classify(model: nn.Module) -> List[Tuple[str, nn.Module, str]]:
    """``(path, module, kind)`` of every module to patch; raises on anything unsupported."""
    _refuse_model(model)
    for name, module in model.named_modules():
        if getattr(module, "supports_rate_bp", True) is False:
            raise UnsupportedModuleError(
                f"rate-based backprop cannot train module '{name or '<model>'}' "
                f"({type(module).__name__}): it declares supports_rate_bp = False (its output "
                "depends on the individual spikes over time, not only on firing rates). "
                "Train this model with BPTT instead of sj_distill.rate.enable()."
            )
    found: List[Tuple[str, nn.Module, str]] = []

    def visit(prefix: str, module: nn.Module, in_seq_to_ann: bool) -> None:
        path = prefix or "<model>"
        where = f"module '{path}' ({type(module).__name__})"
        _refuse_product_join(where, module)
        if isinstance(module, neuron.BaseNode):
            if type(module) not in SUPPORTED_NEURONS:
                raise UnsupportedModuleError(
                    f"rate-based backprop has no eligibility recurrence for the spiking neuron "
                    f"{where}; supported: {', '.join(c.__name__ for c in SUPPORTED_NEURONS)}. "
                    "Use one of those neurons, or train with BPTT."
                )
            found.append((path, module, "neuron"))
            return
        if isinstance(module, nn.SyncBatchNorm):
            raise UnsupportedModuleError(
                f"{where}: torch's nn.SyncBatchNorm is not supported by rate-based backprop; "
                "build the model with BatchNorm and synchronise it with "
                "sj_distill.sync_bn.convert(model) instead."
            )
        if isinstance(module, BATCH_NORMS):
            found.append((path, module, "batchnorm"))
            return
        if isinstance(module, MAX_POOLS):
            found.append((path, module, "maxpool"))
            return
        if isinstance(module, TORCH_DROPOUTS):
            found.append((path, module, "dropout"))
            return
        if isinstance(module, layer.Dropout) and in_seq_to_ann:
            raise UnsupportedModuleError(
                f"{where} inside a SeqToANNContainer draws a new mask for every time step; "
                "rate-based backprop needs SpikingJelly's one-mask-per-sequence dropout: move "
                "it out of the container (step_mode='m'), or use torch's nn.Dropout there.")
        if isinstance(module, layer.SeqToANNContainer):
            found.append((path, module, "seq_to_ann"))
        elif "Container" in type(module).__name__ and type(module).__module__.startswith(
                "spikingjelly"):
            raise UnsupportedModuleError(
                f"rate-based backprop does not support the SpikingJelly container {where}; "
                "use multi-step layers (step_mode='m') or SeqToANNContainer instead."
            )
        children = list(module.named_children())
        if not children and isinstance(module, nn.Sequential):
            return  # an empty container (the ``nn.Sequential()`` shortcut idiom) is the identity
        if not children and not isinstance(module, LINEAR_LEAVES):
            raise UnsupportedModuleError(
                f"rate-based backprop does not know how to treat {where}. Supported: "
                "SpikingJelly IFNode/LIFNode/ParametricLIFNode, BatchNorm1d/2d/3d, Conv, "
                "Linear, average pooling, max-pooling, Flatten, Dropout, Identity, VotingLayer, "
                "OTTT's Scale and SeqToANNContainer; replace the module or train with BPTT."
            )
        inside = in_seq_to_ann or isinstance(module, layer.SeqToANNContainer)
        for child_name, child in children:
            visit(f"{prefix}.{child_name}" if prefix else child_name, child, inside)

    visit("", model, False)
    if not any(kind == "neuron" for _, _, kind in found):
        raise ValueError("rate-based backprop found no SpikingJelly spiking neuron in the model")
    return found


def enable(model: nn.Module, scale_grad_by_T: bool = True,
           time_chunk: Optional[int] = None) -> nn.Module:
    """Switch rate-based backprop on for ``model``, in place; returns ``model``.

    Train mode: ``model(x)`` with ``x`` ``[T, B, ...]`` returns time-mean outputs ``[B, ...]``
    with rate-based gradients; ``scale_grad_by_T`` multiplies the gradient reaching the
    output by ``1/T`` (as the paper's code does; the value is unchanged). In the spike pass
    each multi-step neuron is called on ``time_chunk`` steps at a time (same spikes; its own
    temporaries shrink from ``[T, ...]`` to ``[time_chunk, ...]``; larger chunks mean fewer
    kernel calls). ``time_chunk=None`` (default): all ``T`` steps in one fused-kernel call
    on CUDA, one step per call on the CPU. Eval mode: the original SNN. Raises
    :class:`UnsupportedModuleError` naming the first module it cannot treat. Enabling an enabled model only updates
    ``scale_grad_by_T`` and ``time_chunk``."""
    if time_chunk is not None and (isinstance(time_chunk, bool)
                                   or not isinstance(time_chunk, int) or time_chunk < 1):
        raise ValueError(f"time_chunk must be a positive int (time steps per neuron call) or "
                         f"None (T on CUDA, 1 on the CPU), got {time_chunk!r}")
    if is_enabled(model):
        getattr(model, _MODEL_STATE).scale_grad_by_T = bool(scale_grad_by_T)
        getattr(model, _MODEL_STATE).time_chunk = time_chunk
        return model
    plan = _classify(model)
    _model_step_mode([m for _, m, kind in plan if kind == "neuron"])
    layers = []
    for path, module, kind in plan:
        memories = getattr(module, "_memories", {})
        state = _LayerState(kind, path, module.forward, "forward" in module.__dict__,
                            had_v_seq_memory="v_seq" in memories)
        setattr(module, _STATE, state)
        module.forward = types.MethodType(_PATCHES[kind], module)
        layers.append(module)
    state = _ModelState(model.forward, "forward" in model.__dict__, bool(scale_grad_by_T), layers,
                        time_chunk)
    setattr(model, _MODEL_STATE, state)
    model.forward = types.MethodType(_model_forward, model)
    return model


def disable(model: nn.Module) -> nn.Module:
    """Switch rate-based backprop off and restore every patched module; returns ``model``."""
    if not is_enabled(model):
        return model
    state: _ModelState = getattr(model, _MODEL_STATE)
    for module in state.layers:
        layer_state: _LayerState = getattr(module, _STATE)
        _restore_forward(module, layer_state.original_forward, layer_state.had_instance_forward)
        if not layer_state.had_v_seq_memory:
            # the spike pass switched store_v_seq on, which registers a 'v_seq' memory on
            # SpikingJelly 0.0.0.0.14: remove it so the module is as it was
            for memories in (getattr(module, "_memories", {}), getattr(module, "_memories_rv", {})):
                memories.pop("v_seq", None)
        delattr(module, _STATE)
    _restore_forward(model, state.original_forward, state.had_instance_forward)
    delattr(model, _MODEL_STATE)
    return model


def _restore_forward(module: nn.Module, original: Callable, had_instance_forward: bool) -> None:
    if had_instance_forward:
        module.forward = original
    else:
        del module.__dict__["forward"]


def is_enabled(model: nn.Module) -> bool:
    """True when :func:`enable` patched ``model`` (and :func:`disable` did not undo it)."""
    return hasattr(model, _MODEL_STATE)
