"""Adaptive LIF neuron of STAA-SNN: ``V_t = M * H_{t-1} + N * I_t`` with learnable M, N per channel.

Built on SpikingJelly's neuron API through :data:`sj_distill.sj.ChargeNeuronBase` (only the
charge equation is ours; fire and reset are SpikingJelly's), so it runs in ``step_mode='s'``
or ``'m'`` and is reset by ``functional.reset_net`` like any SpikingJelly neuron.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import sj


class AdaptiveLIF(sj.ChargeNeuronBase):
    """LIF neuron whose leak ``M`` and input gain ``N`` are learnable, one pair per channel.

    Charge: ``V_t = M * H_{t-1} + N * I_t`` (``H`` is the membrane after the previous step's
    reset, ``H_{-1} = 0``); fire: ``S_t = Heaviside(V_t - v_threshold)`` with a surrogate
    gradient; reset: soft (``H_t = V_t - v_threshold * S_t``) or hard (``v_reset``).
    ``M`` and ``N`` are unconstrained parameters of shape ``[channels]``, broadcast over
    channel dimension 1 of each step's input ``[B, C, ...]``.

    Args:
        channels: number of channels C.
        init_m / init_n: initial leak and gain. The defaults (0.2, 1.0) make the neuron at
            initialisation identical to the project's default LIF (``v <- 0.2 v + x``).
        v_threshold, reset, v_reset, detach_reset, surrogate_fn, alpha: as in
            :func:`sj_distill.sj.make_neuron`.
        step_mode: ``'m'`` (input ``[T, B, C, ...]``) or ``'s'`` (``[B, C, ...]``).

    Not trainable by rate-based backprop: its eligibility trace would depend on the learnable
    M and N, which the rate pass does not model (``supports_rate_bp = False``).
    """

    supports_rate_bp = False

    def __init__(self, channels: int, init_m: float = 0.2, init_n: float = 1.0,
                 v_threshold: float = 1.0, reset: str = "soft", v_reset: float = 0.0,
                 detach_reset: bool = True, surrogate_fn: str = "sigmoid",
                 alpha: Optional[float] = 4.0, step_mode: str = "m"):
        if reset not in ("soft", "hard"):
            raise ValueError(f"reset must be 'soft' or 'hard', got {reset!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        super().__init__(v_threshold=float(v_threshold),
                         v_reset=None if reset == "soft" else float(v_reset),
                         surrogate_function=sj.make_surrogate(surrogate_fn, alpha),
                         detach_reset=bool(detach_reset), step_mode=step_mode)
        self.channels = channels
        self.m = nn.Parameter(torch.full((channels,), float(init_m)))
        self.n = nn.Parameter(torch.full((channels,), float(init_n)))

    def _per_channel(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(
                f"AdaptiveLIF({self.channels}) expects one step shaped [B, {self.channels}, ...], "
                f"got {tuple(x.shape)}; build it with channels={x.shape[1] if x.dim() > 1 else '?'}"
            )
        return p.view(-1, *([1] * (x.dim() - 2)))

    def neuronal_charge(self, x: torch.Tensor) -> None:
        h = self.v if isinstance(self.v, torch.Tensor) else torch.full_like(x, float(self.v))
        self.v = self._per_channel(self.m, x) * h + self._per_channel(self.n, x) * x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, " + super().extra_repr()
