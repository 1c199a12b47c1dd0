"""What a spiking neuron, a BatchNorm, a max-pool and a torch dropout do in each pass of rate-based backprop.

Every record lives for one training step: the spike pass (no autograd, ``[T,B,...]`` or one
step ``[B,...]`` at a time) fills it, the rate pass (autograd, ``[B,...]``) reads it.
Only ``[B,...]``-sized tensors are kept, so memory does not grow with ``T``.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import sj
from ..sync_bn import (global_mean_var, global_moments, is_synchronised, normalise,
                       update_running_stats)
from .eligibility import EligibilityTrace, NeuronDynamics, compute_dtype


def _straight_through(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``value`` forward, the gradient of ``surrogate`` backward."""
    return value + (surrogate - surrogate.detach())


def _check_shape(what: str, recorded: torch.Size, got: torch.Size) -> None:
    if recorded != got:
        raise RuntimeError(
            f"{what}: the rate pass gave shape {tuple(got)} but the spike pass recorded "
            f"{tuple(recorded)}; the model's forward must do the same computation for the "
            "time-mean input [B,...] (single-step mode) as for each time step"
        )


def _initial_state(v, reference: torch.Tensor, v_reset: Optional[float]) -> torch.Tensor:
    """The potential a SpikingJelly neuron starts the sequence from, shaped like ``reference``
    (in the neuron's own state precision, float32 at least: an autocast spike pass feeds
    bfloat16 inputs to neurons that keep a float32 potential)."""
    if isinstance(v, torch.Tensor) and v.shape == reference.shape:
        return v
    fill = v if not isinstance(v, torch.Tensor) else (0.0 if v_reset is None else v_reset)
    return torch.full_like(reference, float(fill), dtype=compute_dtype(reference))


def default_time_chunk(x_seq: torch.Tensor) -> int:
    """Steps per neuron call when ``time_chunk`` is not given: the whole sequence on CUDA (one
    fused kernel call), one step on the CPU (SpikingJelly's CPU kernels keep several
    ``[T, N, ...]`` lists per call, so one step at a time keeps the spike pass's memory flat
    in ``T``)."""
    return x_seq.shape[0] if x_seq.is_cuda else 1


