"""SpikingJelly compatibility: the only module that knows SpikingJelly versions.

Supported: SpikingJelly ``0.0.0.0.14`` (the version most published SNN code pins; neurons
take ``backend='torch'|'cupy'``) and ``2.x`` (a rewrite; neurons take no backend and the
kernel is chosen from the tensor's device: native CUDA, Triton or torch).

Everything else in sj-distill builds neurons through :func:`make_neuron` /
:func:`neuron_factory` and resets through :func:`reset`.
"""
from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
from typing import Callable, Iterator, Optional

import torch
from torch import nn
from spikingjelly.activation_based import base, functional, layer, neuron, surrogate

SJ_VERSION: str = importlib.metadata.version("spikingjelly")
#: True on the 0.0.0.0.x series (backend argument, CuPy kernels).
LEGACY: bool = SJ_VERSION.startswith("0.0.0.0")

#: Base class for custom neurons that redefine only ``neuronal_charge`` (multi-step through
#: SpikingJelly's own step loop): ``neuron.BaseNode`` on 0.0.0.0.14, ``neuron.SimpleBaseNode``
#: (the pure-torch customisation API) on 2.x. Both take ``v_threshold, v_reset,
#: surrogate_function, detach_reset, step_mode`` and keep the membrane in ``self.v``.
ChargeNeuronBase = neuron.BaseNode if LEGACY else neuron.SimpleBaseNode

NEURON_KINDS = ("lif", "if", "plif")
BACKENDS = ("auto", "torch", "cupy")


class RectSurrogate(surrogate.SurrogateFunctionBase):
    """Rectangular surrogate ``g'(x) = alpha * [|x| < 0.5/alpha]`` for SpikingJelly versions
    that do not ship one (0.0.0.0.14); torch kernels only."""

    def __init__(self, alpha: float = 1.0, spiking: bool = True):
        super().__init__(alpha, spiking)

    @staticmethod
    def spiking_function(x, alpha):
        return _RectSpike.apply(x, alpha)

    @staticmethod
    def primitive_function(x, alpha):
        return (alpha * x + 0.5).clamp(0.0, 1.0)


