"""Rate-BP against BPTT on digits, at one budget, through the engine (``sj-distill recipe``).

Runs the ``digits`` recipe at its 2026-11-24 budget (ResNet-20 SNN, T=4, 8 epochs, SGD lr 0.1
momentum 0.9 wd 5e-4, cosine, 1/T gradient scale) per seed as
  * ``bptt-ce``  BPTT, cross-entropy on the time-mean logits,
  * ``rate-ce``  rate-based backprop, cross-entropy,
  * ``rate-brd`` rate-based backprop, BRD (the recipe as it was then); the timm teacher is
                 trained once, in the first seed's run, and reused by the other seeds,
  * ``rate-ce-unscaled`` rate-based backprop, cross-entropy, without the public code's 1/T
                 gradient scale (a diagnostic: rate-BP's gradient is smaller than BPTT's),
then prints final top-1 per seed and mean +- half range per method, and writes the rows to
``benchmarks/results/rate/digits_evidence.json``.

    PYTHONPATH=. python benchmarks/rate_digits.py --seeds 0 1 2 --out runs/rate_digits
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

#: The budget this comparison was measured at (the digits recipe of 2026-11-24), pinned here
#: because the recipe itself has moved on (lr 0.05, no 1/T scale): SGD lr 0.1, 1/T scale on.
BUDGET = ["train.optimizer.lr=0.1", "train.scale_grad_by_T=true"]
METHODS = {
    "bptt-ce": BUDGET + ["train.method=bptt", "train.loss.name=ce", "train.loss.params={}",
                         "teacher.model=null"],
    "rate-ce": BUDGET + ["train.loss.name=ce", "train.loss.params={}", "teacher.model=null"],
    "rate-brd": BUDGET,
    "rate-ce-unscaled": BUDGET + ["train.loss.name=ce", "train.loss.params={}",
                                  "teacher.model=null", "train.scale_grad_by_T=false"],
}
RESULTS = Path(__file__).parent / "results" / "rate" / "digits_evidence.json"


def run(method: str, seed: int, out: Path, teacher: Path) -> float:
    """Final top-1 (%) of one engine run (reused when its summary.json already exists)."""
    run_dir = out / f"{method}-s{seed}"
    summary = run_dir / "summary.json"
    if not summary.is_file():
        extra = list(METHODS[method])
        if method == "rate-brd" and teacher.is_file():
            extra.append(f"teacher.checkpoint={teacher}")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        subprocess.run([sys.executable, "-m", "sj_distill", "recipe", "digits", f"seed={seed}",
                        *extra, "--out", str(run_dir)], check=True, env=env)
    return json.loads(summary.read_text())["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="run only these (runs already finished in --out are reused, so "
                             "one process per method can share --out)")
    parser.add_argument("--out", type=Path, default=Path("runs/rate_digits"))
    args = parser.parse_args()
    teacher = args.out / f"rate-brd-s{args.seeds[0]}" / "teacher.pt"
    rows = {m: {s: run(m, s, args.out, teacher) for s in args.seeds} for m in args.methods}
    print("| method | top-1 % (mean +- half range) | per seed |")
    print("|---|---|---|")
    for method, by_seed in rows.items():
        values = list(by_seed.values())
        mean, half = sum(values) / len(values), (max(values) - min(values)) / 2
        print(f"| {method} | {mean:.2f} +- {half:.2f} | "
              f"{', '.join(f'{v:.2f}' for v in values)} |")
    if args.methods == list(METHODS):
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
