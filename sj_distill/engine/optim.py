"""Optimisers and per-epoch learning-rate schedules named in recipes."""
from __future__ import annotations

import math
from typing import Iterable, List

import torch
from torch import nn


def split_decay(params: Iterable[nn.Parameter]) -> List[dict]:
    """Two groups: weight decay on conv/linear weights (ndim > 1) only, none on BN, biases and
    neuron parameters (as the rate-BP code does)."""
    params = [p for p in params if p.requires_grad]
    return [dict(params=[p for p in params if p.ndim > 1]),
            dict(params=[p for p in params if p.ndim <= 1], weight_decay=0.0)]


def build_sgd(params, lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 5e-4,
              nesterov: bool = False) -> torch.optim.Optimizer:
    return torch.optim.SGD(split_decay(params), lr=lr, momentum=momentum,
                           weight_decay=weight_decay, nesterov=nesterov)


def build_adamw(params, lr: float = 1e-3, weight_decay: float = 1e-2, momentum: float = 0.9,
                nesterov: bool = False) -> torch.optim.Optimizer:
    """AdamW; ``momentum`` is beta1 (``nesterov`` is ignored, kept for a shared recipe schema)."""
    return torch.optim.AdamW(split_decay(params), lr=lr, weight_decay=weight_decay,
                             betas=(momentum, 0.999))


def _check_warmup(warmup_epochs: int) -> None:
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")


def build_cosine(optimizer, epochs: int, warmup_epochs: int = 0):
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 at ``epochs``; stepped once
    per epoch."""
    _check_warmup(warmup_epochs)
    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        span = max(1, epochs - warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup_epochs) / span))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_constant(optimizer, epochs: int, warmup_epochs: int = 0):
    """Constant learning rate after an optional linear warm-up."""
    _check_warmup(warmup_epochs)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda e: (e + 1) / (warmup_epochs + 1) if e < warmup_epochs else 1.0)
