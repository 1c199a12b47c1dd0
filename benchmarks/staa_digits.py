"""STAA on sklearn digits: the paper's ablation ladder and our shape choices, same budget.

Data: sklearn's ``load_digits`` (1797 real 8x8 images shipped with sklearn), scaled to [0, 1],
upsampled to 12x12 (bilinear), repeated over T=4 steps (direct encoding); a fixed stratified
split of 1347 train / 450 test. Backbone: a small spiking ResNet from
:class:`sj_distill.models.SpikingResNet` (basic blocks, stages [1,1,1] x [8,16,32], CIFAR
stem, default LIF: decay 0.2, threshold 1, soft detached reset, sigmoid surrogate 4).
STAA: ``staa.patch(model, (1, 12, 12), ...)``, by default on the last neuron of every stage.
Budget, the same for every row: ``--epochs`` (default 2) epochs of Adam (lr 1e-2, cosine),
batch 32, CE on the time-mean logits.

Row groups (``--group``):
  * ``ladder``: plain; + GC; + PE; + SA; + TSRD; + adaptive LIF (full STAA), parts added in
    the paper's ablation order (GC, PE, SA, TSRD) with the adaptive LIF last;
  * ``shapes``: full STAA with one of our shape choices changed (no LayerNorms, a plain
    ``x*g`` GC gate, step-attention kernel 1, full M/N maps, TSRD per forward, every neuron).

Prints one line per run and a summary (test accuracy, mean +- std over seeds; added params and
MACs per sample) and writes them as JSON. Run:

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/staa_digits.py --group ladder \
        [--epochs 2] [--seeds 0 1 2] [--json benchmarks/results/staa/ladder.json]
    python benchmarks/staa_digits.py --merge a.json b.json   # one table over all their seeds
    python benchmarks/staa_digits.py --overhead   # STAA cost on ResNet-19, 32x32, T=4
"""
from __future__ import annotations

import argparse
import json
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
SIZE = 12
NONE = dict(pe=False, gc=False, alif=False, sa=False, tsrd=False)
FULL = dict(pe=True, gc=True, alif=True, sa=True, tsrd=True)
GROUPS = {
    "ladder": [
        ("plain SNN", None),
        ("+ GC", dict(NONE, gc=True)),
        ("+ PE", dict(NONE, gc=True, pe=True)),
        ("+ SA", dict(NONE, gc=True, pe=True, sa=True)),
        ("+ TSRD", dict(FULL, alif=False)),
        ("+ adaptive LIF (full)", FULL),
    ],
    "shapes": [
        ("full, no LayerNorm", dict(FULL, norm=False)),
        ("full, GC gate x*g", dict(FULL, gc_gate="plain")),
        ("full, SA kernel 1", dict(FULL, sa_kernel=1)),
        ("full, M,N maps [C,H,W]", dict(FULL, alif_maps="full")),
        ("full, TSRD per forward", dict(FULL, tsrd_unit="forward")),
        ("full, every neuron", dict(FULL, where="all")),
    ],
}


def load_data(kind="static"):
    """``(x_train, y_train, x_test, y_test)``: static images ``[N, 1, 12, 12]`` or, for
    ``kind="dvs"``, digits-dvs event frames ``[N, T, 2, 12, 12]`` (its own 80/20 split)."""
    if kind == "dvs":
        from sj_distill.data import build_digits_dvs

        train, test = build_digits_dvs(img_size=SIZE, T=T, amplitude=1.0)
        return (train.frames, torch.as_tensor(train.labels), test.frames,
                torch.as_tensor(test.labels))
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target)
    tr, te = train_test_split(range(len(y)), test_size=450, stratify=digits.target,
                              random_state=0)
    return x[tr], y[tr], x[te], y[te]


def build(parts, seed, in_chans=1):
    torch.manual_seed(seed)
    model = SpikingResNet(BasicBlock, (1, 1, 1), (8, 16, 32), num_classes=10, in_chans=in_chans)
    if parts is not None:
        staa.patch(model, (in_chans, SIZE, SIZE), time_steps=T, **parts)
    return model


def logits(model, x):
    """Static images ``[B, C, H, W]`` are repeated T times; event frames ``[B, T, C, H, W]``
    are made time-major."""
    seq = x.transpose(0, 1) if x.dim() == 5 else x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
    out = model(seq).mean(0)
    sj.reset(model)
    return out


def run(parts, seed, epochs, data):
    xtr, ytr, xte, yte = data
    model = build(parts, seed, in_chans=xtr.shape[-3])
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


