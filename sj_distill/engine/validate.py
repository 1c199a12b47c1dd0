"""Check a whole recipe before a run starts: nothing is written and no data is read.

:func:`check_recipe` resolves every registry name and builds every part of the run on a dry
run (student, STAA patch, synchronised BatchNorm, teacher and its split, BRD hybrids, loss,
optimiser, scheduler) with placeholder shapes (:data:`PROBE_CLASSES` classes,
:data:`PROBE_CHANS` input channels) instead of the data set's. A mistake anywhere is one :class:`~sj_distill.config.RecipeError` whose
message starts with the recipe key to change, e.g.
``train.optimizer: Invalid learning rate: -1``, so ``sj-distill recipe`` stops in seconds, not
after minutes of teacher training.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from ..config import RecipeError
from ..registry import DATASETS
from .build import (build_ann, build_student, check_data, optimizer_and_scheduler,
                    recipe_section, student_objective)

#: Placeholder class count and input channels of the dry run (the data set is not opened);
#: the channels are the data set's own when known (:func:`sj_distill.data.input_channels`).
PROBE_CLASSES = 10
PROBE_CHANS = 3


def probe_channels(recipe: Dict) -> int:
    """Input channels for the dry run: the recipe's data set's, when known without reading it
    (e.g. 1 for ``fashion-mnist`` or ``imagefolder`` with ``grayscale: true``), else
    :data:`PROBE_CHANS`."""
    from ..data import input_channels

    data = recipe["data"]
    builder = DATASETS.get(data["name"], where="data.name")
    return input_channels(data["name"], data["options"], builder) or PROBE_CHANS


def missing_teacher_advice(path: str) -> str:
    """``; make it with `sj-distill recipe NAME``` when ``path`` is ``.../NAME/teacher.pt`` and
    NAME is a shipped recipe (the teacher recipes write there), else nothing."""
    from ..config import known_recipes

    parts = Path(path).parts
    if len(parts) >= 2 and parts[-1] == "teacher.pt" and parts[-2] in known_recipes():
        out = Path(*parts[:-1])
        default = Path("runs") / parts[-2]
        where = "" if out == default else f" --out {out}"
        return f"; make it with `sj-distill recipe {parts[-2]}{where}`"
    return ""

def _dry_teacher(recipe: Dict, out_dir: Optional[Path]):
    """The recipe's teacher, split and frozen, with random weights (``None`` without one)."""
    from .. import teachers
    from .optim import build_cosine, build_sgd

    spec = recipe["teacher"]
    if not spec["model"]:
        return None
    with recipe_section("teacher"):
        model = build_ann(recipe, PROBE_CLASSES, probe_channels(recipe))
    if spec["checkpoint"] and not Path(spec["checkpoint"]).is_file():
        raise RecipeError(f"teacher.checkpoint: {spec['checkpoint']} does not exist"
                          f"{missing_teacher_advice(spec['checkpoint'])}")
    if spec["checkpoint"]:
        with recipe_section("teacher.checkpoint"):
            teachers.read_state_dict(spec["checkpoint"])
    finished = out_dir is not None and (out_dir / "teacher.pt").is_file()
    if not spec["checkpoint"] and not finished and spec["train"]["epochs"] <= 0:
        raise RecipeError(f"teacher.model is {spec['model']!r} but there are no weights: set "
                          "teacher.checkpoint to a local file, or teacher.train.epochs > 0 to "
                          "train it first")
    with recipe_section("teacher.train"):
        train = spec["train"]
        optimizer = build_sgd(model.parameters(), lr=train["lr"], momentum=train["momentum"],
                              weight_decay=train["weight_decay"])
        build_cosine(optimizer, train["epochs"])
    with recipe_section("teacher.model"):
        return teachers.split_model(model, image_size=recipe["data"]["img_size"],
                                    name=spec["model"])


def check_recipe(recipe: Dict, out_dir: Optional[Path] = None) -> None:
    """Raise :class:`RecipeError` for the first mistake in a validated ``recipe`` (see
    :func:`sj_distill.config.validate`), building its parts on a dry run; ``out_dir`` (the run
    folder, may not exist) tells whether a finished ``teacher.pt`` is there to use."""
    check_data(recipe)
    teacher = _dry_teacher(recipe, out_dir)
    student = build_student(recipe, PROBE_CLASSES, probe_channels(recipe))
    if recipe["train"]["sync_bn"]:
        from .. import sync_bn

        with recipe_section("train.sync_bn"):
            sync_bn.convert(student, rate_pass_stats=recipe["train"]["sync_bn_rate_pass"])
    trained, _, _ = student_objective(recipe, student, teacher)
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer_and_scheduler(recipe["train"], params, recipe["train"]["epochs"])
