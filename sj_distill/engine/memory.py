"""A lower bound of a run's training memory, checked before the run folder is written, so that
``data.T=1000`` or a huge batch stops with one line saying what it would take instead of
training for minutes into an out-of-memory traceback.

The bound counts the outputs of the student's convolution, linear and BatchNorm layers (the
next operation saves them for the backward pass), per sample and time step, measured by one
forward pass of a batch of one at one time step. BPTT keeps all of them for all ``T`` steps.
Rate-based backprop keeps them once, at batch ``B`` (its graph), but its spike pass runs the
SpikingJelly multi-step layers on the whole sequence, so the largest layer's input and output
exist for all ``T`` steps at once; the bound is the larger of the two. (Measured once on the
``tiny`` recipe at T=1000, batch 1000: this bound says 8 GB; the rate-BP run was killed by the
out-of-memory killer at 17 GB.) Weights, optimiser state,
the teacher, the spiking layers' own state and framework overhead come on top, so the real
need is larger.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import nn

from .. import sj
from ..config import RecipeError

#: Layers whose outputs the backward pass keeps.
KEPT = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)
#: Largest side of the probe input; larger images are probed at this size and scaled by area.
PROBE_SIZE = 224


@torch.no_grad()
def kept_values_per_sample_step(model: nn.Module, in_chans: int,
                                img_size: int) -> Optional[Tuple[int, int]]:
    """``(total, largest)``: the values (numbers) of every conv / linear / BatchNorm output, and
    of the largest one, for one sample at one time step of ``[1, 1, in_chans, img_size,
    img_size]`` input; ``None`` when the model does not take such a probe (e.g. a fixed input
    size above :data:`PROBE_SIZE`)."""
    size = min(img_size, PROBE_SIZE)
    counted = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: counted.append(out.numel()))
             for m in model.modules() if isinstance(m, KEPT)]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 1, in_chans, size, size))
    except (RuntimeError, ValueError, AssertionError):
        return None
    finally:
        for hook in hooks:
            hook.remove()
        sj.reset(model)
        model.train(was_training)
    scale = (img_size / size) ** 2
    return round(sum(counted) * scale), round(max(counted, default=0) * scale)


def lower_bound_bytes(values: Tuple[int, int], recipe: dict, world_size: int = 1) -> int:
    """Bytes a training step keeps at least, per process, from ``values = (total, largest)``
    per sample and step (:func:`kept_values_per_sample_step`): BPTT ``total x B x T x w``;
    rate-BP ``max(total x B x w, 2 x largest x B x T x 4)`` (graph, spike pass); ``B`` the batch
    per process, ``w`` the bytes per value (2 under AMP, else 4)."""
    total, largest = values
    batch, T = recipe["data"]["batch_size"] // max(world_size, 1), recipe["data"]["T"]
    width = 4 if recipe["train"]["amp"] == "none" else 2
    if recipe["train"]["method"] == "bptt":
        return total * batch * T * width
    return max(total * batch * width, 2 * largest * batch * T * 4)


def available_bytes(device: torch.device) -> Optional[int]:
    """Free memory of ``device``: the GPU's free memory, or the host's ``MemAvailable``
    (Linux); ``None`` when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


def check_memory(recipe: dict, model: nn.Module, in_chans: int, device: torch.device,
                 world_size: int = 1) -> None:
    """:class:`RecipeError` naming ``data.T``, ``data.batch_size`` and ``data.img_size`` when
    the lower bound exceeds the free memory of ``device``; nothing when either is unknown."""
    data = recipe["data"]
    values = kept_values_per_sample_step(model, in_chans, data["img_size"])
    free = available_bytes(device)
    if values is None or free is None:
        return
    need = lower_bound_bytes(values, recipe, world_size)
    if need <= free:
        return
    method = recipe["train"]["method"]
    advice = ", or use train.method=rate (its graph does not grow with T)" \
        if method == "bptt" else ""
    raise RecipeError(
        f"data.T={data['T']}, data.batch_size={data['batch_size']}, data.img_size="
        f"{data['img_size']}: training ({method}) keeps at least {need / 2**30:.1f} GiB per "
        f"process ({values[0]} values per sample and time step in conv/linear/BatchNorm "
        f"outputs), and {device.type} has {free / 2**30:.1f} GiB free: lower data.batch_size "
        f"or data.T{advice}")