class _RectSpike(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        window = (x.abs() < 0.5 / ctx.alpha).to(grad_output)
        return grad_output * ctx.alpha * window, None


def cupy_available() -> bool:
    """True when CUDA is usable and a CuPy package is importable."""
    return torch.cuda.is_available() and importlib.util.find_spec("cupy") is not None


def make_surrogate(name: str = "sigmoid", alpha: Optional[float] = None) -> nn.Module:
    """A SpikingJelly surrogate function by name (``sigmoid``, ``atan``, ``rect``, ``erf``,
    ``piecewise_quadratic``); ``alpha=None`` keeps SpikingJelly's default sharpness."""
    classes = {
        "sigmoid": surrogate.Sigmoid,
        "atan": surrogate.ATan,
        "rect": getattr(surrogate, "Rect", RectSurrogate),
        "erf": surrogate.Erf,
        "piecewise_quadratic": surrogate.PiecewiseQuadratic,
    }
    if name not in classes:
        raise ValueError(f"unknown surrogate {name!r}; choose one of {sorted(classes)}")
    return classes[name]() if alpha is None else classes[name](alpha=float(alpha))


def surrogate_derivative(surrogate_function: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``d spike / d x`` of a SpikingJelly surrogate at ``x`` (elementwise, same shape), taken
    from the surrogate's own backward so every surrogate class works."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(surrogate_function(x).sum(), x)
    return grad


def _resolve_backend(backend: str, step_mode: str) -> Optional[str]:
    """The ``backend=`` argument for a 0.0.0.0.14 neuron, or None on 2.x."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "cupy" and not cupy_available():
        why = "CUDA is not available" if not torch.cuda.is_available() else "CuPy is not installed"
        raise RuntimeError(
            f"backend='cupy' was requested but {why}; install the 'cupy' extra "
            "(pip install 'sj-distill[cupy]') on a CUDA machine, or use backend='auto'"
        )
    if backend == "cupy" and not LEGACY:
        raise RuntimeError(
            f"backend='cupy' needs SpikingJelly 0.0.0.0.14 (installed: {SJ_VERSION}); "
            "SpikingJelly 2.x picks its own CUDA kernels: use backend='auto'"
        )
    if not LEGACY:
        return None
    if backend == "auto":
        backend = "cupy" if cupy_available() and step_mode == "m" else "torch"
    if backend == "cupy" and step_mode != "m":
        raise ValueError("backend='cupy' only supports step_mode='m'")
    return backend


def make_neuron(
    kind: str = "lif",
    *,
    tau: Optional[float] = None,
    decay: Optional[float] = None,
    decay_input: bool = False,
    v_threshold: float = 1.0,
    reset: str = "soft",
    v_reset: float = 0.0,
    detach_reset: bool = True,
    surrogate_fn: str = "sigmoid",
    alpha: Optional[float] = 4.0,
    step_mode: str = "m",
    backend: str = "auto",
) -> nn.Module:
    """Build a SpikingJelly neuron with the papers' parameters.

    Args:
        kind: ``lif`` (LIFNode), ``if`` (IFNode) or ``plif`` (ParametricLIFNode; ``tau`` is
            its initial value).
        tau: membrane time constant (> 1). Give ``tau`` or ``decay``, not both.
        decay: leak factor ``lam`` of ``v <- lam * v + x`` (decay_input False), i.e.
            ``tau = 1 / (1 - decay)``; the rate-BP paper uses ``decay=0.2``. Default: decay 0.2.
        decay_input: SpikingJelly's ``decay_input`` (True: ``v <- v + (x - v) / tau``).
        v_threshold: firing threshold.
        reset: ``soft`` (subtract threshold) or ``hard`` (set to ``v_reset``).
        detach_reset: cut the reset path from autograd.
        surrogate_fn / alpha: surrogate gradient name and sharpness.
        step_mode: ``m`` (``[T,B,...]``) or ``s`` (one step per call).
        backend: ``auto`` (0.0.0.0.14: ``cupy`` when CUDA and CuPy are present, else
            ``torch``; 2.x: SpikingJelly chooses), ``torch`` or ``cupy``.
    """
    if kind not in NEURON_KINDS:
        raise ValueError(f"unknown neuron kind {kind!r}; choose one of {NEURON_KINDS}")
    if reset not in ("soft", "hard"):
        raise ValueError(f"reset must be 'soft' or 'hard', got {reset!r}")
    if tau is not None and decay is not None:
        raise ValueError("give tau or decay, not both")
    if decay is not None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        tau = 1.0 / (1.0 - decay)
    elif tau is None:
        tau = 1.25
    if kind != "if" and tau <= 1.0:
        # SpikingJelly asserts tau > 1; decay 0 (tau 1) means no memory: nudge into range.
        tau = 1.0 + 1e-6
    common = dict(
        v_threshold=float(v_threshold),
        v_reset=None if reset == "soft" else float(v_reset),
        surrogate_function=make_surrogate(surrogate_fn, alpha),
        detach_reset=bool(detach_reset),
        step_mode=step_mode,
    )
    resolved = _resolve_backend(backend, step_mode)
    if resolved is not None:
        common["backend"] = resolved
    if kind == "if":
        return neuron.IFNode(**common)
    if kind == "lif":
        return neuron.LIFNode(tau=float(tau), decay_input=bool(decay_input), **common)
    return neuron.ParametricLIFNode(init_tau=float(tau), decay_input=bool(decay_input), **common)


def neuron_factory(**params) -> Callable[..., nn.Module]:
    """A zero-argument-callable building fresh neurons with ``params`` (see :func:`make_neuron`).

    Extra keyword arguments at call time (as SpikingJelly's zoo passes) are ignored. The
    neurons are multi-step (``step_mode='m'``) unless ``params`` say otherwise: a zoo model
    built with this factory mixes step modes until ``zoo.cifar_student`` (or
    ``functional.set_step_mode(model, 'm')``) runs; see :func:`check_step_mode`."""
    make_neuron(**params)  # validate once, eagerly

    @functools.wraps(make_neuron)
    def build(*_, **__):
        return make_neuron(**params)

    return build


def neuron_backend(module: nn.Module) -> str:
    """The kernel family a neuron runs on: ``cupy`` / ``torch`` (0.0.0.0.14) or ``auto`` (2.x)."""
    return getattr(module, "backend", "auto")


@contextlib.contextmanager
def fused_multi_step_kernel(module: nn.Module, x_seq: torch.Tensor) -> Iterator[str]:
    """Run ``module`` (a multi-step neuron) on SpikingJelly's fused multi-step kernel for
    ``x_seq`` inside the block; yields the kernel family used (see :func:`neuron_backend`).

    0.0.0.0.14: a neuron built with ``backend='torch'`` is switched to ``'cupy'`` for the
    block when ``x_seq`` is a float32/float16 CUDA tensor, CuPy is installed and the neuron
    class has a CuPy kernel (its ``supported_backends``); restored afterwards. The CuPy
    kernels do the same arithmetic (up to rounding), keep ``v_seq`` with ``store_v_seq`` and
    take no bfloat16. 2.x: nothing to do, SpikingJelly picks its kernel from the tensor's
    device (native CUDA, else Triton, else torch)."""
    switch = (LEGACY and x_seq.is_cuda and x_seq.dtype in (torch.float32, torch.float16)
              and getattr(module, "backend", None) == "torch"
              and getattr(module, "step_mode", None) == "m"
              and "cupy" in getattr(module, "supported_backends", ()) and cupy_available())
    if not switch:
        yield neuron_backend(module)
        return
    module.backend = "cupy"
    try:
        yield "cupy"
    finally:
        module.backend = "torch"


def reset(model: nn.Module) -> None:
    """Reset every stateful SpikingJelly module (call after every batch).

    Like ``functional.reset_net``, but only modules whose ``reset`` takes no argument are
    reset: timm's ``ClassifierHead.reset(num_classes)`` (VGG teachers) re-creates a head."""
    import inspect

    for module in model.modules():
        method = getattr(module, "reset", None)
        if callable(method) and not any(
                p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in inspect.signature(method).parameters.values()):
            method()


def modules_replaced(model: nn.Module) -> None:
    """Call after swapping submodules of ``model``: SpikingJelly 2.x caches, per model, the
    list of modules that :func:`reset` resets (a swapped-in neuron would never be reset and
    its graph would leak into the next batch). No-op on 0.0.0.0.14, which has no cache."""
    invalidate = getattr(functional, "invalidate_reset_cache", None)
    if invalidate is not None:
        invalidate(model)


def set_step_mode(model: nn.Module, step_mode: str) -> None:
    """Set ``step_mode`` (``'s'`` or ``'m'``) on every SpikingJelly module of ``model``."""
    functional.set_step_mode(model, step_mode)


#: SpikingJelly containers whose children keep their own step mode (``set_step_mode`` leaves
#: them alone): a multi-step container running single-step modules step by step, etc. Names
#: missing from a version (the ``TLast*`` ones on 0.0.0.0.14) are skipped.
_OWN_STEP_MODE_CONTAINERS = tuple(
    getattr(layer, name) for name in (
        "StepModeContainer", "MultiStepContainer", "SeqToANNContainer", "TLastMultiStepContainer",
        "TLastSeqToANNContainer", "ElementWiseRecurrentContainer", "LinearRecurrentContainer")
    if hasattr(layer, name))


class MixedStepModeError(ValueError):
    """A model whose SpikingJelly modules are not all in one step mode."""


def _step_mode_of(module: nn.Module) -> Optional[str]:
    """``'s'`` / ``'m'`` for a SpikingJelly step module (containers fixed to one mode may not
    store it: their only supported mode), None for any other module."""
    if not isinstance(module, base.StepModule):
        return None
    try:
        return module.step_mode
    except AttributeError:
        supported = tuple(module.supported_step_mode())
        return supported[0] if len(supported) == 1 else None


def step_modes(model: nn.Module) -> dict:
    """``{'m': [names], 's': [names]}`` of the SpikingJelly step modules of ``model`` (the model
    itself is named ``''``), in module order. Children of containers that keep their own step
    mode (``MultiStepContainer``, ``SeqToANNContainer``, recurrent containers, ...) are left
    out, as ``functional.set_step_mode`` leaves them out."""
    modes = {"m": [], "s": []}
    pending = [("", model)]
    while pending:
        name, module = pending.pop()
        mode = _step_mode_of(module)
        if mode is not None:
            modes.setdefault(mode, []).append(name)
        if not isinstance(module, _OWN_STEP_MODE_CONTAINERS):
            pending.extend(reversed([(f"{name}.{child}" if name else child, m)
                                     for child, m in module.named_children()]))
    return modes


def check_step_mode(model: nn.Module, caller: str) -> str:
    """Refuse a model that mixes SpikingJelly step modes; return its mode (``'m'`` or ``'s'``;
    ``'m'`` when it has no step modules).

    A model with multi-step neurons and single-step layers (e.g. a zoo model built with
    ``spiking_neuron=neuron_factory(...)``, whose factory makes ``step_mode='m'`` neurons,
    before ``zoo.cifar_student`` or ``functional.set_step_mode``) runs without an error, but
    its neurons take the batch axis of a ``[B, ...]`` input for time: the samples of a batch
    leak into each other and every number it gives is wrong. ``caller`` starts the one-line
    :class:`MixedStepModeError`, which names modules of both modes and the fix."""
    modes = step_modes(model)
    if modes["m"] and modes["s"]:
        def first(names):
            shown = ", ".join(repr(n or "<model>") for n in names[:2])
            return shown + (f" and {len(names) - 2} more" if len(names) > 2 else "")
        raise MixedStepModeError(
            f"{caller}: {type(model).__name__} mixes step modes (multi-step: {first(modes['m'])}; "
            f"single-step: {first(modes['s'])}), so its neurons would take the batch for time "
            "and mix the samples; call spikingjelly.activation_based.functional.set_step_mode("
            "model, 'm') first (a SpikingJelly zoo model: sj_distill.zoo.cifar_student(model, "
            "num_classes) does it)")
    return "s" if modes["s"] else "m"


def is_spiking_neuron(module: nn.Module) -> bool:
    """True for SpikingJelly spiking neurons: subclasses of ``neuron.BaseNode`` and, on 2.x,
    of ``neuron.SimpleBaseNode`` (custom charge-equation neurons such as the adaptive LIF)."""
    return isinstance(module, (neuron.BaseNode, ChargeNeuronBase))
