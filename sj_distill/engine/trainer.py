"""``sj-distill recipe``: a recipe run end to end.

Stages: (1) the teacher (a local checkpoint, a finished ``teacher.pt`` of this run folder, or
trained here first when ``teacher.train.epochs > 0``); (2) the student, by BPTT or rate-BP with
the recipe's loss. Every epoch is evaluated and checkpointed atomically (``teacher_last.pt`` /
``last.pt``); ``resume=True`` continues exactly where the last finished epoch left off. Outputs
in the run folder: ``recipe.yaml``, ``train.log``, ``metrics.csv``, ``tensorboard/``,
``teacher.pt``, ``last.pt``, ``student.pt`` (final weights + recipe) and ``summary.json``.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import torch
import yaml
from torch import nn

from .. import __version__, sj
from ..config import RecipeError
from . import checkpoint, distributed, runfolder
from .build import (build_data, build_student, input_adapter, make_loaders,
                    optimizer_and_scheduler, student_objective, teacher_view)
from .loop import Stage, evaluate, fit, seed_everything
from .memory import check_memory
from .runlog import RunLog, setup_logging, stop_logging
from .validate import check_recipe

log = logging.getLogger("sj_distill")


def weight_digest(module: nn.Module) -> str:
    """SHA-1 of every parameter and buffer, in order: equal digests mean identical weights."""
    import hashlib

    digest = hashlib.sha1()
    for tensor in module.state_dict().values():
        if isinstance(tensor, torch.Tensor):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_recipe(recipe: Dict, out_dir: str | Path, data_dir: Optional[str] = None,
               resume: bool = False, restart: bool = False) -> Dict:
    """Run ``recipe`` (validated, see :mod:`sj_distill.config`) into ``out_dir``; return the
    summary (also written to ``out_dir/summary.json`` by rank 0).

    In this order, and before the run folder is created or written: the folder against
    ``resume`` / ``restart`` and another run's lock
    (:func:`~sj_distill.engine.runfolder.preflight`), the whole recipe built on a dry run
    (:func:`~sj_distill.engine.validate.check_recipe`), the data set (opened, so damaged
    data and a batch larger than the training set stop here) and a lower bound of the
    training memory against the device's (:func:`~sj_distill.engine.memory.check_memory`).
    Only then does rank 0 take the folder's lock (creating the folder), which it holds until
    the run ends. Ctrl-C / SIGTERM during an epoch raise
    :class:`~sj_distill.engine.runfolder.RunInterrupted`; Ctrl-C before anything was saved in
    a folder this run created removes the folder."""
    out_dir = Path(out_dir)
    runfolder.preflight(out_dir, resume, restart)
    check_recipe(recipe, out_dir)
    device = distributed.init()
    train_set, test_set = build_data(recipe, data_dir)
    check_batch_size(recipe, len(train_set))
    check_memory(recipe, build_student(recipe, train_set.num_classes, train_set.in_chans),
                 train_set.in_chans, device, distributed.world_size())
    created = not out_dir.exists()
    lock = runfolder.RunLock(out_dir)
    if distributed.is_main():
        lock.acquire()
    try:
        return _run(recipe, out_dir, train_set, test_set, device, resume, restart)
    except KeyboardInterrupt:
        if created and distributed.is_main() and not runfolder.saved_checkpoints(out_dir):
            stop_logging()
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        lock.release()


def check_batch_size(recipe: Dict, train_size: int) -> None:
    """``data.batch_size`` is at most the training set: a larger one is a mistake (every epoch
    would be one batch of the whole set, and the memory check would plan for the larger
    batch)."""
    batch = recipe["data"]["batch_size"]
    if batch > train_size:
        raise RecipeError(f"data.batch_size {batch} is larger than the training set "
                          f"({train_size} samples): use data.batch_size <= {train_size}")


def _run(recipe: Dict, out_dir: Path, train_set, test_set, device: torch.device, resume: bool,
         restart: bool) -> Dict:
    """The run itself, in a folder this process holds."""
    runfolder.prepare(out_dir, resume, restart)
    setup_logging(out_dir)
    if distributed.is_main():
        removed = checkpoint.remove_stale_temporaries(out_dir)
        if removed:
            log.info("removed %d temporary file(s) of an interrupted save: %s", len(removed),
                     ", ".join(removed))
        (out_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    seed = recipe["seed"]
    seed_everything(seed)
    if recipe["deterministic"]:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    started = time.time()
    log.info("recipe %s -> %s (SpikingJelly %s, %d process(es), %s)", recipe["name"], out_dir,
             sj.SJ_VERSION, distributed.world_size(), device)
    num_classes, in_chans = train_set.num_classes, train_set.in_chans
    time_major = getattr(train_set, "time_major", False)
    T = recipe["data"]["T"]
    to_snn, to_ann = input_adapter(T, time_major), teacher_view(time_major)
    train_loader, test_loader = make_loaders(recipe, train_set, test_set, seed)
    runlog = RunLog(out_dir)

    teacher, teacher_metrics = None, None
    if recipe["teacher"]["model"]:
        from .teacher_stage import obtain_teacher

        teacher, teacher_metrics = obtain_teacher(
            recipe, num_classes, in_chans, train_loader, test_loader, to_ann, out_dir, runlog,
            device, resume)

    student = build_student(recipe, num_classes, in_chans).to(device)
    if recipe["train"]["sync_bn"]:  # before rate.enable, which must see the synchronised BNs
        from .. import sync_bn

        sync_bn.convert(student, rate_pass_stats=recipe["train"]["sync_bn_rate_pass"])
    trained, objective, checkpointed = student_objective(recipe, student, teacher)
    if getattr(trained, "pairs", None):
        log.info("block-wise replacement: %s", ", ".join(
            f"student {p} -> teacher {t}" for p, t in trained.pairs.items()))
    trained = trained.to(device)
    ddp_model = trained
    if distributed.world_size() > 1:
        ddp_model = nn.parallel.DistributedDataParallel(
            trained, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler = optimizer_and_scheduler(
        recipe["train"], [p for p in trained.parameters() if p.requires_grad],
        recipe["train"]["epochs"])

    def train_step(x, y):
        x_ann, teacher_logits = to_ann(x), None
        if teacher is not None and objective.needs_teacher_logits:
            with torch.no_grad():
                teacher_logits = teacher(x_ann)
        return objective(ddp_model, to_snn(x), x_ann, y, teacher_logits)

    stage = Stage(
        name="student", model=trained, state=checkpointed, optimizer=optimizer,
        scheduler=scheduler, epochs=recipe["train"]["epochs"], train_step=train_step,
        evaluate=lambda: evaluate(student, test_loader, to_snn, device, recipe["train"]["amp"]),
        max_batches=recipe["train"]["max_batches"], amp=recipe["train"]["amp"],
        extra={"recipe": recipe})
    history = fit(stage, train_loader, out_dir / "last.pt", runlog, seed, device, resume)
    final = history[-1] if history else {}
    digests = distributed.gather_objects(weight_digest(trained))
    summary = {
        "recipe": recipe["name"], "version": __version__, "spikingjelly": sj.SJ_VERSION,
        "expected_top1": recipe["expected"]["top1"], "top1": final.get("test_top1"),
        "top5": final.get("test_top5"), "best_top1": max((r["test_top1"] for r in history),
                                                          default=None),
        "epochs": len(history), "teacher_top1": teacher_metrics and teacher_metrics["top1"],
        "method": recipe["train"]["method"], "loss": recipe["train"]["loss"]["name"],
        "world_size": distributed.world_size(), "seconds": time.time() - started,
        "run": str(out_dir),
        "weight_digest_per_rank": digests,
    }
    if distributed.is_main():
        checkpoint.save_atomic({"recipe": recipe, "model": student.state_dict(),
                                "summary": summary}, out_dir / "student.pt")
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        expected = summary["expected_top1"]
        log.info("done: top1 %.2f (%s) in %.0fs", summary["top1"] or float("nan"),
                 "no expected value in the recipe" if expected is None
                 else f"expected {expected:.2f}", summary["seconds"])
    runlog.close()
    distributed.barrier()
    return summary
