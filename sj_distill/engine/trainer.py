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
import time
from pathlib import Path
from typing import Dict, Optional

import torch
import yaml
from torch import nn

from .. import __version__, sj
from . import checkpoint, distributed, runfolder
from .build import (build_data, build_student, input_adapter, make_loaders,
                    optimizer_and_scheduler, student_objective, teacher_view)
from .loop import Stage, evaluate, fit, seed_everything
from .runlog import RunLog, setup_logging
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

    The whole recipe is checked first (:func:`~sj_distill.engine.validate.check_recipe`), and
    the folder against ``resume`` / ``restart`` (:func:`~sj_distill.engine.runfolder.prepare`):
    a mistake stops the run before anything is written or any data is read. Ctrl-C / SIGTERM
    during an epoch raise :class:`~sj_distill.engine.runfolder.RunInterrupted`."""
    out_dir = Path(out_dir)
    check_recipe(recipe, out_dir)
    device = distributed.init()
    runfolder.prepare(out_dir, resume, restart)
    setup_logging(out_dir)
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    seed = recipe["seed"]
    seed_everything(seed)
    if recipe["deterministic"]:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    started = time.time()
    log.info("recipe %s -> %s (SpikingJelly %s, %d process(es), %s)", recipe["name"], out_dir,
             sj.SJ_VERSION, distributed.world_size(), device)
    train_set, test_set = build_data(recipe, data_dir)
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

        sync_bn.convert(student)
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
        log.info("done: top1 %.2f (expected %s) in %.0fs", summary["top1"] or float("nan"),
                 summary["expected_top1"], summary["seconds"])
    runlog.close()
    distributed.barrier()
    return summary
