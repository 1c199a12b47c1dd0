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

import contextlib
from pathlib import Path
from typing import Dict, Iterator, Optional

from ..config import RecipeError
from ..registry import DATASETS, check_params

#: Placeholder class count and input channels of the dry run (the data set is not opened).
PROBE_CLASSES = 10
PROBE_CHANS = 3

#: Dataset builder arguments the engine fills in from ``data.*`` (not allowed in data.options).
DATA_ARGUMENTS = ("root", "img_size", "T", "download")


@contextlib.contextmanager
def recipe_section(where: str) -> Iterator[None]:
    """Turn an error raised while building ``where`` into one :class:`RecipeError` that starts
    with ``where`` (unless the message already names a key under it)."""
    try:
        yield
    except RecipeError:
        raise
    except (KeyError, ValueError, TypeError, RuntimeError, AssertionError,
            FileNotFoundError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        message = str(message) or type(err).__name__
        if not message.startswith((f"'{where}", where)):
            message = f"{where}: {message}"
        raise RecipeError(message) from None


def check_data(recipe: Dict) -> None:
    """``data.name`` is registered and ``data.options`` are parameters of its builder."""
    data = recipe["data"]
    with recipe_section("data.name"):
        builder = DATASETS.get(data["name"], where="data.name")
    clash = sorted(set(data["options"]) & set(DATA_ARGUMENTS))
    if clash:
        raise RecipeError(f"data.options.{clash[0]}: set data.{clash[0]} instead (the engine "
                          "passes it to the dataset)")
    with recipe_section("data.options"):
        check_params(builder, data["options"], "data.options", f"dataset {data['name']!r}")


def _dry_teacher(recipe: Dict, out_dir: Optional[Path]):
    """The recipe's teacher, split and frozen, with random weights (``None`` without one)."""
    from .. import teachers
    from .optim import build_cosine, build_sgd
    from .teacher_stage import build_ann

    spec = recipe["teacher"]
    if not spec["model"]:
        return None
    with recipe_section("teacher"):
        model = build_ann(recipe, PROBE_CLASSES, PROBE_CHANS)
    if spec["checkpoint"] and not Path(spec["checkpoint"]).is_file():
        raise RecipeError(f"teacher.checkpoint: {spec['checkpoint']} does not exist")
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
    from .student_stage import student_objective
    from .trainer import build_student, optimizer_and_scheduler

    check_data(recipe)
    teacher = _dry_teacher(recipe, out_dir)
    student = build_student(recipe, PROBE_CLASSES, PROBE_CHANS)
    if recipe["train"]["sync_bn"]:
        from .. import sync_bn

        with recipe_section("train.sync_bn"):
            sync_bn.convert(student)
    trained, _, _ = student_objective(recipe, student, teacher)
    params = [p for p in trained.parameters() if p.requires_grad]
    optimizer_and_scheduler(recipe["train"], params, recipe["train"]["epochs"])
