"""The NaN/inf guard of the epoch loop: a non-finite loss or gradient stops the run.

Each step adds a few tensor operations on the training device and no synchronisation
(:meth:`FiniteGuard.observe`); the host looks at the result once per logging interval and at
the end of every epoch, before the epoch is evaluated and checkpointed
(:meth:`FiniteGuard.check`), so the last checkpoint on disk always holds finite weights.
"""
from __future__ import annotations

from typing import Iterable

import torch

from . import distributed

#: Steps between two looks of the host at the guard (and updates of the progress bar).
CHECK_INTERVAL = 25

#: Where a stage's learning rate is set in a recipe.
LR_KEYS = {"teacher": "teacher.train.lr", "student": "train.optimizer.lr"}


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss or gradient; ``str()`` is the one line to print."""


class FiniteGuard:
    """Records, on ``device``, the first step whose loss or gradient is not finite."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Forget what was observed (at the start of an epoch)."""
        self.bad_step = torch.full((), -1, dtype=torch.int64, device=self.device)
        self.bad_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        self.bad_grad = torch.zeros((), dtype=torch.bool, device=self.device)

    def observe(self, step: int, loss: torch.Tensor, params: Iterable[torch.nn.Parameter],
                check_gradients: bool = True) -> None:
        """Note step ``step`` (0-based) with its ``loss`` and the gradients of ``params``
        (skipped with ``check_gradients=False``, e.g. under a GradScaler, which handles
        non-finite scaled gradients itself). No host-device synchronisation."""
        loss = loss.detach().to(torch.float64).reshape(())
        finite = torch.isfinite(loss)
        grad_finite = torch.ones((), dtype=torch.bool, device=self.device)
        if check_gradients:
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                largest = torch.nn.utils.get_total_norm(grads, norm_type=float("inf"))
                grad_finite = torch.isfinite(largest)
        first = (self.bad_step < 0) & ~(finite & grad_finite)
        self.bad_step = torch.where(first, torch.full_like(self.bad_step, step), self.bad_step)
        self.bad_loss = torch.where(first, loss, self.bad_loss)
        self.bad_grad = torch.where(first, finite & ~grad_finite, self.bad_grad)

    def check(self, stage: str, epoch: int, last_saved: str) -> None:
        """One synchronisation: raise :class:`NonFiniteError` (on every rank) when any rank
        saw a non-finite value. ``epoch`` is 1-based; ``last_saved`` says what the run folder
        still holds, for the message."""
        local = torch.stack([(self.bad_step >= 0).to(torch.float64),
                             self.bad_step.to(torch.float64), self.bad_loss,
                             self.bad_grad.to(torch.float64)]).cpu()
        any_bad = distributed.sum_tensor(local[:1].clone())
        if float(any_bad) == 0:
            return
        if float(local[0]) == 0:
            where = f"{stage} epoch {epoch}: another process"
        else:
            what = "a gradient is not finite" if float(local[3]) else "the loss is not finite"
            where = (f"{stage} epoch {epoch}, step {int(local[1]) + 1}: {what} "
                     f"(loss {float(local[2]):.4g})")
        raise NonFiniteError(
            f"{where}; training diverged, stopped before this epoch was saved: lower the "
            f"learning rate ({LR_KEYS.get(stage, 'the learning rate')}) or set train.amp=none "
            f"if AMP is on; {last_saved}")
