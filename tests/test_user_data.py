"""Your own data and model without editing the package (issue 14, item 5): the generic
``imagefolder`` and ``eventfolder`` datasets, and the Python API (register a dataset and a
student, run a recipe)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sj_distill import cli, models, registry
from sj_distill.api import run_recipe
from sj_distill.config import RecipeError
from sj_distill.data.event_folder import build_event_folder
from sj_distill.data.imagefolder import build_imagefolder

def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def _image_folder(root: Path) -> None:
    """Two classes; 'red' images are solid red 20x40 (H x W), 'split' images are 16x32 with a
    black left and a white right half."""
    for split in ("train", "test"):
        for i in range(3):
            red = np.zeros((20, 40, 3))
            red[..., 0] = 255
            _png(root / split / "red" / f"{i}.png", red)
            half = np.zeros((16, 32, 3))
            half[:, 16:] = 255
            _png(root / split / "split" / f"{i}.png", half)


def test_imagefolder_resizes_crops_and_labels_by_sorted_class(tmp_path):
    _image_folder(tmp_path)
    train, test = build_imagefolder(str(tmp_path), img_size=16, pad=0, flip=False)
    assert (train.num_classes, train.in_chans, train.classes) == (2, 3, ["red", "split"])
    assert len(train) == len(test) == 6
    red, label = test[0]
    assert label == 0 and red.shape == (3, 16, 16)
    assert torch.equal(red[0], torch.ones(16, 16)) and not red[1:].any()
    half, label = test[3]
    assert label == 1
    # shorter side 16 is kept, the 32-wide image is centre-cropped to columns 8..23: the
    # black left half gives columns 0..7, the white right half columns 8..15
    assert not half[:, :, :8].any() and torch.equal(half[:, :, 8:], torch.ones(3, 16, 8))
    assert torch.equal(train[3][0], half)  # no augmentation asked for


def test_imagefolder_normalises_augments_and_reads_grayscale(tmp_path):
    _image_folder(tmp_path)
    train, test = build_imagefolder(str(tmp_path), img_size=16, pad=2, flip=True,
                                    mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    red, _ = test[0]
    assert torch.allclose(red[0], torch.full((16, 16), 2.0))
    assert torch.allclose(red[1:], torch.full((2, 16, 16), -2.0))
    torch.manual_seed(0)
    flipped_or_shifted = [train[3][0] for _ in range(20)]
    assert any(not torch.equal(x, test[3][0]) for x in flipped_or_shifted)
    gray_train, _ = build_imagefolder(str(tmp_path), img_size=16, grayscale=True, pad=0,
                                      flip=False)
    assert gray_train.in_chans == 1 and gray_train[0][0].shape == (1, 16, 16)
    assert torch.allclose(gray_train[0][0], torch.full((1, 16, 16), 0.299), atol=2e-3)  # red luma


def test_single_folder_is_split_deterministically_per_class(tmp_path):
    for name in ("b", "a"):
        for i in range(5):
            _png(tmp_path / name / f"{i}.png", np.full((8, 8, 3), 10 * i))
    train, test = build_imagefolder(str(tmp_path), img_size=8, test_fraction=0.2)
    assert [(p.parent.name, p.name, y) for p, y in test.samples] == [("a", "4.png", 0),
                                                                      ("b", "4.png", 1)]
    assert len(train) == 8 and not set(train.samples) & set(test.samples)


@pytest.mark.parametrize("layout, message", [
    (None, "dataset 'imagefolder' reads a folder: pass --data-dir DIR or set data.root"),
    ("missing", "folder {root}/missing does not exist (expected ROOT/train/CLASS/*.png and "
                "ROOT/test/CLASS/*.png, or ROOT/CLASS/*.png); pass --data-dir DIR"),
    ("train-only", "{root}/train-only has train/ but no test/ or val/"),
    ("empty-class", "{root}/empty-class/train/red holds no .png/"),
])
def test_folder_mistakes_are_one_clear_error(layout, message, tmp_path):
    (tmp_path / "train-only" / "train" / "red").mkdir(parents=True)
    _png(tmp_path / "train-only" / "train" / "red" / "0.png", np.zeros((4, 4, 3)))
    for split in ("train", "test"):
        (tmp_path / "empty-class" / split / "red").mkdir(parents=True)
    root = None if layout is None else str(tmp_path / layout)
    with pytest.raises(FileNotFoundError) as err:
        build_imagefolder(root)
    assert message.format(root=tmp_path) in str(err.value)


def _event_folder(root: Path, T: int = 4, size: int = 6) -> None:
    """Class c, sample i: frames [T, 2, size, size] whose step t holds the value c + i + t."""
    for split, n in (("train", 2), ("test", 1)):
        for c, name in enumerate(("left", "right")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                frames = np.stack([np.full((2, size, size), c + i + t, np.int16)
                                   for t in range(T)])
                if i == 0:
                    np.savez(folder / f"{i}.npz", frames=frames)
                elif c == 0:
                    np.save(folder / f"{i}.npy", frames)
                else:
                    torch.save(torch.from_numpy(frames), folder / f"{i}.pt")


def test_eventfolder_reads_npz_npy_pt_and_rebins_by_summing(tmp_path):
    _event_folder(tmp_path, T=4, size=6)
    train, test = build_event_folder(str(tmp_path), img_size=6, T=2, flip=False, roll=0)
    assert (train.num_classes, train.in_chans, train.time_major) == (2, 2, True)
    assert [(p.suffix, y) for p, y in train.samples] == [(".npz", 0), (".npy", 0), (".npz", 1),
                                                        (".pt", 1)]
    for (frames, label), (path, _) in zip(train, train.samples):
        offset = label + int(path.stem)
        assert frames.dtype == torch.float32 and frames.shape == (2, 2, 6, 6)
        # steps (0, 1) -> bin 0 and (2, 3) -> bin 1: 2 * offset + 1 and 2 * offset + 5
        assert torch.equal(frames[0], torch.full((2, 6, 6), 2.0 * offset + 1))
        assert torch.equal(frames[1], torch.full((2, 6, 6), 2.0 * offset + 5))
    resized, _ = build_event_folder(str(tmp_path), img_size=3, T=4)
    assert resized[0][0].shape == (4, 2, 3, 3)
    assert torch.allclose(resized[0][0][3], torch.full((2, 3, 3), 3.0))  # constant stays
    with pytest.raises(ValueError, match="has 4 frames, not data.T=3 nor a multiple of it"):
        build_event_folder(str(tmp_path), img_size=6, T=3)


def test_eventfolder_training_roll_and_flip_are_rolls_and_flips(tmp_path):
    root = tmp_path / "ramp"
    for split in ("train", "test"):
        (root / split / "only").mkdir(parents=True)
        ramp = np.arange(2 * 1 * 6 * 6, dtype=np.float32).reshape(2, 1, 6, 6)
        np.save(root / split / "only" / "0.npy", ramp)
    train, test = build_event_folder(str(root), img_size=6, T=2, flip=True, roll=2)
    base = test[0][0]
    candidates = [torch.roll(b, shifts=(dy, dx), dims=(2, 3))
                  for b in (base, base.flip(-1)) for dy in range(-2, 3) for dx in range(-2, 3)]
    torch.manual_seed(0)
    seen = [train[0][0] for _ in range(12)]
    assert all(any(torch.equal(x, c) for c in candidates) for x in seen)
    assert any(not torch.equal(x, base) for x in seen)


def test_eventfolder_recipe_runs_from_yaml(tmp_path, capsys):
    _event_folder(tmp_path / "frames", T=2, size=8)
    recipe = tmp_path / "events.yaml"
    recipe.write_text(
        "name: my-events\n"
        f"data: {{name: eventfolder, root: {tmp_path / 'frames'}, img_size: 8, T: 2,\n"
        "       batch_size: 2, options: {roll: 1}}\n"
        "student: {model: cifar_resnet20, neuron: {decay: 0.5}, options: {width: 4}}\n"
        "train: {method: rate, epochs: 1, max_batches: 1}\n")
    assert cli.main(["recipe", str(recipe), "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["recipe"] == "my-events" and summary["epochs"] == 1
    assert 0.0 <= summary["top1"] <= 100.0


class RandomImages(torch.utils.data.TensorDataset):
    num_classes, in_chans = 3, 2


class TinySNN(nn.Module):
    """``[T,B,2,H,W] -> [T,B,K]``: conv, BN, LIF, pool, linear (multi-step SJ layers)."""

    def __init__(self, num_classes: int, in_chans: int, width: int, **neuron):
        super().__init__()
        from spikingjelly.activation_based import layer

        from sj_distill import sj

        self.body = nn.Sequential(
            layer.Conv2d(in_chans, width, 3, padding=1, step_mode="m"),
            layer.BatchNorm2d(width, step_mode="m"), sj.make_neuron(step_mode="m", **neuron),
            layer.AdaptiveAvgPool2d(1, step_mode="m"), layer.Flatten(step_mode="m"),
            layer.Linear(width, num_classes, step_mode="m"))

    def forward(self, x):
        return self.body(x)


def test_registered_dataset_and_student_run_from_python(tmp_path):
    calls = []

    def build_randoms(root=None, img_size=8, T=2, n=12):
        calls.append(("data", root, img_size, T, n))
        g = torch.Generator().manual_seed(0)

        def split():
            return RandomImages(torch.rand(n, 2, img_size, img_size, generator=g),
                                torch.randint(0, 3, (n,), generator=g))

        return split(), split()

    def build_tiny(num_classes, in_chans, width=4, **neuron):
        calls.append(("student", num_classes, in_chans, width, neuron))
        return TinySNN(num_classes, in_chans, width, **neuron)

    registry.register_dataset("test-randoms", build_randoms)
    registry.register_student("test_tiny_snn", build_tiny)
    recipe = {"name": "mine",
              "data": {"name": "test-randoms", "img_size": 8, "T": 2, "batch_size": 4,
                       "options": {"n": 8}},
              "student": {"model": "test_tiny_snn", "neuron": {"decay": 0.5},
                          "options": {"width": 3}},
              "train": {"method": "rate", "epochs": 1}}
    summary = run_recipe(recipe, tmp_path / "run", overrides={"train.epochs": 2})
    assert summary["epochs"] == 2 and summary["recipe"] == "mine"
    assert ("data", None, 8, 2, 8) in calls
    # the dry-run check builds it with placeholder shapes, the run with the data set's
    assert ("student", 3, 2, 3, {"decay": 0.5}) in calls
    assert "test_tiny_snn" in models.list_models()

    with pytest.raises(RecipeError, match=r"'data\.options\.m' is not a parameter of dataset "
                                          r"'test-randoms' \(parameters: root, img_size, T, n\)"):
        run_recipe(recipe, tmp_path / "bad", overrides=["data.options.m=1"])


def test_data_check_reads_an_imagefolder(tmp_path, capsys):
    from sj_distill.cli import main

    _image_folder(tmp_path)
    assert main(["data", "check", "imagefolder", "grayscale=true", "img_size=8", "--data-dir",
                 str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"imagefolder read from {tmp_path}",
        "6 train / 6 test samples, 2 classes (red, split); training samples per class 3..3",
        "first sample [1, 8, 8] float32", "ok"]
