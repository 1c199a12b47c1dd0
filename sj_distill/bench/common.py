"""What every ``sj-distill bench`` benchmark shares: the grid of settings (device, models,
time steps, precisions, batch, timed and warm-up steps) as command-line options and its
per-device defaults, the measurement helpers (environment, autocast, timing) and the writer
of results (``<stem>.json`` with the environment, ``<stem>.md`` with the table).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

DTYPES = ("fp32", "bf16")
DEFAULT_OUT = os.path.join("benchmarks", "results", "rate")


def _listed(values) -> str:
    return " ".join(str(v) for v in values) if isinstance(values, (list, tuple)) else str(values)


def add_grid_arguments(parser: argparse.ArgumentParser, device_defaults: Dict[str, Dict], *,
                       threads: int, name: str, rounds: str = "timed steps") -> None:
    """The options of a benchmark over a grid of settings; the help shows each device's
    default from ``device_defaults`` (``{"cuda": {...}, "cpu": {...}}`` with the keys
    ``models, T, dtypes, batch, steps, warmup``). ``name``: the default file stem."""
    def per_device(key: str, sep: str = ": ") -> str:
        return "; ".join(f"{device}{sep}{_listed(d[key])}" for device, d in device_defaults.items())

    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--models", nargs="+", default=None,
                        help=f"registered models ({per_device('models')})")
    parser.add_argument("--T", type=int, nargs="+", default=None,
                        help=f"time steps ({per_device('T')})")
    parser.add_argument("--dtypes", nargs="+", default=None, choices=DTYPES,
                        help=f"precisions ({per_device('dtypes')})")
    parser.add_argument("--batch", type=int, default=None,
                        help=f"batch ({per_device('batch', ' ')})")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=None,
                        help=f"{rounds} ({per_device('steps', ' ')})")
    parser.add_argument("--warmup", type=int, default=None,
                        help=f"untimed ones before them ({per_device('warmup', ' ')})")
    parser.add_argument("--threads", type=int, default=threads,
                        help=f"torch CPU threads (default {threads})")
    parser.add_argument("--time-chunk", type=int, default=None,
                        help="rate.enable's time_chunk (default: T on cuda, 1 on cpu)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"results folder ({DEFAULT_OUT})")
    parser.add_argument("--name", default=None, help=f"file stem (default {name})")


def resolve_grid(defaults: Dict, models: Optional[Sequence[str]], Ts: Optional[Sequence[int]],
                 dtypes: Optional[Sequence[str]], batch: Optional[int], steps: Optional[int],
                 warmup: Optional[int]) -> Tuple[List[str], List[int], List[str], int, int, int]:
    """``(models, Ts, dtypes, batch, steps, warmup)``: the given values, and the device's
    ``defaults`` for those left None (or empty)."""
    return (list(models or defaults["models"]), list(Ts or defaults["T"]),
            list(dtypes or defaults["dtypes"]), batch or defaults["batch"],
            steps or defaults["steps"], defaults["warmup"] if warmup is None else warmup)


def environment(device: str) -> Dict:
    """What the numbers were measured on: device name, torch, SpikingJelly (and CuPy)."""
    import platform

    import torch

    from .. import sj

    env = dict(device=device, torch=torch.__version__, spikingjelly=sj.SJ_VERSION,
               python=platform.python_version(), threads=torch.get_num_threads())
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
        try:
            import cupy

            env["cupy"] = cupy.__version__
        except ImportError:
            env["cupy"] = None
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def autocast(device: str, dtype: str):
    """The autocast context of a precision name (``fp32``: autocast off)."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"unknown precision {dtype!r}; choose from {DTYPES}")
    return torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")


def timed(fn, device: str, cpu_seconds: bool = False) -> float:
    """Seconds one call of ``fn`` takes (CUDA synchronised before and after): wall seconds,
    or with ``cpu_seconds`` the CPU seconds of this process (``time.process_time``)."""
    import time

    import torch

    clock = time.process_time if cpu_seconds else time.perf_counter
    if device == "cuda":
        torch.cuda.synchronize()
    start = clock()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return clock() - start


def write_results(stem: str, results: List[Dict], env: Dict, table: str, checks: List[str],
                  header: str) -> List[str]:
    """``stem``.json (environment + measurements) and ``stem``.md (header, environment,
    table, target lines); returns the paths written."""
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(dict(environment=env, results=results), f, indent=1)
    env_line = ", ".join(f"{k} {v}" for k, v in env.items())
    body = [f"# {header}", "", f"Environment: {env_line}.", "", table, ""]
    body += [f"- {line}" for line in checks]
    with open(stem + ".md", "w") as f:
        f.write("\n".join(body).rstrip() + "\n")
    return [stem + ".json", stem + ".md"]


def log_T_axis(ax, Ts: Sequence[int]) -> None:
    """A plot's x axis for time steps: log scale with one labelled tick per measured ``T``,
    and a light grid."""
    ax.set_xscale("log")
    ax.set_xticks(Ts)
    ax.set_xticklabels([str(t) for t in Ts])
    ax.grid(alpha=0.3)
