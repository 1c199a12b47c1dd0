"""What the NaN/inf guard costs per training step (CPU, or CUDA when available).

The ``digits`` recipe's student (``cifar_resnet20``, width 16, T=4, 16x16 inputs, batch 64)
trained by BPTT for ``STEPS`` steps three ways, interleaved in rounds so that load on the
machine hits all of them alike: without the guard, with :meth:`FiniteGuard.observe` every step
(a gradient norm and a few tensor operations on the device, no synchronisation), and with a
host read of the loss every step (``float(loss)``, what a per-step check would cost on a GPU).
Prints the median milliseconds per step of each.

    PYTHONPATH=. python benchmarks/guard_overhead.py
"""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from sj_distill import models, sj
from sj_distill.engine.guard import FiniteGuard

T, BATCH, SIZE, STEPS, ROUNDS = 4, 64, 16, 20, 5


def steps(model, optimizer, x, y, mode: str, device) -> float:
    """Seconds per step of ``STEPS`` steps in ``mode`` (``none``, ``guard``, ``host-read``)."""
    guard = FiniteGuard(device)
    params = [p for p in model.parameters()]
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    for step in range(STEPS):
        loss = F.cross_entropy(model(x).mean(0), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if mode == "guard":
            guard.observe(step, loss, params)
        elif mode == "host-read":
            if not torch.isfinite(loss).item():
                raise RuntimeError("non-finite")
        optimizer.step()
        sj.reset(model)
    guard.check("student", 1, "")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / STEPS


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = models.create_model("cifar_resnet20", num_classes=10, width=16).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(T, BATCH, 3, SIZE, SIZE, device=device)
    y = torch.randint(0, 10, (BATCH,), device=device)
    times = {"none": [], "guard": [], "host-read": []}
    steps(model, optimizer, x, y, "none", device)  # warm-up
    for _ in range(ROUNDS):
        for mode in times:
            times[mode].append(steps(model, optimizer, x, y, mode, device))
    base = statistics.median(times["none"])
    print(f"device {device}, {sum(p.numel() for p in model.parameters())} parameters, "
          f"{STEPS} steps x {ROUNDS} rounds")
    print("| mode | ms per step (median) | vs none |")
    print("|---|---|---|")
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"| {mode} | {median * 1000:.1f} | {median / base:.3f} |")


if __name__ == "__main__":
    main()
