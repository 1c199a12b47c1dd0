"""Name -> builder registry for student backbones (timm-style)."""
from __future__ import annotations

import fnmatch
from typing import Callable, Dict, List

from torch import nn

from .. import sj

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> List[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a registered backbone.

    ``kwargs`` are the builder's own options (e.g. ``in_chans``) plus neuron parameters passed
    to :func:`sj_distill.sj.make_neuron` (``tau``/``decay``, ``decay_input``, ``v_threshold``,
    ``reset``, ``detach_reset``, ``surrogate_fn``, ``alpha``, ``backend``, ``kind``)."""
    if name not in _MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    model = _MODELS[name](num_classes=num_classes, **kwargs)
    sj.check_step_mode(model, f"student {name!r}")
    return model
