"""The student stage's objective, by recipe: plain CE, logit distillation (KD, TSER) or
block-wise replacement (BRD), trained by BPTT or rate-based backprop.

With rate-based backprop the 1/T gradient scaling of the public rate-BP code
(``train.scale_grad_by_T``) is applied by :func:`sj_distill.rate.enable` itself, to the
student's output and to the stage features BRD's hybrids take (:func:`sj_distill.rate.tap`),
exactly as in a user's own loop.
"""
from __future__ import annotations

from typing import Dict, Tuple

from torch import nn

from ..config import RecipeError
from ..registry import LOSSES, check_params
from .objectives import time_mean
from .validate import recipe_section

#: loss name -> (needs a teacher, needs per-step logits [T,B,K])
LOSS_NEEDS = {"ce": (False, False), "kd": (True, False), "tser": (True, True),
              "brd": (True, False)}


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


def build_loss(recipe: Dict) -> nn.Module:
    """The loss named by ``train.loss.name`` with ``train.loss.params``; errors name the key."""
    spec = recipe["train"]["loss"]
    with recipe_section("train.loss.name"):
        builder = LOSSES.get(spec["name"], where="train.loss.name")
    with recipe_section("train.loss.params"):
        LOSSES.check_params(spec["name"], spec["params"], "train.loss.params")
        return builder(**spec["params"])


def student_objective(recipe: Dict, student: nn.Module, teacher) -> Tuple[nn.Module, object, Dict]:
    """``(trained module, objective, modules to checkpoint)`` for the recipe's student stage.

    The student is changed in place (rate-BP enabled when ``train.method`` is ``rate``)."""
    name = recipe["train"]["loss"]["name"]
    loss_fn = build_loss(recipe)
    needs_teacher, per_step = LOSS_NEEDS.get(name, (False, False))
    method = recipe["train"]["method"]
    if per_step and method == "rate":
        raise RecipeError(f"train.loss '{name}' needs per-step logits [T,B,K], which "
                          "rate-based backprop does not produce: set train.method=bptt")
    if needs_teacher and teacher is None:
        raise RecipeError(f"train.loss '{name}' needs a teacher: set teacher.model")
    if name != "brd" and recipe["train"]["brd"]["points"] is not None:
        raise RecipeError("train.brd.points is set but train.loss is not 'brd'")
    if method == "rate":
        from .. import rate

        with recipe_section("train.method"):
            rate.enable(student, scale_grad_by_T=recipe["train"]["scale_grad_by_T"])
    if name == "brd":
        from ..hybrid import BlockReplacement

        brd = recipe["train"]["brd"]
        with recipe_section("train.brd"):
            check_params(BlockReplacement, brd["params"], "train.brd.params", "BlockReplacement")
            hybrid = BlockReplacement(student, teacher, points=brd["points"], **brd["params"])
        return hybrid, BRDObjective(loss_fn), {"student": student, "adapters": hybrid.adapters}
    return student, LogitObjective(loss_fn, needs_teacher), {"student": student}

