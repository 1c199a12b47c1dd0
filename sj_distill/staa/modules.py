"""STAA building blocks (Zhang, Yu et al., "STAA-SNN", CVPR 2025), all multi-step.

Every module takes and returns ``[T, B, C, H, W]`` (T time steps, B samples, C channels).
:class:`STAANeuron` is the aggregator: it takes a spiking neuron's place in a model and chains
position encoding and GC attention (on the neuron's real-valued input current), the adaptive
LIF (the neuron itself, replaced) and step attention with time-step random dropout (on the
spikes). The paper publishes no code; the exact shapes are our choices, documented and
measured in ``docs/staa.md``. Every module carries ``supports_rate_bp = False``: rate-based
backprop runs one time-averaged pass and cannot train modules that mix or index time steps.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch
from torch import nn
from spikingjelly.activation_based import neuron as sj_neuron

from .adaptive_lif import AdaptiveLIF

PARTS = ("pe", "gc", "alif", "sa", "tsrd")
GC_GATES = ("residual", "plain")
TSRD_UNITS = ("sample_step", "forward")


def _check_input(x: torch.Tensor, channels: int, who: str) -> None:
    if x.dim() != 5 or x.shape[2] != channels:
        raise ValueError(f"{who} expects [T, B, {channels}, H, W], got {tuple(x.shape)}")


def _hidden(channels: int, reduction: int) -> int:
    """Bottleneck width ``max(C // r, 2)`` (a LayerNorm over one unit would output 0)."""
    if reduction < 1:
        raise ValueError(f"reduction must be >= 1, got {reduction}")
    return max(channels // reduction, 2)


class TemporalPositionEncoding(nn.Module):
    """Learnable temporal position encoding: ``y_t = x_t + P[t]``, ``P`` of shape
    ``[time_steps, C]`` (one vector per time step, broadcast over B, H, W).

    Inputs with fewer than ``time_steps`` steps use the first T rows; more raise an error.
    """

    supports_rate_bp = False

    def __init__(self, channels: int, time_steps: int):
        super().__init__()
        if time_steps < 1:
            raise ValueError(f"time_steps must be >= 1, got {time_steps}")
        self.channels, self.time_steps = channels, time_steps
        self.weight = nn.Parameter(torch.empty(time_steps, channels))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.channels, "TemporalPositionEncoding")
        if x.shape[0] > self.time_steps:
            raise ValueError(
                f"input has T={x.shape[0]} time steps but the position encoding was built for "
                f"{self.time_steps}; build STAA with time_steps >= {x.shape[0]}")
        return x + self.weight[: x.shape[0], None, :, None, None]


class GCBlock(nn.Module):
    """Global-context attention with a sigmoid gate (three 1x1 convs, reduction ``r``).

    For one sample, over all ``P = T*H*W`` spatio-temporal positions:
      ``a = softmax_p(W_k x_p)`` (``key``: 1x1 conv C->1, no bias),
      ``c = sum_p a_p x_p`` (global context, ``[C]``),
      ``g = sigmoid(W_u relu(LN(W_d c + b_d)) + b_u)`` (``down``: C->C/r, ``up``: C/r->C,
      ``LN``: LayerNorm over the C/r units as in GCNet; ``norm=False`` leaves it out),
      ``y = x + x * g`` (``gate="residual"``) or ``y = x * g`` (``gate="plain"``).
    """

    supports_rate_bp = False

    def __init__(self, channels: int, reduction: int = 4, norm: bool = True,
                 gate: str = "residual"):
        super().__init__()
        if gate not in GC_GATES:
            raise ValueError(f"gc_gate must be one of {GC_GATES}, got {gate!r}")
        hidden = _hidden(channels, reduction)
        self.channels, self.hidden, self.gate_kind = channels, hidden, gate
        self.key = nn.Conv2d(channels, 1, 1, bias=False)
        self.down = nn.Conv2d(channels, hidden, 1)
        self.norm = nn.LayerNorm([hidden, 1, 1]) if norm else None
        self.up = nn.Conv2d(hidden, channels, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel gates ``[B, C]`` in (0, 1) for ``x`` ``[T, B, C, H, W]``."""
        _check_input(x, self.channels, "GCBlock")
        t, b, c, h, w = x.shape
        logits = self.key(x.flatten(0, 1)).view(t, b, 1, h * w)
        attn = logits.permute(1, 2, 0, 3).reshape(b, 1, t * h * w).softmax(-1)
        values = x.permute(1, 2, 0, 3, 4).reshape(b, c, t * h * w)
        context = (values * attn).sum(-1)[:, :, None, None]
        hidden = self.down(context)
        if self.norm is not None:
            hidden = self.norm(hidden)
        return torch.sigmoid(self.up(torch.relu(hidden))).view(b, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = x * self.gate(x)[None, :, :, None, None]
        return x + gated if self.gate_kind == "residual" else gated

    def macs(self, shape: Tuple[int, ...]) -> int:
        """MACs for one sample of ``(T, C, H, W)``: key conv, context sum, gating (3 per
        element), the two bottleneck convs on the context vector and the LayerNorm (3 per
        unit: square, scale, affine)."""
        t, c, h, w = shape
        norm = 3 * self.hidden if self.norm is not None else 0
        return 3 * t * c * h * w + 2 * c * self.hidden + norm


class StepAttention(nn.Module):
    """One gate in (0, 1) per time step and sample, computed from all time steps.

    ``z = mean_{H,W} x`` -> ``[B, C, T]``; ``g = sigmoid(conv2(relu(LN(conv1(z)))))`` ->
    ``[B, 1, T]`` with ``conv1``: Conv1d C->C/r and ``conv2``: Conv1d C/r->1, both with kernel
    ``kernel`` along time (zero padding, so any T works), ``LN``: LayerNorm over the C/r units
    of each step (``norm=False`` leaves it out); ``y_t = x_t * g_t``.
    """

    supports_rate_bp = False

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 3, norm: bool = True):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"sa_kernel must be a positive odd number, got {kernel}")
        hidden = _hidden(channels, reduction)
        self.channels, self.hidden, self.kernel = channels, hidden, kernel
        self.conv1 = nn.Conv1d(channels, hidden, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(hidden) if norm else None
        self.conv2 = nn.Conv1d(hidden, 1, kernel, padding=kernel // 2)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step gates ``[T, B, 1, 1, 1]`` in (0, 1) for ``x`` ``[T, B, C, H, W]``."""
        _check_input(x, self.channels, "StepAttention")
        hidden = self.conv1(x.mean(dim=(3, 4)).permute(1, 2, 0))
        if self.norm is not None:
            hidden = self.norm(hidden.transpose(1, 2)).transpose(1, 2)
        g = torch.sigmoid(self.conv2(torch.relu(hidden)))
        return g.permute(2, 0, 1)[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gates(x)

    def macs(self, shape: Tuple[int, ...]) -> int:
        """MACs for one sample of ``(T, C, H, W)``: two temporal convs, the LayerNorm (3 per
        unit and step) and the gating product."""
        t, c, h, w = shape
        norm = 3 * t * self.hidden if self.norm is not None else 0
        return t * self.kernel * self.hidden * (c + 1) + norm + t * c * h * w


class TimeStepRandomDropout(nn.Module):
    """Time-step random dropout: while training, skip the step-attention path (its gate is
    replaced by 1, the spikes pass un-gated) with probability ``beta``.

    ``unit="sample_step"`` (default): one draw per (time step, sample); ``unit="forward"``:
    one draw per forward pass, skipping the gates of every step and sample together. Draws come
    from torch's global RNG. In eval mode the gates pass unchanged, whatever ``beta``.
    """

    supports_rate_bp = False

    def __init__(self, beta: float = 0.1, unit: str = "sample_step"):
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        if unit not in TSRD_UNITS:
            raise ValueError(f"tsrd_unit must be one of {TSRD_UNITS}, got {unit!r}")
        self.beta, self.unit = float(beta), unit

    def forward(self, gates: torch.Tensor) -> torch.Tensor:
        """``gates [T, B, ...]`` -> the same with the skipped entries set to 1."""
        if not self.training or self.beta == 0.0:
            return gates
        draw_shape = gates.shape[:2] if self.unit == "sample_step" else (1, 1)
        skip = torch.rand(draw_shape, device=gates.device) < self.beta
        return torch.where(skip.view(*skip.shape, *([1] * (gates.dim() - 2))),
                           torch.ones_like(gates), gates)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, unit={self.unit!r}"


class STAANeuron(nn.Module):
    """A spiking neuron wrapped by the STAA aggregator ("STAA-LIF"), in the paper's order:

    ``I`` (the neuron's input current ``[T, B, C, H, W]``) -> ``+ P[t]`` (position encoding)
    -> GC block -> adaptive LIF ``V = M*H + N*I`` (replaces the neuron: same threshold, reset,
    ``detach_reset`` and surrogate; M, N start at the neuron's leak and gain) -> spikes ``S``
    -> ``S_t * g_t`` (step attention; time-step random dropout sets gates to 1 while
    training). One spiking nonlinearity, as in the layer it replaces.

    Each part can be switched off (``pe``, ``gc``, ``alif``, ``sa``, ``tsrd``); a part switched
    off is not built. With ``alif=False`` the original neuron fires (``self.neuron`` is it);
    with every part off the wrapper computes exactly what the neuron did.

    Args:
        neuron: the SpikingJelly neuron being replaced (multi-step). Kept in ``original`` (not
            a submodule, so not in ``state_dict``) for :func:`sj_distill.staa.unpatch`.
        channels, map_size: C and (H, W) of the neuron's input, as measured by a probe forward.
        time_steps: largest T the position encoding serves.
        reduction: channel reduction r of the GC block and of step attention.
        beta, tsrd_unit: time-step random dropout probability and unit (training only).
        sa_kernel: temporal kernel of step attention.
        norm: LayerNorm in the GC and step-attention bottlenecks.
        gc_gate: ``"residual"`` (``x + x*g``) or ``"plain"`` (``x*g``).
        alif_maps: ``"channel"`` (M, N of shape ``[C]``) or ``"full"`` (``[C, H, W]``).
        alif_options: overrides for :meth:`AdaptiveLIF.replacing` (``init_m``, ...).
    """

    supports_rate_bp = False

    def __init__(self, neuron: nn.Module, channels: int, map_size: Sequence[int],
                 time_steps: int = 4, reduction: int = 4, beta: float = 0.1, pe: bool = True,
                 gc: bool = True, alif: bool = True, sa: bool = True, tsrd: bool = True,
                 sa_kernel: int = 3, norm: bool = True, gc_gate: str = "residual",
                 tsrd_unit: str = "sample_step", alif_maps: str = "channel",
                 alif_options: Optional[Dict] = None):
        super().__init__()
        if tsrd and not sa:
            raise ValueError("tsrd=True drops step-attention gates and needs sa=True; "
                             "switch tsrd off too or keep sa on")
        if alif_maps not in ("channel", "full"):
            raise ValueError(f"alif_maps must be 'channel' or 'full', got {alif_maps!r}")
        self.channels, self.map_size = channels, tuple(map_size)
        self.pos_enc = TemporalPositionEncoding(channels, time_steps) if pe else None
        self.gc = GCBlock(channels, reduction, norm, gc_gate) if gc else None
        if alif:
            maps = self.map_size if alif_maps == "full" else None
            self.neuron = AdaptiveLIF.replacing(neuron, channels, maps, **(alif_options or {}))
        else:
            self.neuron = neuron
        self.step_attn = StepAttention(channels, reduction, sa_kernel, norm) if sa else None
        self.tsrd = TimeStepRandomDropout(beta, tsrd_unit) if tsrd else None
        self.__dict__["original"] = neuron
        self.last_input: Optional[Tuple[int, int, int, int]] = None

    @property
    def parts(self) -> Dict[str, bool]:
        """Which parts are on."""
        alif = isinstance(self.neuron, AdaptiveLIF) and self.neuron is not self.original
        mods = (self.pos_enc, self.gc, alif or None, self.step_attn, self.tsrd)
        return {name: m is not None for name, m in zip(PARTS, mods)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Input current ``[T, B, C, H, W]`` -> (gated) spikes, same shape; records
        ``last_input = (T, C, H, W)``."""
        _check_input(x, self.channels, "STAANeuron")
        self.last_input = (x.shape[0], *x.shape[2:])
        if self.pos_enc is not None:
            x = self.pos_enc(x)
        if self.gc is not None:
            x = self.gc(x)
        spikes = self.neuron(x)
        if self.step_attn is None:
            return spikes
        gates = self.step_attn.gates(spikes)
        if self.tsrd is not None:
            gates = self.tsrd(gates)
        return spikes * gates

    def added_params(self) -> int:
        """Parameters added over the replaced neuron's own."""
        own = sum(p.numel() for p in self.original.parameters())
        return sum(p.numel() for p in self.parameters()) - own

    def added_macs(self, shape: Tuple[int, ...]) -> int:
        """MACs added for one sample of ``(T, C, H, W)`` (rules in ``docs/staa.md``): the
        adaptive LIF's charge has 2 multiplies per element (``M*H``, ``N*I``) against 1 for
        the replaced LIF/PLIF (its leak) or 0 for an IF neuron."""
        t, c, h, w = shape
        total = 0
        if self.parts["alif"]:
            replaced = 0 if isinstance(self.original, sj_neuron.IFNode) else 1
            total += (2 - replaced) * t * c * h * w
        for m in (self.gc, self.step_attn):
            if m is not None:
                total += m.macs(shape)
        return total
