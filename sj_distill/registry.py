"""Typed registries that resolve recipe names to builders (datasets, optimisers, schedulers,
losses, students, teachers). Builders are imported lazily, so the CLI stays light."""
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

OPTIMIZERS = Registry("optimizer")
OPTIMIZERS.register("sgd", "sj_distill.engine.optim:build_sgd")
OPTIMIZERS.register("adamw", "sj_distill.engine.optim:build_adamw")

SCHEDULERS = Registry("scheduler")
SCHEDULERS.register("cosine", "sj_distill.engine.optim:build_cosine")
SCHEDULERS.register("constant", "sj_distill.engine.optim:build_constant")

LOSSES = Registry("loss")
LOSSES.register("ce", "sj_distill.engine.objectives:CrossEntropyOnMean")
LOSSES.register("kd", "sj_distill.losses:KDLoss")
LOSSES.register("tser", "sj_distill.losses:TSERLoss")
LOSSES.register("brd", "sj_distill.losses:BRDLoss")