def merge(paths):
    """Print one markdown table pooling the seeds of several JSON outputs, row by row."""
    rows = {}
    for path in paths:
        with open(path) as f:
            for row in json.load(f)["rows"]:
                rows.setdefault(row["row"], dict(row, accs=[]))["accs"] += row["accs"]
    print("| row | test acc % (mean +- std) | seeds | +params | +MACs / sample |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        accs = row["accs"]
        print(f"| {name} | {statistics.mean(accs):.2f} +- {statistics.stdev(accs):.2f} | "
              f"{len(accs)} | {row['params']} | {row['macs']} |")


def resnet19_overhead():
    """Print what STAA adds to ``resnet19`` (100 classes) on 32x32 at T=4, for
    ``where="stage_last"`` and ``"all"``, against the backbone's parameters and conv/linear MACs."""
    from torch import nn

    from sj_distill import models

    sample = torch.rand(T, 1, 3, 32, 32)
    model = models.create_model("resnet19", num_classes=100)
    macs = []

    def count(mod, _inputs, out):
        fan_in = (mod.in_features if isinstance(mod, nn.Linear) else
                  mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] // mod.groups)
        macs.append(out.numel() * fan_in)

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(sample)
    for h in hooks:
        h.remove()
    base_params, base_macs = sum(p.numel() for p in model.parameters()), sum(macs)
    print(f"resnet19, 32x32, T={T}: {base_params} params, {base_macs} conv/linear MACs per sample")
    for where in ("stage_last", "all"):
        model = staa.patch(models.create_model("resnet19", num_classes=100), (3, 32, 32),
                           where=where, time_steps=T)
        cost = staa.overhead(model, sample)
        print(f"where={where}: {len(cost['neurons'])} neurons, +{cost['params']} params "
              f"({100 * cost['params'] / base_params:.2f}%), +{cost['macs']} MACs "
              f"({100 * cost['macs'] / base_macs:.3f}%)")
        for name, row in cost["neurons"].items():
            if where == "stage_last":
                print(f"  {name}: C={row['channels']}, input {row['input']}, "
                      f"+{row['params']} params, +{row['macs']} MACs")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", choices=sorted(GROUPS), default="ladder")
    parser.add_argument("--rows", type=int, nargs="+", help="row indices to run (default all)")
    parser.add_argument("--data", choices=("static", "dvs"), default="static",
                        help="static digits or digits-dvs event frames (12x12, T bins)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", help="write the summary rows here")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="only print the pooled table")
    parser.add_argument("--overhead", action="store_true", help="only print ResNet-19's STAA cost")
    args = parser.parse_args()
    if args.overhead:
        torch.set_num_threads(1)
        resnet19_overhead()
        return
    if args.merge:
        merge(args.merge)
        return
    torch.set_num_threads(1)
    data = load_data(args.data)
    rows = [r for i, r in enumerate(GROUPS[args.group]) if args.rows is None or i in args.rows]
    print(f"spikingjelly {sj.SJ_VERSION}, torch {torch.__version__}, T={T}, {SIZE}x{SIZE}, "
          f"data={args.data}, epochs={args.epochs}, seeds={args.seeds}, group={args.group}",
          flush=True)
    summary = []
    for name, parts in rows:
        accs, secs = [], []
        for s in args.seeds:
            start = time.time()
            accs.append(run(parts, s, args.epochs, data))
            secs.append(time.time() - start)
            print(f"  {name} seed {s}: {accs[-1]:.2f} ({secs[-1]:.0f} s)", flush=True)
        cost = (dict(params=0, macs=0) if parts is None else
                staa.overhead(build(parts, 0, data[0].shape[-3]),
                              torch.zeros(T, 1, data[0].shape[-3], SIZE, SIZE)))
        row = dict(row=name, mean=statistics.mean(accs),
                   std=statistics.stdev(accs) if len(accs) > 1 else 0.0, accs=accs,
                   params=cost["params"], macs=cost["macs"], s_per_run=statistics.mean(secs))
        summary.append(row)
        print(f"{name:<26} {row['mean']:6.2f} +- {row['std']:4.2f}  "
              f"[{' '.join(f'{a:.2f}' for a in accs)}]  +params {row['params']}  "
              f"+MACs {row['macs']}  {row['s_per_run']:.0f} s/run", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(spikingjelly=sj.SJ_VERSION, torch=torch.__version__, T=T,
                           data=args.data, size=SIZE, epochs=args.epochs, seeds=args.seeds,
                           rows=summary), f, indent=1)


if __name__ == "__main__":
    main()
