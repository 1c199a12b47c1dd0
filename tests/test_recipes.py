"""Shipped recipes (the top-level recipes/): all valid, every benchmark row present
with its paper number and sources, and every recipe's model, teacher, loss and optimiser
buildable without data (on the meta device: layouts at the real class counts, no memory)."""
import json
import re
from pathlib import Path

import pytest
import yaml
import torch

from sj_distill import config, teachers
from sj_distill.cli import main
from sj_distill.engine.build import build_loss, build_student, optimizer_and_scheduler
from sj_distill.registry import DATASETS, LOSSES, OPTIMIZERS, SCHEDULERS

ROOT = Path(__file__).resolve().parents[1]
#: dataset -> (classes, input channels) of the real data
SHAPES = {"cifar10": (10, 3), "cifar100": (100, 3), "imagenet": (1000, 3),
          "cifar10dvs": (10, 2), "digits": (10, 1), "digits-dvs": (10, 2),
          "fashion-mnist": (10, 1)}
#: the issue's benchmark rows: recipe -> the paper's top-1
PAPER_ROWS = {
    "ratebp-cifar10": 96.26, "ratebp-cifar100": 80.71, "ratebp-cifar10dvs": 76.96,
    "ratebp-imagenet": 70.01, "tser-cifar100": 78.30, "tser-cifar10": 95.58,
    "tser-imagenet": 69.24,
    "staa-cifar10": 97.14, "staa-cifar100": 82.05, "staa-imagenet": 70.40,
    "staa-cifar10dvs": 82.10, "staa-cifar100-ablation-baseline": 72.30,
    "staa-cifar100-ablation-gc": 73.22, "staa-cifar100-ablation-pe": 73.79,
    "staa-cifar100-ablation-sa": 74.78, "staa-cifar100-ablation-tsrd": 75.10,
}
CITED = ("student.model", "data.T", "train.optimizer", "train.epochs", "data.batch_size",
         "train.method", "expected.top1")
#: teacher-only recipes (train.epochs 0) cite the teacher's settings instead
CITED_TEACHER = ("teacher.model", "teacher.train", "data.batch_size", "train.epochs",
                 "expected.top1")
BENCHMARK = [n for n in config.known_recipes() if not n.startswith("digits")]
#: the file lists of the rate-BP public code and of its group's sibling code, at the commits read
REPOSITORIES = json.loads((ROOT / "tests" / "public_code_files.json").read_text())
CITATION = re.compile(r"(public code|sibling code):")
CITED_FILE = re.compile(r"[\w-]+(?:/[\w.-]+)+\.py\b")


def test_a_source_checkout_reads_the_top_level_recipes():
    assert config.RECIPE_DIR == ROOT / "recipes"
    assert config.known_recipes() == sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("name", config.known_recipes())
