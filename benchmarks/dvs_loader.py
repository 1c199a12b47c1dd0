"""Samples/s of the CIFAR10-DVS training loader with a warm cache (flip + roll augmentation,
float16 cache -> float32 [T, 2, 48, 48]), for 0 and 2 DataLoader workers.

The recordings are synthetic (written in the real ``.aedat`` format by the tests' writer);
with a warm cache the loader never touches them, so their event count does not matter. The
cold pass (framing + resize of every recording) is timed too, per recording.

    PYTHONPATH=.:tests python benchmarks/dvs_loader.py --per-class 100 --out benchmarks/results/data
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=100, help="recordings per class")
    parser.add_argument("--events", type=int, default=20000, help="events per recording")
    parser.add_argument("--T", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="timed passes per setting")
    parser.add_argument("--out", default=None, help="folder for dvs_loader.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from _synthetic_data import write_cifar10dvs

    from sj_distill.data.cifar10dvs import CIFAR10DVS

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar10dvs(root, per_class=args.per_class, events_per_file=args.events)
        options = dict(T=args.T, samples_per_class=args.per_class,
                       test_per_class=args.per_class // 10)
        start = time.perf_counter()
        train = CIFAR10DVS(root, train=True, **options)
        cold = (time.perf_counter() - start) / len(train)
        results = {"recordings": len(train), "events_per_recording": args.events, "T": args.T,
                   "batch": args.batch, "cold_seconds_per_recording": cold,
                   "cpu_count": os.cpu_count(), "warm": {}}
        for workers in (0, 2):
            loader = DataLoader(train, batch_size=args.batch, shuffle=True, drop_last=True,
                                num_workers=workers, persistent_workers=workers > 0)
            next(iter(loader))  # start the workers
            start, seen = time.perf_counter(), 0
            for _ in range(args.epochs):
                for frames, _labels in loader:
                    seen += frames.shape[0]
            rate = seen / (time.perf_counter() - start)
            results["warm"][f"workers_{workers}"] = rate
            print(f"warm cache, {workers} workers: {rate:,.0f} samples/s "
                  f"({tuple(frames.shape)} per batch)")
        print(f"cold (frame + resize + cache) {cold * 1000:.1f} ms per recording of "
              f"{args.events} events")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "dvs_loader.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
