"""ImageNet training-loader throughput per CPU core, on a synthetic folder of ImageNet-sized
JPEGs (500x375, ~110 KB each like ImageNet's average), through ``sj-distill bench data``'s
own measurement (torchvision ``ImageFolder`` + PIL decode + RandomResizedCrop 224 + flip +
normalise, the ``ratebp-imagenet`` recipe's loader).

    PYTHONPATH=. python benchmarks/imagenet_decode.py --workers 0 1 2

Writes ``benchmarks/results/data/imagenet_decode.json``. ``workers=0`` decodes in the main
process: samples/s per core. With W workers, expect up to W times that while cores are free.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from sj_distill.bench.data import measure

RESULTS = Path(__file__).parent / "results" / "data" / "imagenet_decode.json"


def write_folder(root: Path, classes: int, per_class: int) -> float:
    """``root/{train,val}/<wnid>/*.JPEG``; returns the mean file size in KB."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500]
    sizes = []
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                phase = rng.uniform(0, 6.3, 3)
                smooth = 127 + 100 * np.sin(xx[..., None] / 37.0 + yy[..., None] / 23.0 + phase)
                pixels = np.clip(smooth + rng.normal(0, 22, (375, 500, 3)), 0, 255)
                path = folder / f"img_{i}.JPEG"
                Image.fromarray(pixels.astype(np.uint8)).save(path, quality=85)
                sizes.append(path.stat().st_size / 1024)
    return float(np.mean(sizes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=6)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        kb = write_folder(Path(tmp), classes=4, per_class=(args.batches + 2) * args.batch // 4)
        for workers in args.workers:
            result = measure("ratebp-imagenet", [f"data.workers={workers}",
                                                 f"data.batch_size={args.batch}",
                                                 "data.options={verify: false}"],
                             tmp, batches=args.batches, warmup=1)
            rows.append({**result, "mean_jpeg_kb": round(kb, 1)})
            print(f"workers={workers}: {result['samples_per_s']:.0f} samples/s "
                  f"({result['ms_per_batch']:.0f} ms per batch of {args.batch}; JPEGs {kb:.0f} KB)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"cpu": platform.processor() or platform.machine(),
                                   "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
