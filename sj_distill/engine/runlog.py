"""Run logs: a text log, ``metrics.csv`` (one row per epoch and stage) and TensorBoard scalars
(when tensorboard is installed), written by rank 0 only."""
from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Dict

from . import distributed

log = logging.getLogger("sj_distill")


def setup_logging(out_dir: Path) -> None:
    """Log INFO to stderr and ``out_dir/train.log`` (rank 0), WARNING elsewhere."""
    log.handlers.clear()
    log.propagate = False
    log.setLevel(logging.INFO if distributed.is_main() else logging.WARNING)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    log.addHandler(console)
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out_dir / "train.log")
        handler.setFormatter(fmt)
        log.addHandler(handler)


class RunLog:
    """Per-epoch metrics to CSV, TensorBoard and the text log."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / "metrics.csv"
        self.writer = None
        if distributed.is_main():
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: metrics go to metrics.csv only")
            else:
                self.writer = SummaryWriter(str(out_dir / "tensorboard"))

    def epoch(self, row: Dict) -> None:
        if not distributed.is_main():
            return
        log.info("%s epoch %d: train loss %.4f top1 %.2f | test loss %.4f top1 %.2f top5 %.2f "
                 "| lr %.4g | %.1fs", row["stage"], row["epoch"], row["train_loss"],
                 row["train_top1"], row["test_loss"], row["test_top1"], row["test_top5"],
                 row["lr"], row["seconds"])
        rows = []
        if self.path.is_file():
            with self.path.open() as handle:
                rows = [r for r in csv.DictReader(handle)
                        if not (r["stage"] == row["stage"] and int(r["epoch"]) >= row["epoch"])]
        rows.append(row)
        fields = list(dict.fromkeys(k for r in rows for k in r))
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self.writer.add_scalar(f"{row['stage']}/{key}", value, row["epoch"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
