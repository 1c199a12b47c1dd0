"""The training step of every memory-saving method on one model, against T
(``sj-distill bench train``): BPTT, rate-based backprop (both spike passes), SpikingJelly's
SLTT and OTTT neurons, SpikingJelly's ``memopt`` and, when a checkout is given, the rate-BP
paper's public code (:mod:`.methods` and :mod:`.public_code` say what each runs).

Every (method, T) runs in a fresh Python process (``python -m sj_distill.bench.train
--worker ...``) so that its peak memory is its own: on CUDA the allocator's peak
(``torch.cuda.max_memory_allocated``), on the CPU the peak resident memory above the
resident memory just before the first step (``VmHWM - VmRSS`` from ``/proc/self/status``;
weights, optimiser state and input are allocated before). One step = forward, cross
entropy, backward, SGD update, ``reset_net``. A worker times ``--steps`` steps after
``--warmup`` untimed ones, each in CPU seconds of the process (``time.process_time``) and in
wall seconds, and reports their medians. The grid is run ``--repeats`` times, each round
in a different order of the settings (interleaved, so that a change in the machine's load
hits every setting alike); the result is the median over the rounds. Images/s = batch /
median wall seconds.

Results: ``<name>.json`` (environment and every round), ``<name>.md`` (tables and the
targets of issue 21) and ``<name>.png`` (memory and step time against T) in ``--out``
(``benchmarks/results/train``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

from .common import DTYPES, autocast, environment, log_T_axis, write_results
from .names import METHODS

DEFAULT_OUT = os.path.join("benchmarks", "results", "train")
ALL_METHODS = METHODS + ("public",)
#: Defaults per device (the CPU grid fits a shared 2-core machine).
DEVICE_DEFAULTS = {
    "cuda": dict(model="resnet18", batch=128, T=[2, 4, 8, 16], dtype="fp32", steps=10,
                 warmup=3, repeats=3,
                 methods=["bptt", "rate", "rate_sweep", "sltt", "ottt", "memopt1",
                          "memopt2", "memopt3", "memopt4"]),
    "cpu": dict(model="resnet18", batch=16, T=[2, 4, 8, 16], dtype="fp32", steps=3, warmup=1,
                repeats=2, methods=["bptt", "rate", "rate_sweep", "sltt", "ottt", "memopt1"]),
}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    """Start the kernel's peak-RSS counter (VmHWM) afresh from the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def worker(args: argparse.Namespace) -> Dict:
    """One (method, T) in this process: the measurements, or ``unavailable`` and why."""
    import torch

    from .. import models
    from .methods import Unavailable, build

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    result = dict(method=args.method, T=args.T, model=args.model, batch=args.batch,
                  dtype=args.dtype, device=args.device)
    x = torch.rand(args.T, args.batch, args.in_chans, args.img_size, args.img_size,
                   device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    model = models.create_model(args.model, num_classes=10, in_chans=args.in_chans)
    model = model.to(device).train()
    try:
        if args.method == "public":
            from .public_code import build_public

            model, step = build_public(args.public_code, args.model, x, device)
        else:
            model, step = build(args.method, model, x)
    except Unavailable as why:
        result["unavailable"] = str(why)
        return result

    def timed_step() -> tuple:
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        with autocast(device.type, args.dtype):
            step(x, y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.process_time() - cpu, time.perf_counter() - wall

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()
    before_mb = _status_mb("VmRSS")
    for _ in range(args.warmup):
        timed_step()
    times = [timed_step() for _ in range(args.steps)]
    result.update(cpu_s=statistics.median(t[0] for t in times),
                  wall_s=statistics.median(t[1] for t in times))
    if device.type == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    else:
        result["peak_mb"] = _status_mb("VmHWM") - before_mb
    result["images_per_s"] = args.batch / result["wall_s"]
    return result


def run_setting(method: str, T: int, options: Dict) -> Dict:
    """One (method, T) in a fresh process; a failed worker gives ``{"error": ...}``."""
    python = (options.get("public_python") or sys.executable) if method == "public" \
        else sys.executable
    cmd = [python, "-m", "sj_distill.bench.train", "--worker", "--methods", method,
           "--T", str(T)]
    for key in ("model", "batch", "img_size", "in_chans", "dtype", "steps", "warmup",
                "threads", "device", "public_code"):
        if options.get(key) is not None:
            cmd += ["--" + key.replace("_", "-"), str(options[key])]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        return dict(method=method, T=T, error=lines[-1][-300:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarise(rounds: List[List[Dict]]) -> List[Dict]:
    """Per (method, T): the median over rounds of CPU s, wall s and peak memory; unavailable
    and failed settings keep their reason."""
    by: Dict[tuple, List[Dict]] = {}
    for results in rounds:
        for r in results:
            by.setdefault((r["method"], r["T"]), []).append(r)
    summary = []
    for (method, T), runs in by.items():
        ok = [r for r in runs if "cpu_s" in r]
        row = dict(method=method, T=T, repeats=len(ok))
        if ok:
            for key in ("cpu_s", "wall_s", "peak_mb"):
                row[key] = statistics.median(r[key] for r in ok)
            row["images_per_s"] = runs[0]["batch"] / row["wall_s"]
        else:
            reason = runs[0].get("unavailable") or runs[0].get("error", "no result")
            row["unavailable" if "unavailable" in runs[0] else "error"] = reason
        summary.append(row)
    order = {m: i for i, m in enumerate(ALL_METHODS)}
    return sorted(summary, key=lambda r: (order.get(r["method"], 99), r["T"]))


LABELS = {"bptt": "BPTT", "rate": "rate-BP, layer spike pass",
          "rate_sweep": "rate-BP, sweep spike pass", "sltt": "SLTT (SpikingJelly)",
          "ottt": "OTTT (SpikingJelly)", "public": "rate-BP, public code",
          **{f"memopt{k}": f"BPTT + memopt level {k}" for k in range(1, 5)}}


def markdown_table(summary: List[Dict], cuda: bool) -> str:
    """One row per method: CPU s/step, wall s/step, peak memory and images/s at each T."""
    Ts = sorted({r["T"] for r in summary})
    memory = "CUDA peak MB" if cuda else "peak RSS delta MB"
    head = [f"CPU s/step T={'/'.join(map(str, Ts))}", "wall s/step",
            f"{memory}", "images/s"]
    lines = ["| method | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    by = {(r["method"], r["T"]): r for r in summary}
    notes = []
    for method in [m for m in ALL_METHODS if any(r["method"] == m for r in summary)]:
        rows = [by.get((method, T)) for T in Ts]
        reasons = {r.get("unavailable") or r.get("error") for r in rows if r and "cpu_s" not in r}
        if all(r is None or "cpu_s" not in r for r in rows):
            why = "; ".join(sorted(reasons)).replace("|", "/")
            lines.append(f"| {LABELS[method]} | unavailable: {why} | - | - | - |")
            continue
        cells = []
        for key, fmt in (("cpu_s", "{:.2f}"), ("wall_s", "{:.2f}"), ("peak_mb", "{:.0f}"),
                         ("images_per_s", "{:.1f}")):
            cells.append(" / ".join(fmt.format(r[key]) if r and key in r else "-" for r in rows))
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
        for reason in sorted(reasons):
            notes.append(f"{LABELS[method]}: {reason}")
    if any(r["method"] in ("sltt", "ottt") and "cpu_s" in r for r in summary):
        notes.append("SLTT and OTTT train the model in single-step mode (their neurons are "
                     "single-step only): each BatchNorm normalises every step with that "
                     "step's own statistics, where BPTT, memopt and rate-BP use the "
                     "statistics over all T*B samples.")
    table = "\n".join(lines)
    return table + ("\n\n" + "\n".join(f"- {n}" for n in notes) if notes else "")


def check_targets(summary: List[Dict], cuda: bool) -> List[str]:
    """Issue 21's targets for each rate-BP spike pass, ``met``/``missed`` with the numbers:
    peak memory at T=16 <= SLTT's and growth T=2 -> 16 <= 10%; step time at T=8 <= 0.6x
    SLTT's and <= 0.5x BPTT's (CPU seconds on the CPU, wall seconds on CUDA)."""
    ok = {(r["method"], r["T"]): r for r in summary if "cpu_s" in r}
    time_key = "wall_s" if cuda else "cpu_s"
    lines = []
    for method in ("rate", "rate_sweep", "public"):
        label = LABELS[method]
        r2, r8, r16 = (ok.get((method, T)) for T in (2, 8, 16))
        s8, s16, b8 = ok.get(("sltt", 8)), ok.get(("sltt", 16)), ok.get(("bptt", 8))
        if r16 and s16:
            ratio = r16["peak_mb"] / s16["peak_mb"]
            lines.append(f"{_verdict(ratio <= 1.0)} {label}: peak memory at T=16 "
                         f"{ratio:.2f}x SLTT's (target <= 1)")
        if r2 and r16:
            growth = r16["peak_mb"] / r2["peak_mb"] - 1
            lines.append(f"{_verdict(growth <= 0.10)} {label}: peak memory growth T=2 -> 16 "
                         f"{growth * 100:+.0f}% (target <= +10%)")
        if r8 and s8:
            ratio = r8[time_key] / s8[time_key]
            lines.append(f"{_verdict(ratio <= 0.6)} {label}: step at T=8 {ratio:.2f}x SLTT's "
                         "(target <= 0.6)")
        if r8 and b8:
            ratio = r8[time_key] / b8[time_key]
            lines.append(f"{_verdict(ratio <= 0.5)} {label}: step at T=8 {ratio:.2f}x BPTT's "
                         "(target <= 0.5)")
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def plot(summary: List[Dict], path: str, title: str, cuda: bool) -> None:
    """Peak memory and step time against T, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in summary if "cpu_s" in r]
    time_key = "wall_s" if cuda else "cpu_s"
    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i, method in enumerate(m for m in ALL_METHODS if any(r["method"] == m for r in ok)):
        rows = sorted((r for r in ok if r["method"] == method), key=lambda r: r["T"])
        style = dict(color=f"C{i}", marker="o", label=LABELS[method],
                     linestyle="-" if method.startswith("rate") else "--")
        ax_mem.plot([r["T"] for r in rows], [r["peak_mb"] for r in rows], **style)
        ax_time.plot([r["T"] for r in rows], [r[time_key] for r in rows], **style)
    Ts = sorted({r["T"] for r in ok})
    ax_mem.set(xlabel="time steps T", ylabel="CUDA peak memory (MB)" if cuda
               else "peak RSS above the RSS before the first step (MB)")
    ax_time.set(xlabel="time steps T", ylabel=("wall" if cuda else "CPU") + " seconds per step",
                yscale="log")
    for ax in (ax_mem, ax_time):
        log_T_axis(ax, Ts)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax_time.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(*, device: str = "cpu", model: Optional[str] = None, Ts: Optional[Sequence[int]] = None,
        methods: Optional[Sequence[str]] = None, dtype: Optional[str] = None,
        batch: Optional[int] = None, img_size: int = 32, in_chans: int = 3,
        steps: Optional[int] = None, warmup: Optional[int] = None,
        repeats: Optional[int] = None, threads: int = 1, public_code: Optional[str] = None,
        public_python: Optional[str] = None, out_dir: str = DEFAULT_OUT,
        name: Optional[str] = None, plot_png: bool = True,
        out=print) -> List[Dict]:
    """Measure every (method, T) ``repeats`` times in interleaved order; print and write the
    tables, the target lines and the plot. Returns the per-(method, T) summary."""
    if device not in DEVICE_DEFAULTS:
        raise ValueError(f"--device must be one of {sorted(DEVICE_DEFAULTS)}, got {device!r}")
    defaults = DEVICE_DEFAULTS[device]
    methods = list(methods or defaults["methods"]) + (["public"] if public_code else [])
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)} "
                         "(and give --public-code PATH for the public rate-BP code)")
    dtype = dtype or defaults["dtype"]
    if dtype not in DTYPES:
        raise ValueError(f"unknown precision {dtype!r}; choose from {list(DTYPES)}")
    options = dict(model=model or defaults["model"], batch=batch or defaults["batch"],
                   img_size=img_size, in_chans=in_chans, dtype=dtype,
                   steps=steps or defaults["steps"],
                   warmup=defaults["warmup"] if warmup is None else warmup, threads=threads,
                   device=device, public_code=public_code, public_python=public_python)
    Ts = list(Ts or defaults["T"])
    repeats = repeats or defaults["repeats"]
    settings = [(method, T) for T in Ts for method in methods]
    rounds = []
    for round_ in range(repeats):
        shift = round_ * max(1, len(settings) // repeats)
        order = settings[shift:] + settings[:shift]
        if round_ % 2:
            order = order[::-1]
        results = []
        for method, T in order:
            result = run_setting(method, T, options)
            if "cpu_s" in result:
                shown = (f"{result['cpu_s']:.2f} CPU s, {result['wall_s']:.2f} wall s, "
                         f"{result['peak_mb']:.0f} MB")
            else:
                shown = "unavailable: " + result.get("unavailable", result.get("error", ""))
            out(f"  round {round_ + 1}/{repeats} {method:10s} T={T:2d}: {shown}")
            results.append(result)
        rounds.append(results)
    env = environment(device)
    env.update({k: v for k, v in options.items() if not k.startswith("public")},
               repeats=repeats, image=f"{img_size}x{img_size}")
    if public_code:
        env["public_python"] = options["public_python"] or sys.executable
    stem = os.path.join(out_dir, name or f"train_{device}")
    return write(stem, rounds, env, plot_png=plot_png, out=out)


def write(stem: str, rounds: List[List[Dict]], env: Dict, plot_png: bool = True,
          out=print) -> List[Dict]:
    """Summarise ``rounds``, print the table and the target lines, write ``stem``.json
    (environment, summary, every round), .md and .png; returns the summary."""
    summary = summarise(rounds)
    cuda = env["device"] == "cuda"
    table, checks = markdown_table(summary, cuda), check_targets(summary, cuda)
    out("\n" + table + "\n")
    for line in checks:
        out(line)
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    written = write_results(stem, summary, env, table, checks,
                            f"Training step of every method against T ({env['model']}, "
                            f"batch {env['batch']}, {env['device']})")
    with open(stem + ".json") as f:
        data = json.load(f)
    data["rounds"] = rounds
    with open(stem + ".json", "w") as f:
        json.dump(data, f, indent=1)
    if plot_png:
        plot(summary, stem + ".png", f"{env['model']}, batch {env['batch']}, {env['image']}, "
             f"{env['dtype']}, {env['device']}", cuda)
        written.append(stem + ".png")
    out("written: " + ", ".join(written))
    return summary


def render(path: str, out=print) -> List[Dict]:
    """Rewrite the tables and plot of a result file ``path`` (``<stem>.json``) from its
    rounds, with this version's tables and targets."""
    with open(path) as f:
        data = json.load(f)
    return write(path[:-len(".json")], data["rounds"], data["environment"], out=out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sj-distill bench train`` and ``python -m sj_distill.bench.train``."""
    cpu, cuda = DEVICE_DEFAULTS["cpu"], DEVICE_DEFAULTS["cuda"]
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--model", default=None, help="registered model (default resnet18)")
    parser.add_argument("--methods", nargs="+", default=None, choices=ALL_METHODS,
                        help=f"methods (cpu: {' '.join(cpu['methods'])}; "
                             f"cuda: {' '.join(cuda['methods'])})")
    parser.add_argument("--T", type=int, nargs="+", default=None,
                        help="time steps (default 2 4 8 16)")
    parser.add_argument("--dtype", default=None, choices=DTYPES, help="precision (fp32)")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"batch (cpu {cpu['batch']}, cuda {cuda['batch']})")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--in-chans", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None,
                        help=f"timed steps per process (cpu {cpu['steps']}, cuda {cuda['steps']})")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed steps before them (cpu {cpu['warmup']}, "
                             f"cuda {cuda['warmup']})")
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"rounds over the grid (cpu {cpu['repeats']}, "
                             f"cuda {cuda['repeats']})")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--public-code", default=None, metavar="PATH",
                        help="a checkout of github.com/Tab-ct/rate-based-backpropagation: "
                             "adds the method 'public' (never bundled)")
    parser.add_argument("--public-python", default=None, metavar="PYTHON",
                        help="the interpreter that runs the public code (it needs SpikingJelly "
                             "0.0.0.0.14; default: this one)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results folder ({DEFAULT_OUT})")
    parser.add_argument("--name", default=None, help="file stem (default train_<device>)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="measure nothing: rewrite the markdown and PNG of a result file")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.method, args.T = args.methods[0], args.T[0]
        args.model = args.model or "resnet18"
        args.batch = args.batch or DEVICE_DEFAULTS[args.device]["batch"]
        args.dtype = args.dtype or "fp32"
        args.steps = args.steps or 1
        args.warmup = args.warmup or 0
        print(json.dumps(worker(args)))
        return 0
    if args.render:
        render(args.render)
        return 0
    run(device=args.device, model=args.model, Ts=args.T, methods=args.methods,
        dtype=args.dtype, batch=args.batch, img_size=args.img_size, in_chans=args.in_chans,
        steps=args.steps, warmup=args.warmup, repeats=args.repeats, threads=args.threads,
        public_code=args.public_code, public_python=args.public_python, out_dir=args.out,
        name=args.name,
        plot_png=not args.no_plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
