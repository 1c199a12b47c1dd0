"""Training memory and step time: BPTT against rate-based backprop, side by side.

Every (method, T) setting runs in a fresh subprocess (``python -m sj_distill.rate_bench
--worker ...``) so its peak resident memory (RSS, ``ru_maxrss``) belongs to that setting
alone; on CUDA the peak of torch's allocator is reported as well. One step = forward, cross
entropy, backward, SGD update, ``reset_net``; the time is the mean of ``--steps`` steps after
``--warmup`` untimed steps. Used by ``benchmarks/rate_memory.py`` and
``sj-distill bench memory``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

METHODS = ("bptt", "rate")


def _worker(args: argparse.Namespace) -> Dict:
    import resource
    import time

    import torch
    import torch.nn.functional as F

    from . import models, rate, sj

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = models.create_model(args.model, num_classes=10).to(device).train()
    if args.method == "rate":
        rate.enable(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.T, args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step() -> None:
        out = model(x)
        logits = out if args.method == "rate" else out.mean(0)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sj.reset(model)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):  # TorchScript'd surrogates optimise over the first calls
        step()
    times = []
    for _ in range(args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    result = dict(method=args.method, T=args.T, step_s=sum(times) / len(times),
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  setup_rss_mb=rss_before_kb / 1024, device=args.device)
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def run_setting(method: str, T: int, *, model: str, batch: int, img_size: int, steps: int,
                warmup: int, threads: int, device: str) -> Dict:
    """Run one setting in a fresh Python process and return its measurements."""
    cmd = [sys.executable, "-m", "sj_distill.rate_bench", "--worker", "--method", method,
           "--T", str(T), "--model", model, "--batch", str(batch), "--img-size", str(img_size),
           "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads),
           "--device", device]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {method} T={T} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(results: List[Dict]) -> str:
    """One row per T: peak RSS, training memory (peak RSS minus the RSS after building the
    model and input) and step time of both methods, with rate-BP/BPTT ratios."""
    by = {(r["method"], r["T"]): r for r in results}
    cuda = any("peak_cuda_mb" in r for r in results)
    head = ("| T | BPTT peak RSS (MB) | rate-BP peak RSS (MB) | ratio | BPTT train mem (MB) "
            "| rate-BP train mem (MB) | ratio | BPTT step (s) | rate-BP step (s) | ratio |")
    rule = "|---|---|---|---|---|---|---|---|---|---|"
    if cuda:
        head += " BPTT CUDA peak (MB) | rate-BP CUDA peak (MB) |"
        rule += "---|---|"
    lines = [head, rule]
    for T in sorted({r["T"] for r in results}):
        b, r = by[("bptt", T)], by[("rate", T)]
        b_train, r_train = _train_memory(b), _train_memory(r)
        row = (f"| {T} | {b['peak_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
               f"{r['peak_rss_mb'] / b['peak_rss_mb']:.2f} | {b_train:.0f} | {r_train:.0f} | "
               f"{r_train / b_train:.2f} | {b['step_s']:.2f} | {r['step_s']:.2f} | "
               f"{r['step_s'] / b['step_s']:.2f} |")
        if cuda:
            row += f" {b['peak_cuda_mb']:.0f} | {r['peak_cuda_mb']:.0f} |"
        lines.append(row)
    return "\n".join(lines)


def _train_memory(result: Dict) -> float:
    return max(result["peak_rss_mb"] - result["setup_rss_mb"], 1.0)


def plot(results: List[Dict], path: str, title: str) -> None:
    """Peak memory and step time against T, both methods, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    memory_key = "peak_cuda_mb" if all("peak_cuda_mb" in r for r in results) else "peak_rss_mb"
    for method, label in (("bptt", "BPTT"), ("rate", "rate-BP")):
        rows = sorted((r for r in results if r["method"] == method), key=lambda r: r["T"])
        Ts = [r["T"] for r in rows]
        ax_mem.plot(Ts, [r[memory_key] for r in rows], marker="o", label=label)
        ax_time.plot(Ts, [r["step_s"] for r in rows], marker="o", label=label)
    ax_mem.set(xlabel="time steps T", ylabel="peak memory (MB, "
               + ("CUDA allocator" if memory_key == "peak_cuda_mb" else "process RSS") + ")",
               xscale="log", xticks=sorted({r["T"] for r in results}))
    ax_time.set(xlabel="time steps T", ylabel="training step (s)", xscale="log",
                xticks=sorted({r["T"] for r in results}))
    for ax in (ax_mem, ax_time):
        ax.set_xticklabels([str(t) for t in ax.get_xticks()])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_targets(results: List[Dict]) -> List[str]:
    """The issue's CPU targets, each as a ``PASS``/``MISS`` line with the measured numbers."""
    by = {(r["method"], r["T"]): r for r in results}
    lines = []
    if ("bptt", 16) in by and ("rate", 16) in by:
        ratio = by[("rate", 16)]["peak_rss_mb"] / by[("bptt", 16)]["peak_rss_mb"]
        lines.append(f"{'PASS' if ratio <= 1 / 3 else 'MISS'} rate-BP/BPTT peak memory at T=16: "
                     f"{ratio:.2f} (target <= 0.33)")
    if ("rate", 2) in by and ("rate", 16) in by:
        growth = by[("rate", 16)]["peak_rss_mb"] / by[("rate", 2)]["peak_rss_mb"] - 1
        lines.append(f"{'PASS' if growth < 0.25 else 'MISS'} rate-BP memory growth T=2 -> 16: "
                     f"{growth * 100:.1f}% (target < 25%)")
    if ("bptt", 8) in by and ("rate", 8) in by:
        ratio = by[("rate", 8)]["step_s"] / by[("bptt", 8)]["step_s"]
        lines.append(f"{'PASS' if ratio <= 0.6 else 'MISS'} rate-BP/BPTT step time at T=8: "
                     f"{ratio:.2f} (target <= 0.6)")
    return lines


