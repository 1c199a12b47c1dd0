"""One distillation step for the user's own training loop.

    for images, labels in loader:
        out = distill_step(student, teacher, (images, labels), loss_fn, optimizer, time_steps=4)
        log(out["parts"])

``student`` is a multi-step SNN (``[T,B,C,H,W] -> [T,B,K]``, optionally with rate-based
backprop enabled) or a :class:`~sj_distill.hybrid.BlockReplacement` (then ``teacher`` is its
own and may be None, and ``loss_fn`` is a :class:`~sj_distill.losses.BRDLoss`).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn

from . import sj
from .hybrid import BlockReplacement


def snn_input(images: torch.Tensor, time_steps: Optional[int]) -> torch.Tensor:
    """``[B,C,H,W]`` images repeated to ``[T,B,C,H,W]`` (direct encoding); a 5-D input (e.g.
    DVS frames) is returned as is."""
    if images.dim() == 5:
        return images
    if images.dim() != 4 or time_steps is None:
        raise ValueError(f"need [T,B,C,H,W] input, or [B,C,H,W] images with time_steps=T; got "
                         f"shape {tuple(images.shape)} and time_steps={time_steps}")
    return images.unsqueeze(0).expand(time_steps, *images.shape)


def distill_step(student: nn.Module, teacher: Optional[nn.Module], batch: Sequence[torch.Tensor],
                 loss_fn: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                 time_steps: Optional[int] = None) -> Dict:
    """Forward student and teacher on ``batch = (inputs, targets)``, compute ``loss_fn`` and,
    with an ``optimizer``, take one step (zero_grad, backward, step). The student's neuron
    states are reset (``functional.reset_net``) before returning, also on error.

    The teacher sees the time-mean of the student input (the image itself for direct
    encoding) under ``torch.no_grad``.

    Returns a dict: ``loss`` (the total; still attached to the graph when no optimizer is
    given, so the caller can call ``backward``), ``parts`` (floats from ``loss_fn.parts``),
    ``student`` (time-mean logits ``[B, K]``, whether the student trains by BPTT or rate-based
    backprop), ``student_steps`` (per-step logits ``[T, B, K]`` under BPTT; None under
    rate-based backprop, which computes only the mean), ``teacher`` logits ``[B, K]`` (all
    detached) and, for a BlockReplacement, ``hybrids``.
    """
    inputs, targets = batch[0], batch[1]
    x = snn_input(inputs, time_steps)
    snn = student.student if isinstance(student, BlockReplacement) else student
    try:
        if isinstance(student, BlockReplacement):
            if teacher is not None and teacher is not student.teacher:
                raise ValueError("a BlockReplacement carries its own teacher: pass teacher=None")
            out = student(x)
            loss = loss_fn(out["student"], out["teacher"], targets, hybrid_logits=out["hybrids"],
                           feature_pairs=out["feature_pairs"])
            result = dict(hybrids={k: v.detach() for k, v in out["hybrids"].items()})
            student_logits, teacher_logits = out["student"], out["teacher"]
        else:
            if teacher is None:
                raise ValueError("distill_step needs a teacher (or a BlockReplacement student)")
            student_logits = student(x)
            with torch.no_grad():
                teacher_logits = teacher(x.mean(0))
            loss = loss_fn(student_logits, teacher_logits, targets)
            result = {}
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss = loss.detach()
    finally:
        sj.reset(snn)
    steps = student_logits.detach() if student_logits.dim() == 3 else None
    result.update(loss=loss, parts=dict(getattr(loss_fn, "parts", {})),
                  student=student_logits.detach().mean(0) if steps is not None
                  else student_logits.detach(), student_steps=steps,
                  teacher=teacher_logits.detach())
    return result
