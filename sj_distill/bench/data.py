"""``sj-distill bench data RECIPE``: how fast the recipe's training loader delivers samples.

The loader is built exactly as a run builds it (dataset, augmentation, sampler, workers,
pinned memory, prefetch), then ``--batches`` batches are drawn after ``--warmup`` batches
(which also start the workers and fill a disk cache). Prints samples/s and ms per batch, and
what one step of the model would have to beat for the loader to be no bottleneck.
"""
from __future__ import annotations

import argparse
import time
from typing import List, Optional


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name or YAML path")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides, e.g. data.workers=4 data.batch_size=128")
    parser.add_argument("--data-dir", default=None, help="dataset folder (data.root)")
    parser.add_argument("--batches", type=int, default=20, help="timed batches (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches first (default 3)")


def measure(recipe_name: str, overrides: List[str], data_dir: Optional[str], batches: int,
            warmup: int) -> dict:
    """``{"samples_per_s", "ms_per_batch", "batch_size", "workers"}`` of the training loader."""
    from ..config import load_recipe
    from ..engine.build import build_data, make_loaders

    if batches < 1 or warmup < 0:
        raise ValueError(f"--batches must be >= 1 and --warmup >= 0, got {batches}, {warmup}")
    recipe = load_recipe(recipe_name, overrides)
    train_set, test_set = build_data(recipe, data_dir)
    loader, _ = make_loaders(recipe, train_set, test_set, recipe["seed"])
    if len(loader) < warmup + batches:
        raise ValueError(f"the training loader has {len(loader)} batches, fewer than "
                         f"--warmup {warmup} + --batches {batches}; lower them or data.batch_size")
    iterator = iter(loader)
    for _ in range(warmup):
        next(iterator)
    samples, began = 0, time.perf_counter()
    for _ in range(batches):
        x, _ = next(iterator)
        samples += x.shape[0]
    seconds = time.perf_counter() - began
    return {"samples_per_s": samples / seconds, "ms_per_batch": 1000 * seconds / batches,
            "batch_size": loader.batch_size, "workers": loader.num_workers}


def run(args: argparse.Namespace) -> int:
    result = measure(args.recipe, args.overrides, args.data_dir, args.batches, args.warmup)
    print(f"{args.recipe}: {result['samples_per_s']:.0f} samples/s, "
          f"{result['ms_per_batch']:.1f} ms per batch of {result['batch_size']} "
          f"({result['workers']} workers); the loader is no bottleneck while a training step "
          f"on that batch takes longer than {result['ms_per_batch']:.1f} ms")
    return 0
