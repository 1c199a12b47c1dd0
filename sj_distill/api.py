"""Run a recipe from Python: ``run_recipe(...)`` is ``sj-distill recipe`` without a shell.

Example (a shipped recipe, a YAML file, or a recipe written as a dict)::

    from sj_distill.api import run_recipe

    summary = run_recipe("digits", "runs/digits-short", overrides={"train.epochs": 2})
    print(summary["top1"])

Your own dataset and student are registered first with
:func:`sj_distill.registry.register_dataset` / :func:`sj_distill.registry.register_student`
and then named in the recipe like the shipped ones (``docs/recipes.md``, "Your own data and
model").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

from . import config

Overrides = Union[Sequence[str], Mapping[str, Any]]


def load(recipe: Union[str, Path, Mapping[str, Any]], overrides: Overrides = ()) -> Dict:
    """A validated recipe from a shipped name, a ``.yaml`` path or a mapping (parsed YAML,
    checked against the same schema), with ``overrides`` (``['train.epochs=3']`` or
    ``{'train.epochs': 3}``) applied."""
    if isinstance(recipe, Mapping):
        data = config.apply_overrides(dict(recipe), overrides)
        return config.validate(data, "<recipe dict>" + (" (with overrides)" if overrides else ""))
    return config.load_recipe(str(recipe), overrides)


def run_recipe(recipe: Union[str, Path, Mapping[str, Any]], out_dir: Union[None, str, Path] = None,
               *, overrides: Overrides = (), data_dir: Optional[str] = None,
               resume: bool = False, restart: bool = False) -> Dict:
    """Run a recipe end to end (teacher, student, evaluation) into ``out_dir`` (default
    ``runs/NAME``) and return its summary (``top1``, ``top5``, ``teacher_top1``, ...), as
    ``sj-distill recipe`` does.

    The recipe, the run folder (flags, a writable folder, no other run holding its lock) and
    the data folder are checked before torch is imported, then the whole recipe before
    anything is written: a mistake raises :class:`sj_distill.config.RecipeError` naming the
    key or the folder. ``resume`` continues the run in ``out_dir``; ``restart`` deletes its
    checkpoints and starts over. Ctrl-C raises
    :class:`sj_distill.engine.runfolder.RunInterrupted` (a ``KeyboardInterrupt`` whose text
    says what is saved)."""
    recipe = load(recipe, overrides)
    from .engine import runfolder

    out_dir = Path(out_dir) if out_dir is not None else Path("runs") / recipe["name"]
    runfolder.preflight(out_dir, resume, restart)
    from .data.sources import check_root

    data = recipe["data"]
    check_root(data["name"], data_dir or data["root"], data["options"], data["download"])
    from .engine.trainer import run_recipe as run

    try:
        return run(recipe, out_dir, data_dir=data_dir, resume=resume, restart=restart)
    except runfolder.RunInterrupted:
        raise
    except KeyboardInterrupt:
        raise runfolder.RunInterrupted.outside_epoch(out_dir) from None
