"""Recipes: YAML data validated against a typed schema, with ``key=value`` overrides.

A recipe is loaded with ``yaml.safe_load`` (it can never import or run code), merged over the
schema's defaults, and checked: an unknown key or a wrong type is one ``RecipeError`` naming
the key and the file. Free-form sections (``student.neuron``, ``train.loss`` parameters, ...)
are checked later by the registry that consumes them, against the builder's signature.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple, Union

import yaml



def _recipe_dir() -> Path:
    """The shipped recipes: ``sj_distill/recipes/`` in an installed wheel (packaging maps the
    top-level ``recipes/`` there), else the top-level ``recipes/`` beside the package (a source
    checkout, or an editable install of one)."""
    packaged = Path(__file__).resolve().parent / "recipes"
    if any(packaged.glob("*.yaml")):
        return packaged
    return Path(__file__).resolve().parent.parent / "recipes"


RECIPE_DIR = _recipe_dir()

REQUIRED = object()
NUMBER = (int, float)
OPT_STR = (str, type(None))
OPT_NUM = (int, float, type(None))
OPT_INT = (int, type(None))
OPT_BOOL = (bool, type(None))

SCHEMA: Dict[str, Any] = {
    "name": (str, REQUIRED),
    "paper": (str, ""),
    "description": (str, ""),
    "sources": (dict, {}),
    "expected": {
        "top1": (OPT_NUM, None),
        "source": (str, ""),
    },
    "seed": (int, 0),
    "deterministic": (bool, False),
    "data": {
        "name": (str, REQUIRED),
        "root": (OPT_STR, None),
        "download": (bool, False),
        "img_size": (int, 32),
        "T": (int, 4),
        "batch_size": (int, 64),
        "eval_batch_size": (int, 256),
        "workers": (int, 0),
        "prefetch_factor": (int, 2),
        "pin_memory": (OPT_BOOL, None),
        "options": (dict, {}),
    },
    "teacher": {
        "model": (OPT_STR, None),
        "checkpoint": (OPT_STR, None),
        "cifar_stem": (bool, True),
        "options": (dict, {}),
        "train": {
            "epochs": (int, 0),
            "lr": (NUMBER, 0.05),
            "momentum": (NUMBER, 0.9),
            "weight_decay": (NUMBER, 5e-4),
        },
    },
    "student": {
        "model": (str, REQUIRED),
        "neuron": (dict, {}),
        "options": (dict, {}),
        "staa": ((dict, type(None)), None),
    },
    "train": {
        "method": (str, "bptt"),
        "epochs": (int, 10),
        "max_batches": (OPT_INT, None),
        "scale_grad_by_T": (bool, True),
        "amp": (str, "none"),
        "sync_bn": (bool, False),
        "optimizer": {
            "name": (str, "sgd"),
            "lr": (NUMBER, 0.1),
            "momentum": (NUMBER, 0.9),
            "weight_decay": (NUMBER, 5e-4),
            "nesterov": (bool, False),
        },
        "scheduler": {
            "name": (str, "cosine"),
            "warmup_epochs": (int, 0),
        },
        "loss": {
            "name": (str, "ce"),
            "params": (dict, {}),
        },
        "brd": {
            "points": ((list, type(None)), None),
            "params": (dict, {}),
        },
    },
}

METHODS = ("bptt", "rate")
#: what a value in ``sources`` may cite (optionally followed by ": detail")
SOURCE_KINDS = ("paper", "public code", "our choice", "measured", "not recovered")
AMP_MODES = ("none", "bf16", "fp16")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def _check(spec: Dict, data: Any, path: str, source: str) -> Dict:
    """Merge ``data`` over ``spec``'s defaults, raising RecipeError on unknown keys / bad types."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: '{path or '<top>'}' must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - set(spec))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise RecipeError(f"{source}: unknown key '{where}' (known keys here: "
                          f"{', '.join(sorted(spec))})")
    out = {}
    for key, rule in spec.items():
        where = f"{path}.{key}" if path else key
        if isinstance(rule, dict):
            out[key] = _check(rule, data.get(key, {}) if data.get(key) is not None else {},
                              where, source)
            continue
        types, default = rule
        if key not in data:
            if default is REQUIRED:
                raise RecipeError(f"{source}: missing required key '{where}'")
            out[key] = copy.deepcopy(default)
            continue
        value = data[key]
        allowed = types if isinstance(types, tuple) else (types,)
        if isinstance(value, bool) and bool not in allowed:
            raise RecipeError(f"{source}: '{where}' must be {_type_name(types)}, got bool {value!r}")
        if not isinstance(value, allowed):
            raise RecipeError(f"{source}: '{where}' must be {_type_name(types)}, "
                              f"got {type(value).__name__} {value!r}")
        out[key] = value
    return out


