"""Fashion-MNIST evidence sweep: every ``fmnist-*`` recipe and SpikingJelly's own example
(network and training loop) for several seeds; a table (mean ± std, wall time, peak memory), the
per-epoch test curves and a plot.

Each run is a subprocess (``OMP_NUM_THREADS=1``), ``--parallel`` at a time; its peak resident
memory is the child's own ``ru_maxrss`` (``os.wait4``), its time the wall time of the process.
Finished runs (a ``summary.json`` / ``result.json`` in their folder) are reused, so an
interrupted sweep continues and ``--report`` only rebuilds the outputs. Recipes that need the
teacher wait until ``--teacher`` exists (train it with ``sj-distill recipe fmnist-teacher``).

SpikingJelly's example (``spikingjelly.activation_based.examples.conv_fashion_mnist``) runs
unchanged through its own ``main()`` (IF neurons, ATan surrogate, MSE on the output firing
rate, SGD momentum 0.9, cosine), seeded with ``torch.manual_seed``, on the same training
and test subsets (written as torchvision idx files, since its ``main()`` reads the whole
folder) and our width, batch size, epochs and T.

    python benchmarks/fmnist_sweep.py --runs runs/fmnist-sweep            # run + report
    python benchmarks/fmnist_sweep.py --runs runs/fmnist-sweep --report   # report only
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["fmnist-bptt", "fmnist-rate", "fmnist-kd", "fmnist-tser", "fmnist-brd",
           "fmnist-staa"]
EXAMPLE = "sj-example"
NEEDS_TEACHER = {"fmnist-kd", "fmnist-tser", "fmnist-brd"}
EXAMPLE_LINE = re.compile(r"epoch = (\d+), .*test_acc =\s*([0-9.]+)")


def recipe_of(name: str) -> dict:
    return yaml.safe_load((ROOT / "recipes" / f"{name}.yaml").read_text())


def run_child(cmd, log_path: Path, env) -> dict:
    """Run ``cmd`` with output to ``log_path``; wall seconds, peak RSS (MB) and exit code."""
    started = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return dict(seconds=time.time() - started, peak_rss_mb=usage.ru_maxrss / 1024,
                returncode=proc.returncode)


def example_data(runs: Path, train_subset: int, test_subset, data_dir) -> Path:
    """torchvision's layout with the recipes' training and test subsets, for the example."""
    import torch

    from sj_distill.data import fashion_mnist

    root = runs / f"{EXAMPLE}-data-{train_subset}-{test_subset}"
    raw = root / "FashionMNIST" / "raw"
    if all((raw / name).is_file() for name in fashion_mnist.FILES):
        return root
    train, test = fashion_mnist.build(data_dir, train_subset=train_subset,
                                      test_subset=test_subset)
    raw.mkdir(parents=True, exist_ok=True)
    for split, data in (("train", train), ("t10k", test)):
        for kind, array in (("images-idx3", data.images), ("labels-idx1", data.labels)):
            header = (0x0800 + array.dim()).to_bytes(4, "big") + b"".join(
                d.to_bytes(4, "big") for d in array.shape)
            (raw / f"{split}-{kind}-ubyte").write_bytes(
                header + array.to(torch.uint8).numpy().tobytes())
    return root


def run_recipe(name: str, seed: int, folder: Path, teacher: Path, data_dir, env) -> dict:
    if name in NEEDS_TEACHER:
        while not teacher.is_file():
            time.sleep(20)
    cmd = [sys.executable, "-m", "sj_distill", "recipe", str(ROOT / "recipes" / f"{name}.yaml"),
           "--out", str(folder), "--restart", f"seed={seed}"]
    if name in NEEDS_TEACHER:
        cmd.append(f"teacher.checkpoint={teacher}")
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    folder.mkdir(parents=True, exist_ok=True)
    usage = run_child(cmd, folder.parent / f"{folder.name}.log", env)
    if usage["returncode"] != 0:
        raise RuntimeError(f"{name} seed {seed} failed, see {folder.parent / folder.name}.log")
    (folder / "usage.json").write_text(json.dumps(usage))
    return collect_recipe(folder)


def collect_recipe(folder: Path) -> dict:
    import csv

    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["stage"] == "student"]
    usage = json.loads((folder / "usage.json").read_text())
    return dict(top1=summary["top1"], curve=[float(r["test_top1"]) for r in rows],
                teacher_top1=summary["teacher_top1"], **usage)


def run_example(seed: int, folder: Path, data_root: Path, budget: dict, env) -> dict:
    argv = ["conv_fashion_mnist", "-T", str(budget["T"]), "-device", "cpu",
            "-b", str(budget["batch_size"]), "-epochs", str(budget["epochs"]), "-j", "0",
            "-data-dir", str(data_root), "-out-dir", str(folder), "-opt", "sgd",
            "-lr", str(budget["lr"]), "-channels", str(budget["width"])]
    code = ("import runpy, sys, torch; torch.manual_seed(%d); sys.argv = %r; "
            "runpy.run_module('spikingjelly.activation_based.examples.conv_fashion_mnist', "
            "run_name='__main__')" % (seed, argv))
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "stdout.log"
    usage = run_child([sys.executable, "-c", code], log, env)
    if usage["returncode"] != 0:
        raise RuntimeError(f"SpikingJelly example seed {seed} failed, see {log}")
    curve = [100 * float(m.group(2)) for m in EXAMPLE_LINE.finditer(log.read_text())]
    result = dict(top1=curve[-1], curve=curve, teacher_top1=None, **usage)
    (folder / "result.json").write_text(json.dumps(result))
    return result


def stats(values):
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return dict(mean=mean, std=std, stderr=std / math.sqrt(n), n=n)


def report(results: dict, budget: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for method, runs in results.items():
        if not runs:
            continue
        summary[method] = dict(
            top1=stats([r["top1"] for r in runs.values()]),
            seconds=stats([r["seconds"] for r in runs.values()]),
            peak_rss_mb=stats([r["peak_rss_mb"] for r in runs.values()]),
            teacher_top1=next(iter(runs.values()))["teacher_top1"],
            runs={str(s): r for s, r in sorted(runs.items())})
    (out / "sweep.json").write_text(json.dumps(dict(budget=budget, methods=summary), indent=1))
    teachers = {m: s["teacher_top1"] for m, s in summary.items() if s["teacher_top1"]}
    if teachers:
        print(f"teacher test top-1 seen by the guided runs: {teachers}")
    base = summary.get("fmnist-bptt", {}).get("top1")
    lines = ["| method | test top-1 (mean ± std) | vs fmnist-bptt (in s.e.) | seeds | wall s/run "
             "| peak RSS MB |", "|---|---|---|---|---|---|"]
    for method, s in summary.items():
        t = s["top1"]
        delta = "-"
        if base and method != "fmnist-bptt":
            se = math.sqrt(t["stderr"] ** 2 + base["stderr"] ** 2) or float("nan")
            delta = f"{t['mean'] - base['mean']:+.2f} ({(t['mean'] - base['mean']) / se:+.1f})"
        lines.append(f"| {method} | {t['mean']:.2f} ± {t['std']:.2f} | {delta} | {t['n']} | "
                     f"{s['seconds']['mean']:.0f} | {s['peak_rss_mb']['mean']:.0f} |")
    (out / "sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(summary, out / "fmnist_curves.png", budget)


def plot(summary: dict, path: Path, budget: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, s in summary.items():
        curves = [r["curve"] for r in s["runs"].values()]
        epochs = min(len(c) for c in curves)
        xs = list(range(1, epochs + 1))
        per_epoch = [stats([c[e] for c in curves]) for e in range(epochs)]
        mean = [p["mean"] for p in per_epoch]
        std = [p["std"] for p in per_epoch]
        line, = ax.plot(xs, mean, marker="o", label=f"{method} (n={len(curves)})")
        ax.fill_between(xs, [m - d for m, d in zip(mean, std)],
                        [m + d for m, d in zip(mean, std)], color=line.get_color(), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 (%)")
    ax.set_xticks(range(1, budget["epochs"] + 1))
    ax.set_title(f"Fashion-MNIST: CSNN width {budget['width']}, T={budget['T']}, "
                 f"{budget['train_subset']} training images\n(mean ± std over seeds; "
                 f"test top-1 on {budget['test_subset'] or 10000} test images)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/fmnist-sweep", help="run folders")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fmnist"))
    p.add_argument("--teacher", default="runs/fmnist-teacher/teacher.pt")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=RECIPES + [EXAMPLE])
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--rerun", nargs="*", default=[], help="methods to run again")
    p.add_argument("--report", action="store_true", help="only collect finished runs")
    p.add_argument("--code", default=None, help="the commit the runs were made with (noted)")
    args = p.parse_args(argv)
    runs, teacher = Path(args.runs).resolve(), Path(args.teacher).resolve()
    base = recipe_of("fmnist-bptt")
    budget = dict(T=base["data"]["T"], batch_size=base["data"]["batch_size"],
                  epochs=base["train"]["epochs"], lr=base["train"]["optimizer"]["lr"],
                  width=base["student"]["options"]["width"],
                  train_subset=base["data"]["options"]["train_subset"],
                  test_subset=base["data"]["options"].get("test_subset"), code=args.code)
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    results = {m: {} for m in args.methods}
    jobs = []
    def group(method):  # the teacher's users after the others, BRD (the slowest) last
        return (method in NEEDS_TEACHER) + (method == "fmnist-brd")

    order = [(m, s) for g in (0, 1, 2) for s in args.seeds for m in args.methods
             if group(m) == g]
    for method, seed in order:
        folder = runs / method / f"seed{seed}"
        done = folder / ("result.json" if method == EXAMPLE else "usage.json")
        if done.is_file() and method not in args.rerun:
            results[method][seed] = (json.loads(done.read_text()) if method == EXAMPLE
                                     else collect_recipe(folder))
        elif not args.report:
            jobs.append((method, seed, folder))
    if jobs:
        data_root = (example_data(runs, budget["train_subset"], budget["test_subset"],
                                  args.data_dir)
                     if any(m == EXAMPLE for m, _, _ in jobs) else None)

        def work(job):
            method, seed, folder = job
            print(f"{time.strftime('%H:%M:%S')} start {method} seed {seed}", flush=True)
            try:
                if method == EXAMPLE:
                    result = run_example(seed, folder, data_root, budget, env)
                else:
                    result = run_recipe(method, seed, folder, teacher, args.data_dir, env)
            except RuntimeError as err:
                print(f"{time.strftime('%H:%M:%S')} FAILED: {err}", flush=True)
                return method, seed, None
            print(f"{time.strftime('%H:%M:%S')} done {method} seed {seed}: top1 "
                  f"{result['top1']:.2f} in {result['seconds']:.0f}s", flush=True)
            return method, seed, result

        with ThreadPoolExecutor(args.parallel) as pool:
            for method, seed, result in pool.map(work, jobs):
                if result is not None:
                    results[method][seed] = result
    report(results, budget, Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
