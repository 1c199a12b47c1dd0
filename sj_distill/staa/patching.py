"""Wrap chosen spiking neurons of a SpikingJelly model in the STAA aggregator, in place; undo
it; count what it adds."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import sj
from .modules import STAANeuron

Sample = Union[torch.Tensor, Sequence[int]]


def stage_names(model: nn.Module) -> List[str]:
    """Names of the residual stages: ``model.stages()`` if present, else ``layer1, layer2, ...``
    (empty when there are neither)."""
    if hasattr(model, "stages"):
        return [name for name, _ in model.stages()]
    names, i = [], 1
    while isinstance(getattr(model, f"layer{i}", None), nn.Module):
        names.append(f"layer{i}")
        i += 1
    return names


def _feature_stage_neurons(model: nn.Module, calls: Dict) -> List[str]:
    """For a model without residual stages (e.g. a VGG after ``zoo.cifar_student``): the last
    neuron, in call order, registered before each stage end listed in ``model.feature_info``
    after the stem (for a VGG: the last neuron before each pool)."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    names = []
    for row in (getattr(model, "feature_info", None) or [])[1:]:
        end = order.get(row["module"])
        before = [n for n in calls if end is not None and order[n] < end]
        if before:
            names.append(max(before, key=lambda n: calls[n][0]))
    if not names:
        raise TypeError(
            f"cannot find the stages of {type(model).__name__}: it has no stages() method, no "
            "layer1, layer2, ... attributes and no feature_info; pass where=[module names] or "
            "where='all' to patch()")
    return names


def staa_neurons(model: nn.Module) -> Dict[str, STAANeuron]:
    """``{name: wrapper}`` for every STAA-wrapped neuron of ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, STAANeuron)}


def _as_input(model: nn.Module, sample: Sample) -> torch.Tensor:
    if isinstance(sample, torch.Tensor):
        if sample.dim() != 5:
            raise ValueError(f"sample must be a [T, B, C, H, W] input or a (C, H, W) shape, got "
                             f"a tensor of shape {tuple(sample.shape)}")
        return sample
    if len(sample) != 3:
        raise ValueError(f"sample must be a [T, B, C, H, W] input or a (C, H, W) shape, got "
                         f"{tuple(sample)}")
    ref = next(model.parameters(), torch.zeros(()))
    return torch.zeros(1, 1, *sample, device=ref.device, dtype=ref.dtype)


def probe(model: nn.Module, sample: Sample) -> Dict[str, Tuple[int, Tuple[int, ...]]]:
    """Run one forward (eval mode, no gradients; the model is reset and its mode restored) and
    return ``{neuron name: (call order, input shape)}`` for every spiking neuron that ran,
    measured with forward hooks. Neurons inside STAA wrappers are left out.

    Raises ``ValueError`` for a neuron that ran more than once (a shared module)."""
    inside = tuple(n + "." for n in staa_neurons(model))
    neurons = {n: m for n, m in model.named_modules()
               if sj.is_spiking_neuron(m) and not n.startswith(inside)}
    calls: Dict[str, List] = {}

    def hook(name):
        def record(_module, inputs, _output):
            calls.setdefault(name, []).append(tuple(inputs[0].shape))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in neurons.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(_as_input(model, sample))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
        sj.reset(model)
    shared = [n for n, shapes in calls.items() if len(shapes) > 1]
    if shared:
        raise ValueError(f"neurons {shared} run more than once per forward (shared modules); "
                         "STAA cannot wrap a shared neuron: give each layer its own neuron")
    return {n: (i, shapes[0]) for i, (n, shapes) in enumerate(calls.items())}


def _last_neuron_in(container: str, calls: Dict) -> Optional[str]:
    prefix = container + "."
    inside = [n for n in calls if n == container or n.startswith(prefix)]
    return max(inside, key=lambda n: calls[n][0]) if inside else None


def _resolve(model: nn.Module, where, calls: Dict) -> List[str]:
    if isinstance(where, str):
        if where == "all":
            names = [n for n in calls if len(calls[n][1]) == 5]
            if not names:
                raise ValueError("where='all': no spiking neuron with a [T, B, C, H, W] input ran "
                                 "in the probe forward (already patched, or a single-step model?)")
            return names
        if where != "stage_last":
            raise ValueError(f"where must be 'stage_last', 'all' or a list of module names, got "
                             f"{where!r}")
        containers = stage_names(model) or _feature_stage_neurons(model, calls)
    else:
        containers = list(where)
    modules = dict(model.named_modules())
    wrapped = tuple(staa_neurons(model))
    names = []
    for c in containers:
        if c not in modules or c == "":
            raise KeyError(f"patch(): no module named {c!r} in {type(model).__name__}; "
                           f"top-level children are {[n for n, _ in model.named_children()]}")
        if any(c == w or c.startswith(w + ".") for w in wrapped):
            raise ValueError(f"patch(): {c!r} is already wrapped by STAA; call staa.unpatch() "
                             "first or choose other where= names")
        last = _last_neuron_in(c, calls)
        if last is None:
            raise ValueError(f"patch(): no unwrapped spiking neuron of {c!r} ran in the probe "
                             "forward; name a module that contains one")
        if len(calls[last][1]) != 5:
            raise ValueError(f"patch(): neuron {last!r} gets input {calls[last][1]}; STAA needs "
                             "[T, B, C, H, W] feature maps (a multi-step conv layer's neuron)")
        names.append(last)
    return list(dict.fromkeys(names))


def patch(model: nn.Module, sample: Sample, where: Union[str, Sequence[str]] = "stage_last",
          time_steps: int = 4, reduction: int = 4, beta: float = 0.1, pe: bool = True,
          gc: bool = True, alif: bool = True, sa: bool = True, tsrd: bool = True,
          sa_kernel: int = 3, norm: bool = True, gc_gate: str = "residual",
          tsrd_unit: str = "sample_step", alif_maps: str = "channel",
          neuron: Optional[Dict] = None) -> nn.Module:
    """Wrap chosen spiking neurons of ``model`` in :class:`STAANeuron`, in place; returns it.

    The wrapper takes the neuron's place (same attribute name), so every other parameter and
    buffer keeps its ``state_dict`` key; the wrapper's own keys sit under the neuron's name.

    Args:
        model: a multi-step SpikingJelly model (``[T, B, ...]``): a registered backbone of
            :mod:`sj_distill.models`, or a zoo model after :func:`sj_distill.zoo.cifar_student`.
        sample: an input ``[T, B, C, H, W]`` or its ``(C, H, W)``; one probe forward measures
            each neuron's input channels and map size (and the order neurons run in).
        where: ``"stage_last"`` (default: the last neuron to run in every residual stage,
            ``model.stages()`` or ``layer1, layer2, ...``; for a model without those, e.g. a
            zoo VGG after ``cifar_student``, the last neuron before each stage end that
            ``feature_info`` lists after the stem, i.e. before each pool), ``"all"`` (every neuron fed
            ``[T, B, C, H, W]``), or a list of module names: a neuron (``"layer2.0.sn1"``) or a
            module containing neurons, of which the last to run is wrapped (``"layer3"``).
        time_steps, reduction, beta, pe, gc, alif, sa, tsrd, sa_kernel, norm, gc_gate,
            tsrd_unit, alif_maps: passed to every :class:`STAANeuron`.
        neuron: overrides for the adaptive LIF (``init_m``, ``init_n``, ``v_threshold``,
            ``surrogate_fn``, ...); by default it copies the replaced neuron.
    """
    sj.check_step_mode(model, "staa.patch")
    calls = probe(model, sample)
    for name in _resolve(model, where, calls):
        target = model.get_submodule(name)
        shape = calls[name][1]
        wrapper = STAANeuron(target, shape[2], shape[3:], time_steps=time_steps,
                             reduction=reduction, beta=beta, pe=pe, gc=gc, alif=alif, sa=sa,
                             tsrd=tsrd, sa_kernel=sa_kernel, norm=norm, gc_gate=gc_gate,
                             tsrd_unit=tsrd_unit, alif_maps=alif_maps, alif_options=neuron)
        ref = next(model.parameters(), None)
        if ref is not None:
            wrapper.to(device=ref.device, dtype=ref.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapper)
    sj.modules_replaced(model)
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Put back every neuron that :func:`patch` wrapped (on the wrapper's device), in place;
    returns ``model``. The STAA parameters are dropped."""
    for name, wrapper in list(staa_neurons(model).items()):
        original = wrapper.original
        ref = next(wrapper.parameters(), None)
        if ref is not None:
            original.to(device=ref.device)
        sj.reset(original)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, original)
    sj.modules_replaced(model)
    return model


