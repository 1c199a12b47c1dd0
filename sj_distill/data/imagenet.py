"""ImageNet (ILSVRC-2012) as an image folder: ``root/train/<wnid>/*.JPEG`` and
``root/val/<wnid>/*.JPEG`` (the validation images sorted into class folders).

Training: RandomResizedCrop(224) + horizontal flip; testing: Resize(256) + CenterCrop(224); both
normalised with the usual ImageNet mean/std (as the public rate-BP code). ``verify=True`` also
checks the class and image counts of the full data set (1000 classes, 1,281,167 / 50,000).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

from .errors import DatasetError
from .sources import check_imagenet_folders

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
COUNTS = (1000, 1281167, 50000)


def build(root, img_size: int = 224, verify: bool = True) -> Tuple:
    """``(train_set, test_set)``: torchvision ``ImageFolder`` datasets of ``[3, S, S]`` images."""
    from torchvision import datasets, transforms

    root = check_imagenet_folders(root)
    normalize = transforms.Normalize(MEAN, STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(img_size),
                                   transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                   normalize])
    test_tf = transforms.Compose([transforms.Resize(round(img_size * 256 / 224)),
                                  transforms.CenterCrop(img_size), transforms.ToTensor(),
                                  normalize])
    try:
        train = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        test = datasets.ImageFolder(str(root / "val"), transform=test_tf)
    except FileNotFoundError as err:  # a class folder without images
        raise DatasetError(f"ImageNet: {err}; a partial download or extraction") from None
    counts = (len(train.classes), len(train), len(test))
    if verify and counts != COUNTS:
        raise DatasetError(f"ImageNet in {root}: {counts[0]} classes, {counts[1]} train / "
                           f"{counts[2]} val images, expected {COUNTS[0]}, {COUNTS[1]} / "
                           f"{COUNTS[2]} (a partial download; data.options.verify=false skips "
                           "this check)")
    for dataset in (train, test):
        dataset.num_classes, dataset.in_chans = len(train.classes), 3
    return train, test


def check(root, verify: bool = True, **_ignored) -> List[str]:
    """Lines describing a valid folder (``sj-distill data check``); decodes one image per split."""
    train, test = build(root, verify=verify)
    for dataset in (train, test):
        dataset.loader(dataset.samples[0][0])
    return [f"ImageNet read from {Path(root)}",
            f"{train.num_classes} classes, {len(train)} train / {len(test)} val images"]
