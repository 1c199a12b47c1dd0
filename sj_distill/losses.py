"""Distillation losses for spiking students.

Every loss is a module called as ``loss(student_logits, teacher_logits, target)`` and returns
the total loss (a scalar tensor); the float value of each part of the last call is kept in
``loss.parts`` for logging. Student logits use SpikingJelly's layout ``[T, B, K]`` (a
``[B, K]`` tensor, e.g. from rate-based backprop, counts as ``T = 1``); teacher logits are
``[B, K]``; ``target`` holds class indices ``[B]``.

Defaults (the papers' loss weights are not all public; see ``docs/distill.md``):
  * ``KDLoss``: ``alpha=0.5``, ``tau=4`` (Hinton et al., 2015; a common CIFAR choice).
  * ``TSERLoss``: ``alpha=0.5``, ``tau=3`` (the TSER authors' sibling code uses tau=3, the
    paper reports tau robust in 2..6), ``gamma=0.1``.
  * ``BRDLoss``: every term weight 1, ``tau=4``, hybrids averaged.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def _per_step(logits: torch.Tensor, name: str = "student_logits") -> torch.Tensor:
    """``[T, B, K]`` as is, ``[B, K]`` as ``[1, B, K]``."""
    if logits.dim() == 2:
        return logits.unsqueeze(0)
    if logits.dim() != 3:
        raise ValueError(f"{name} must be [T, B, K] or [B, K], got shape {tuple(logits.shape)}")
    return logits


def _check(student: torch.Tensor, teacher: Optional[torch.Tensor], target: torch.Tensor):
    if teacher is not None and (teacher.dim() != 2 or teacher.shape != student.shape[1:]):
        raise ValueError(f"teacher_logits must be [B, K] = {list(student.shape[1:])}, got "
                         f"{list(teacher.shape)}")
    if target.shape != student.shape[1:2]:
        raise ValueError(f"target must be class indices [B] = [{student.shape[1]}], got shape "
                         f"{list(target.shape)}")


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                  tau: float) -> torch.Tensor:
    """``tau^2 * KL(softmax(z_A/tau) || softmax(z/tau))`` averaged over the batch.

    ``student_logits`` ``[..., B, K]`` (leading dims are averaged too), teacher ``[B, K]``."""
    log_p_teacher = F.log_softmax(teacher_logits.detach() / tau, dim=-1)
    log_p_student = F.log_softmax(student_logits / tau, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)
    return tau * tau * kl.mean()


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``[..., B, K]`` logits (leading dims averaged) with targets ``[B]``."""
    log_p = F.log_softmax(logits, dim=-1)
    index = target.expand(log_p.shape[:-1]).unsqueeze(-1)
    return -log_p.gather(-1, index).mean()


class _PartsLoss(nn.Module):
    """Keeps the float value of every part of the last call in ``self.parts``."""

    def __init__(self):
        super().__init__()
        self.parts: Dict[str, float] = {}

    def _record(self, total: torch.Tensor, **parts: torch.Tensor) -> torch.Tensor:
        self.parts = {k: float(v.detach()) for k, v in parts.items()}
        self.parts["total"] = float(total.detach())
        return total


