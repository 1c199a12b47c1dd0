"""Firing rates, synaptic operations and an energy estimate of a multi-step SNN.

Counting convention (as the SNN papers quote it, e.g. Horowitz, ISSCC 2014 numbers for 45 nm):
a conv / linear layer whose input is binary spikes performs one accumulate (AC, 0.9 pJ) per
synapse and *input spike*: ``SOPs = MACs_per_step x T x input_firing_rate``; a layer whose input
is real-valued (the encoding layer of direct-input SNNs) performs full multiply-accumulates
(MAC, 4.6 pJ) at every step: ``MACs = MACs_per_step x T``. BatchNorm, pooling and residual
additions are not counted (BN folds into the preceding conv at inference).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import torch
from torch import nn

from . import sj

E_AC_PJ = 0.9
E_MAC_PJ = 4.6


@dataclass
class SynapseStats:
    macs_per_step: float = 0.0   # per sample
    spike_input: bool = True
    input_rate_sum: float = 0.0  # sum of batch input firing rates
    batches: int = 0


@dataclass
class Profile:
    """Accumulated statistics of :func:`profile_model` (per sample, over all T steps)."""

    T: int
    batch: int = 1  # samples in the forward pass being profiled; set before each forward
    firing: Dict[str, List[float]] = field(default_factory=dict)
    synapses: Dict[str, SynapseStats] = field(default_factory=dict)

    def firing_rates(self) -> Dict[str, float]:
        """Mean spikes per neuron per time step, by neuron layer name."""
        return {k: sum(v) / len(v) for k, v in self.firing.items()}

    def operations(self) -> Dict[str, float]:
        """``sops`` (spike-driven accumulates) and ``macs`` (dense multiply-accumulates) per
        sample, and ``energy_mj`` (millijoules per sample)."""
        sops = macs = 0.0
        for stats in self.synapses.values():
            if stats.batches == 0:
                continue
            if stats.spike_input:
                sops += stats.macs_per_step * self.T * stats.input_rate_sum / stats.batches
            else:
                macs += stats.macs_per_step * self.T
        return {"sops": sops, "macs": macs,
                "energy_mj": (sops * E_AC_PJ + macs * E_MAC_PJ) * 1e-9}


def _macs_per_output(module: nn.Module) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return module.in_channels // module.groups * kh * kw
    return module.in_features


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def attach(model: nn.Module, T: int) -> tuple[Profile, list]:
    """Register hooks collecting statistics into a new :class:`Profile`; returns it and the
    hook handles (remove them when done). Inputs are ``[T,B,...]``: set ``profile.batch = B``
    before each forward (layers may see ``[T,B,...]`` or ``[T*B,...]``)."""
    prof = Profile(T=T)
    handles = []
    for name, module in model.named_modules():
        if sj.is_spiking_neuron(module):
            prof.firing[name] = []
            handles.append(module.register_forward_hook(
                lambda _m, _i, out, name=name: prof.firing[name].append(float(out.float().mean()))))
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            stats = prof.synapses[name] = SynapseStats()

            def hook(mod, inputs, out, stats=stats):
                x = inputs[0]
                stats.macs_per_step = out.numel() / (T * prof.batch) * _macs_per_output(mod)
                stats.spike_input = stats.spike_input and _is_binary(x)
                stats.input_rate_sum += float((x != 0).float().mean())
                stats.batches += 1

            handles.append(module.register_forward_hook(hook))
    return prof, handles


def plot_firing_rates(rates: Dict[str, float], path: str, title: str = "") -> None:
    """Bar chart of firing rate per neuron layer, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(rates)), 4))
    ax.bar(range(len(rates)), list(rates.values()), color="#3a6ea5")
    ax.set_xticks(range(len(rates)))
    ax.set_xticklabels(list(rates), rotation=70, ha="right", fontsize=7)
    ax.set_ylabel("firing rate (spikes / neuron / step)")
    ax.set_title(title or "firing rate per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
