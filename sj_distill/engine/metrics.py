"""Accuracy bookkeeping (top-k counts summed over ranks), kept on the training device so that
updating it never waits for the device."""
from __future__ import annotations

from typing import Dict, Optional, Union

import torch
import torch.nn.functional as F

from . import distributed


def topk_hits(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> torch.Tensor:
    """Number of samples whose label is among the ``k`` largest logits, per ``k`` (a tensor
    ``[len(ks)]`` on the logits' device)."""
    kmax = min(max(ks), logits.shape[1])
    hit = logits.topk(kmax, dim=1).indices.eq(target[:, None])
    return torch.stack([hit[:, :min(k, kmax)].any(1).sum() for k in ks])


class Meter:
    """Running sums of loss, sample count, top-1/top-5 hits and the cross-entropy of the
    (time-mean) logits ``[B,K]``; ``result()`` reduces over ranks (one synchronisation)."""

    def __init__(self, device: Optional[torch.device] = None):
        self.sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss*n, n, top1, top5, ce*n
        self.parts: Dict[str, float] = {}

    def update(self, loss: Union[float, torch.Tensor], logits: torch.Tensor, target: torch.Tensor,
               parts: Dict[str, float] | None = None) -> None:
        n = target.shape[0]
        hits = topk_hits(logits, target).to(self.sums)
        loss = torch.as_tensor(loss, dtype=torch.float64, device=self.sums.device).reshape(())
        ce = F.cross_entropy(logits.detach().float(), target).to(self.sums)
        self.sums += torch.stack([loss * n, torch.tensor(float(n), dtype=torch.float64,
                                                         device=self.sums.device),
                                  hits[0], hits[1], ce * n])
        for key, value in (parts or {}).items():
            self.parts[key] = self.parts.get(key, 0.0) + float(value) * n

    def result(self) -> Dict[str, float]:
        """``loss``, ``top1``, ``top5`` (percent), ``ce`` (cross-entropy of the logits alone,
        whatever the loss), ``samples`` and ``loss_<part>`` per loss part."""
        keys = sorted(self.parts)
        packed = torch.cat([self.sums.cpu(), torch.tensor([self.parts[k] for k in keys],
                                                          dtype=torch.float64)])
        packed = distributed.sum_tensor(packed.to(self.sums.device)).cpu()
        n = max(float(packed[1]), 1.0)
        out = {"loss": float(packed[0]) / n, "top1": 100.0 * float(packed[2]) / n,
               "top5": 100.0 * float(packed[3]) / n, "ce": float(packed[4]) / n,
               "samples": int(packed[1])}
        out.update({f"loss_{k}": float(v) / n for k, v in zip(keys, packed[5:])})
        return out
