"""The ``sj-distill`` command line.

Parsing imports nothing heavy: ``sj-distill --help`` answers without importing torch; each
sub-command imports what it needs when it runs.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import List, Optional

from . import __version__

#: Exit status of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
INTERRUPTED = 130


def _cmd_list(args: argparse.Namespace) -> int:
    import fnmatch

    from . import config

    groups = {}
    for name in fnmatch.filter(config.known_recipes(), args.pattern):
        data = config.parse_yaml(config.recipe_path(name).read_text()) or {}
        groups.setdefault(data.get("paper") or "Embedded toy data", []).append((name, data))
    order = ("rate-BP", "BRD", "TSER", "STAA", "Plain", "Teachers", "Embedded")
    print("recipes (expected top-1 and where it comes from):" if groups
          else f"recipes: none match {args.pattern!r}")
    for paper, rows in sorted(groups.items(), key=lambda item: next(
            (i for i, prefix in enumerate(order) if item[0].startswith(prefix)), len(order))):
        print(f"  {paper}")
        for name, data in rows:
            expected = (data.get("expected") or {}).get("top1")
            shown = f"{expected:.2f}" if isinstance(expected, (int, float)) else "-"
            cited = (data.get("sources") or {}).get("expected.top1") \
                or (data.get("expected") or {}).get("source") or ""
            kind = next((k for k in config.SOURCE_KINDS if cited.startswith(k)), cited[:13])
            print(f"    {name:<32} {shown:>6}  {kind:<13} {data.get('description', '')}")
    from . import models

    names = models.list_models(args.pattern)
    print("models:" if names else f"models: none match {args.pattern!r}")
    for name in names:
        print(f"  {name}")
    return 0


def _cmd_data_check(args: argparse.Namespace) -> int:
    from .config import parse_override
    from .data import check_dataset

    options = {}
    for text in args.options:
        keys, value = parse_override(text)
        options[".".join(keys)] = value
    for line in check_dataset(args.name, args.data_dir, **options):
        print(line)
    print("ok")
    return 0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _resume_command(args: argparse.Namespace, overrides: List[str], out_dir) -> str:
    """The command that resumes the run ``args`` started, spelled out in full."""
    import shlex

    words = ["sj-distill", "recipe", args.name, *overrides, "--out", str(out_dir)]
    if args.data_dir:
        words += ["--data-dir", args.data_dir]
    return shlex.join(words + ["--resume"])


def _cmd_recipe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .api import load, run_recipe
    from .engine import runfolder

    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    recipe = load(args.name, overrides)
    out_dir = Path(args.out) if args.out else Path("runs") / recipe["name"]
    args.run_folder = out_dir
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM ends a run as Ctrl-C does
    try:
        summary = run_recipe(recipe, out_dir, data_dir=args.data_dir, resume=args.resume,
                             restart=args.restart)
    except runfolder.RunInterrupted as err:
        raise err.with_resume_command(_resume_command(args, overrides, out_dir)) from None
    from .engine import distributed

    if distributed.is_main():
        from .engine.report import summary_table

        print(summary_table([summary]))
    distributed.shutdown()
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import time

    import torch

    from . import energy, models, sj, zoo

    model = models.create_model(args.model, num_classes=args.num_classes)
    in_chans = model.conv1.in_channels if hasattr(model, "conv1") else model.layer1[0].in_channels
    size = args.img_size or (48 if args.model == "vggsnn" else 32)
    x = torch.rand(args.T, args.batch, in_chans, size, size)
    prof, handles = energy.attach(model, args.T)
    prof.batch = args.batch
    start = time.perf_counter()
    with torch.no_grad(), zoo.input_size_checked(model, args.model, size, "--img-size "):
        logits = model(x)
    elapsed = time.perf_counter() - start
    for h in handles:
        h.remove()
    rates = prof.firing_rates()
    rate = sum(rates.values()) / len(rates)
    sj.reset(model)
    params = sum(p.numel() for p in model.parameters())
    print(f"model        {args.model}  (SpikingJelly {sj.SJ_VERSION})")
    print(f"parameters   {params / 1e6:.2f} M")
    print(f"input        {tuple(x.shape)}  [T, B, C, H, W]")
    print(f"output       {tuple(logits.shape)}  [T, B, K]")
    print("stages       " + ", ".join(f"{f['module']}({f['num_chs']}ch,/{f['reduction']})"
                                         for f in model.feature_info))
    print(f"firing rate  {rate:.4f}  (mean over spiking layers)")
    print(f"forward      {elapsed * 1000:.0f} ms on CPU, no grad")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .engine.runfolder import check_writable

    checkpoint = Path(args.checkpoint)
    if args.out is not None:
        check_writable(Path(args.out), "--out")
    elif checkpoint.exists():
        folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
        check_writable(folder, "eval.json goes next to the checkpoint: --out")
    from .engine.evaluation import evaluate_checkpoint, format_result

    result = evaluate_checkpoint(args.checkpoint, data_dir=args.data_dir, out_dir=args.out,
                                 batch_size=args.batch_size, max_batches=args.max_batches)
    print(format_result(result))
    return 0


def _cmd_table(args: argparse.Namespace) -> int:
    from .engine.report import collect, summary_table

    summaries = collect(args.runs)
    if not summaries:
        print(f"sj-distill: error: no summary.json under {', '.join(args.runs)}; "
              "run `sj-distill recipe NAME` first", file=sys.stderr)
        return 2
    print(summary_table(summaries))
    if args.csv:
        from .engine.report import write_csv

        write_csv(summaries, args.csv)
        print(f"wrote {args.csv}")
    return 0


def _cmd_bench_memory(args: argparse.Namespace) -> int:
    from .bench import rate as rate_bench

    rate_bench.run(device=args.device, models=args.models, Ts=args.T, dtypes=args.dtypes,
                   batch=args.batch, img_size=args.img_size, steps=args.steps,
                   warmup=args.warmup, threads=args.threads, time_chunk=args.time_chunk,
                   out_dir=args.out, name=args.name, plot_png=not args.no_plot)
    return 0


def _cmd_bench_train(args: argparse.Namespace) -> int:
    from .bench import train as train_bench

    if args.render:
        train_bench.render(args.render)
        return 0
    train_bench.run(device=args.device, model=args.model, Ts=args.T, methods=args.methods,
                    dtype=args.dtype, batch=args.batch, img_size=args.img_size,
                    in_chans=args.in_chans, steps=args.steps, warmup=args.warmup,
                    repeats=args.repeats, threads=args.threads, public_code=args.public_code,
                    public_python=args.public_python, out_dir=args.out, name=args.name,
                    plot_png=not args.no_plot)
    return 0


def _cmd_bench_data(args: argparse.Namespace) -> int:
    from .bench import data as data_bench

    return data_bench.run(args)


def _cmd_bench_speed(args: argparse.Namespace) -> int:
    from .bench import spike as spike_bench

    spike_bench.run(device=args.device, models=args.models, Ts=args.T, dtypes=args.dtypes,
                    batch=args.batch, img_size=args.img_size, steps=args.steps,
                    warmup=args.warmup, threads=args.threads, time_chunk=args.time_chunk,
                    eligibility=args.eligibility, spike_pass=args.spike_pass,
                    out_dir=args.out, name=args.name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sj-distill",
        description="ANN-guided training for SpikingJelly SNNs: rate-based backprop, "
                    "block-wise replacement distillation (BRD), TSER losses, STAA.",
    )
    parser.add_argument("--version", action="version", version=f"sj-distill {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("recipe", help="run a recipe (YAML) end to end: teacher, student, eval")
    p.add_argument("name", help="shipped recipe name (see `sj-distill list`) or a .yaml path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="recipe overrides with dotted keys, e.g. train.optimizer.lr=0.05")
    p.add_argument("--data-dir", default=None, help="dataset root (real datasets)")
    p.add_argument("--out", default=None, help="run folder (default runs/NAME)")
    p.add_argument("--epochs", type=int, default=None, help="shortcut for train.epochs=N")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last finished epoch")
    p.add_argument("--restart", action="store_true",
                   help="start the run in --out over: delete its checkpoints and results first")
    p.set_defaults(func=_cmd_recipe)

    p = sub.add_parser("eval", help="accuracy, firing rates, SOPs and energy of a checkpoint")
    p.add_argument("checkpoint", help="a run folder, or its student.pt or last.pt")
    p.add_argument("--data-dir", default=None, help="dataset root (real datasets)")
    p.add_argument("--out", default=None, help="where eval.json and firing_rates.png go")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-batches", type=int, default=None, help="evaluate only N batches")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("table", help="expected vs achieved top-1 of run folders, as markdown "
                                     "(and CSV with --csv)")
    p.add_argument("runs", nargs="*", default=["runs"], help="run folders (default: runs)")
    p.add_argument("--csv", default=None, metavar="PATH", help="also write the table as CSV")
    p.set_defaults(func=_cmd_table)

    p = sub.add_parser("list", help="list shipped recipes and registered student backbones")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'cifar_*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("data", help="real datasets")
    data = p.add_subparsers(dest="data", metavar="ACTION", required=True)
    p = data.add_parser("check", help="verify a dataset's layout and counts without training")
    p.add_argument("name", help="cifar10, cifar100, imagenet, cifar10dvs, fashion-mnist, "
                                "imagefolder or eventfolder")
    p.add_argument("options", nargs="*", metavar="KEY=VALUE",
                   help="dataset options, as data.options in a recipe (e.g. framing=tonic)")
    p.add_argument("--data-dir", default=None, help="the dataset folder")
    p.set_defaults(func=_cmd_data_check)

    p = sub.add_parser("info", help="build a backbone, print its size and run one forward pass")
    p.add_argument("model", help="registered model name (see `sj-distill list`)")
    p.add_argument("--T", type=int, default=4, help="time steps (default 4)")
    p.add_argument("--batch", type=int, default=2, help="batch size (default 2)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--img-size", type=int, default=None, help="default 32 (48 for vggsnn)")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("bench", help="benchmarks")
    bench = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    p = bench.add_parser("memory", help="training step, BPTT vs rate-based backprop: peak "
                                        "memory and images/s against T (one subprocess per "
                                        "setting; JSON, markdown and PNG)")
    from .bench.rate import add_arguments as add_memory_arguments

    add_memory_arguments(p)
    p.set_defaults(func=_cmd_bench_memory)
    p = bench.add_parser("speed", help="the rate-BP spike pass alone vs SpikingJelly's no-grad "
                                       "multi-step forward, side by side (JSON and markdown)")
    from .bench.spike import add_arguments as add_speed_arguments

    add_speed_arguments(p)
    p.set_defaults(func=_cmd_bench_speed)
    p = bench.add_parser("train", help="the training step of BPTT, rate-BP, SLTT, OTTT and "
                                       "memopt (and the public rate-BP code) on one model: "
                                       "CPU/wall seconds and peak memory against T")
    from .bench.train import add_arguments as add_train_arguments

    add_train_arguments(p)
    p.set_defaults(func=_cmd_bench_train)
    p = bench.add_parser("data", help="samples/s of a recipe's training loader, built as a run "
                                      "builds it (workers, pinned memory, prefetch)")
    from .bench.data import add_arguments as add_data_arguments

    add_data_arguments(p)
    p.set_defaults(func=_cmd_bench_data)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[List[str]]) -> argparse.Namespace:
    """Parse ``argv``; ``KEY=VALUE`` overrides of ``recipe`` may come before or after its
    options (argparse alone takes them only before)."""
    args, extra = parser.parse_known_args(argv)
    if extra and args.command == "recipe" and all("=" in e and not e.startswith("-")
                                                  for e in extra):
        args.overrides = list(args.overrides) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (KeyError, ValueError, FileNotFoundError, RuntimeError, TypeError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        return _fail(f"sj-distill: error: {message}", 2, getattr(args, "run_folder", None))
    except KeyboardInterrupt as err:
        message = str(err) if str(err) else "interrupted"
        return _fail(f"sj-distill: {message}", INTERRUPTED, getattr(args, "run_folder", None))
    except OSError as err:  # the file system refused a write the checks could not foresee
        return _fail(f"sj-distill: error: {_os_error_line(err)}", 2,
                     getattr(args, "run_folder", None))


def _os_error_line(err: OSError) -> str:
    """One line for a failed file operation: what failed, on which file, and what to do."""
    import errno

    if err.errno == errno.ENOSPC:
        where = f" while writing {err.filename}" if err.filename else ""
        return (f"no space left on the disk{where}: free space there, then rerun (with "
                "--resume to continue from the last saved epoch)")
    where = f": {err.filename}" if err.filename else ""
    return f"{err.strerror or type(err).__name__}{where} (check the folder's permissions and space)"


def _fail(line: str, status: int, run_folder=None) -> int:
    """Print the one line that ends the command and, when the run folder exists and has a
    ``train.log``, append it there too (unless another live run holds the folder); return
    ``status``."""
    print(line, file=sys.stderr)
    if "sj_distill.engine.runlog" in sys.modules:
        from .engine import runlog

        if runlog.record_error(line):
            runlog.stop_logging()
            return status
        runlog.stop_logging()
    if run_folder is not None:
        from .engine import runfolder

        runfolder.append_to_log(run_folder, line)
    return status


if __name__ == "__main__":
    sys.exit(main())