def test_shipped_recipe_builds_model_teacher_loss_and_optimiser(name):
    recipe = config.load_recipe(name)
    assert recipe["name"] == name
    DATASETS.check_params(recipe["data"]["name"], recipe["data"]["options"], "data.options")
    LOSSES.check_params(recipe["train"]["loss"]["name"], recipe["train"]["loss"]["params"],
                        "train.loss.params")
    OPTIMIZERS.get(recipe["train"]["optimizer"]["name"])
    SCHEDULERS.get(recipe["train"]["scheduler"]["name"])
    classes, chans = SHAPES[recipe["data"]["name"]]
    with torch.device("meta"):
        student = build_student(recipe, classes, chans)
        spec = recipe["teacher"]
        if spec["model"]:
            ann = teachers.create_ann(spec["model"], num_classes=classes, in_chans=chans,
                                      cifar=spec["cifar_stem"], **spec["options"])
            assert ann.num_classes == classes
    logits_layer = [m for m in student.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert logits_layer.out_features == classes
    build_loss(recipe)
    optimizer, _ = optimizer_and_scheduler(recipe["train"], list(student.parameters()),
                                            recipe["train"]["epochs"])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == \
        len(list(student.parameters()))


def test_every_benchmark_row_has_its_paper_number():
    found = {name: config.load_recipe(name)["expected"]["top1"] for name in PAPER_ROWS}
    assert found == PAPER_ROWS
    assert {"cifar10dvs", "brd-cifar10", "brd-cifar100", "brd-imagenet"} <= set(BENCHMARK)
    headline = config.load_recipe("cifar10dvs")
    assert (headline["student"]["model"], headline["data"]["T"], headline["train"]["method"],
            headline["train"]["loss"]["name"]) == ("vggsnn", 10, "rate", "brd")
    ablation = [config.load_recipe(f"staa-cifar100-ablation-{t}")["student"]["staa"]
                for t in ("baseline", "gc", "pe", "sa", "tsrd")]
    assert [[a[p] for p in ("gc", "pe", "sa", "tsrd")] for a in ablation] == [
        [False] * 4, [True, False, False, False], [True, True, False, False],
        [True, True, True, False], [True, True, True, True]]


@pytest.mark.parametrize("name", BENCHMARK)
def test_benchmark_recipe_cites_a_source_for_each_value(name):
    recipe = config.load_recipe(name)
    assert recipe["paper"]
    cited = CITED_TEACHER if recipe["train"]["epochs"] == 0 else CITED
    missing = [key for key in cited if key not in recipe["sources"]]
    assert not missing, f"{name} gives no source for {missing}"
    if recipe["expected"]["top1"] is not None:  # the fmnist-* rows are our own measurement
        assert recipe["sources"]["expected.top1"].startswith(
            "measured" if name.startswith("fmnist") else "paper")


def test_sources_must_name_recipe_values_and_a_known_kind():
    base = {"name": "x", "data": {"name": "digits"}, "student": {"model": "cifar_resnet20"}}
    config.validate({**base, "sources": {"data.T": "paper", "student.neuron": "our choice"}})
    with pytest.raises(config.RecipeError, match=r"'sources.data.TT' names no value"):
        config.validate({**base, "sources": {"data.TT": "paper"}})
    with pytest.raises(config.RecipeError, match=r"'sources.data.T' must start with one of paper"):
        config.validate({**base, "sources": {"data.T": "a blog"}})


def test_list_groups_recipes_by_paper(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    headers = [line.strip() for line in out
               if line.startswith("  ") and not line.startswith("    ")]
    assert headers[:4] == ["rate-BP (Yu et al., NeurIPS 2024)", "BRD (Yang, Yu et al., CVPR 2025)",
                           "TSER (Yu et al., CVPR 2025)", "STAA-SNN (Zhang, Yu et al., CVPR 2025)"]
    row = next(line for line in out if line.strip().startswith("staa-cifar100-ablation-pe "))
    assert row.split()[1:3] == ["73.79", "paper"]
    rows = [line for line in out if line.startswith("    ")]
    assert len(rows) == len(config.known_recipes())


def test_imagenet_teacher_recipe_takes_a_torchvision_state_dict(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    recipe = config.load_recipe("teacher-imagenet-resnet34")
    spec = recipe["teacher"]
    reference = torchvision.models.resnet34(num_classes=1000).eval()
    path = tmp_path / "resnet34-torchvision.pth"
    torch.save(reference.state_dict(), path)
    ann = teachers.create_ann(spec["model"], num_classes=1000, in_chans=3,
                              cifar=spec["cifar_stem"], **spec["options"])
    teachers.load_weights(ann, str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ann.eval()(x), reference(x), atol=1e-4)


def cited_files(source: str):
    """``(repository kind, [paths])`` for every ``public code:`` / ``sibling code:`` segment of a
    source (a segment runs to the next such citation)."""
    marks = list(CITATION.finditer(source))
    for mark, following in zip(marks, marks[1:] + [None]):
        segment = source[mark.end():following.start() if following else len(source)]
        yield mark.group(1), CITED_FILE.findall(segment)


def test_cited_files_splits_segments_and_finds_paths():
    found = list(cited_files("public code: util/data.py (x); framing: sibling code: "
                             "experiment/dvs/process.py, model/layer.py; split: our choice"))
    assert found == [("public code", ["util/data.py"]),
                     ("sibling code", ["experiment/dvs/process.py", "model/layer.py"])]
    assert list(cited_files("public code: the model's own init")) == [("public code", [])]


@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_public_code_source_names_a_file_of_that_repository(path):
    """``public code:`` cites github.com/Tab-ct/rate-based-backpropagation and ``sibling
    code:`` github.com/Intelli-Chip-Lab/snn_temporal_decoupling_distillation: each citation
    names at least one file, and every file it names exists there."""
    sources = yaml.safe_load(path.read_text()).get("sources") or {}
    for key, source in sources.items():
        for kind, files in cited_files(source):
            assert files, f"{path.name}: sources.{key} cites the {kind} without a file: {source!r}"
            unknown = [f for f in files if f not in REPOSITORIES[kind]["files"]]
            assert not unknown, f"{path.name}: sources.{key}: {unknown} are not files of " \
                                f"{REPOSITORIES[kind]['repository']}"
