"""CIFAR-10 / CIFAR-100 through torchvision, from a local folder in torchvision's layout.

``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` or
``root/cifar-100-python/{train, test, meta}``. Nothing is downloaded unless
``data.download: true``. Before torchvision reads the files, every expected file is checked
(missing: one error naming them; wrong MD5, i.e. partial or corrupt: one error naming the
file); ``verify=False`` skips the MD5 and count checks (for stand-ins that are not the real
files). Training augmentation as in the public rate-BP code: RandomCrop(32, padding 4),
horizontal flip, AutoAugment, ToTensor, Cutout (one 16x16 hole), normalisation with the
dataset's mean and std (the values the public code uses). ``augment`` picks the AutoAugment
policy: ``public_code`` (the public code's own CIFAR-10 table, see
:mod:`sj_distill.data.cifar_policy`), ``torchvision`` (``AutoAugment(CIFAR10)``) or ``none``.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import torch

from .errors import DatasetError, require_root, where_to_put
from .sources import CIFAR_DOWNLOAD as DOWNLOAD
from .sources import CIFAR_TITLE as TITLE

STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
COUNTS = {"cifar10": (50000, 10000), "cifar100": (50000, 10000)}


class Cutout:
    """Zero one ``length x length`` square (clipped at the border) centred at a uniformly drawn
    pixel of a ``[C, H, W]`` tensor (DeVries & Taylor 2017); torch's RNG."""

    def __init__(self, length: int = 16):
        self.length = length

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        height, width = image.shape[-2:]
        cy = int(torch.randint(0, height, ()))
        cx = int(torch.randint(0, width, ()))
        half = self.length // 2
        out = image.clone()
        rows = slice(max(0, cy - half), min(height, cy + half))
        cols = slice(max(0, cx - half), min(width, cx + half))
        out[..., rows, cols] = 0
        return out


def _torchvision_class(name: str, verify: bool):
    from torchvision import datasets

    base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    if verify:
        return base
    # torchvision's check_integrity(path, md5=None) only checks that the file exists
    return type(base.__name__, (base,), {
        "train_list": [[f, None] for f, _ in base.train_list],
        "test_list": [[f, None] for f, _ in base.test_list],
        "meta": {**base.meta, "md5": None}})


def check_files(name: str, root, verify: bool = True) -> List[str]:
    """The folder's files, checked; a :class:`DatasetError` naming what is missing or corrupt."""
    from torchvision.datasets.utils import check_integrity

    base = _torchvision_class(name, True)
    expected = f"torchvision's {base.base_folder}/ folder"
    root = require_root(root, TITLE[name], expected, DOWNLOAD[name])
    folder = root / base.base_folder
    files = [f for f, _ in base.train_list + base.test_list] + [base.meta["filename"]]
    if not folder.is_dir():
        raise DatasetError(f"{TITLE[name]} not found: {folder} does not exist (expected "
                           f"{', '.join(files)} in it); {where_to_put(root, DOWNLOAD[name])}")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DatasetError(f"{TITLE[name]}: {folder} lacks {', '.join(missing)} (a partial "
                           f"download or extraction); {where_to_put(root, DOWNLOAD[name])}")
    if verify:
        sums = base.train_list + base.test_list + [[base.meta["filename"], base.meta["md5"]]]
        for filename, md5 in sums:
            if not check_integrity(str(folder / filename), md5):
                raise DatasetError(f"{TITLE[name]}: {folder / filename} has the wrong MD5 (a "
                                   f"partial or corrupt download): delete {folder} and extract "
                                   f"{DOWNLOAD[name].split(' ')[0]} again")
    return files


AUGMENT_POLICIES = ("public_code", "torchvision", "none")


def check_augment(augment: str) -> None:
    if augment not in AUGMENT_POLICIES:
        raise ValueError(f"augment must be one of {', '.join(AUGMENT_POLICIES)} (the AutoAugment "
                         f"policy: the rate-BP public code's CIFAR table, torchvision's, or "
                         f"none), got {augment!r}")


def train_transform(name: str, augment: str = "public_code", cutout: int = 16):
    from torchvision import transforms

    from .cifar_policy import PublicCIFAR10Policy

    check_augment(augment)
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    if augment == "public_code":
        steps.append(PublicCIFAR10Policy())
    elif augment == "torchvision":
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10))
    steps.append(transforms.ToTensor())
    if cutout:
        steps.append(Cutout(cutout))
    steps.append(transforms.Normalize(*STATS[name]))
    return transforms.Compose(steps)


def test_transform(name: str):
    from torchvision import transforms

    return transforms.Compose([transforms.ToTensor(), transforms.Normalize(*STATS[name])])


def build(name: str, root, download: bool = False, verify: bool = True,
          augment: str = "public_code", cutout: int = 16) -> Tuple:
    """``(train_set, test_set)``: torchvision datasets of ``[3, 32, 32]`` normalised images."""
    check_augment(augment)
    if download:
        root = Path(root or ".").expanduser()
        root.mkdir(parents=True, exist_ok=True)
        _torchvision_class(name, True)(str(root), train=True, download=True)
    check_files(name, root, verify)
    cls = _torchvision_class(name, verify)
    try:
        train = cls(str(root), train=True, transform=train_transform(name, augment, cutout))
        test = cls(str(root), train=False, transform=test_transform(name))
    except Exception as err:  # unpickling a truncated or foreign file
        raise DatasetError(f"{TITLE[name]}: the files in {Path(root) / cls.base_folder} cannot be "
                           f"read ({type(err).__name__}: {err}); a partial or corrupt download: "
                           f"extract {DOWNLOAD[name].split(' ')[0]} again") from None
    if verify and (len(train), len(test)) != COUNTS[name]:
        raise DatasetError(f"{TITLE[name]}: {len(train)} train / {len(test)} test images, "
                           f"expected {COUNTS[name][0]} / {COUNTS[name][1]}")
    for dataset in (train, test):
        dataset.num_classes, dataset.in_chans = len(dataset.classes), 3
    return train, test


def check(name: str, root, verify: bool = True, **_ignored) -> List[str]:
    """Lines describing a valid folder (``sj-distill data check``)."""
    train, test = build(name, root, verify=verify)
    return [f"{TITLE[name]} read from {Path(root) / train.base_folder}",
            f"{len(train)} train / {len(test)} test images, {train.num_classes} classes"]
