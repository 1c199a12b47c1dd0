"""The student's objectives (the plain SNN cross-entropy, a loss on the logits, BRD on the
hybrids) and the time-mean that every objective uses for accuracy."""
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


class LogitObjective:
    """``loss(student_logits, teacher_logits, target)`` on the student's output."""

    def __init__(self, loss_fn: nn.Module, needs_teacher: bool):
        self.loss_fn, self.needs_teacher_logits = loss_fn, needs_teacher

    def __call__(self, model, x_seq, x_ann, y, teacher_logits):
        logits = model(x_seq)
        loss = self.loss_fn(logits, teacher_logits, y)
        return loss, dict(getattr(self.loss_fn, "parts", {})), time_mean(logits).detach()


class BRDObjective:
    """The BRD objective on a :class:`sj_distill.hybrid.BlockReplacement` (it runs the teacher
    itself, on the same ANN view of the batch)."""

    needs_teacher_logits = False

    def __init__(self, loss_fn: nn.Module):
        self.loss_fn = loss_fn

    def __call__(self, model, x_seq, x_ann, y, teacher_logits):
        out = model(x_seq, teacher_input=x_ann)
        loss = self.loss_fn(out["student"], out["teacher"], y, hybrid_logits=out["hybrids"],
                            feature_pairs=out["feature_pairs"])
        parts = {k: v for k, v in getattr(self.loss_fn, "parts", {}).items() if k != "total"}
        return loss, parts, time_mean(out["student"]).detach()
