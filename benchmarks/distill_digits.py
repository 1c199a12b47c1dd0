"""Evidence that the distillation losses learn: sklearn digits, upsampled to 32x32, T=4.

A small timm teacher (``resnet10t``, CIFAR stem, widths 8/16/32/64) is trained first with
cross-entropy; then a spiking ``cifar_resnet20`` student (width 8, LIF, T=4) is trained with
the same epochs, optimiser and data order per seed by
  (a) ``ce``   plain cross-entropy on the time-mean logits (KDLoss with alpha=0),
  (b) ``kd``   KDLoss defaults (alpha 0.5, tau 4) on the time-mean logits,
  (c) ``tser`` TSERLoss defaults (alpha 0.5, gamma 0.1, tau 3) on the per-step logits, BPTT,
  (d) ``brd``  BlockReplacement + BRDLoss defaults, trained with rate-based backprop
               (``sj_distill.rate``).
Prints test accuracy (%) per seed and mean +- spread (half the max-min range) per method.

    PYTHONPATH=. python benchmarks/distill_digits.py            # ~15 min on one CPU core

One torch thread by default: on a CPU shared with other jobs, OpenMP threads that spin
waiting for each other made every step about 10x slower.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import timm  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from sj_distill import sj  # noqa: E402
from sj_distill.distill import distill_step, snn_input  # noqa: E402
from sj_distill.hybrid import BlockReplacement  # noqa: E402
from sj_distill.losses import BRDLoss, KDLoss, TSERLoss  # noqa: E402
from sj_distill.models import create_model  # noqa: E402
from sj_distill.teachers import cifar_stem, split_model  # noqa: E402

from sj_distill import rate  # noqa: E402

METHODS = ("ce", "kd", "tser", "brd")


def digits(image_size: int = 32, test_fraction: float = 0.2):
    """Normalised ``[N,1,32,32]`` images and labels, split by a fixed permutation."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(data.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def batches(x, y, batch_size, seed):
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    for i in range(0, len(y), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


@torch.no_grad()
def accuracy(model, x, y, time_steps=None):
    """Top-1 (%) of an ANN (``time_steps=None``) or a T-step SNN (time-mean logits)."""
    model.eval()
    correct = 0
    for xb, yb in batches(x, y, 256, 0):
        if time_steps is None:
            logits = model(xb)
        else:
            logits = model(snn_input(xb, time_steps)).mean(0)
            sj.reset(model)
        correct += int((logits.argmax(-1) == yb).sum())
    return 100.0 * correct / len(y)


def train_teacher(train, test, epochs, lr, seed):
    torch.manual_seed(seed)
    model = timm.create_model("resnet10t", num_classes=10, in_chans=1, pretrained=False,
                              channels=(8, 16, 32, 64), stem_width=8)
    cifar_stem(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * -(-len(train[1]) // 64))
    for epoch in range(epochs):
        model.train()
        for xb, yb in batches(*train, 64, seed * 1000 + epoch):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
            sched.step()
    return split_model(model), accuracy(model, *test)


def train_student(method, teacher, train, test, args, seed):
    torch.manual_seed(seed)
    student = create_model("cifar_resnet20", 10, width=args.width, in_chans=1)
    if method == "brd":
        rate.enable(student)
        model = BlockReplacement(student, teacher)
        loss_fn, params = BRDLoss(), model.trainable_parameters()
    else:
        model = student
        loss_fn = {"ce": KDLoss(alpha=0.0), "kd": KDLoss(), "tser": TSERLoss()}[method]
        params = list(student.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    steps = args.epochs * -(-len(train[1]) // args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps)
    for epoch in range(args.epochs):
        model.train()
        for xb, yb in batches(*train, args.batch_size, seed * 1000 + epoch):
            distill_step(model, None if method == "brd" else teacher, (xb, yb), loss_fn, opt,
                         time_steps=args.time_steps)
            sched.step()
    return accuracy(student, *test, time_steps=args.time_steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--time-steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"spikingjelly {sj.SJ_VERSION}, torch {torch.__version__}; {vars(args)}")
    train, test = digits()
    start = time.time()
    results = {m: [] for m in args.methods}
    teacher_accs = []
    for seed in args.seeds:
        teacher, teacher_acc = train_teacher(train, test, args.teacher_epochs, 3e-3, seed)
        teacher_accs.append(teacher_acc)
        print(f"seed {seed}: teacher {teacher_acc:.1f}%  ({time.time() - start:.0f} s)", flush=True)
        for method in args.methods:
            acc = train_student(method, teacher, train, test, args, seed)
            results[method].append(acc)
            print(f"seed {seed}: {method:5s} {acc:.1f}%  ({time.time() - start:.0f} s)",
                  flush=True)
    print("\n| method | test accuracy % (mean +- half range) | per seed |")
    print("|---|---|---|")
    for name, accs in [("teacher (ANN)", teacher_accs)] + list(results.items()):
        spread = (max(accs) - min(accs)) / 2
        print(f"| {name} | {statistics.mean(accs):.1f} +- {spread:.1f} | "
              f"{', '.join(f'{a:.1f}' for a in accs)} |")


if __name__ == "__main__":
    main()
