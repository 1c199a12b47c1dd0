"""How large and how aligned rate-BP's gradient is against BPTT's, at initialisation.

The ``digits`` recipe's student (``cifar_resnet20``, LIF decay 0.2, soft detached reset,
sigmoid surrogate alpha 4) on 64 digits images (16x16, normalised, direct encoding, T=4):
one cross-entropy gradient by BPTT on the time-mean logits and one by rate-based backprop,
with and without the public code's 1/T scale. Prints, over the parameter tensors, the median
(min, max) of ``|g_rate| / |g_bptt|`` and the median cosine between the two gradients.

    PYTHONPATH=. python benchmarks/rate_grad_ratio.py
"""
from __future__ import annotations

import copy
import statistics

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from sj_distill import models, rate

T, BATCH, SIZE = 4, 64, 16


def digits_batch():
    data = load_digits()
    x = torch.tensor(data.images[:BATCH], dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=SIZE, mode="bilinear").expand(-1, 3, -1, -1)
    x = (x - x.mean()) / x.std()
    return x.unsqueeze(0).expand(T, *x.shape), torch.tensor(data.target[:BATCH])


def main() -> None:
    torch.manual_seed(0)
    net = models.create_model("cifar_resnet20", num_classes=10, decay=0.2, v_threshold=1.0,
                              reset="soft", detach_reset=True, surrogate_fn="sigmoid", alpha=4.0)
    x, y = digits_batch()
    bptt = copy.deepcopy(net).train()
    F.cross_entropy(bptt(x).mean(0), y).backward()
    print("| rate-BP | median (min, max) of |g_rate|/|g_bptt| | median cosine |")
    print("|---|---|---|")
    for scale in (True, False):
        rated = rate.enable(copy.deepcopy(net), scale_grad_by_T=scale).train()
        F.cross_entropy(rated(x), y).backward()
        pairs = [(r.grad.flatten(), b.grad.flatten())
                 for r, b in zip(rated.parameters(), bptt.parameters()) if b.grad.norm() > 0]
        ratios = [(r.norm() / b.norm()).item() for r, b in pairs]
        cosines = [F.cosine_similarity(r, b, 0).item() for r, b in pairs]
        print(f"| scale_grad_by_T={scale} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}, {max(ratios):.3f}) | {statistics.median(cosines):.3f} |")


if __name__ == "__main__":
    main()
