"""Insert STAA blocks into an existing SpikingJelly model, in place, and count what they add."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from .. import sj
from .modules import STAABlock


class AfterModule(nn.Module):
    """``staa(inner(x))``: how a STAA block follows a module that is not an ``nn.Sequential``
    (the module's parameters move under ``inner.``)."""

    def __init__(self, inner: nn.Module, staa: STAABlock):
        super().__init__()
        self.inner, self.staa = inner, staa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.staa(self.inner(x))


def stage_names(model: nn.Module) -> List[str]:
    """Names of the residual stages: ``model.stages()`` if present, else ``layer1, layer2, ...``."""
    if hasattr(model, "stages"):
        return [name for name, _ in model.stages()]
    names, i = [], 1
    while isinstance(getattr(model, f"layer{i}", None), nn.Module):
        names.append(f"layer{i}")
        i += 1
    if not names:
        raise TypeError(
            f"cannot find the residual stages of {type(model).__name__}: it has no stages() "
            "method and no layer1, layer2, ... attributes; pass where=[module names] to patch()")
    return names


def _out_channels(model: nn.Module, name: str, module: nn.Module) -> int:
    for row in getattr(model, "feature_info", []) or []:
        if row.get("module") == name:
            return int(row["num_chs"])
    last = None
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            last = m.num_features
        elif isinstance(m, nn.Conv2d):
            last = m.out_channels
    if last is None:
        raise ValueError(f"cannot tell the output channels of {name!r} (no Conv2d/BatchNorm in "
                         "it); pass channels={name: C} to patch()")
    return last


def patch(model: nn.Module, where: Union[str, Sequence[str]] = "stages", time_steps: int = 4,
          reduction: int = 4, beta: float = 0.1, pe: bool = True, gc: bool = True,
          alif: bool = True, sa: bool = True, tsrd: bool = True, sa_kernel: int = 3,
          neuron: Optional[Dict] = None, channels: Optional[Dict[str, int]] = None) -> nn.Module:
    """Insert a :class:`STAABlock` after each chosen module of ``model``, in place; returns it.

    Args:
        model: a multi-step SpikingJelly model (``[T, B, ...]``): a registered backbone of
            :mod:`sj_distill.models`, or a zoo model after :func:`sj_distill.zoo.cifar_student`.
        where: ``"stages"`` (default: after every residual stage, i.e. ``model.stages()`` or
            ``layer1, layer2, ...``) or a list of module names (``"layer2"``, ``"layer3.1"``).
            An ``nn.Sequential`` target gets the block appended (existing parameter names do
            not change); any other target is wrapped in :class:`AfterModule`.
        time_steps, reduction, beta, pe, gc, alif, sa, tsrd, sa_kernel, neuron: passed to
            every :class:`STAABlock`.
        channels: output channels per target name, for targets where they cannot be read
            from ``feature_info`` or the target's last BatchNorm/Conv2d.
    """
    if isinstance(where, str) and where != "stages":
        raise ValueError(f"where must be 'stages' or a list of module names, got {where!r}")
    names = stage_names(model) if where == "stages" else list(where)
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules or n == ""]
    if missing:
        raise KeyError(f"patch(): no module named {missing} in {type(model).__name__}; "
                       f"top-level children are {[n for n, _ in model.named_children()]}")
    for name in names:
        target = modules[name]
        if isinstance(target, AfterModule) or (isinstance(target, nn.Sequential) and len(target)
                                               and isinstance(target[-1], STAABlock)):
            raise ValueError(f"patch(): {name!r} is already followed by a STAA block; patch a "
                             "fresh model (or choose other where= names)")
        c = (channels or {}).get(name) or _out_channels(model, name, target)
        block = STAABlock(c, time_steps=time_steps, reduction=reduction, beta=beta, pe=pe, gc=gc,
                          alif=alif, sa=sa, tsrd=tsrd, sa_kernel=sa_kernel, neuron=neuron)
        if isinstance(target, nn.Sequential):
            target.append(block)
        else:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, AfterModule(target, block))
    sj.set_step_mode(model, "m")
    return model


def staa_blocks(model: nn.Module) -> Dict[str, STAABlock]:
    """``{name: block}`` for every STAA block in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, STAABlock)}


def overhead(model: nn.Module, sample: Optional[torch.Tensor] = None) -> Dict:
    """Parameters and MACs that the STAA blocks of ``model`` add.

    MACs are per sample over all T steps (multiplies in convs, in the context sum, in gating
    and in the adaptive-LIF charge; additions, pooling sums and non-linearities count 0). They
    need each block's input size: give ``sample`` (``[T, B, ...]``, run once here in eval mode
    without gradients, then reset) or run a forward pass before calling.

    Returns ``{"params": int, "macs": int, "blocks": {name: {"channels", "input", "params",
    "macs"}}}`` (``input`` is ``(T, C, H, W)``).
    """
    blocks = staa_blocks(model)
    if not blocks:
        raise ValueError("overhead(): the model has no STAA blocks; call sj_distill.staa.patch()")
    if sample is not None:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(sample)
        finally:
            model.train(was_training)
            sj.reset(model)
    shapes = {n: b.last_input for n, b in blocks.items() if b.last_input is not None}
    if len(shapes) != len(blocks):
        raise ValueError("overhead() needs the input size of every STAA block: pass "
                         "sample=<a [T, B, ...] input> (or run model(x) once before)")
    rows = {n: dict(channels=b.channels, input=shapes[n],
                    params=sum(p.numel() for p in b.parameters()), macs=b.macs(shapes[n]))
            for n, b in blocks.items()}
    return dict(params=sum(r["params"] for r in rows.values()),
                macs=sum(r["macs"] for r in rows.values()), blocks=rows)