class NeuronRecord:
    """Firing rate and eligibility of one use of a spiking neuron layer in one step.

    ``fused``: the eligibility of a chunk of steps at once or step by step (the reference),
    see :class:`~sj_distill.rate.eligibility.EligibilityTrace`; None takes the class-wide
    :attr:`FUSED` (benchmarks switch it to time the reference)."""

    #: Default of ``fused`` for records built by :func:`sj_distill.rate.enable`'s patches.
    FUSED: bool = True

    def __init__(self, module: nn.Module, fused: Optional[bool] = None):
        fused = self.FUSED if fused is None else fused
        self.trace = EligibilityTrace(NeuronDynamics.from_module(module), fused=fused)
        self.rate: Optional[torch.Tensor] = None
        self.elig: Optional[torch.Tensor] = None
        self.decay_elig: Optional[torch.Tensor] = None
        self.kernel: Optional[str] = None

    def spike_forward(self, module: nn.Module, forward: Callable, x: torch.Tensor,
                      multi_step: bool, time_chunk: Optional[int] = None) -> torch.Tensor:
        """Run SpikingJelly's own ``forward`` (no autograd) and add the steps to the trace.

        Multi-step: ``x`` is ``[T,N,...]``, fed to ``forward`` ``time_chunk`` steps per call
        (None: :func:`default_time_chunk`) on SpikingJelly's fused multi-step kernel
        (:func:`sj_distill.sj.fused_multi_step_kernel`; its name is kept in ``kernel``). The
        neuron keeps its potential between calls, so the spikes are those of one call over
        all ``T``; the post-reset potentials come from SpikingJelly's ``v_seq``. Chunks bound
        the neuron's own temporaries to ``[time_chunk,N,...]``. Single-step: ``x`` is
        ``[N,...]``, one step."""
        if not multi_step:
            v_start = _initial_state(module.v, x, module.v_reset)
            spikes = forward(x)
            self.trace.update(x.unsqueeze(0), v_start, module.v.unsqueeze(0), spikes.unsqueeze(0))
            return spikes
        time_chunk = time_chunk or default_time_chunk(x)
        stored = module.store_v_seq
        module.store_v_seq = True
        spikes = None
        try:
            with sj.fused_multi_step_kernel(module, x) as self.kernel:
                for start in range(0, x.shape[0], time_chunk):
                    x_chunk = x[start:start + time_chunk]
                    v_start = _initial_state(module.v, x_chunk[0], module.v_reset)
                    spike_chunk = forward(x_chunk)
                    v_seq, module.v_seq = module.v_seq, None
                    self.trace.update(x_chunk, v_start, v_seq, spike_chunk)
                    del v_seq
                    if spikes is None:
                        spikes = spike_chunk.new_empty((x.shape[0],) + spike_chunk.shape[1:])
                    spikes[start:start + time_chunk] = spike_chunk
                    del spike_chunk
        finally:
            module.store_v_seq = stored
            module.v_seq = None
        return spikes

    def finish(self) -> None:
        self.rate, self.elig, self.decay_elig = self.trace.result()
        self.trace = None

    def rate_forward(self, module: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
        """Value: the spike-pass firing rate; gradient: ``eligibility * dL/dr`` to ``x`` (and
        ``decay eligibility * dL/dr`` to ParametricLIF's decay)."""
        _check_shape(f"neuron '{name}'", self.rate.shape, x.shape)
        out = _straight_through(self.rate, x * self.elig)
        if self.decay_elig is not None:
            decay = module.w.sigmoid()
            out = out + (decay * self.decay_elig - (decay * self.decay_elig).detach())
        return out


class BatchNormRecord:
    """Spike-pass batch statistics of one use of a BatchNorm layer in one step.

    Spike pass: normalise with the batch statistics over every dimension but channels
    (``T*B, H, W`` for multi-step layers; each step's own ``B, H, W`` for single-step
    models); running statistics are updated once, in :meth:`finish`, from the statistics
    pooled over all steps. Rate pass (Yu et al., NeurIPS 2024, as their public code does
    it): the spike-pass mean ``mu_s`` and variance ``var_s`` give the value *and* the
    normaliser of the gradient; only the mean and variance terms carry the rate batch's
    gradient (``sg`` = stop-gradient)::

        m = mu_s + (m_r - sg(m_r))            m_r = mean of x over (B, H, W)
        v = relu(var_s + (v_r - sg(v_r)))     v_r = mean of (x - m)^2 over (B, H, W)
        y = gamma * (x - m) / sqrt(v + eps) + beta

    A BatchNorm in eval mode inside a training model uses its running statistics in both
    passes (then it is affine). A :class:`sj_distill.sync_bn.SyncBatchNorm` under
    ``torch.distributed`` reduces its moments over all ranks, one collective per layer in each
    pass, so both passes see the global batch's statistics; with ``rate_pass_stats="local"``
    (the public code's behaviour) the spike pass still normalises with the global batch, but
    the rate pass uses this rank's own spike-pass statistics and rate-batch moments."""

    def __init__(self):
        self.chunks: List[Tuple[torch.Tensor, torch.Tensor, int]] = []
        self.local_chunks: List[Tuple[torch.Tensor, torch.Tensor, int]] = []
        self.mean: Optional[torch.Tensor] = None
        self.var: Optional[torch.Tensor] = None
        self.local_mean: Optional[torch.Tensor] = None
        self.local_var: Optional[torch.Tensor] = None

    @staticmethod
    def _local_rate_pass(bn: nn.Module) -> bool:
        return getattr(bn, "rate_pass_stats", "global") == "local"

    @staticmethod
    def uses_batch_stats(bn: nn.modules.batchnorm._BatchNorm) -> bool:
        return bn.training or not bn.track_running_stats

    @staticmethod
    def _reduce_dims(x: torch.Tensor) -> List[int]:
        return [0] + list(range(2, x.dim()))

    @staticmethod
    def _channel_shape(x: torch.Tensor) -> List[int]:
        return [1, -1] + [1] * (x.dim() - 2)

    def spike_forward(self, bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[N,C,...]`` (time already folded into ``N``)."""
        if not self.uses_batch_stats(bn):
            return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                False, 0.0, bn.eps)
        if is_synchronised(bn):  # statistics of the global batch: one collective
            mean, var, count = global_mean_var(x, bn.process_group)
            self.chunks.append((mean, var, count))
            if self._local_rate_pass(bn):
                local_var, local_mean = torch.var_mean(x, self._reduce_dims(x), unbiased=False)
                self.local_chunks.append((local_mean, local_var, x.numel() // x.shape[1]))
            return normalise(bn, x, mean, var)
        # momentum 1 makes torch's own batch norm hand back the batch mean and unbiased
        # variance it normalised with: one pass over x, and the output is bit-identical to
        # the BN's ordinary training forward
        stats_dtype = torch.promote_types(x.dtype, torch.float32)  # fp32 under bf16/fp16 AMP
        mean = x.new_zeros(x.shape[1], dtype=stats_dtype)
        var = x.new_ones(x.shape[1], dtype=stats_dtype)
        y = F.batch_norm(x, mean, var, bn.weight, bn.bias, True, 1.0, bn.eps)
        count = x.numel() // x.shape[1]
        self.chunks.append((mean, var.mul_((count - 1) / count), count))
        return y

    @staticmethod
    def _pool(chunks: List[Tuple[torch.Tensor, torch.Tensor, int]]):
        """``(mean, biased variance, count)`` of the union of the chunks."""
        count = sum(n for _, _, n in chunks)
        mean = sum(m * n for m, _, n in chunks) / count
        var = sum((v + (m - mean) ** 2) * n for m, v, n in chunks) / count
        return mean, var, count

    def finish(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        """Pool the chunks' statistics and update the running statistics once."""
        if not self.chunks:
            return
        self.mean, self.var, count = self._pool(self.chunks)
        if self.local_chunks:
            self.local_mean, self.local_var, _ = self._pool(self.local_chunks)
        self.chunks, self.local_chunks = [], []
        if bn.training and bn.track_running_stats:
            update_running_stats(bn, self.mean, self.var, count)

    def rate_forward(self, bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor,
                     name: str) -> torch.Tensor:
        """``x``: rate tensor ``[B,C,...]`` with autograd; computed in float32 (or float64)
        whatever the autocast dtype of ``x``."""
        x = x.to(torch.promote_types(x.dtype, torch.float32))
        shape = self._channel_shape(x)
        if self.uses_batch_stats(bn):
            _check_shape(f"BatchNorm '{name}'", self.mean.shape, x.shape[1:2])
            local = is_synchronised(bn) and self._local_rate_pass(bn)
            spike_mean, spike_var = (self.local_mean, self.local_var) if local else \
                (self.mean, self.var)
            if is_synchronised(bn) and not local:  # the global rate batch's moments, one collective
                rate_mean, rate_mean_sq, _ = global_moments(x, bn.process_group)
                rate_mean, rate_mean_sq = rate_mean.view(shape), rate_mean_sq.view(shape)
                mean = _straight_through(spike_mean.view(shape), rate_mean)
                rate_var = rate_mean_sq - 2 * mean * rate_mean + mean.square()  # E[(x - m)^2]
            else:
                dims = self._reduce_dims(x)
                mean = _straight_through(spike_mean.view(shape), x.mean(dims, keepdim=True))
                rate_var = (x - mean).square().mean(dims, keepdim=True)
            var = F.relu(_straight_through(spike_var.view(shape), rate_var))
            y = (x - mean) / torch.sqrt(var + bn.eps)
        else:
            y = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps)
        if bn.affine:
            y = y * bn.weight.view(shape) + bn.bias.view(shape)
        return y


class MaxPoolRecord:
    """Time-mean of one max-pool's spike-pass output (the ``max_pool="spikes"`` rule).

    Max-pooling does not commute with the time-mean, so the rate pass returns the recorded
    time-mean of the pooled spikes (the SNN's own value) with the gradient of max-pooling the
    rate map (it goes to the most active input of each window). The default ``"rate"`` rule
    needs no record: the rate pass max-pools the rate map, value and gradient."""

    def __init__(self):
        self.total: Optional[torch.Tensor] = None
        self.steps = 0

    def add(self, pooled_sum: torch.Tensor, steps: int) -> None:
        self.total = pooled_sum if self.total is None else self.total + pooled_sum
        self.steps += steps

    def rate_forward(self, forward: Callable, x: torch.Tensor, name: str) -> torch.Tensor:
        pooled = forward(x)
        _check_shape(f"max-pool '{name}'", self.total.shape, pooled.shape)
        return _straight_through(self.total / self.steps, pooled)


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