def run(Ts: Sequence[int] = (1, 2, 4, 8, 16), *, model: str = "resnet18", batch: int = 16,
        img_size: int = 32, steps: int = 2, warmup: int = 2, threads: int = 2, device: str = "cpu",
        png: Optional[str] = "rate_memory.png", json_path: Optional[str] = None,
        out=print) -> List[Dict]:
    """Measure every (method, T), print the table and the target checks, write the plot
    (``png``) and the raw measurements (``json_path``)."""
    results = []
    for T in Ts:
        for method in METHODS:
            result = run_setting(method, T, model=model, batch=batch, img_size=img_size,
                                 steps=steps, warmup=warmup, threads=threads, device=device)
            out(f"  {method:5s} T={T:2d}: peak RSS {result['peak_rss_mb']:.0f} MB, "
                f"step {result['step_s']:.2f} s")
            results.append(result)
    out(f"\n{model}, batch {batch}, {img_size}x{img_size}, {device}, {threads} threads\n")
    out(markdown_table(results))
    out("")
    for line in check_targets(results):
        out(line)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=1)
    if png:
        plot(results, png, f"{model}, batch {batch}, {img_size}x{img_size} ({device})")
        out(f"plot written to {png}")
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--T", type=int, nargs="+", default=[1, 2, 4, 8, 16],
                        help="time steps to measure (default 1 2 4 8 16)")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--png", default="rate_memory.png", help="plot path ('' for none)")
    parser.add_argument("--json", default="", help="write the raw measurements here")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.T = args.T[0]
        print(json.dumps(_worker(args)))
        return 0
    run(args.T, model=args.model, batch=args.batch, img_size=args.img_size, steps=args.steps,
        warmup=args.warmup, threads=args.threads, device=args.device, png=args.png or None,
        json_path=args.json or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
