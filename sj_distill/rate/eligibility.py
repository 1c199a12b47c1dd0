"""Charge equations and eligibility recurrences of SpikingJelly neurons (rate-based backprop).

Notation, per neuron and time step ``t = 1..T`` (all elementwise):

* ``h_t``: pre-reset membrane potential, ``v_t``: post-reset potential (``v_0``: the state
  before the sequence), ``s_t = Heaviside(h_t - theta)``, ``sg_t = g'(h_t - theta)`` the
  surrogate derivative.
* charge ``h_t = lam * v_{t-1} + c * x_t + const`` with leak ``lam`` and input gain ``c``:
  IF ``lam = 1, c = 1``; LIF with ``decay_input=False`` ``lam = 1 - 1/tau, c = 1``; LIF with
  ``decay_input=True`` ``lam = 1 - 1/tau, c = 1/tau``; ParametricLIF the same with
  ``1/tau = sigmoid(w)``.
* reset factor ``rho_t = d v_t / d h_t``: soft detached ``1``; soft not detached
  ``1 - theta * sg_t``; hard detached ``1 - s_t``; hard not detached
  ``1 - s_t + (v_reset - h_t) * sg_t``.

Rate-based backprop feeds every layer the time-mean input ``xbar`` and asks for
``d r / d xbar`` with ``r = mean_t s_t``, every ``x_t`` moving with ``xbar``:
``kappa_t = d h_t / d xbar = c + lam * rho_{t-1} * kappa_{t-1}`` (``kappa_1 = c``) and the
eligibility ``e = (1/T) sum_t sg_t * kappa_t``. For ParametricLIF the decay ``k = sigmoid(w)``
also gets one: ``mu_t = d h_t / d k = dh_t/dk|_direct + lam * rho_{t-1} * mu_{t-1}`` with
``dh_t/dk|_direct = x_t - (v_{t-1} - v_r)`` (decay_input) or ``-(v_{t-1} - v_r)``, and
``e_k = (1/T) sum_t sg_t * mu_t``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import torch
from torch import nn
from spikingjelly.activation_based import neuron

from .surrogate_grad import surrogate_derivative

#: Neuron classes with a derived eligibility recurrence (exact types: a subclass may change
#: the dynamics, so it is refused rather than trained wrong).
SUPPORTED_NEURONS = (neuron.IFNode, neuron.LIFNode, neuron.ParametricLIFNode)


@dataclass
class NeuronDynamics:
    """The parameters of one neuron layer that its charge and eligibility need.

    ``decay`` is ``1/tau`` (0 for IF; a live tensor ``sigmoid(w)`` for ParametricLIF, taken
    detached here). ``v_reset`` is None for soft reset."""

    kind: str
    decay: Union[float, torch.Tensor]
    decay_input: bool
    v_threshold: float
    v_reset: Optional[float]
    detach_reset: bool
    surrogate_function: nn.Module

    @classmethod
    def from_module(cls, module: nn.Module) -> "NeuronDynamics":
        if type(module) is neuron.IFNode:
            kind, decay, decay_input = "if", 0.0, False
        elif type(module) is neuron.LIFNode:
            kind, decay, decay_input = "lif", 1.0 / float(module.tau), bool(module.decay_input)
        elif type(module) is neuron.ParametricLIFNode:
            kind, decay, decay_input = "plif", module.w.detach().sigmoid(), bool(module.decay_input)
        else:
            raise TypeError(f"no eligibility recurrence for {type(module).__name__}")
        return cls(kind, decay, decay_input, float(module.v_threshold), module.v_reset,
                   bool(module.detach_reset), module.surrogate_function)

    @property
    def leak(self) -> Union[float, torch.Tensor]:
        """``lam``: factor of ``v_{t-1}`` in the charge."""
        return 1.0 - self.decay if self.kind != "if" else 1.0

    @property
    def input_gain(self) -> Union[float, torch.Tensor]:
        """``c``: factor of ``x_t`` in the charge."""
        return self.decay if self.decay_input else 1.0

    @property
    def rest(self) -> float:
        """The potential the leak pulls towards (``v_reset`` for hard reset, else 0)."""
        return 0.0 if self.v_reset is None else float(self.v_reset)

    def charge(self, v_prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Pre-reset potential ``h`` from the previous post-reset potential and the input."""
        if self.kind == "if":
            return v_prev + x
        if self.decay_input:
            return v_prev + (x - (v_prev - self.rest)) * self.decay
        return v_prev - (v_prev - self.rest) * self.decay + x

    def charge_decay_derivative(self, v_prev: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``d h / d decay`` at fixed ``v_prev`` (ParametricLIF's ``k = sigmoid(w)``)."""
        return (x if self.decay_input else 0.0) - (v_prev - self.rest)

    def reset_factor(self, h: torch.Tensor, spike: torch.Tensor,
                     sg: torch.Tensor) -> Union[float, torch.Tensor]:
        """``rho = d v / d h`` through the reset (the number ``1.0`` for a detached soft
        reset, so that ``kappa`` stays one number for every neuron)."""
        if self.v_reset is None:
            return 1.0 if self.detach_reset else 1.0 - self.v_threshold * sg
        if self.detach_reset:
            return 1.0 - spike
        return 1.0 - spike + (self.v_reset - h) * sg


def _add_product(total: torch.Tensor, a: torch.Tensor, b: Union[float, torch.Tensor]) -> None:
    """``total += a * b`` in place, one operation (``b``: a tensor or a number)."""
    if isinstance(b, torch.Tensor):
        total.addcmul_(a, b)
    else:
        total.add_(a, alpha=b)


def _accumulate(total: Optional[torch.Tensor], a: torch.Tensor,
                owned: bool = True) -> torch.Tensor:
    """``total + a``, in place into ``total``; ``a`` itself (``owned``) or a copy of it (``a``
    a view of the caller's data) when ``total`` is None."""
    if total is None:
        return a if owned else a.clone()
    return total.add_(a)


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype the trace works in: float64 stays float64, everything else (float32 and the
    half-precision potentials or spikes of an autocast spike pass) is float32."""
    return torch.promote_types(tensor.dtype, torch.float32)


class EligibilityTrace:
    """Running firing rate and eligibility of one neuron layer, fed chunk by chunk in time.

    A multi-step layer gives chunks of ``time_chunk`` steps, a single-step layer ``T`` chunks
    of one step; only ``[N, ...]``-sized state is kept between chunks. Everything is kept in
    float32 (float64 for float64 inputs), whatever the precision of the spike pass.

    ``fused=True`` (the default) treats a chunk as a whole (:meth:`_update_fused`);
    ``fused=False`` is the step-by-step reference (:meth:`_step`), kept for the tests."""

    def __init__(self, dynamics: NeuronDynamics, fused: bool = True):
        self.dynamics = dynamics
        self.fused = fused
        self.steps = 0
        self.spike_sum: Optional[torch.Tensor] = None
        self.elig_sum: Optional[torch.Tensor] = None
        self.decay_elig_sum: Optional[torch.Tensor] = None
        self.kappa_v: Union[float, torch.Tensor] = 0.0  # d v_{t-1} / d xbar
        self.mu_v: Union[float, torch.Tensor] = 0.0  # d v_{t-1} / d decay (ParametricLIF)

    def update(self, x_seq: torch.Tensor, v_start: torch.Tensor, v_seq: torch.Tensor,
               spike_seq: torch.Tensor) -> None:
        """Add steps. ``x_seq``: inputs ``[t, N, ...]``; ``v_start``: post-reset potential
        before the first of them ``[N, ...]``; ``v_seq``: post-reset potentials after each step
        and ``spike_seq``: spikes, both ``[t, N, ...]`` (SpikingJelly's ``v_seq`` and output).
        None of them is modified. Autocast is switched off inside (the trace stays float32)."""
        with torch.autocast(v_seq.device.type, enabled=False):
            if self.fused:
                self._update_fused(x_seq, v_start, v_seq, spike_seq)
                return
            for t in range(spike_seq.shape[0]):
                self._step(x_seq[t], v_start if t == 0 else v_seq[t - 1], v_seq[t],
                           spike_seq[t])

    def _step(self, x: torch.Tensor, v_prev: torch.Tensor, v: torch.Tensor,
              spike: torch.Tensor) -> None:
        """Reference: one step, every argument ``[N, ...]``: input, post-reset potential
        before and after it, spike. About ten elementwise ``[N, ...]`` operations."""
        dyn = self.dynamics
        dtype = compute_dtype(v)
        x, v_prev, v, spike = (a.to(dtype) for a in (x, v_prev, v, spike))
        if dyn.v_reset is None:  # soft reset: v_t = h_t - theta * s_t
            h = v + dyn.v_threshold * spike
        else:
            h = dyn.charge(v_prev, x)
        sg = surrogate_derivative(dyn.surrogate_function, h - dyn.v_threshold)
        lam = dyn.leak
        kappa_h = dyn.input_gain + lam * self.kappa_v
        weighted = sg * kappa_h
        self.elig_sum = weighted if self.elig_sum is None else self.elig_sum.add_(weighted)
        rho = dyn.reset_factor(h, spike, sg)
        self.kappa_v = rho * kappa_h
        if dyn.kind == "plif":
            mu_h = dyn.charge_decay_derivative(v_prev, x) + lam * self.mu_v
            weighted = sg * mu_h
            self.decay_elig_sum = (weighted if self.decay_elig_sum is None
                                   else self.decay_elig_sum.add_(weighted))
            self.mu_v = rho * mu_h
        self.spike_sum = spike.clone() if self.spike_sum is None else self.spike_sum.add_(spike)
        self.steps += 1

    def _update_fused(self, x_seq: torch.Tensor, v_start: torch.Tensor, v_seq: torch.Tensor,
                      spike_seq: torch.Tensor) -> None:
        """A chunk of ``t`` steps at once: ``h``, ``g'(h - theta)`` and ``rho`` come from a few
        elementwise operations over the whole ``[t, N, ...]`` chunk; what is left over time is
        the ``kappa`` recurrence.

        * Soft detached reset (``rho = 1``, the paper's setting): ``kappa_t`` is one number
          per step, ``kappa_t = c * (1 + lam + ... + lam^(t-1)) + lam^t * kappa_0`` (a
          geometric series), so the chunk's eligibility is one weighted sum over time,
          ``sum_t kappa_t * g'_t`` (a matrix-vector product), with no loop over tensors.
        * Other resets: ``kappa`` differs per neuron; the loop over the chunk's steps is left
          with four elementwise operations per step (the reference does about ten).

        Temporaries: a few ``[t, N, ...]`` tensors (the reference: ``[N, ...]`` ones)."""
        dyn = self.dynamics
        steps = spike_seq.shape[0]
        dtype = compute_dtype(v_seq)
        spikes = spike_seq.to(dtype)
        needs_prev = dyn.v_reset is not None or dyn.kind == "plif"
        v_prev = (torch.cat([v_start.to(dtype).unsqueeze(0), v_seq[:-1].to(dtype)])
                  if needs_prev else None)
        if dyn.v_reset is None:
            h = torch.add(v_seq.to(dtype), spikes, alpha=dyn.v_threshold)
        else:
            h = dyn.charge(v_prev, x_seq.to(dtype))
        sg = surrogate_derivative(dyn.surrogate_function, h - dyn.v_threshold)
        rho = dyn.reset_factor(h, spikes, sg)
        lam, gain = dyn.leak, dyn.input_gain
        if isinstance(rho, float):  # rho = 1 everywhere: kappa_t is the same for all neurons
            kappas = []
            for _ in range(steps):
                self.kappa_v = gain + lam * self.kappa_v
                kappas.append(self.kappa_v)
            if steps == 1:
                elig = sg[0] * kappas[0]
            else:
                weights = torch.stack([torch.as_tensor(k, dtype=dtype, device=sg.device)
                                       for k in kappas])
                elig = torch.tensordot(weights, sg, dims=1)
        else:
            elig = torch.zeros_like(sg[0])
            for t in range(steps):
                kappa_h = lam * self.kappa_v + gain
                _add_product(elig, sg[t], kappa_h)
                self.kappa_v = rho[t] * kappa_h
        self.elig_sum = _accumulate(self.elig_sum, elig)
        if dyn.kind == "plif":
            direct = dyn.charge_decay_derivative(v_prev, x_seq.to(dtype))
            decay_elig = torch.zeros_like(sg[0])
            for t in range(steps):
                mu_h = lam * self.mu_v + direct[t]
                _add_product(decay_elig, sg[t], mu_h)
                self.mu_v = (rho if isinstance(rho, float) else rho[t]) * mu_h
            self.decay_elig_sum = _accumulate(self.decay_elig_sum, decay_elig)
        self.spike_sum = (_accumulate(self.spike_sum, spikes[0], owned=False) if steps == 1
                          else _accumulate(self.spike_sum, spikes.sum(0)))
        self.steps += steps

    def result(self) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """``(rate, eligibility, decay eligibility or None)``, each ``[N, ...]``."""
        T = self.steps
        decay_elig = None if self.decay_elig_sum is None else self.decay_elig_sum / T
        return self.spike_sum / T, self.elig_sum / T, decay_elig
