"""Training objectives: how one batch becomes a loss, for each recipe ``train.loss``.

An objective is called as ``objective(model, x_seq, y, teacher_logits)`` with the student
input ``x_seq [T,B,...]``, labels ``y [B]`` and the frozen teacher's logits ``[B,K]`` (or
None). It returns ``(loss, parts, logits)`` where ``parts`` maps names to floats for logging
and ``logits [B,K]`` are used for the training accuracy.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def time_mean(logits: torch.Tensor) -> torch.Tensor:
    """``[T,B,K] -> [B,K]``; ``[B,K]`` (rate-BP training output) is returned as is."""
    return logits.mean(0) if logits.dim() == 3 else logits


class CrossEntropyOnMean(nn.Module):
    """Cross-entropy of the time-averaged logits (the plain SNN objective)."""

    needs_teacher = False
    needs_per_step = False

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


def logits_objective(loss_fn: nn.Module):
    """An objective for losses over (student logits, teacher logits, target)."""

    def objective(model: nn.Module, x_seq: torch.Tensor, y: torch.Tensor,
                  teacher_logits: Optional[torch.Tensor]) -> Tuple[torch.Tensor, Dict, torch.Tensor]:
        logits = model(x_seq)
        loss = loss_fn(logits, teacher_logits, y)
        return loss, dict(getattr(loss_fn, "parts", {})), time_mean(logits).detach()

    return objective
