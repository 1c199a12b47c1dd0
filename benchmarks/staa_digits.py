"""STAA on sklearn digits: plain SNN vs STAA-patched SNN, and the paper's ablation.

Data: sklearn's ``load_digits`` (1797 real 8x8 images shipped with sklearn), scaled to [0, 1],
upsampled to 12x12 (bilinear), repeated over T=4 steps (direct encoding); a fixed stratified
split of 1347 train / 450 test. Backbone: a small spiking ResNet from
:class:`sj_distill.models.SpikingResNet` (basic blocks, stages [1,1,1] x [8,16,32], CIFAR
stem, default LIF: decay 0.2, threshold 1, soft detached reset, sigmoid surrogate 4).
Budget: the same for every row: ``--epochs`` (default 3) epochs of Adam (lr 1e-2, cosine),
batch 32, CE on the time-mean logits. Rows (STAA after every stage): plain; adaptive LIF only;
then GC, PE, step attention (SA), time-step random dropout (TSRD) added one by one (the last
row is full STAA).
Prints test accuracy (mean +- std over 3 seeds) and wall time. Run:

    PYTHONPATH=$PWD python benchmarks/staa_digits.py [--epochs 3] [--seeds 0 1 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sj_distill import sj, staa
from sj_distill.models import SpikingResNet
from sj_distill.models.resnet import BasicBlock

T = 4
ROWS = [
    ("plain SNN", None),
    ("+ adaptive LIF", dict(pe=False, gc=False, alif=True, sa=False, tsrd=False)),
    ("+ GC", dict(pe=False, gc=True, alif=True, sa=False, tsrd=False)),
    ("+ PE", dict(pe=True, gc=True, alif=True, sa=False, tsrd=False)),
    ("+ SA", dict(pe=True, gc=True, alif=True, sa=True, tsrd=False)),
    ("+ TSRD (full STAA)", dict(pe=True, gc=True, alif=True, sa=True, tsrd=True)),
]


def load_data():
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(12, 12), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target)
    tr, te = train_test_split(range(len(y)), test_size=450, stratify=digits.target,
                              random_state=0)
    return x[tr], y[tr], x[te], y[te]


def build(parts, seed):
    torch.manual_seed(seed)
    model = SpikingResNet(BasicBlock, (1, 1, 1), (8, 16, 32), num_classes=10, in_chans=1)
    if parts is not None:
        staa.patch(model, time_steps=T, **parts)
    return model


def logits(model, x):
    out = model(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)
    sj.reset(model)
    return out


def run(parts, seed, epochs, data):
    xtr, ytr, xte, yte = data
    model = build(parts, seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = epochs * ((len(ytr) + 31) // 32)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(ytr), generator=gen).split(32):
            loss = F.cross_entropy(logits(model, xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([logits(model, xb).argmax(1) for xb in xte.split(150)])
    return 100.0 * (pred == yte).float().mean().item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    data = load_data()
    print(f"spikingjelly {sj.SJ_VERSION}, torch {torch.__version__}, T={T}, "
          f"epochs={args.epochs}, seeds={args.seeds}")
    print(f"{'row':<22} {'test acc % (mean +- std)':>26} {'per seed':>24} {'+params':>8} "
          f"{'+MACs/sample':>13} {'s/run':>6}")
    for name, parts in ROWS:
        start = time.time()
        accs = [run(parts, s, args.epochs, data) for s in args.seeds]
        secs = (time.time() - start) / len(args.seeds)
        if parts is None:
            extra_p = extra_m = 0
        else:
            cost = staa.overhead(build(parts, 0), torch.zeros(T, 1, 1, 12, 12))
            extra_p, extra_m = cost["params"], cost["macs"]
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"{name:<22} {statistics.mean(accs):>18.2f} +- {std:4.2f} "
              f"{' '.join(f'{a:.2f}' for a in accs):>24} {extra_p:>8} {extra_m:>13} "
              f"{secs:>6.1f}", flush=True)


if __name__ == "__main__":
    main()
