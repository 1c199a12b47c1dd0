"""The ``sj-distill`` command line.

Parsing imports nothing heavy: ``sj-distill --help`` answers without importing torch; each
sub-command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import __version__


def _cmd_list(args: argparse.Namespace) -> int:
    from . import models

    print("models:")
    for name in models.list_models(args.pattern):
        print(f"  {name}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import time

    import torch

    from . import models, sj

    model = models.create_model(args.model, num_classes=args.num_classes)
    in_chans = model.conv1.in_channels if hasattr(model, "conv1") else model.layer1[0].in_channels
    size = args.img_size or (48 if args.model == "vggsnn" else 32)
    x = torch.rand(args.T, args.batch, in_chans, size, size)
    start = time.perf_counter()
    with torch.no_grad():
        logits = model(x)
        rate = float(torch.stack([m_out.mean() for m_out in _spike_outputs(model, x)]).mean())
    elapsed = time.perf_counter() - start
    sj.reset(model)
    params = sum(p.numel() for p in model.parameters())
    print(f"model        {args.model}  (SpikingJelly {sj.SJ_VERSION})")
    print(f"parameters   {params / 1e6:.2f} M")
    print(f"input        {tuple(x.shape)}  [T, B, C, H, W]")
    print(f"output       {tuple(logits.shape)}  [T, B, K]")
    print(f"stages       " + ", ".join(f"{f['module']}({f['num_chs']}ch,/{f['reduction']})"
                                         for f in model.feature_info))
    print(f"firing rate  {rate:.4f}  (mean over spiking layers)")
    print(f"forward      {elapsed * 1000:.0f} ms on CPU, no grad")
    return 0


def _spike_outputs(model, x):
    """Outputs of every spiking neuron layer for input ``x`` (one extra no-grad forward)."""
    from . import sj

    outputs = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: outputs.append(out))
             for m in model.modules() if sj.is_spiking_neuron(m)]
    sj.reset(model)
    model(x)
    for h in hooks:
        h.remove()
    return outputs


def _cmd_bench_memory(args: argparse.Namespace) -> int:
    from . import rate_bench

    rate_bench.run(args.T, model=args.model, batch=args.batch, img_size=args.img_size,
                   steps=args.steps, warmup=args.warmup, threads=args.threads, device=args.device,
                   png=args.png or None, json_path=args.json or None)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sj-distill",
        description="ANN-guided training for SpikingJelly SNNs: rate-based backprop, "
                    "block-wise replacement distillation (BRD), TSER losses, STAA.",
    )
    parser.add_argument("--version", action="version", version=f"sj-distill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list registered student backbones")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'cifar_*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="build a backbone, print its size and run one forward pass")
    p.add_argument("model", help="registered model name (see `sj-distill list`)")
    p.add_argument("--T", type=int, default=4, help="time steps (default 4)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--img-size", type=int, default=None, help="default 32 (48 for vggsnn)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = bench.add_parser("memory", help="BPTT vs rate-based backprop: peak memory and step "
                                        "time against T (one subprocess per setting)")
    from .rate_bench import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_bench_memory)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sj-distill: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
