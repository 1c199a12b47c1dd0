"""Run logs: a text log, ``metrics.csv`` (one row per epoch and stage) and TensorBoard scalars
(when tensorboard is installed), written by rank 0 only.

TensorBoard gets one writer per stage (``tensorboard/<stage>/``), opened by :meth:`RunLog.begin`
with ``purge_step`` at the first epoch the stage trains: after ``--resume``, events of epochs
that a killed run logged but did not checkpoint are hidden, so a redone epoch is logged once.
A full disk while logging is one :class:`~sj_distill.engine.checkpoint.CheckpointError` naming
the disk and the file.
"""
from __future__ import annotations

import csv
import errno
import logging
import sys
from pathlib import Path
from typing import Dict

from . import distributed
from .checkpoint import CheckpointError, no_space_error

log = logging.getLogger("sj_distill")


class _RunFileHandler(logging.FileHandler):
    """``train.log``; a full disk raises one clear error instead of logging's traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise no_space_error(Path(self.baseFilename)) from None
        super().handleError(record)


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
        handler = _RunFileHandler(out_dir / "train.log")
        handler.setFormatter(fmt)
        log.addHandler(handler)


def record_error(message: str) -> bool:
    """Append the line ``message`` (an error that ends the run) to ``train.log`` when this
    process has it open (the console shows the line already); returns whether it did."""
    for handler in log.handlers:
        if isinstance(handler, logging.FileHandler):
            try:
                handler.emit(log.makeRecord(log.name, logging.ERROR, __file__, 0, message,
                                            None, None))
                handler.flush()
            except CheckpointError:
                pass  # the disk is full: the console line is all we can give
            return True
    return False


def stop_logging() -> None:
    """Close ``train.log`` (and stop logging to the console)."""
    for handler in list(log.handlers):
        handler.close()
        log.removeHandler(handler)


class RunLog:
    """Per-epoch metrics to CSV, TensorBoard and the text log. The text line gives the stage's
    own cross-entropy beside its training loss (for BRD or KD the loss sums several terms and
    is not comparable with the test loss, which is a cross-entropy)."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.path = out_dir / "metrics.csv"
        self.writers = {}
        self.summary_writer = None
        if distributed.is_main():
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("tensorboard is not installed: metrics go to metrics.csv only")
            else:
                self.summary_writer = SummaryWriter

    def begin(self, stage: str, finished_epochs: int) -> None:
        """Stage ``stage`` trains from epoch ``finished_epochs + 1`` (1-based) on: open its
        TensorBoard writer, hiding events logged earlier for that epoch and later ones."""
        if self.summary_writer is None:
            return
        if stage in self.writers:
            self.writers.pop(stage).close()
        folder = self.out_dir / "tensorboard" / stage
        try:
            self.writers[stage] = self.summary_writer(str(folder),
                                                      purge_step=finished_epochs + 1)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise no_space_error(folder / "events") from None
            raise

    def epoch(self, row: Dict) -> None:
        if not distributed.is_main():
            return
        log.info("%s epoch %d: train loss %.4f (%s CE %.4f) top1 %.2f | test loss %.4f "
                 "top1 %.2f top5 %.2f | lr %.4g | %.1fs", row["stage"], row["epoch"],
                 row["train_loss"], row["stage"], row["train_ce"], row["train_top1"],
                 row["test_loss"], row["test_top1"], row["test_top5"], row["lr"], row["seconds"])
        try:
            self._write_csv(row)
            writer = self.writers.get(row["stage"])
            if writer is not None:
                for key, value in row.items():
                    if isinstance(value, (int, float)) and key != "epoch":
                        writer.add_scalar(f"{row['stage']}/{key}", value, row["epoch"])
                writer.flush()
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise no_space_error(self.path) from None
            raise

    def _write_csv(self, row: Dict) -> None:
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

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