def _check_choices(recipe: Dict, source: str) -> None:
    train = recipe["train"]
    if train["method"] not in METHODS:
        raise RecipeError(f"{source}: 'train.method' must be one of {METHODS}, got {train['method']!r}")
    if train["amp"] not in AMP_MODES:
        raise RecipeError(f"{source}: 'train.amp' must be one of {AMP_MODES}, got {train['amp']!r}")
    if train["epochs"] < 0:
        raise RecipeError(f"{source}: 'train.epochs' must be >= 0, got {train['epochs']}")
    if recipe["data"]["T"] < 1:
        raise RecipeError(f"{source}: 'data.T' must be >= 1, got {recipe['data']['T']}")


def _check_sources(recipe: Dict, source: str) -> None:
    """``sources`` maps dotted recipe keys to where their value comes from: each key must name
    a value of the recipe, each value must start with one of :data:`SOURCE_KINDS`."""
    for key, cited in recipe["sources"].items():
        node = recipe
        for part in str(key).split("."):
            if not isinstance(node, dict) or part not in node:
                raise RecipeError(f"{source}: 'sources.{key}' names no value of this recipe")
            node = node[part]
        if not isinstance(cited, str) or not cited.startswith(SOURCE_KINDS):
            raise RecipeError(f"{source}: 'sources.{key}' must start with one of "
                              f"{', '.join(SOURCE_KINDS)}, got {cited!r}")


def validate(data: Any, source: str = "<recipe>") -> Dict:
    """A complete, checked recipe (defaults filled in) from parsed YAML ``data``."""
    recipe = _check(SCHEMA, data, "", source)
    _check_choices(recipe, source)
    _check_sources(recipe, source)
    return recipe


def known_recipes() -> List[str]:
    """Names of the recipes shipped with the package."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    """The YAML file of a shipped recipe name, or an existing ``.yaml`` path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        return path
    shipped = RECIPE_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise RecipeError(f"unknown recipe {name_or_path!r}; known recipes: "
                          f"{', '.join(known_recipes())} (or pass a path to a .yaml file)")
    return shipped


def parse_override(text: str) -> Tuple[List[str], Any]:
    """``'train.optimizer.lr=0.05'`` -> (['train', 'optimizer', 'lr'], 0.05); the value is
    parsed as YAML (numbers, booleans, null, lists)."""
    if "=" not in text:
        raise RecipeError(f"override {text!r} must look like key.path=value")
    key, value = text.split("=", 1)
    if not key:
        raise RecipeError(f"override {text!r} has an empty key")
    return key.split("."), yaml.safe_load(value) if value else ""


def _override_items(overrides: Union[Sequence[str], Mapping[str, Any]]):
    """``(text, keys, value)`` per override: ``'a.b=1'`` strings (value parsed as YAML) or a
    mapping ``{'a.b': 1}`` (value used as is)."""
    if isinstance(overrides, Mapping):
        for key, value in overrides.items():
            if not key:
                raise RecipeError(f"override {key!r}={value!r} has an empty key")
            yield f"{key}={value!r}", key.split("."), value
        return
    if isinstance(overrides, str):
        raise RecipeError(f"overrides must be a list of key=value strings, got the string "
                          f"{overrides!r}")
    for text in overrides:
        yield (text, *parse_override(text))


def apply_overrides(data: Dict, overrides: Union[Sequence[str], Mapping[str, Any]]) -> Dict:
    """Set dotted keys of a raw (unvalidated) recipe mapping; returns a new mapping.
    ``overrides``: ``['train.epochs=3', ...]`` or ``{'train.epochs': 3, ...}``."""
    data = copy.deepcopy(data)
    for text, keys, value in _override_items(overrides):
        node = data
        for key in keys[:-1]:
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise RecipeError(f"override {text!r}: '{key}' is not a mapping")
        node[keys[-1]] = value
    return data


def load_recipe(name_or_path: str,
                overrides: Union[None, Sequence[str], Mapping[str, Any]] = None) -> Dict:
    """Load, override and validate a recipe by shipped name or YAML path."""
    path = recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML ({err.__class__.__name__}: "
                          f"{str(err).splitlines()[0]})") from None
    data = apply_overrides(data or {}, overrides or [])
    source = str(path) + (" (with overrides)" if overrides else "")
    return validate(data, source)
