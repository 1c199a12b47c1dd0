"""Class-per-folder data sets on disk: find the samples of each split, with one clear error
when the folder is not laid out as expected.

Two layouts are accepted under ``root``:

* ``root/train/CLASS/FILE`` and ``root/test/CLASS/FILE`` (``test/`` may be called ``val/``);
* ``root/CLASS/FILE`` only: each class is split deterministically, the last
  ``test_fraction`` of its files (sorted by name) being the test set, the same on every
  machine (CIFAR10-DVS is split this way, 900/100 per class).

Classes are the sorted sub-folder names; their index is the label.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

TEST_DIRS = ("test", "val")

Samples = List[Tuple[Path, int]]


def _files(folder: Path, extensions: Sequence[str]) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)


def _classes(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_samples(root: Optional[str], extensions: Sequence[str], test_fraction: float,
                 dataset: str, layout: str) -> Tuple[List[str], Samples, Samples]:
    """``(classes, train samples, test samples)``, each sample a ``(file, label)`` pair.

    ``dataset`` and ``layout`` (e.g. ``'CLASS/*.png'``) only word the error messages, which
    name the folder, what was expected there and how to point to another folder."""
    where = "pass --data-dir DIR or set data.root"
    expected = f"ROOT/train/{layout} and ROOT/test/{layout}, or ROOT/{layout}"
    if root is None:
        raise FileNotFoundError(f"dataset {dataset!r} reads a folder: {where} (expected "
                                f"{expected})")
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise FileNotFoundError(f"dataset {dataset!r}: folder {root_path} does not exist "
                                f"(expected {expected}); {where}")
    test_dir = next((root_path / d for d in TEST_DIRS if (root_path / d).is_dir()), None)
    if (root_path / "train").is_dir() and test_dir is not None:
        classes = _classes(root_path / "train")
        train = _labelled(root_path / "train", classes, extensions, dataset, layout)
        if _classes(test_dir) != classes:
            raise FileNotFoundError(f"dataset {dataset!r}: {test_dir} has classes "
                                    f"{_classes(test_dir)}, {root_path / 'train'} has {classes}; "
                                    "both splits need the same class folders")
        return classes, train, _labelled(test_dir, classes, extensions, dataset, layout)
    if (root_path / "train").is_dir():
        raise FileNotFoundError(f"dataset {dataset!r}: {root_path} has train/ but no "
                                f"{' or '.join(d + '/' for d in TEST_DIRS)} (expected {expected})")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"dataset {dataset!r}: test_fraction must be in (0, 1), got "
                         f"{test_fraction}")
    classes = _classes(root_path)
    samples = _labelled(root_path, classes, extensions, dataset, layout)
    train, test = [], []
    for label, name in enumerate(classes):
        files = [s for s in samples if s[1] == label]
        n_test = max(1, round(len(files) * test_fraction))
        if n_test >= len(files):
            raise FileNotFoundError(f"dataset {dataset!r}: class {name!r} has {len(files)} "
                                    "file(s), too few to split off a test set")
        train += files[:-n_test]
        test += files[-n_test:]
    return classes, train, test


def _labelled(folder: Path, classes: List[str], extensions: Sequence[str], dataset: str,
              layout: str) -> Samples:
    if not classes:
        raise FileNotFoundError(f"dataset {dataset!r}: {folder} has no class folders "
                                f"(expected {folder}/{layout})")
    samples = []
    for label, name in enumerate(classes):
        files = _files(folder / name, extensions)
        if not files:
            raise FileNotFoundError(f"dataset {dataset!r}: {folder / name} holds no "
                                    f"{'/'.join(extensions)} file")
        samples += [(f, label) for f in files]
    return samples