class KDLoss(_PartsLoss):
    """Hinton KD on the time-mean student logits.

    ``L = (1 - alpha) * CE(mean_t z_t, y) + alpha * tau^2 * KL(softmax(z_A/tau) ||
    softmax(mean_t z_t / tau))``. Parts: ``ce``, ``kl``, ``total``.
    """

    def __init__(self, alpha: float = 0.5, tau: float = 4.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or tau <= 0:
            raise ValueError(f"need 0 <= alpha <= 1 and tau > 0, got alpha={alpha}, tau={tau}")
        self.alpha, self.tau = alpha, tau

    def forward(self, student_logits, teacher_logits, target):
        z = _per_step(student_logits)
        _check(z, teacher_logits, target)
        mean_logits = z.mean(0)
        ce = cross_entropy(mean_logits, target)
        kl = kl_to_teacher(mean_logits, teacher_logits, self.tau)
        total = (1 - self.alpha) * ce + self.alpha * kl
        return self._record(total, ce=ce, kl=kl)


class TSERLoss(_PartsLoss):
    """Temporal-separation KD with entropy regularisation (Yu et al., CVPR 2025).

    ``L = (1 - alpha) * mean_t CE(z_t, y) + alpha * tau^2 * mean_t KL(softmax(z_A/tau) ||
    softmax(z_t/tau)) - gamma * mean_t H(softmax(z_t/tau))``, per time step ``z_t`` of the
    ``[T, B, K]`` student logits (train with BPTT: rate-based backprop gives only the mean).
    Parts: ``tsce``, ``tskl``, ``entropy`` (the mean entropy, positive), ``total``.
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 0.1, tau: float = 3.0):
        super().__init__()
        if not 0.0 <= alpha <= 1.0 or tau <= 0 or gamma < 0:
            raise ValueError(f"need 0 <= alpha <= 1, gamma >= 0, tau > 0; got alpha={alpha}, "
                             f"gamma={gamma}, tau={tau}")
        self.alpha, self.gamma, self.tau = alpha, gamma, tau

    def forward(self, student_logits, teacher_logits, target):
        z = _per_step(student_logits)
        _check(z, teacher_logits, target)
        tsce = cross_entropy(z, target)
        tskl = kl_to_teacher(z, teacher_logits, self.tau)
        log_p = F.log_softmax(z / self.tau, dim=-1)
        entropy = -(log_p.exp() * log_p).sum(-1).mean()
        total = (1 - self.alpha) * tsce + self.alpha * tskl - self.gamma * entropy
        return self._record(total, tsce=tsce, tskl=tskl, entropy=entropy)


class FeatureAlignmentLoss(_PartsLoss):
    """Mean squared error between adapted student rate features and teacher features.

    Called as ``loss(pairs)`` with ``pairs = {point: (adapted [B,C,H,W], teacher [B,C,H,W])}``
    (``BlockReplacement`` returns them as ``out['feature_pairs']``); the teacher side is
    detached. Returns the mean over points; parts ``point -> mse`` and ``total``.
    """

    def forward(self, pairs: Mapping[str, Tuple[torch.Tensor, torch.Tensor]]):
        if not pairs:
            raise ValueError("FeatureAlignmentLoss got no feature pairs; build BlockReplacement "
                             "with at least one replacement point")
        terms = {}
        for point, (adapted, teacher) in pairs.items():
            if adapted.shape != teacher.shape:
                raise ValueError(f"feature shapes differ at {point!r}: adapted "
                                 f"{tuple(adapted.shape)} vs teacher {tuple(teacher.shape)}")
            terms[point] = F.mse_loss(adapted, teacher.detach())
        total = torch.stack(list(terms.values())).mean()
        return self._record(total, **terms)


class BRDLoss(_PartsLoss):
    """Block-wise replacement distillation objective (Yang, Yu et al., CVPR 2025).

    ``L = w_ce CE(y_S, y) + w_kd KD(y_S, y_A) + mean_k [w_hce CE(y_Mk, y) + w_hkd KD(y_Mk, y_A)]
    + w_feat * FeatureAlignment`` with ``KD(a, b) = tau^2 KL(softmax(b/tau) || softmax(a/tau))``,
    ``y_S`` the time-mean student logits and ``y_Mk`` the hybrids' logits ``[B, K]``.

    Called with the output ``out`` of :class:`~sj_distill.hybrid.BlockReplacement` as
    ``loss(out["student"], out["teacher"], target, hybrid_logits=out["hybrids"])``:
    ``hybrid_logits`` is required (a keyword), since leaving the hybrids out would quietly
    train plain KD; an empty mapping is refused unless both hybrid weights are 0.
    ``feature_pairs=out["feature_pairs"]`` is needed when ``feature_weight > 0``.
    Parts: ``ce``, ``kd``, ``hybrid_ce``, ``hybrid_kd`` (means over hybrids), ``feature``
    (when used), ``total``.
    """

    def __init__(self, ce_weight: float = 1.0, kd_weight: float = 1.0,
                 hybrid_ce_weight: float = 1.0, hybrid_kd_weight: float = 1.0,
                 feature_weight: float = 0.0, tau: float = 4.0):
        super().__init__()
        weights = (ce_weight, kd_weight, hybrid_ce_weight, hybrid_kd_weight, feature_weight)
        if min(weights) < 0 or tau <= 0:
            raise ValueError(f"loss weights must be >= 0 and tau > 0, got {weights}, tau={tau}")
        self.ce_weight, self.kd_weight = ce_weight, kd_weight
        self.hybrid_ce_weight, self.hybrid_kd_weight = hybrid_ce_weight, hybrid_kd_weight
        self.feature_weight, self.tau = feature_weight, tau
        self.feature_loss = FeatureAlignmentLoss()

    def forward(self, student_logits, teacher_logits, target, *,
                hybrid_logits: Mapping[str, torch.Tensor],
                feature_pairs: Optional[Mapping[str, Tuple[torch.Tensor, torch.Tensor]]] = None):
        z = _per_step(student_logits)
        _check(z, teacher_logits, target)
        mean_logits = z.mean(0)
        parts = dict(ce=cross_entropy(mean_logits, target),
                     kd=kl_to_teacher(mean_logits, teacher_logits, self.tau))
        total = self.ce_weight * parts["ce"] + self.kd_weight * parts["kd"]
        if hybrid_logits:
            for point, y in hybrid_logits.items():
                _check(_per_step(y, f"hybrid_logits[{point!r}]"), teacher_logits, target)
            hybrids = torch.stack(list(hybrid_logits.values()))
            parts["hybrid_ce"] = cross_entropy(hybrids, target)
            parts["hybrid_kd"] = kl_to_teacher(hybrids, teacher_logits, self.tau)
            total = total + self.hybrid_ce_weight * parts["hybrid_ce"] \
                + self.hybrid_kd_weight * parts["hybrid_kd"]
        elif self.hybrid_ce_weight > 0 or self.hybrid_kd_weight > 0:
            raise ValueError("BRDLoss got no hybrid logits (hybrid_logits is empty): pass "
                             "hybrid_logits=out['hybrids'] from a BlockReplacement with at least "
                             "one point, or set hybrid_ce_weight=hybrid_kd_weight=0 for plain KD")
        if self.feature_weight > 0:
            if not feature_pairs:
                raise ValueError("BRDLoss(feature_weight > 0) needs feature_pairs=out"
                                 "['feature_pairs'] from BlockReplacement")
            parts["feature"] = self.feature_loss(feature_pairs)
            total = total + self.feature_weight * parts["feature"]
        return self._record(total, **parts)
