"""Typed registries that resolve recipe names to builders (datasets, optimisers, schedulers,
losses, students, teachers). Builders are imported lazily, so the CLI stays light.

Your own data and model, without editing the package: register them from Python, then name
them in a recipe (YAML or dict) and run it with :func:`sj_distill.api.run_recipe`::

    from sj_distill import registry

    registry.register_dataset("my-data", build_my_data)   # data.name: my-data
    registry.register_student("my_snn", build_my_snn)     # student.model: my_snn

Recipes stay data: they only name what Python code registered.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Dict, List


def check_params(fn: Callable, params: Dict, where: str, what: str) -> None:
    """Raise ``KeyError`` naming the recipe key ``where.key`` for each key of ``params`` that
    ``fn`` does not accept (``what`` names ``fn`` in the message)."""
    sig = inspect.signature(fn)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    for key in params:
        if key not in sig.parameters:
            accepted = [p for p in sig.parameters if p not in ("self", "args", "kwargs")]
            raise KeyError(f"'{where}.{key}' is not a parameter of {what} "
                           f"(parameters: {', '.join(accepted)})")


class Registry:
    """Name -> builder for one kind of object.

    Builders are given as ``"module:attribute"`` strings (imported on first use) or callables.
    :meth:`build` checks the keyword arguments against the builder's signature, so a recipe
    with a misspelt parameter fails with the recipe key in the message."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: Dict[str, Any] = {}

    def register(self, name: str, builder) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = builder

    def names(self) -> List[str]:
        return sorted(self._entries)

    def get(self, name: str, where: str = "") -> Callable:
        if name not in self._entries:
            prefix = f"{where}: " if where else ""
            raise KeyError(f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, attr = entry.split(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry

    def check_params(self, name: str, params: Dict, where: str = "") -> None:
        """Raise ``KeyError`` naming ``where.key`` for a parameter ``name``'s builder lacks."""
        check_params(self.get(name, where), params, where, f"{self.kind} {name!r}")

    def build(self, name: str, *args, where: str = "", **params):
        builder = self.get(name, where)
        self.check_params(name, params, where)
        return builder(*args, **params)


DATASETS = Registry("dataset")
DATASETS.register("digits", "sj_distill.data:build_digits")
DATASETS.register("digits-dvs", "sj_distill.data:build_digits_dvs")
DATASETS.register("cifar10", "sj_distill.data:build_cifar10")
DATASETS.register("cifar100", "sj_distill.data:build_cifar100")
DATASETS.register("imagenet", "sj_distill.data:build_imagenet")
DATASETS.register("cifar10dvs", "sj_distill.data:build_cifar10dvs")
DATASETS.register("fashion-mnist", "sj_distill.data:build_fashion_mnist")

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd", "sj_distill.engine.optim:build_sgd")
OPTIMIZERS.register("adamw", "sj_distill.engine.optim:build_adamw")

SCHEDULERS = Registry("scheduler")
SCHEDULERS.register("cosine", "sj_distill.engine.optim:build_cosine")
SCHEDULERS.register("constant", "sj_distill.engine.optim:build_constant")

DATASETS.register("imagefolder", "sj_distill.data.imagefolder:build_imagefolder")
DATASETS.register("eventfolder", "sj_distill.data.event_folder:build_event_folder")

LOSSES = Registry("loss")
LOSSES.register("ce", "sj_distill.engine.objectives:CrossEntropyOnMean")
LOSSES.register("kd", "sj_distill.losses:KDLoss")
LOSSES.register("tser", "sj_distill.losses:TSERLoss")
LOSSES.register("brd", "sj_distill.losses:BRDLoss")


def register_dataset(name: str, builder: Callable) -> None:
    """Make ``data.name: NAME`` build your dataset.

    ``builder(root, img_size, T, **options) -> (train_set, test_set)`` gets ``data.root`` (or
    ``--data-dir``), ``data.img_size``, ``data.T`` and the keys of ``data.options`` (checked
    against its signature before a run starts). Both sets are torch ``Dataset`` objects of
    ``(x, label)`` items with attributes ``num_classes`` and ``in_chans``; ``x`` is a static
    image ``[C,H,W]`` (repeated over T by the engine) or, when the set has ``time_major =
    True``, event frames ``[T,C,H,W]``."""
    DATASETS.register(name, builder)


def register_student(name: str, builder: Callable) -> None:
    """Make ``student.model: NAME`` build your spiking model.

    ``builder(num_classes, in_chans, **params) -> nn.Module`` gets the keys of
    ``student.neuron`` and ``student.options`` as ``params``. The model is multi-step:
    ``[T,B,C,H,W]`` in, ``[T,B,num_classes]`` out, built from SpikingJelly layers and neurons
    (e.g. :func:`sj_distill.sj.neuron_factory`). For BRD it also needs a timm-style
    ``feature_info`` list naming its stages (see :mod:`sj_distill.hybrid`)."""
    from .models import register_model

    def build(num_classes: int = 10, **params):
        return builder(num_classes=num_classes, **params)

    build.__name__ = build.__qualname__ = name
    build.__doc__ = builder.__doc__
    register_model(build)
