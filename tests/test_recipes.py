"""Shipped recipes: all valid, their builders resolvable, and mirrored in the top-level recipes/."""
from pathlib import Path

import pytest

from sj_distill import config, models
from sj_distill.registry import DATASETS, LOSSES, OPTIMIZERS, SCHEDULERS

ROOT = Path(__file__).resolve().parents[1]


def test_top_level_recipes_mirror_the_package_recipes():
    shipped = {p.name: p.read_text() for p in config.RECIPE_DIR.glob("*.yaml")}
    mirrored = {p.name: p.read_text() for p in (ROOT / "recipes").glob("*.yaml")}
    assert shipped and shipped == mirrored


@pytest.mark.parametrize("name", config.known_recipes())
def test_shipped_recipe_is_valid_and_resolvable(name):
    recipe = config.load_recipe(name)
    assert recipe["name"] == name
    assert recipe["student"]["model"] in models.list_models()
    DATASETS.get(recipe["data"]["name"])
    LOSSES.check_params(recipe["train"]["loss"]["name"], recipe["train"]["loss"]["params"],
                        "train.loss.params")
    OPTIMIZERS.get(recipe["train"]["optimizer"]["name"])
    SCHEDULERS.get(recipe["train"]["scheduler"]["name"])
