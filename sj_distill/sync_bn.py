"""Synchronised BatchNorm for SpikingJelly models, under BPTT and rate-based backprop.

``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` turns SpikingJelly's multi-step
``layer.BatchNorm2d`` (which folds ``[T, B, C, H, W]`` into ``[T*B, C, H, W]``) into a plain
``nn.SyncBatchNorm`` that no longer knows about the time axis, and torch's SyncBatchNorm runs
only on accelerators. :func:`convert` replaces every BatchNorm of a model by
:class:`SyncBatchNorm`, which keeps the step mode, the parameter and buffer names (checkpoints
load both ways), and works on any ``torch.distributed`` backend (gloo on CPU, NCCL on CUDA).

In training, each layer reduces its per-channel moments over all ranks in **one collective
per layer and call**: the stacked ``[count*mean, count*E[x^2], count]`` (float64) is summed
with a differentiable ``all_reduce``, so the forward uses the statistics of the global batch
and the backward carries every rank's share of the mean and variance terms, as one process
on the concatenated batch would. With one process (or outside ``torch.distributed``) it is an
ordinary BatchNorm. Rate-based backprop (:mod:`sj_distill.rate`) uses the same reduction:
once per layer in the spike pass (no autograd) and once in the rate pass (autograd).
``rate_pass_stats="local"`` gives the public rate-BP code's behaviour instead: the spike pass
is synchronised, the rate pass uses each rank's own statistics (no collective there).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from spikingjelly.activation_based import base

__all__ = ["SyncBatchNorm", "convert", "global_mean_var", "global_moments", "is_synchronised",
           "normalise", "update_running_stats", "RATE_PASS_STATS"]

#: What a synchronised BatchNorm's rate-BP rate pass normalises with.
RATE_PASS_STATS = ("global", "local")


def _world(group) -> int:
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


def global_moments(x: torch.Tensor, group=None) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel ``(mean, E[x^2], count)`` of ``x`` (``[N, C, ...]``) over ``N`` and the
    spatial axes of every rank's ``x``; differentiable (the backward sums every rank's
    gradient of the moments). Reduced in float64, returned in float32 (float64 for a
    float64 ``x``), also under bf16/fp16 autocast."""
    dims = [0] + list(range(2, x.dim()))
    count = x.numel() // x.shape[1]
    local_var, local_mean = torch.var_mean(x, dims, unbiased=False)
    stacked = torch.stack([local_mean.double() * count,
                           (local_var.double() + local_mean.double().square()) * count,
                           torch.full_like(local_mean, count, dtype=torch.float64)])
    if _world(group) > 1:
        from torch.distributed.nn.functional import all_reduce

        stacked = all_reduce(stacked, group=group or dist.group.WORLD)
    total = stacked[2, 0].item()
    dtype = torch.promote_types(x.dtype, torch.float32)
    return (stacked[0] / total).to(dtype), (stacked[1] / total).to(dtype), int(total)


def global_mean_var(x: torch.Tensor, group=None) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel ``(mean, biased variance, count)`` of the global batch (see
    :func:`global_moments`)."""
    mean, mean_sq, count = global_moments(x, group)
    return mean, (mean_sq - mean.square()).clamp_min(0), count


def normalise(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, mean: torch.Tensor,
              var: torch.Tensor) -> torch.Tensor:
    """``x`` (``[N, C, ...]``) normalised with per-channel ``mean`` and ``var`` and ``bn``'s
    affine parameters."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + bn.eps)
    return y * bn.weight.view(shape) + bn.bias.view(shape) if bn.affine else y


@torch.no_grad()
def update_running_stats(bn: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor,
                         var: torch.Tensor, count: int) -> None:
    """Move ``bn``'s running statistics towards ``mean`` and the unbiased ``var`` of ``count``
    values (``var`` is biased), as ``nn.BatchNorm`` does for one training batch."""
    bn.num_batches_tracked.add_(1)
    factor = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
    bn.running_var.mul_(1 - factor).add_(var * count / max(count - 1, 1), alpha=factor)


def is_synchronised(bn: nn.Module) -> bool:
    """True for a :class:`SyncBatchNorm` that reduces over more than one process now."""
    return isinstance(bn, SyncBatchNorm) and _world(bn.process_group) > 1


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm, base.StepModule):
    """BatchNorm over the global batch of all ranks, for ``[N, C, ...]`` (``step_mode='s'``)
    or ``[T, N, C, ...]`` (``step_mode='m'``, time folded into the batch as SpikingJelly's BN
    does). Running statistics are updated with the global batch's mean and unbiased
    variance, identically on every rank. Eval mode, or a single process: plain BatchNorm.
    ``rate_pass_stats`` matters only under rate-based backprop: ``"global"`` (default) the
    rate pass uses the global batch too; ``"local"`` each rank's own spike-pass statistics and
    rate-batch moments (what the public rate-BP code's hooks do on torch's SyncBatchNorm)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, step_mode: str = "s",
                 process_group=None, rate_pass_stats: str = "global"):
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        if rate_pass_stats not in RATE_PASS_STATS:
            raise ValueError(f"rate_pass_stats must be 'global' (the global batch in both "
                             f"rate-BP passes) or 'local' (each rank's own statistics in the rate "
                             f"pass, as the public rate-BP code), got {rate_pass_stats!r}")
        self.step_mode = step_mode
        self.process_group = process_group
        self.rate_pass_stats = rate_pass_stats

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"SyncBatchNorm expects [N, C, ...], got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return super().extra_repr() + f", step_mode={self.step_mode}, " \
            f"rate_pass_stats={self.rate_pass_stats}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.step_mode == "m":
            return self._normalise(x.flatten(0, 1)).view(x.shape)
        return self._normalise(x)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training or not self.track_running_stats) or _world(self.process_group) == 1:
            return super().forward(x)
        mean, var, count = global_mean_var(x, self.process_group)
        if self.training and self.track_running_stats:
            update_running_stats(self, mean.detach(), var.detach(), count)
        return normalise(self, x, mean, var)


def convert(model: nn.Module, process_group=None, rate_pass_stats: str = "global") -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` of ``model`` (SpikingJelly's ``layer.BatchNorm*``
    included, keeping its step mode; BNs inside ``SeqToANNContainer`` stay single-step there)
    by :class:`SyncBatchNorm` with the same parameters and buffers; returns the model (a
    BatchNorm passed as ``model`` comes back converted). ``rate_pass_stats``: see
    :class:`SyncBatchNorm`."""
    if isinstance(model, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        bn = SyncBatchNorm(model.num_features, model.eps, model.momentum, model.affine,
                           model.track_running_stats, getattr(model, "step_mode", "s"),
                           process_group, rate_pass_stats)
        floats = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
        if floats:
            bn.to(device=floats[0].device, dtype=floats[0].dtype)
        bn.load_state_dict(model.state_dict())
        bn.requires_grad_(any(p.requires_grad for p in model.parameters()))
        return bn.train(model.training)
    for name, child in model.named_children():
        converted = convert(child, process_group, rate_pass_stats)
        if converted is not child:
            setattr(model, name, converted)
    return model