def overhead(model: nn.Module, sample: Optional[torch.Tensor] = None) -> Dict:
    """Parameters and MACs that the STAA wrappers of ``model`` add over the neurons they replace.

    MACs are per sample over all T steps (multiplies in convs, in the context sum, in gating
    and in the adaptive-LIF charge; additions, pooling sums and non-linearities count 0; rules
    in ``docs/staa.md``). They need each wrapper's input size: give ``sample``
    (``[T, B, C, H, W]``, run once here in eval mode without gradients, then reset) or run a
    forward pass before calling.

    Returns ``{"params": int, "macs": int, "neurons": {name: {"channels", "input", "params",
    "macs"}}}`` (``input`` is ``(T, C, H, W)``).
    """
    wrappers = staa_neurons(model)
    if not wrappers:
        raise ValueError("overhead(): the model has no STAA neurons; call sj_distill.staa.patch()")
    if sample is not None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(sample)
        finally:
            model.train(was_training)
            sj.reset(model)
    missing = [n for n, w in wrappers.items() if w.last_input is None]
    if missing:
        raise ValueError("overhead() needs the input size of every STAA neuron: pass "
                         "sample=<a [T, B, C, H, W] input> (or run model(x) once before)")
    rows = {n: dict(channels=w.channels, input=w.last_input, params=w.added_params(),
                    macs=w.added_macs(w.last_input))
            for n, w in wrappers.items()}
    return dict(params=sum(r["params"] for r in rows.values()),
                macs=sum(r["macs"] for r in rows.values()), neurons=rows)
