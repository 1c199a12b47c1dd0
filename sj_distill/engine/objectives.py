"""The plain SNN objective, and the time-mean that every objective uses for accuracy."""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn


def time_mean(logits: torch.Tensor) -> torch.Tensor:
    """``[T,B,K] -> [B,K]``; ``[B,K]`` (rate-BP training output) is returned as is."""
    return logits.mean(0) if logits.dim() == 3 else logits


class CrossEntropyOnMean(nn.Module):
    """Cross-entropy of the time-averaged logits (the plain SNN objective)."""

    def __init__(self, label_smoothing: float = 0.0):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.parts: Dict[str, float] = {}

    def forward(self, student_logits: torch.Tensor, teacher_logits: Optional[torch.Tensor],
                target: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(time_mean(student_logits), target,
                               label_smoothing=self.label_smoothing)
        self.parts = {"ce": float(loss.detach())}
        return loss
