"""Which rate-pass max-pool rule trains better: ``max_pool="rate"`` against ``"spikes"``.

A small convolutional SNN with two 2x2 max-pools on spike maps (conv3x3(1->16)-BN-LIF-maxpool,
conv3x3(16->32)-BN-LIF-maxpool, linear -> 10; LIF decay 0.2, threshold 1, soft detached reset,
sigmoid surrogate alpha 4), T=4, is trained per seed and method from the same initial weights
and data order on

  * ``--data digits``: the embedded digits (16x16, the package's fixed split, random shifts of
    1 px), or
  * ``--data fashion``: Fashion-MNIST from the Debian folder (``--fashion-root``, the four idx
    ``.gz`` files; 28x28, the first ``--train-size`` training images, all 10000 test images),

with

  * ``rate``   rate-based backprop, ``max_pool="rate"`` (the public code's rule, the default),
  * ``spikes`` rate-based backprop, ``max_pool="spikes"`` (the SNN's own pooled value),
  * ``bptt``   BPTT, for scale.

SGD lr 0.1, momentum 0.9, weight decay 5e-4, cosine over ``--epochs``, batch 64, CE on the
time-mean logits, no 1/T gradient scale (as the digits recipe at this short budget). Prints the
final test top-1 per seed and mean +- half range per method, and writes the table to
``benchmarks/results/rate/maxpool_rule_<data>.{json,md}``.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/rate_maxpool_rule.py --seeds 0 1 2 3 4
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/rate_maxpool_rule.py --data fashion \
        --epochs 3 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import layer

from sj_distill import rate, sj
from sj_distill.data.digits import DigitsDataset

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")

METHODS = ("rate", "spikes", "bptt")
RESULTS = Path(__file__).parent / "results" / "rate"
NEURON = dict(kind="lif", decay=0.2, v_threshold=1.0, reset="soft", detach_reset=True,
              surrogate_fn="sigmoid", alpha=4.0, step_mode="m")


def pooled_cnn(size: int) -> nn.Module:
    """``[T, B, 1, size, size]`` -> logits ``[T, B, 10]``; two max-pools on spike maps."""
    return nn.Sequential(
        layer.Conv2d(1, 16, 3, padding=1, step_mode="m"), layer.BatchNorm2d(16, step_mode="m"),
        sj.make_neuron(**NEURON), layer.MaxPool2d(2, 2, step_mode="m"),
        layer.Conv2d(16, 32, 3, padding=1, step_mode="m"), layer.BatchNorm2d(32, step_mode="m"),
        sj.make_neuron(**NEURON), layer.MaxPool2d(2, 2, step_mode="m"),
        layer.Flatten(step_mode="m"), layer.Linear(32 * (size // 4) ** 2, 10, step_mode="m"))


def read_idx(path: Path) -> torch.Tensor:
    """An idx ``.gz`` file (big-endian dimension sizes after a 4-byte magic) as uint8."""
    import gzip

    raw = gzip.decompress(path.read_bytes())
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    return torch.frombuffer(bytearray(raw[4 + 4 * len(dims):]), dtype=torch.uint8).view(*dims)


def fashion(root: Path, train: bool, size: int = 0):
    """``[(image [1, 28, 28] in [0, 1], label)]``: the first ``size`` images (0: all)."""
    prefix = "train" if train else "t10k"
    images = read_idx(root / f"{prefix}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{prefix}-labels-idx1-ubyte.gz")
    size = size or len(labels)
    images = images[:size].float().div(255).unsqueeze(1)
    return list(zip(images, labels[:size].tolist()))


def datasets(args):
    if args.data == "digits":
        return DigitsDataset(True, 16, max_shift=1), DigitsDataset(False, 16), 16
    return (fashion(args.fashion_root, True, args.train_size),
            fashion(args.fashion_root, False), 28)


def batches(dataset, batch: int, generator: torch.Generator):
    order = torch.randperm(len(dataset), generator=generator)
    for idx in order.split(batch):
        items = [dataset[i] for i in idx.tolist()]
        yield torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])


def train(method: str, seed: int, epochs: int, T: int, data) -> float:
    """Final test top-1 (%) of one run."""
    train_set, test_set, size = data
    torch.manual_seed(seed)
    model = pooled_cnn(size)
    if method != "bptt":
        rate.enable(model, scale_grad_by_T=False, max_pool=method)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for x, y in batches(train_set, 64, order):
            out = model(x.unsqueeze(0).repeat(T, 1, 1, 1, 1))
            logits = out.mean(0) if method == "bptt" else out
            optimizer.zero_grad()
            F.cross_entropy(logits, y).backward()
            optimizer.step()
            sj.reset(model)
        scheduler.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in batches(test_set, 256, torch.Generator().manual_seed(0)):
            correct += int((model(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0).argmax(1) == y)
                           .sum())
            sj.reset(model)
    return 100.0 * correct / len(test_set)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--data", choices=["digits", "fashion"], default="digits")
    parser.add_argument("--fashion-root", type=Path, default=FASHION_ROOT)
    parser.add_argument("--train-size", type=int, default=6000)
    args = parser.parse_args()
    began = time.perf_counter()
    data = datasets(args)
    rows = {m: {s: train(m, s, args.epochs, args.T, data) for s in args.seeds} for m in METHODS}
    what = ("digits 16x16" if args.data == "digits" else
            f"Fashion-MNIST 28x28 ({len(data[0])} train / {len(data[1])} test images)")
    lines = [f"{what}, two max-pools, T={args.T}, {args.epochs} epochs, seeds "
             f"{args.seeds}, SpikingJelly {sj.SJ_VERSION}, {torch.get_num_threads()} threads, "
             f"{time.perf_counter() - began:.0f} s", "",
             "| method | top-1 % (mean +- half range) | per seed |", "|---|---|---|"]
    for method, by_seed in rows.items():
        values = list(by_seed.values())
        mean, half = sum(values) / len(values), (max(values) - min(values)) / 2
        lines.append(f"| {method} | {mean:.2f} +- {half:.2f} | "
                     f"{', '.join(f'{v:.2f}' for v in values)} |")
    print("\n".join(lines))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"maxpool_rule_{args.data}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"data": args.data, "epochs": args.epochs, "T": args.T, "top1": rows}, indent=1) + "\n")
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
