"""The rate-BP spike pass alone against SpikingJelly's plain no-grad multi-step forward of
the same model on the same device (``sj-distill bench speed``).

Both run in one process, side by side: per setting (model, precision, T) the two are timed
alternately, ``--steps`` times each after ``--warmup`` untimed rounds, and the medians are
compared. "plain" is the model's own training-mode forward (BatchNorm on batch statistics)
under ``torch.no_grad()``; "spike pass" is :func:`sj_distill.rate.spike_pass_only` on a copy
with the same weights after ``rate.enable`` (the neuron kernels plus firing rates,
eligibilities and BatchNorm statistics). Issue 12's target: spike pass <= 1.2x plain.
``--eligibility reference`` times the step-by-step eligibility instead of the fused one,
``both`` the two alternately with the plain forward.
Results: ``spike_pass_<device>.json`` and ``.md`` in ``--out``.
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from typing import Callable, Dict, List, Optional, Sequence

from .common import (DEFAULT_OUT, add_grid_arguments, autocast, environment, resolve_grid,
                     timed, write_results)

TARGET = 1.2
DEVICE_DEFAULTS = {
    "cuda": dict(models=["resnet19", "resnet18"], batch=128, T=[1, 2, 4, 6, 8, 16],
                 dtypes=["fp32", "bf16"], steps=20, warmup=5),
    "cpu": dict(models=["resnet18"], batch=8, T=[4, 8], dtypes=["fp32"], steps=5,
                warmup=1),
}


def measure(model_name: str, dtype: str, T: int, *, batch: int, img_size: int, steps: int,
            warmup: int, device: str, time_chunk: Optional[int],
            eligibilities: Sequence[str] = ("fused",)) -> Dict:
    """Median seconds of the plain forward and of the spike pass with each eligibility
    (``fused`` and/or ``reference``), timed alternately in rounds."""
    import torch

    from .. import models, rate, sj
    from ..rate.layers import NeuronRecord

    torch.manual_seed(0)
    plain = models.create_model(model_name, num_classes=10).to(device).train()
    enabled = rate.enable(copy.deepcopy(plain), time_chunk=time_chunk)
    x = torch.rand(T, batch, 3, img_size, img_size, device=device)

    def plain_forward() -> None:
        with torch.no_grad(), autocast(device, dtype):
            plain(x)
        sj.reset(plain)

    def spike_pass(fused: bool) -> Callable[[], None]:
        def run_once() -> None:
            NeuronRecord.FUSED = fused
            try:
                with autocast(device, dtype):
                    rate.spike_pass_only(enabled, x)
            finally:
                NeuronRecord.FUSED = True
            sj.reset(enabled)
        return run_once

    candidates = [("plain", plain_forward)] + [
        (name, spike_pass(name == "fused")) for name in eligibilities]
    times: Dict[str, List[float]] = {name: [] for name, _ in candidates}
    for round_ in range(warmup + steps):
        for name, fn in candidates:
            seconds = timed(fn, device)
            if round_ >= warmup:
                times[name].append(seconds)
    result = dict(model=model_name, dtype=dtype, T=T, batch=batch, device=device,
                  time_chunk=time_chunk, plain_s=statistics.median(times["plain"]))
    for name in eligibilities:
        result[f"{name}_s"] = statistics.median(times[name])
        result[f"{name}_ratio"] = result[f"{name}_s"] / result["plain_s"]
    result["all_s"] = times
    return result


def markdown_table(results: List[Dict]) -> str:
    """One row per setting: plain forward, spike pass (fused eligibility and/or the
    reference) and their ratios to the plain forward; the verdict is the fused one's."""
    shown = [name for name in ("fused", "reference") if any(f"{name}_s" in r for r in results)]
    head = "| model | precision | T | plain no-grad forward (s) |"
    rule = "|---|---|---|---|"
    for name in shown:
        head += f" spike pass, {name} eligibility (s) | ratio |"
        rule += "---|---|"
    lines = [head + f" target <= {TARGET} |", rule + "---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['dtype']} | {r['T']} | failed: "
                         f"{r['error'].replace('|', '/')} |")
            continue
        row = f"| {r['model']} | {r['dtype']} | {r['T']} | {r['plain_s']:.3f} |"
        for name in shown:
            row += f" {r[f'{name}_s']:.3f} | {r[f'{name}_ratio']:.2f} |"
        ratio = r[f"{shown[0]}_ratio"]
        lines.append(row + f" {'met' if ratio <= TARGET else 'missed'} |")
    return "\n".join(lines)


