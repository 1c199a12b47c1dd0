"""The epoch loop shared by the teacher and the student stage: train, evaluate, log, checkpoint,
resume."""
from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import sj
from . import checkpoint, distributed, runfolder
from .guard import CHECK_INTERVAL, FiniteGuard
from .metrics import Meter
from .runlog import RunLog

log = logging.getLogger("sj_distill")

#: ``step(x, y) -> (loss, parts, logits [B,K])``: forward of one batch, no backward.
TrainStep = Callable[[torch.Tensor, torch.Tensor], tuple]


@dataclass
class Stage:
    """One thing to train: a stage of a recipe run (``teacher`` or ``student``)."""

    name: str
    model: nn.Module                  # what is put in train()/eval() mode and reset
    state: Dict[str, nn.Module]       # what is checkpointed, by name
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    epochs: int
    train_step: TrainStep
    evaluate: Callable[[], Dict[str, float]]
    max_batches: Optional[int] = None
    amp: str = "none"
    history: List[Dict] = field(default_factory=list)
    extra: Dict = field(default_factory=dict)  # saved as is in every checkpoint (the recipe)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int) -> int:
    """The RNG seed of one epoch on this rank: training from epoch ``e`` draws the same random
    numbers whether the run got there directly or by ``--resume``."""
    return seed + 100_003 * (epoch + 1) + 7919 * distributed.rank()


def _autocast(amp: str, device: torch.device):
    if amp == "none" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def _resume(stage: Stage, path: Path) -> int:
    """Load ``path`` into ``stage``; return the number of completed epochs."""
    state = checkpoint.load(path, required=("stage", "epoch", "modules", "optimizer",
                                            "scheduler", "rng", "history"),
                            advice=runfolder.corrupt_advice(path))
    if state["stage"] != stage.name:
        raise checkpoint.CheckpointError(
            f"checkpoint {path} belongs to stage {state['stage']!r}, not {stage.name!r}")
    saved_world = state.get("world_size", 1)
    if saved_world != distributed.world_size():
        raise checkpoint.CheckpointError(
            f"checkpoint {path} was written by a run of {saved_world} process(es), this run has "
            f"{distributed.world_size()}: resume with the same number of processes (torchrun "
            "--nnodes x --nproc_per_node), since the per-process batch and the data order depend "
            "on it, or start a new run in another --out folder")
    for name, module in stage.state.items():
        module.load_state_dict(state["modules"][name])
    stage.optimizer.load_state_dict(state["optimizer"])
    stage.scheduler.load_state_dict(state["scheduler"])
    stage.history[:] = state["history"]
    checkpoint.set_rng_state(state["rng"])
    return int(state["epoch"])


def fit(stage: Stage, train_loader, ckpt_path: Path, runlog: RunLog, seed: int,
        device: torch.device, resume: bool) -> List[Dict]:
    """Train ``stage`` for its epochs (continuing from ``ckpt_path`` when ``resume`` and it
    exists), evaluating after every epoch and writing the checkpoint atomically. A non-finite
    loss or gradient raises :class:`~sj_distill.engine.guard.NonFiniteError` before the epoch
    is saved, so ``ckpt_path`` keeps the last good epoch."""
    start = _resume(stage, ckpt_path) if resume and ckpt_path.is_file() else 0
    if start:
        log.info("%s: resumed from %s after epoch %d", stage.name, ckpt_path, start)
    runlog.begin(stage.name, start)
    scaler = torch.amp.GradScaler("cuda") if stage.amp == "fp16" and device.type == "cuda" else None
    guard = FiniteGuard(device)
    finished = start
    try:
        for epoch in range(start, stage.epochs):
            _train_epoch(stage, train_loader, epoch, seed, device, scaler, runlog, guard,
                         _saved_line(ckpt_path, finished))
            if distributed.is_main():
                checkpoint.save_atomic({
                    "stage": stage.name, "epoch": epoch + 1,
                    "modules": {n: m.state_dict() for n, m in stage.state.items()},
                    "optimizer": stage.optimizer.state_dict(),
                    "scheduler": stage.scheduler.state_dict(),
                    "rng": checkpoint.rng_state(), "sampler_epoch": epoch + 1,
                    "world_size": distributed.world_size(),
                    "history": stage.history, **stage.extra,
                }, ckpt_path)
            finished = epoch + 1
            distributed.barrier()
    except KeyboardInterrupt:
        raise runfolder.RunInterrupted.in_epoch(stage.name, finished + 1, ckpt_path,
                                                finished) from None
    return stage.history


