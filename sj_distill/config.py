"""Recipes: YAML data validated against a typed schema, with ``key=value`` overrides.

A recipe is loaded with a ``yaml.SafeLoader`` (it can never import or run code), merged over the
schema's defaults, and checked: an unknown key or a wrong type is one ``RecipeError`` naming
the key and the file. Free-form sections (``student.neuron``, ``train.loss`` parameters, ...)
are checked later by the registry that consumes them, against the builder's signature.
"""
from __future__ import annotations

import copy
import re
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
        "reshuffle": (bool, True),
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
        "max_pool": (str, "rate"),
        "amp": (str, "none"),
        "sync_bn": (bool, False),
        "sync_bn_rate_pass": (str, "global"),
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
#: ``train.max_pool``: the rate pass's max-pool rule (sj_distill.rate.enable's ``max_pool``)
MAX_POOL_RULES = ("rate", "spikes")
#: what a value in ``sources`` may cite (optionally followed by ": detail")
SOURCE_KINDS = ("paper", "public code", "sibling code", "our choice", "measured",
                "not recovered")
AMP_MODES = ("none", "bf16", "fp16")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file and the key."""


class _YAMLLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e6`` / ``5E-4`` as floats (YAML 1.2; YAML 1.1,
    which PyYAML follows, wants a dot, ``1.0e+6``, and reads ``1e6`` as a string)."""


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def parse_yaml(text: str):
    """YAML ``text`` parsed safely (plain data only, never code), numbers as YAML 1.2 reads
    them."""
    return yaml.load(text, Loader=_YAMLLoader)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """``line L, column C: problem`` of a YAML error (1-based, as editors count)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


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
    if train["max_pool"] not in MAX_POOL_RULES:
        raise RecipeError(f"{source}: 'train.max_pool' must be 'rate' (max-pool the rate map, "
                          f"the rate-BP public code's rule) or 'spikes' (the time-mean of the "
                          f"pooled spikes), got {train['max_pool']!r}")
    if train["sync_bn_rate_pass"] not in ("global", "local"):
        raise RecipeError(f"{source}: 'train.sync_bn_rate_pass' must be 'global' (the global "
                          f"batch in both rate-BP passes) or 'local' (each rank's own statistics "
                          f"in the rate pass, as the public rate-BP code), got "
                          f"{train['sync_bn_rate_pass']!r}")
    if train["amp"] not in AMP_MODES:
        raise RecipeError(f"{source}: 'train.amp' must be one of {AMP_MODES}, got {train['amp']!r}")
    if train["epochs"] < 0:
        raise RecipeError(f"{source}: 'train.epochs' must be >= 0, got {train['epochs']}")
    _check_sizes(recipe, source)


#: Largest ``data.T`` and ``data.img_size`` accepted (the papers use T <= 10 and 224 px).
MAX_T = 1024
MAX_IMG_SIZE = 2048


def _check_sizes(recipe: Dict, source: str) -> None:
    """Sizes that must be positive are, and ``T`` / ``img_size`` are within sane limits."""
    data, train = recipe["data"], recipe["train"]
    positive = {"data.T": data["T"], "data.img_size": data["img_size"],
                "data.batch_size": data["batch_size"],
                "data.eval_batch_size": data["eval_batch_size"],
                "train.max_batches": train["max_batches"]}
    for key, value in positive.items():
        if value is not None and value < 1:
            raise RecipeError(f"{source}: '{key}' must be >= 1, got {value}")
    if recipe["teacher"]["train"]["epochs"] < 0:
        raise RecipeError(f"{source}: 'teacher.train.epochs' must be >= 0, got "
                          f"{recipe['teacher']['train']['epochs']}")
    for key, value, limit in (("data.T", data["T"], MAX_T),
                              ("data.img_size", data["img_size"], MAX_IMG_SIZE)):
        if value > limit:
            raise RecipeError(f"{source}: '{key}' is {value}, above the limit of {limit}: "
                              "training memory grows with it (BPTT: with T x img_size^2), "
                              "so this cannot run; use a smaller value")


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
    """The YAML file of a shipped recipe name, or an existing ``.yaml`` path. A name is a
    name: one with a folder in it (``../../x``) is refused, a path must end in ``.yaml``."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        return path
    if len(path.parts) != 1 or name_or_path.startswith("."):
        raise RecipeError(f"{name_or_path!r} is not a recipe name (names have no folders; see "
                          "`sj-distill list`): to run a recipe file, give its path with the "
                          f".yaml ending, e.g. {name_or_path}.yaml")
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
    try:
        parsed = parse_yaml(value) if value else ""
    except yaml.YAMLError as err:
        raise RecipeError(f"override {text!r}: the value is not valid YAML "
                          f"({_yaml_problem(err)}); quote it to pass a string, e.g. "
                          f"{key}='\"{value}\"'") from None
    return key.split("."), parsed


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
        data = parse_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML at {_yaml_problem(err)}") from None
    data = apply_overrides(data or {}, overrides or [])
    source = str(path) + (" (with overrides)" if overrides else "")
    return validate(data, source)