ELIGIBILITIES = {"fused": ("fused",), "reference": ("reference",), "both": ("fused", "reference")}


def run(*, device: str = "cpu", models: Optional[Sequence[str]] = None,
        Ts: Optional[Sequence[int]] = None, dtypes: Optional[Sequence[str]] = None,
        batch: Optional[int] = None, img_size: int = 32, steps: Optional[int] = None,
        warmup: Optional[int] = None, threads: int = 1, time_chunk: Optional[int] = None,
        eligibility: str = "fused", out_dir: str = DEFAULT_OUT, name: Optional[str] = None,
        out=print) -> List[Dict]:
    """Measure every (model, precision, T), print and write the table
    (``<out_dir>/<name>.json`` and ``.md``; ``name``: ``spike_pass_<device>``)."""
    import torch

    if device not in DEVICE_DEFAULTS:
        raise ValueError(f"--device must be one of {sorted(DEVICE_DEFAULTS)}, got {device!r}")
    if eligibility not in ELIGIBILITIES:
        raise ValueError(f"--eligibility must be one of {sorted(ELIGIBILITIES)}, "
                         f"got {eligibility!r}")
    models, Ts, dtypes, batch, steps, warmup = resolve_grid(
        DEVICE_DEFAULTS[device], models, Ts, dtypes, batch, steps, warmup)
    torch.set_num_threads(threads)
    results = []
    for model in models:
        for dtype in dtypes:
            for T in Ts:
                try:
                    result = measure(model, dtype, T, batch=batch, img_size=img_size,
                                     steps=steps, warmup=warmup, device=device,
                                     time_chunk=time_chunk,
                                     eligibilities=ELIGIBILITIES[eligibility])
                    shown = ", ".join(f"{kind} spike pass {result[kind + '_s']:.3f} s "
                                      f"({result[kind + '_ratio']:.2f}x)"
                                      for kind in ELIGIBILITIES[eligibility])
                    out(f"  {model} {dtype} T={T:2d}: plain {result['plain_s']:.3f} s, {shown}")
                except (RuntimeError, ValueError, TypeError) as err:
                    result = dict(model=model, dtype=dtype, T=T, error=str(err)[:300])
                    out(f"  {model} {dtype} T={T:2d}: failed: {result['error']}")
                results.append(result)
    env = environment(device)
    env.update(batch=batch, image=f"{img_size}x{img_size}", timed_rounds=steps, warmup=warmup,
               time_chunk=time_chunk if time_chunk else "default (T on cuda, 1 on cpu)",
               eligibility=eligibility)
    table = markdown_table(results)
    out("\n" + table)
    stem = os.path.join(out_dir, name or f"spike_pass_{device}")
    written = write_results(stem, results, env, table, [],
                            f"Spike pass alone vs SpikingJelly's no-grad forward ({device})")
    out("written: " + ", ".join(written))
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``sj-distill bench speed`` and ``python -m sj_distill.bench.spike``."""
    add_grid_arguments(parser, DEVICE_DEFAULTS, threads=1, name="spike_pass_<device>",
                       rounds="timed rounds, each one call of both")
    parser.add_argument("--eligibility", default="fused", choices=sorted(ELIGIBILITIES),
                        help="fused (default), the step-by-step reference, or both "
                             "(timed alternately with the plain forward)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    run(device=args.device, models=args.models, Ts=args.T, dtypes=args.dtypes, batch=args.batch,
        img_size=args.img_size, steps=args.steps, warmup=args.warmup, threads=args.threads,
        time_chunk=args.time_chunk, eligibility=args.eligibility, out_dir=args.out,
        name=args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
