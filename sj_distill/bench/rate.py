"""Training step of SpikingJelly BPTT against rate-based backprop: peak memory and images/s
against T (``sj-distill bench memory``).

Every setting (model, precision, method, T) runs in a fresh subprocess (``python -m
sj_distill.bench.rate --worker ...``) so its peak memory belongs to that setting alone: on
CUDA the peak of torch's allocator (``torch.cuda.max_memory_allocated``: weights, optimiser
state, input and the step's activations), on the CPU the process's peak resident memory
(RSS, ``ru_maxrss``; includes ~0.7 GB of Python, torch and SpikingJelly). One step = forward,
cross entropy, backward, SGD update, ``reset_net``; the step time is the median of
``--steps`` timed steps after ``--warmup`` untimed ones, images/s = batch / that median.
``bf16`` runs forward and loss under ``torch.autocast(dtype=torch.bfloat16)``.

BPTT is the model's ordinary training step (its neurons' own multi-step kernels: CuPy on
0.0.0.0.14 when built with it, SpikingJelly's choice on 2.x); rate-BP is the same model
after ``rate.enable``. Results: ``train_<device>.json`` (measurements and environment),
``.md`` (table and targets) and ``.png`` (memory and images/s against T) in ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Optional, Sequence

from .common import (DEFAULT_OUT, DTYPES, add_grid_arguments, autocast, environment,
                     log_T_axis, resolve_grid, timed, write_results)

METHODS = ("bptt", "rate")
#: Defaults per device: the issue's GPU grid, and a CPU grid that fits a shared 2-core box.
DEVICE_DEFAULTS = {
    "cuda": dict(models=["resnet19", "resnet18"], batch=128, T=[1, 2, 4, 6, 8, 16],
                 dtypes=["fp32", "bf16"], steps=20, warmup=5),
    "cpu": dict(models=["resnet18"], batch=16, T=[1, 2, 4, 6, 8, 16], dtypes=["fp32"],
                steps=3, warmup=1),
}


def _worker(args: argparse.Namespace) -> Dict:
    import resource

    import torch
    import torch.nn.functional as F

    from .. import models, rate, sj

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = models.create_model(args.model, num_classes=10).to(device).train()
    if args.method == "rate":
        rate.enable(model, time_chunk=args.time_chunk)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(args.T, args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    rss_before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step() -> None:
        with autocast(device.type, args.dtype):
            out = model(x)
            logits = out if args.method == "rate" else out.mean(0)
            loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sj.reset(model)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    times = [timed(step, device.type) for _ in range(args.steps)]
    step_s = statistics.median(times)
    result = dict(model=args.model, dtype=args.dtype, method=args.method, T=args.T,
                  batch=args.batch, step_s=step_s, images_per_s=args.batch / step_s,
                  peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  setup_rss_mb=rss_before_kb / 1024, device=args.device)
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def run_setting(method: str, T: int, *, model: str, dtype: str, batch: int, img_size: int,
                steps: int, warmup: int, threads: int, device: str,
                time_chunk: Optional[int] = None) -> Dict:
    """Run one setting in a fresh Python process and return its measurements; a failed
    worker gives ``{"error": last line of its stderr}`` instead of stopping the grid."""
    cmd = [sys.executable, "-m", "sj_distill.bench.rate", "--worker", "--method", method,
           "--T", str(T), "--models", model, "--dtypes", dtype, "--batch", str(batch),
           "--img-size", str(img_size), "--steps", str(steps), "--warmup", str(warmup),
           "--threads", str(threads), "--device", device]
    if time_chunk is not None:
        cmd += ["--time-chunk", str(time_chunk)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return dict(model=model, dtype=dtype, method=method, T=T, batch=batch, device=device,
                    error=lines[-1][-300:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_mb(result: Dict) -> float:
    """The memory figure of a result: CUDA allocator peak on CUDA, else peak RSS."""
    return result["peak_cuda_mb"] if "peak_cuda_mb" in result else result["peak_rss_mb"]


def markdown_table(results: List[Dict]) -> str:
    """One row per (model, precision, T): memory and images/s of both methods, with the
    rate-BP / BPTT ratios (memory: lower is better; step time = inverse of images/s)."""
    cuda = any("peak_cuda_mb" in r for r in results)
    unit = "CUDA peak (MB)" if cuda else "peak RSS (MB)"
    lines = [f"| model | precision | T | BPTT {unit} | rate-BP {unit} | memory ratio "
             "| BPTT images/s | rate-BP images/s | step-time ratio |",
             "|---|---|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["dtype"], r["method"], r["T"]): r for r in results}
    for model, dtype, T in sorted({(r["model"], r["dtype"], r["T"]) for r in results}):
        b, r = by.get((model, dtype, "bptt", T)), by.get((model, dtype, "rate", T))
        b_ok, r_ok = (res if res and "error" not in res else None for res in (b, r))
        mem = [f"{memory_mb(ok):.0f}" if ok else _failed(res)
               for res, ok in ((b, b_ok), (r, r_ok))]
        ips = [f"{ok['images_per_s']:.1f}" if ok else "-" for ok in (b_ok, r_ok)]
        mem_ratio = f"{memory_mb(r_ok) / memory_mb(b_ok):.2f}" if b_ok and r_ok else "-"
        time_ratio = f"{r_ok['step_s'] / b_ok['step_s']:.2f}" if b_ok and r_ok else "-"
        lines.append(f"| {model} | {dtype} | {T} | {mem[0]} | {mem[1]} | {mem_ratio} | "
                     f"{ips[0]} | {ips[1]} | {time_ratio} |")
    return "\n".join(lines)


def _failed(result: Optional[Dict]) -> str:
    if result is None:
        return "-"
    return "failed: " + result["error"].replace("|", "/")


def check_targets(results: List[Dict]) -> List[str]:
    """Issue 12's targets, per (model, precision), each a ``met``/``missed`` line with the
    measured numbers: at T=6 rate-BP memory <= 0.4x and step time <= 0.6x BPTT's; rate-BP
    memory growth from T=2 to T=16 <= 25%."""
    ok = {(r["model"], r["dtype"], r["method"], r["T"]): r for r in results if "error" not in r}
    lines = []
    for model, dtype in sorted({(r["model"], r["dtype"]) for r in results}):
        where = f"{model} {dtype}"
        b6, r6 = ok.get((model, dtype, "bptt", 6)), ok.get((model, dtype, "rate", 6))
        if b6 and r6:
            ratio = memory_mb(r6) / memory_mb(b6)
            lines.append(f"{_verdict(ratio <= 0.4)} {where}: rate-BP/BPTT memory at T=6 "
                         f"{ratio:.2f} (target <= 0.4)")
            ratio = r6["step_s"] / b6["step_s"]
            lines.append(f"{_verdict(ratio <= 0.6)} {where}: rate-BP/BPTT step time at T=6 "
                         f"{ratio:.2f} (target <= 0.6)")
        r2, r16 = ok.get((model, dtype, "rate", 2)), ok.get((model, dtype, "rate", 16))
        if r2 and r16:
            growth = memory_mb(r16) / memory_mb(r2) - 1
            lines.append(f"{_verdict(growth <= 0.25)} {where}: rate-BP memory growth T=2 -> 16 "
                         f"{growth * 100:+.1f}% (target <= +25%)")
    return lines


def _verdict(met: bool) -> str:
    return "met   " if met else "missed"


def plot(results: List[Dict], path: str, title: str) -> None:
    """Peak memory and images/s against T, one line per (model, precision, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "error" not in r]
    fig, (ax_mem, ax_speed) = plt.subplots(1, 2, figsize=(11, 4.2))
    cuda = any("peak_cuda_mb" in r for r in ok)
    settings = sorted({(r["model"], r["dtype"]) for r in ok})
    for model, dtype, method in sorted({(r["model"], r["dtype"], r["method"]) for r in ok}):
        rows = sorted((r for r in ok if (r["model"], r["dtype"], r["method"])
                       == (model, dtype, method)), key=lambda r: r["T"])
        label = f"{model} {dtype} {'BPTT' if method == 'bptt' else 'rate-BP'}"
        # one colour per (model, precision); BPTT dashed, rate-BP solid
        style = dict(color=f"C{settings.index((model, dtype))}", marker="o", label=label,
                     linestyle="-" if method == "rate" else "--")
        Ts = [r["T"] for r in rows]
        ax_mem.plot(Ts, [memory_mb(r) for r in rows], **style)
        ax_speed.plot(Ts, [r["images_per_s"] for r in rows], **style)
    Ts = sorted({r["T"] for r in ok})
    ax_mem.set(xlabel="time steps T", ylabel="peak memory (MB, "
               + ("CUDA allocator" if cuda else "process RSS") + ")")
    ax_speed.set(xlabel="time steps T", ylabel="training images/s", yscale="log")
    for ax in (ax_mem, ax_speed):
        log_T_axis(ax, Ts)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(*, device: str = "cpu", models: Optional[Sequence[str]] = None,
        Ts: Optional[Sequence[int]] = None, dtypes: Optional[Sequence[str]] = None,
        batch: Optional[int] = None, img_size: int = 32, steps: Optional[int] = None,
        warmup: Optional[int] = None, threads: int = 2, time_chunk: Optional[int] = None,
        out_dir: str = DEFAULT_OUT, name: Optional[str] = None, plot_png: bool = True,
        out=print) -> List[Dict]:
    """Measure every (model, precision, T, method); print the table and the target lines;
    write ``<out_dir>/<name>.json``, ``.md`` and ``.png`` (``name``: ``train_<device>``).
    Arguments left None take :data:`DEVICE_DEFAULTS` of ``device``."""
    if device not in DEVICE_DEFAULTS:
        raise ValueError(f"--device must be one of {sorted(DEVICE_DEFAULTS)}, got {device!r}")
    models, Ts, dtypes, batch, steps, warmup = resolve_grid(
        DEVICE_DEFAULTS[device], models, Ts, dtypes, batch, steps, warmup)
    for dtype in dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"unknown precision {dtype!r}; choose from {list(DTYPES)}")
    results = []
    for model in models:
        for dtype in dtypes:
            for T in Ts:
                for method in METHODS:
                    result = run_setting(method, T, model=model, dtype=dtype, batch=batch,
                                         img_size=img_size, steps=steps, warmup=warmup,
                                         threads=threads, device=device,
                                         time_chunk=time_chunk)
                    shown = (f"failed: {result['error']}" if "error" in result else
                             f"{memory_mb(result):.0f} MB, {result['images_per_s']:.1f} img/s")
                    out(f"  {model} {dtype} {method:4s} T={T:2d}: {shown}")
                    results.append(result)
    env = environment(device)
    env.update(threads=threads, batch=batch, image=f"{img_size}x{img_size}", timed_steps=steps,
               warmup=warmup, time_chunk=time_chunk or "default (T on cuda, 1 on cpu)")
    table, checks = markdown_table(results), check_targets(results)
    out("\n" + table + "\n")
    for line in checks:
        out(line)
    stem = os.path.join(out_dir, name or f"train_{device}")
    written = write_results(stem, results, env, table, checks,
                            f"Training step: BPTT vs rate-BP ({device})")
    if plot_png:
        plot(results, stem + ".png", f"batch {batch}, {img_size}x{img_size}, {device}")
        written.append(stem + ".png")
    out("written: " + ", ".join(written))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sj-distill bench memory`` and ``python -m sj_distill.bench.rate``."""
    add_grid_arguments(parser, DEVICE_DEFAULTS, threads=2, name="train_<device>")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.T, args.model, args.dtype = args.T[0], args.models[0], args.dtypes[0]
        print(json.dumps(_worker(args)))
        return 0
    run(device=args.device, models=args.models, Ts=args.T, dtypes=args.dtypes, batch=args.batch,
        img_size=args.img_size, steps=args.steps, warmup=args.warmup, threads=args.threads,
        time_chunk=args.time_chunk, out_dir=args.out, name=args.name,
        plot_png=not args.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
