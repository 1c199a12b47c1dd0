"""The main job (``sj-distill recipe digits``) against plain training at the same budget.

Per seed, through the engine (a subprocess each, one torch thread):
  * ``main``  the ``digits`` recipe as shipped (teacher trained, then BRD + rate-BP);
  * ``ce``    the same recipe without a teacher: rate-BP, cross-entropy only, same student,
              optimiser, schedule, epochs and data order;
plus any ``--extra NAME=OVERRIDES`` variants (``;``-separated recipe overrides). Prints final
top-1 and the CPU seconds (user + system, of the run's process) of every run, mean +- half
range per variant, and writes them to ``benchmarks/results/distill/digits_main_job.json``.

CPU seconds, not wall time: on a machine shared with other jobs wall time measures the load.
With one thread, a run's CPU seconds bound its wall time on an idle machine from above (the
run computes on one core; a second core only helps).

    PYTHONPATH=. python benchmarks/digits_main_job.py --seeds 0 1 2 --out /tmp/main_job
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

VARIANTS = {
    "main": [],
    "ce": ["teacher.model=null", "train.loss.name=ce", "train.loss.params={}"],
}
RESULTS = Path(__file__).parent / "results" / "distill" / "digits_main_job.json"


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(variant: str, overrides, seed: int, out: Path) -> dict:
    """Final top-1 (%) and CPU seconds of one engine run (reused when already finished)."""
    run_dir = out / f"{variant}-s{seed}"
    summary, cost = run_dir / "summary.json", run_dir / "cpu_seconds.txt"
    if not summary.is_file() or not cost.is_file():
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        before = children_cpu_seconds()
        subprocess.run([sys.executable, "-m", "sj_distill", "recipe", "digits", f"seed={seed}",
                        *overrides, "--out", str(run_dir), "--restart"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        cost.write_text(f"{children_cpu_seconds() - before:.1f}\n")
    return dict(top1=json.loads(summary.read_text())["top1"],
                cpu_seconds=float(cost.read_text()))


def spread(values) -> str:
    mean, half = sum(values) / len(values), (max(values) - min(values)) / 2
    return f"{mean:.2f} +- {half:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help="run these, in order (finished runs in --out are reused, so one "
                             "process per variant can share --out); extras by their NAME")
    parser.add_argument("--extra", nargs="*", default=[], metavar="NAME=OVERRIDES",
                        help="more variants, e.g. 'kd=train.loss.params={hybrid_ce_weight: 0}'")
    parser.add_argument("--out", type=Path, default=Path("runs/digits_main_job"))
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS}")
    args = parser.parse_args()
    variants = dict(VARIANTS)
    for item in args.extra:
        name, _, overrides = item.partition("=")
        variants[name] = [o for o in overrides.split(";") if o]
    unknown = [v for v in args.variants if v not in variants]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(variants)}")
    names = list(args.variants)
    rows = {v: {s: run(v, variants[v], s, args.out) for s in args.seeds} for v in names}
    print("| variant | top-1 % (mean +- half range) | per seed | CPU s per run (mean) |")
    print("|---|---|---|---|")
    for name, by_seed in rows.items():
        top1 = [r["top1"] for r in by_seed.values()]
        cpu = [r["cpu_seconds"] for r in by_seed.values()]
        print(f"| {name} | {spread(top1)} | {', '.join(f'{v:.2f}' for v in top1)} | "
              f"{sum(cpu) / len(cpu):.0f} |")
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        from importlib.metadata import version

        environment = {name: version(name) for name in ("torch", "spikingjelly", "timm")}
        RESULTS.write_text(json.dumps(dict(environment=environment, threads=1,
                                           variants={n: variants[n] for n in names},
                                           runs=rows), indent=1) + "\n")


if __name__ == "__main__":
    main()
