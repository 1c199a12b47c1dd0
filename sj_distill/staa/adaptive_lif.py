"""Adaptive LIF neuron of STAA-SNN: ``V_t = M * H_{t-1} + N * I_t`` with learnable M and N.

Built on SpikingJelly's neuron API through :data:`sj_distill.sj.ChargeNeuronBase` (only the
charge equation is ours; fire and reset are SpikingJelly's), so it runs in ``step_mode='s'``
or ``'m'`` and is reset by ``functional.reset_net`` like any SpikingJelly neuron.
:meth:`AdaptiveLIF.replacing` builds one that takes an existing neuron's place.
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from spikingjelly.activation_based import neuron as sj_neuron

from .. import sj


def leak_and_gain(neuron: nn.Module) -> Tuple[float, float]:
    """``(M, N)`` such that ``V = M * H + N * I`` is the charge of the SpikingJelly ``neuron``.

    IF: ``(1, 1)``. LIF / PLIF with ``decay_input=False``: ``(1 - 1/tau, 1)``; with
    ``decay_input=True``: ``(1 - 1/tau, 1/tau)`` (PLIF: ``1/tau = sigmoid(w)``). Exact for soft
    reset and for hard reset to 0 (a hard reset to ``v_reset != 0`` adds ``v_reset / tau``).
    """
    if isinstance(neuron, sj_neuron.IFNode):
        return 1.0, 1.0
    if isinstance(neuron, sj_neuron.ParametricLIFNode):
        inv_tau = torch.sigmoid(neuron.w.detach()).item()
    elif isinstance(neuron, sj_neuron.LIFNode):
        inv_tau = 1.0 / float(neuron.tau)
    else:
        raise TypeError(
            f"cannot read the leak of {type(neuron).__name__} (IF, LIF and PLIF are known); "
            "pass neuron=dict(init_m=..., init_n=...) to staa.patch()")
    return 1.0 - inv_tau, (inv_tau if neuron.decay_input else 1.0)


class AdaptiveLIF(sj.ChargeNeuronBase):
    """LIF neuron whose leak ``M`` and input gain ``N`` are learnable.

    Charge: ``V_t = M * H_{t-1} + N * I_t`` (``H`` is the membrane after the previous step's
    reset, ``H_{-1} = 0``); fire: ``S_t = Heaviside(V_t - v_threshold)`` with a surrogate
    gradient; reset: soft (``H_t = V_t - v_threshold * S_t``) or hard (``v_reset``).
    ``M`` and ``N`` are unconstrained parameters of shape ``[C]`` (one per channel, the
    default) or ``[C, H, W]`` (full coefficient maps, ``map_size=(H, W)``), broadcast over the
    batch dimension of each step's input ``[B, C, ...]``.

    Args:
        channels: number of channels C.
        init_m / init_n: initial leak and gain. The defaults (0.2, 1.0) equal the project's
            default LIF (``v <- 0.2 v + x``).
        map_size: ``(H, W)`` for full coefficient maps; ``None``: one M, N per channel.
        v_threshold, reset, v_reset, detach_reset, surrogate_fn, alpha: as in
            :func:`sj_distill.sj.make_neuron`; ``surrogate``: a ready surrogate module, which
            overrides ``surrogate_fn`` / ``alpha``.
        step_mode: ``'m'`` (input ``[T, B, C, ...]``) or ``'s'`` (``[B, C, ...]``).

    Not trainable by rate-based backprop: its eligibility trace would depend on the learnable
    M and N, which the rate pass does not model (``supports_rate_bp = False``).
    """

    supports_rate_bp = False

    def __init__(self, channels: int, init_m: float = 0.2, init_n: float = 1.0,
                 map_size: Optional[Sequence[int]] = None, v_threshold: float = 1.0,
                 reset: str = "soft", v_reset: float = 0.0, detach_reset: bool = True,
                 surrogate_fn: str = "sigmoid", alpha: Optional[float] = 4.0,
                 surrogate: Optional[nn.Module] = None, step_mode: str = "m"):
        if reset not in ("soft", "hard"):
            raise ValueError(f"reset must be 'soft' or 'hard', got {reset!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        super().__init__(v_threshold=float(v_threshold),
                         v_reset=None if reset == "soft" else float(v_reset),
                         surrogate_function=surrogate or sj.make_surrogate(surrogate_fn, alpha),
                         detach_reset=bool(detach_reset), step_mode=step_mode)
        self.channels = channels
        self.map_size = tuple(map_size) if map_size is not None else None
        shape = (channels, *self.map_size) if self.map_size else (channels,)
        self.m = nn.Parameter(torch.full(shape, float(init_m)))
        self.n = nn.Parameter(torch.full(shape, float(init_n)))

    @classmethod
    def replacing(cls, neuron: nn.Module, channels: int, map_size: Optional[Sequence[int]] = None,
                  **overrides) -> "AdaptiveLIF":
        """An adaptive LIF that takes ``neuron``'s place: same threshold, reset (soft/hard and
        ``v_reset``), ``detach_reset`` and surrogate (a copy), and M, N initialised to the
        neuron's own leak and gain (:func:`leak_and_gain`), so that at initialisation it fires
        exactly as ``neuron`` did. ``overrides``: constructor arguments that win (``init_m``,
        ``init_n``, ``v_threshold``, ...); with both ``init_m`` and ``init_n`` given, the leak
        is not read from ``neuron`` (needed for neurons other than IF, LIF and PLIF)."""
        kwargs = dict(v_threshold=float(neuron.v_threshold),
                      reset="soft" if neuron.v_reset is None else "hard",
                      v_reset=0.0 if neuron.v_reset is None else float(neuron.v_reset),
                      detach_reset=bool(neuron.detach_reset),
                      surrogate=copy.deepcopy(neuron.surrogate_function))
        if "init_m" not in overrides or "init_n" not in overrides:
            kwargs["init_m"], kwargs["init_n"] = leak_and_gain(neuron)
        if "surrogate_fn" in overrides or "alpha" in overrides:
            kwargs.pop("surrogate")
        kwargs.update(overrides)
        return cls(channels, map_size=map_size, step_mode="m", **kwargs)

    def _coefficient(self, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.channels or (
                self.map_size and tuple(x.shape[2:]) != self.map_size):
            want = (self.channels, *(self.map_size or ("...",)))
            raise ValueError(
                f"AdaptiveLIF expects one step shaped [B, {', '.join(map(str, want))}], got "
                f"{tuple(x.shape)}; build it with channels={x.shape[1] if x.dim() > 1 else '?'}"
                + ("" if not self.map_size else f" and map_size={tuple(x.shape[2:])}"))
        return p.view(*p.shape, *([1] * (x.dim() - 1 - p.dim())))

    def neuronal_charge(self, x: torch.Tensor) -> None:
        h = self.v if isinstance(self.v, torch.Tensor) else torch.full_like(x, float(self.v))
        self.v = self._coefficient(self.m, x) * h + self._coefficient(self.n, x) * x

    def extra_repr(self) -> str:
        maps = f", map_size={self.map_size}" if self.map_size else ""
        return f"channels={self.channels}{maps}, " + super().extra_repr()