def _saved_line(ckpt_path: Path, finished: int) -> str:
    """What the run folder holds after a stop in the epoch following ``finished``."""
    if finished:
        return (f"{ckpt_path} still holds epoch {finished}: fix the recipe and rerun with "
                "--resume")
    return "nothing of this stage was saved: fix the recipe and rerun"


def _train_epoch(stage: Stage, train_loader, epoch: int, seed: int, device: torch.device,
                 scaler, runlog: RunLog, guard: FiniteGuard, saved: str) -> None:
    """Train ``stage`` for epoch ``epoch`` (0-based), step its scheduler, evaluate, log.
    The host synchronises with the device once every ``CHECK_INTERVAL`` steps (guard and
    progress bar), not per step."""
    began = time.time()
    torch.manual_seed(epoch_seed(seed, epoch))
    sampler = getattr(train_loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    stage.model.train()
    meter = Meter(device)
    guard.reset()
    params = [p for group in stage.optimizer.param_groups for p in group["params"]]
    total = len(train_loader) if stage.max_batches is None else min(len(train_loader),
                                                                     stage.max_batches)
    with tqdm(train_loader, total=total, desc=f"{stage.name} {epoch + 1}/{stage.epochs}",
              leave=False, disable=None if distributed.is_main() else True) as bar:
        for i, (x, y) in enumerate(bar):
            if i >= total:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with _autocast(stage.amp, device):
                loss, parts, logits = stage.train_step(x, y)
            stage.optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                guard.observe(i, loss, params)
                stage.optimizer.step()
            else:
                scaler.scale(loss).backward()
                guard.observe(i, loss, params, check_gradients=False)
                scaler.step(stage.optimizer)
                scaler.update()
            sj.reset(stage.model)
            meter.update(loss.detach(), logits.float(), y, parts)
            if (i + 1) % CHECK_INTERVAL == 0:
                guard.check(stage.name, epoch + 1, saved)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    guard.check(stage.name, epoch + 1, saved)
    lr = stage.optimizer.param_groups[0]["lr"]
    stage.scheduler.step()
    distributed.broadcast_buffers(stage.model)
    train = meter.result()
    test = stage.evaluate()
    row = {"stage": stage.name, "epoch": epoch + 1, "lr": lr, "seconds": time.time() - began,
           **{f"train_{k}": v for k, v in train.items()},
           **{f"test_{k}": v for k, v in test.items()}}
    stage.history.append(row)
    runlog.epoch(row)


@torch.no_grad()
def evaluate(model: nn.Module, loader, to_input: Callable, device: torch.device,
             amp: str = "none", desc: str = "eval",
             total: Optional[int] = None) -> Dict[str, float]:
    """Top-1 / top-5 / cross-entropy of ``model`` (eval mode) over ``loader``; SNN outputs
    ``[T,B,K]`` are averaged over time. ``total``: the number of batches for the progress bar
    (default ``len(loader)``)."""
    was_training = model.training
    model.eval()
    meter = Meter(device)
    if total is None and hasattr(loader, "__len__"):
        total = len(loader)
    for x, y in tqdm(loader, desc=desc, total=total, leave=False,
                     disable=None if distributed.is_main() else True):
        x, y = x.to(device), y.to(device)
        with _autocast(amp, device):
            out = model(to_input(x))
        logits = (out.mean(0) if out.dim() == 3 else out).float()
        sj.reset(model)
        meter.update(torch.nn.functional.cross_entropy(logits, y), logits, y)
    model.train(was_training)
    metrics = meter.result()
    del metrics["ce"]  # the loss is the cross-entropy here
    return metrics
