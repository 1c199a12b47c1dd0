"""The student stage's objective, by recipe: plain CE, logit distillation (KD, TSER) or
block-wise replacement (BRD), trained by BPTT or rate-based backprop."""
from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import nn

from ..config import RecipeError
from ..registry import LOSSES
from .objectives import time_mean


class LogitObjective:
    """``loss(student_logits, teacher_logits, target)`` on the student's output."""

    def __init__(self, loss_fn: nn.Module):
        self.loss_fn = loss_fn
        self.needs_teacher_logits = getattr(loss_fn, "needs_teacher", True)

    def __call__(self, model, x_seq, x_ann, y, teacher_logits):
        logits = model(x_seq)
        loss = self.loss_fn(logits, teacher_logits, y)
        return loss, dict(getattr(self.loss_fn, "parts", {})), time_mean(logits).detach()


def build_loss(recipe: Dict) -> nn.Module:
    spec = recipe["train"]["loss"]
    return LOSSES.build(spec["name"], where="train.loss.params", **spec["params"])


def student_objective(recipe: Dict, student: nn.Module, teacher) -> Tuple[nn.Module, object, Dict]:
    """``(trained module, objective, modules to checkpoint)`` for the recipe's student stage.

    The student is changed in place (rate-BP enabled when ``train.method`` is ``rate``)."""
    loss_fn = build_loss(recipe)
    method = recipe["train"]["method"]
    if getattr(loss_fn, "needs_per_step", False) and method == "rate":
        raise RecipeError(f"train.loss '{recipe['train']['loss']['name']}' needs per-step "
                          "logits [T,B,K], which rate-based backprop does not produce: "
                          "set train.method=bptt")
    if getattr(loss_fn, "needs_teacher", False) and teacher is None:
        raise RecipeError(f"train.loss '{recipe['train']['loss']['name']}' needs a teacher: "
                          "set teacher.model")
    if method == "rate":
        from .. import rate

        rate.enable(student, scale_grad_by_T=recipe["train"]["scale_grad_by_T"])
    return student, LogitObjective(loss_fn), {"student": student}


def export_state(student: nn.Module) -> Dict[str, torch.Tensor]:
    """The student's weights as the plain SNN (rate-BP switched off) would name them."""
    return student.state_dict()
