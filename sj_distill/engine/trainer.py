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
from typing import Dict, Optional, Tuple

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .. import __version__, sj
from ..config import RecipeError
from ..distill import snn_input
from ..registry import DATASETS, OPTIMIZERS, SCHEDULERS, check_params
from . import checkpoint, distributed, runfolder
from .loop import Stage, evaluate, fit, seed_everything
from .runlog import RunLog, setup_logging
from .validate import check_data, check_recipe, recipe_section

log = logging.getLogger("sj_distill")


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation sharding without padding: rank ``r`` of ``w`` takes indices ``r, r+w, ...``,
    so summed metrics count every test sample exactly once."""

    def __init__(self, length: int):
        self.indices = list(range(distributed.rank(), length, distributed.world_size()))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def build_data(recipe: Dict, data_dir: Optional[str]):
    """``(train_set, test_set)`` of the recipe's dataset."""
    data = recipe["data"]
    check_data(recipe)
    builder = DATASETS.get(data["name"], where="data.name")
    download = {"download": True} if data["download"] else {}
    return builder(root=data_dir or data["root"], img_size=data["img_size"], T=data["T"],
                   **download, **data["options"])


def make_loaders(recipe: Dict, train_set, test_set, seed: int) -> Tuple[DataLoader, DataLoader]:
    data = recipe["data"]
    batch = data["batch_size"]
    if distributed.world_size() > 1:
        if batch % distributed.world_size():
            raise RecipeError(f"data.batch_size {batch} is not divisible by the "
                              f"{distributed.world_size()} processes")
        batch //= distributed.world_size()
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=True)
    else:
        train_sampler = _EpochShuffle(len(train_set), seed)
    common = dict(num_workers=data["workers"], pin_memory=torch.cuda.is_available(),
                  persistent_workers=data["workers"] > 0)
    train = DataLoader(train_set, batch_size=batch, sampler=train_sampler, drop_last=True, **common)
    test = DataLoader(test_set, batch_size=data["eval_batch_size"],
                      sampler=ShardSampler(len(test_set)), **common)
    return train, test


class _EpochShuffle(torch.utils.data.Sampler):
    """A permutation drawn from ``seed + epoch``: the order of epoch ``e`` does not depend on
    how the run got there (so ``--resume`` replays it exactly)."""

    def __init__(self, length: int, seed: int):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self) -> int:
        return self.length


def input_adapter(T: int, time_major: bool):
    """Batch -> SNN input ``[T,B,...]``: static images are repeated T times (direct encoding),
    event frames ``[B,T,...]`` are made time-major float32 (datasets may deliver float16 to
    halve what the loader copies)."""
    if time_major:
        return lambda x: x.transpose(0, 1).float().contiguous()
    return lambda x: snn_input(x, T).contiguous()


def teacher_view(time_major: bool):
    """Batch -> ANN input ``[B,C,H,W]``: event frames are averaged over time."""
    return (lambda x: x.float().mean(1)) if time_major else (lambda x: x)


def build_student(recipe: Dict, num_classes: int, in_chans: int) -> nn.Module:
    """The recipe's student (STAA-patched when ``student.staa`` is set); errors name the key."""
    from .. import models

    spec = recipe["student"]
    if spec["model"] not in models.list_models():
        raise RecipeError(f"student.model: unknown model {spec['model']!r}; registered models: "
                          f"{', '.join(models.list_models())}")
    with recipe_section("student.neuron / student.options"):
        model = models.create_model(spec["model"], num_classes=num_classes, in_chans=in_chans,
                                    **spec["neuron"], **spec["options"])
    if spec["staa"] is not None:
        from .. import staa

        if "time_steps" in spec["staa"]:
            raise RecipeError("student.staa.time_steps is data.T; remove it from the recipe")
        if "sample" in spec["staa"]:
            raise RecipeError("student.staa.sample is (in_chans, data.img_size, data.img_size); "
                              "remove it from the recipe")
        size = recipe["data"]["img_size"]
        with recipe_section("student.staa"):
            check_params(staa.patch, spec["staa"], "student.staa", "staa.patch")
            staa.patch(model, (in_chans, size, size), time_steps=recipe["data"]["T"],
                       **spec["staa"])
    return model


def optimizer_and_scheduler(recipe_train: Dict, params, epochs: int):
    """The student's optimiser and per-epoch scheduler from ``train.optimizer`` /
    ``train.scheduler``; errors name the key."""
    opt = dict(recipe_train["optimizer"])
    with recipe_section("train.optimizer"):
        optimizer = OPTIMIZERS.build(opt.pop("name"), params, where="train.optimizer", **opt)
    sched = dict(recipe_train["scheduler"])
    with recipe_section("train.scheduler"):
        scheduler = SCHEDULERS.build(sched.pop("name"), optimizer, where="train.scheduler",
                                     epochs=epochs, **sched)
    return optimizer, scheduler


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
    from .student_stage import student_objective

    trained, objective, checkpointed = student_objective(recipe, student, teacher)
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
