"""STAA building blocks (Zhang, Yu et al., "STAA-SNN", CVPR 2025), all multi-step.

Every module takes and returns ``[T, B, C, H, W]`` (T time steps, B samples, C channels).
The paper publishes no code; the exact shapes below are our choices, documented against the
paper's description in ``docs/staa.md``. Modules that mix time steps (or are indexed by the
time step) carry ``supports_rate_bp = False``: rate-based backprop runs one time-averaged
pass and cannot train them.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from .adaptive_lif import AdaptiveLIF


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

    def macs(self, shape: Tuple[int, ...]) -> int:
        """Multiply-accumulates for one sample of ``shape = (T, C, H, W)``: additions only, 0."""
        return 0


class GCBlock(nn.Module):
    """Global-context attention with a sigmoid gate (three 1x1 convs, reduction ``r``).

    For one sample, over all ``P = T*H*W`` spatio-temporal positions:
      ``a = softmax_p(W_k x_p)`` (``key``: 1x1 conv C->1, no bias),
      ``c = sum_p a_p x_p`` (global context, ``[C]``),
      ``g = sigmoid(W_u relu(LN(W_d c + b_d)) + b_u)`` (``down``: C->C/r, ``up``: C/r->C,
      ``LN``: LayerNorm over the C/r units, as in GCNet, so the ReLU cannot die for all inputs),
      ``y = x + x * g`` (the gated context re-weights channels; identity path kept).
    """

    supports_rate_bp = False

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = _hidden(channels, reduction)
        self.channels, self.hidden = channels, hidden
        self.key = nn.Conv2d(channels, 1, 1, bias=False)
        self.down = nn.Conv2d(channels, hidden, 1)
        self.norm = nn.LayerNorm([hidden, 1, 1])
        self.up = nn.Conv2d(hidden, channels, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel gates ``[B, C]`` in (0, 1) for ``x`` ``[T, B, C, H, W]``."""
        _check_input(x, self.channels, "GCBlock")
        t, b, c, h, w = x.shape
        logits = self.key(x.flatten(0, 1)).view(t, b, 1, h * w)
        attn = logits.permute(1, 2, 0, 3).reshape(b, 1, t * h * w).softmax(-1)
        values = x.permute(1, 2, 0, 3, 4).reshape(b, c, t * h * w)
        context = (values * attn).sum(-1)[:, :, None, None]
        hidden = torch.relu(self.norm(self.down(context)))
        return torch.sigmoid(self.up(hidden)).view(b, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + x * self.gate(x)[None, :, :, None, None]

    def macs(self, shape: Tuple[int, ...]) -> int:
        """MACs for one sample of ``(T, C, H, W)``: key conv, context sum, gating (3 per
        element), the two bottleneck convs on the context vector and the LayerNorm (3 per
        unit: square, scale, affine)."""
        t, c, h, w = shape
        return 3 * t * c * h * w + 2 * c * self.hidden + 3 * self.hidden


class StepAttention(nn.Module):
    """One gate in (0, 1) per time step and sample, computed from all time steps.

    ``z = mean_{H,W} x`` -> ``[B, C, T]``; ``g = sigmoid(conv2(relu(LN(conv1(z)))))`` ->
    ``[B, 1, T]`` with ``conv1``: Conv1d C->C/r and ``conv2``: Conv1d C/r->1, both with kernel
    ``kernel`` along time (zero padding, so any T works), ``LN``: LayerNorm over the C/r units
    of each step; ``y_t = x_t * g_t``. The temporal kernel mixes neighbouring steps.
    """

    supports_rate_bp = False

    def __init__(self, channels: int, reduction: int = 4, kernel: int = 3):
        super().__init__()
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be a positive odd number, got {kernel}")
        hidden = _hidden(channels, reduction)
        self.channels, self.hidden, self.kernel = channels, hidden, kernel
        self.conv1 = nn.Conv1d(channels, hidden, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(hidden)
        self.conv2 = nn.Conv1d(hidden, 1, kernel, padding=kernel // 2)

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        """Per-step gates ``[T, B, 1, 1, 1]`` in (0, 1) for ``x`` ``[T, B, C, H, W]``."""
        _check_input(x, self.channels, "StepAttention")
        pooled = x.mean(dim=(3, 4)).permute(1, 2, 0)
        hidden = self.norm(self.conv1(pooled).transpose(1, 2)).transpose(1, 2)
        g = torch.sigmoid(self.conv2(torch.relu(hidden)))
        return g.permute(2, 0, 1)[..., None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gates(x)

    def macs(self, shape: Tuple[int, ...]) -> int:
        """MACs for one sample of ``(T, C, H, W)``: two temporal convs, the LayerNorm (3 per
        unit and step) and the gating product."""
        t, c, h, w = shape
        return t * self.kernel * self.hidden * (c + 1) + 3 * t * self.hidden + t * c * h * w


class TimeStepRandomDropout(nn.Module):
    """Time-step random dropout of the step-attention gates.

    While training, each (time step, sample) gate is replaced by 1 (attention skipped, the
    spikes pass unchanged) with probability ``beta``, drawn from torch's global RNG. In eval
    mode the gates pass unchanged, whatever ``beta``.
    """

    supports_rate_bp = False

    def __init__(self, beta: float = 0.1):
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = float(beta)

    def forward(self, gates: torch.Tensor) -> torch.Tensor:
        if not self.training or self.beta == 0.0:
            return gates
        skip = torch.rand(gates.shape[:2], device=gates.device) < self.beta
        return torch.where(skip.view(*skip.shape, *([1] * (gates.dim() - 2))),
                           torch.ones_like(gates), gates)

    def extra_repr(self) -> str:
        return f"beta={self.beta}"


PARTS = ("pe", "gc", "alif", "sa", "tsrd")


class STAABlock(nn.Module):
    """Spatial-temporal attention aggregator, in the paper's order:
    position encoding -> GC block -> adaptive LIF -> step attention (with time-step random
    dropout of its gates). Each part can be switched off (``pe``, ``gc``, ``alif``, ``sa``,
    ``tsrd``); a part switched off is not built. With every part off the block is the identity.

    Args:
        channels: C of the ``[T, B, C, H, W]`` input.
        time_steps: largest T the position encoding serves.
        reduction: channel reduction r of the GC block and of step attention.
        beta: time-step random dropout probability (training only).
        sa_kernel: temporal kernel of step attention.
        neuron: keyword arguments for :class:`AdaptiveLIF` (``init_m``, ``v_threshold``, ...).
    """

    supports_rate_bp = False

    def __init__(self, channels: int, time_steps: int = 4, reduction: int = 4, beta: float = 0.1,
                 pe: bool = True, gc: bool = True, alif: bool = True, sa: bool = True,
                 tsrd: bool = True, sa_kernel: int = 3, neuron: Optional[Dict] = None):
        super().__init__()
        if tsrd and not sa:
            raise ValueError("tsrd=True drops step-attention gates and needs sa=True; "
                             "switch tsrd off too or keep sa on")
        self.channels = channels
        self.pos_enc = TemporalPositionEncoding(channels, time_steps) if pe else None
        self.gc = GCBlock(channels, reduction) if gc else None
        self.alif = AdaptiveLIF(channels, step_mode="m", **(neuron or {})) if alif else None
        self.step_attn = StepAttention(channels, reduction, sa_kernel) if sa else None
        self.tsrd = TimeStepRandomDropout(beta) if tsrd else None
        self.last_input: Optional[Tuple[int, int, int, int]] = None

    @property
    def parts(self) -> Dict[str, bool]:
        """Which parts are on."""
        mods = (self.pos_enc, self.gc, self.alif, self.step_attn, self.tsrd)
        return {name: m is not None for name, m in zip(PARTS, mods)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, B, C, H, W]`` -> same shape; records ``last_input = (T, C, H, W)``."""
        _check_input(x, self.channels, "STAABlock")
        self.last_input = (x.shape[0], *x.shape[2:])
        if self.pos_enc is not None:
            x = self.pos_enc(x)
        if self.gc is not None:
            x = self.gc(x)
        if self.alif is not None:
            x = self.alif(x)
        if self.step_attn is not None:
            gates = self.step_attn.gates(x)
            if self.tsrd is not None:
                gates = self.tsrd(gates)
            x = x * gates
        return x

    def macs(self, shape: Tuple[int, ...]) -> int:
        """Added MACs for one sample of ``(T, C, H, W)`` (see ``docs/staa.md`` for the rules):
        the adaptive LIF charge costs 2 per element."""
        t, c, h, w = shape
        total = 2 * t * c * h * w if self.alif is not None else 0
        for m in (self.pos_enc, self.gc, self.step_attn):
            if m is not None:
                total += m.macs(shape)
        return total
