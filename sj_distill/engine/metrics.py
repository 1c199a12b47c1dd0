"""Accuracy bookkeeping (top-k counts summed over ranks)."""
from __future__ import annotations

from typing import Dict

import torch

from . import distributed


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> Dict[int, int]:
    """Number of samples whose label is among the ``k`` largest logits, per ``k``."""
    kmax = min(max(ks), logits.shape[1])
    pred = logits.topk(kmax, dim=1).indices
    hit = pred.eq(target[:, None])
    return {k: int(hit[:, :min(k, kmax)].any(1).sum()) for k in ks}


class Meter:
    """Running sums of loss, sample count and top-1/top-5 hits; ``result()`` reduces over ranks."""

    def __init__(self):
        self.sums = torch.zeros(4, dtype=torch.float64)  # loss*n, n, top1, top5
        self.parts: Dict[str, float] = {}

    def update(self, loss: float, logits: torch.Tensor, target: torch.Tensor,
               parts: Dict[str, float] | None = None) -> None:
        n = target.shape[0]
        hits = topk_correct(logits, target)
        self.sums += torch.tensor([loss * n, n, hits[1], hits[5]], dtype=torch.float64)
        for key, value in (parts or {}).items():
            self.parts[key] = self.parts.get(key, 0.0) + value * n

    def result(self) -> Dict[str, float]:
        keys = sorted(self.parts)
        packed = torch.cat([self.sums, torch.tensor([self.parts[k] for k in keys],
                                                    dtype=torch.float64)])
        packed = distributed.sum_tensor(packed)
        n = max(float(packed[1]), 1.0)
        out = {"loss": float(packed[0]) / n, "top1": 100.0 * float(packed[2]) / n,
               "top5": 100.0 * float(packed[3]) / n, "samples": int(packed[1])}
        out.update({f"loss_{k}": float(v) / n for k, v in zip(keys, packed[4:])})
        return out
