"""The teacher stage of a recipe run: a frozen, split timm teacher from (in this order) the
recipe's ``teacher.checkpoint``, this run folder's finished ``teacher.pt``, or training it here
when ``teacher.train.epochs > 0`` (checkpointed every epoch in ``teacher_last.pt``)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import teachers
from ..config import RecipeError
from . import checkpoint, distributed, runfolder
from .build import build_ann
from .loop import Stage, evaluate, fit
from .optim import build_cosine, build_sgd
from .runlog import RunLog

log = logging.getLogger("sj_distill")


def _train(recipe: Dict, model: nn.Module, train_loader, test_loader, to_ann: Callable,
           out_dir: Path, runlog: RunLog, device: torch.device, resume: bool) -> None:
    spec = recipe["teacher"]["train"]
    model.to(device)
    wrapped = model
    if distributed.world_size() > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_sgd(model.parameters(), lr=spec["lr"], momentum=spec["momentum"],
                          weight_decay=spec["weight_decay"])
    scheduler = build_cosine(optimizer, spec["epochs"])

    def step(x, y):
        logits = wrapped(to_ann(x))
        loss = F.cross_entropy(logits, y)
        return loss, {}, logits.detach()

    stage = Stage(name="teacher", model=model, state={"teacher": model}, optimizer=optimizer,
                  scheduler=scheduler, epochs=spec["epochs"], train_step=step,
                  evaluate=lambda: evaluate(model, test_loader, to_ann, device, desc="eval teacher"),
                  max_batches=recipe["train"]["max_batches"], extra={"recipe": recipe})
    fit(stage, train_loader, out_dir / "teacher_last.pt", runlog, recipe["seed"], device, resume)


def obtain_teacher(recipe: Dict, num_classes: int, in_chans: int, train_loader, test_loader,
                   to_ann: Callable, out_dir: Path, runlog: RunLog, device: torch.device,
                   resume: bool) -> Tuple[teachers.Teacher, Dict]:
    """The frozen teacher on ``device`` and its test metrics."""
    spec = recipe["teacher"]
    finished = out_dir / "teacher.pt"
    model = build_ann(recipe, num_classes, in_chans)
    if spec["checkpoint"]:
        teachers.load_weights(model, spec["checkpoint"])
        log.info("teacher %s: weights from %s", spec["model"], spec["checkpoint"])
    elif finished.is_file():
        saved = checkpoint.load(finished, required=("teacher",),
                                advice=runfolder.corrupt_advice(finished))
        model.load_state_dict(saved["teacher"])
        log.info("teacher %s: weights from this run's %s", spec["model"], finished)
    elif spec["train"]["epochs"] > 0:
        log.info("teacher %s: training for %d epochs", spec["model"], spec["train"]["epochs"])
        _train(recipe, model, train_loader, test_loader, to_ann, out_dir, runlog, device, resume)
        if distributed.is_main():
            checkpoint.save_atomic({"teacher": model.state_dict(), "recipe": recipe}, finished)
        distributed.barrier()
    else:
        raise RecipeError(f"teacher.model is {spec['model']!r} but there are no weights: set "
                          "teacher.checkpoint to a local file, or teacher.train.epochs > 0 to "
                          "train it first")
    teacher = teachers.split_model(model.cpu(), image_size=recipe["data"]["img_size"],
                                   name=spec["model"]).to(device)
    metrics = evaluate(teacher, test_loader, to_ann, device, desc="eval teacher")
    log.info("teacher %s: test top1 %.2f", spec["model"], metrics["top1"])
    return teacher, metrics
