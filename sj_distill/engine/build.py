"""Everything a recipe run is built from, in one place: data sets and loaders, the student
(STAA-patched when asked), the timm teacher, the loss and the student's objective (BPTT or
rate-BP, logit KD or BRD hybrids), optimiser and scheduler.

:mod:`.trainer` builds the real run from these, :mod:`.validate` the same parts on a dry run,
so a recipe that validates builds. Every builder turns a mistake into one
:class:`~sj_distill.config.RecipeError` that starts with the recipe key to change
(:func:`recipe_section`).

With rate-based backprop the 1/T gradient scaling of the public rate-BP code
(``train.scale_grad_by_T``) is applied by :func:`sj_distill.rate.enable` itself, to the
student's output and to the stage features BRD's hybrids take (:func:`sj_distill.rate.tap`),
exactly as in a user's own loop.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from .. import teachers
from ..config import RecipeError
from ..distill import snn_input
from ..registry import DATASETS, LOSSES, OPTIMIZERS, SCHEDULERS, check_params
from . import distributed
from .objectives import BRDObjective, LogitObjective

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


# --------------------------------------------------------------------------- data

def check_data(recipe: Dict) -> None:
    """``data.name`` is registered, ``data.options`` are parameters of its builder and the
    loader settings are in range."""
    data = recipe["data"]
    if data["workers"] < 0 or data["prefetch_factor"] < 1:
        raise RecipeError(f"data.workers must be >= 0 and data.prefetch_factor >= 1, got "
                          f"{data['workers']} and {data['prefetch_factor']}")
    with recipe_section("data.name"):
        builder = DATASETS.get(data["name"], where="data.name")
    clash = sorted(set(data["options"]) & set(DATA_ARGUMENTS))
    if clash:
        raise RecipeError(f"data.options.{clash[0]}: set data.{clash[0]} instead (the engine "
                          "passes it to the dataset)")
    with recipe_section("data.options"):
        check_params(builder, data["options"], "data.options", f"dataset {data['name']!r}")


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


def loader_options(data: Dict) -> Dict:
    """DataLoader keywords from the recipe's ``data`` section: ``workers`` processes, kept
    alive across epochs, each ``prefetch_factor`` batches ahead; pinned memory when
    ``pin_memory`` says so (default: when CUDA is available)."""
    workers = data["workers"]
    pin = torch.cuda.is_available() if data["pin_memory"] is None else data["pin_memory"]
    options = dict(num_workers=workers, pin_memory=pin, persistent_workers=workers > 0)
    if workers > 0:
        options["prefetch_factor"] = data["prefetch_factor"]
    return options


def make_loaders(recipe: Dict, train_set, test_set, seed: int) -> Tuple[DataLoader, DataLoader]:
    """Training and test loaders. Training, as the public rate-BP code: every sample once per
    epoch, the last partial batch kept (under torchrun ``DistributedSampler`` pads the shards
    to equal length with repeated samples), except a last batch of one sample, which cannot
    train a BatchNorm and is dropped; a new order every epoch unless ``data.reshuffle`` is
    false (the public ImageNet script's one order, see :class:`_SameOrderEveryEpoch`)."""
    data = recipe["data"]
    batch = data["batch_size"]
    if distributed.world_size() > 1:
        if batch % distributed.world_size():
            raise RecipeError(f"data.batch_size {batch} is not divisible by the "
                              f"{distributed.world_size()} processes")
        batch //= distributed.world_size()
        train_sampler = DistributedSampler(train_set, shuffle=True, seed=seed, drop_last=False)
    else:
        train_sampler = _EpochShuffle(len(train_set), seed)
    drop_single = len(train_sampler) % batch == 1
    if not data["reshuffle"]:
        train_sampler = _SameOrderEveryEpoch(train_sampler)
    common = loader_options(data)
    train = DataLoader(train_set, batch_size=batch, sampler=train_sampler, drop_last=drop_single,
                       **common)
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


class _SameOrderEveryEpoch(torch.utils.data.Sampler):
    """The wrapped sampler's first-epoch order in every epoch (it has no ``set_epoch``, so the
    loop never moves the wrapped one on): what the public rate-BP ImageNet script does, whose
    ``DistributedSampler`` is never given ``set_epoch``."""

    def __init__(self, sampler: torch.utils.data.Sampler):
        self.sampler = sampler

    def __iter__(self):
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


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


# --------------------------------------------------------------------------- student and teacher

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


def build_ann(recipe: Dict, num_classes: int, in_chans: int) -> nn.Module:
    """The recipe's timm teacher, trainable and unsplit, with random weights; errors name the
    recipe key."""
    import timm

    spec = recipe["teacher"]
    if not timm.is_model(spec["model"]):
        raise RecipeError(f"teacher.model: unknown timm model {spec['model']!r} (names: "
                          "timm.list_models(), e.g. resnet18, vgg11_bn)")
    with recipe_section("teacher.options"):
        check_params(teachers.create_ann, spec["options"], "teacher.options",
                     "teachers.create_ann")
        return teachers.create_ann(spec["model"], num_classes=num_classes, in_chans=in_chans,
                                   cifar=spec["cifar_stem"], **spec["options"])


# --------------------------------------------------------------------------- loss and objective

#: loss name -> (needs a teacher, needs per-step logits [T,B,K])
LOSS_NEEDS = {"ce": (False, False), "kd": (True, False), "tser": (True, True),
              "brd": (True, False)}


def build_loss(recipe: Dict) -> nn.Module:
    """The loss named by ``train.loss.name`` with ``train.loss.params``; errors name the key."""
    spec = recipe["train"]["loss"]
    with recipe_section("train.loss.name"):
        builder = LOSSES.get(spec["name"], where="train.loss.name")
    with recipe_section("train.loss.params"):
        LOSSES.check_params(spec["name"], spec["params"], "train.loss.params")
        return builder(**spec["params"])


def student_objective(recipe: Dict, student: nn.Module, teacher) -> Tuple[nn.Module, object, Dict]:
    """``(trained module, objective, modules to checkpoint)`` for the recipe's student stage.

    The student is changed in place (rate-BP enabled when ``train.method`` is ``rate``)."""
    name = recipe["train"]["loss"]["name"]
    loss_fn = build_loss(recipe)
    needs_teacher, per_step = LOSS_NEEDS.get(name, (False, False))
    method = recipe["train"]["method"]
    if per_step and method == "rate":
        raise RecipeError(f"train.loss '{name}' needs per-step logits [T,B,K], which "
                          "rate-based backprop does not produce: set train.method=bptt")
    if needs_teacher and teacher is None:
        raise RecipeError(f"train.loss '{name}' needs a teacher: set teacher.model")
    if name != "brd" and recipe["train"]["brd"]["points"] is not None:
        raise RecipeError("train.brd.points is set but train.loss is not 'brd'")
    if method == "rate":
        from .. import rate

        with recipe_section("train.method"):
            rate.enable(student, scale_grad_by_T=recipe["train"]["scale_grad_by_T"],
                        max_pool=recipe["train"]["max_pool"])
    if name == "brd":
        from ..hybrid import BlockReplacement

        brd = recipe["train"]["brd"]
        with recipe_section("train.brd"):
            check_params(BlockReplacement, brd["params"], "train.brd.params", "BlockReplacement")
            hybrid = BlockReplacement(student, teacher, points=brd["points"], **brd["params"])
        return hybrid, BRDObjective(loss_fn), {"student": student, "adapters": hybrid.adapters}
    return student, LogitObjective(loss_fn, needs_teacher), {"student": student}
