"""``data.name: imagefolder``: your own images, one folder per class, no code to write.

Layout (see :mod:`sj_distill.data.folder_layout`): ``ROOT/train/CLASS/*.png`` and
``ROOT/test/CLASS/*.png`` (or ``val/``), or ``ROOT/CLASS/*.png`` split deterministically.
PNG, JPEG, BMP, GIF, TIFF and WebP files are read with Pillow. Each image is resized so its
shorter side is ``img_size``, centre-cropped to ``img_size x img_size``, scaled to [0, 1] and,
when ``mean`` and ``std`` are given, normalised per channel. Training images are shifted at
random by up to ``pad`` pixels (zero fill: pad-and-random-crop) and flipped horizontally with
probability 1/2 when ``flip``; augmentations draw from torch's RNG, so ``--resume`` replays
them exactly. Items are ``(image [C,H,W] float32, label)``; the engine repeats the image over
``T`` steps (direct encoding).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .digits import RandomShift
from .folder_layout import find_samples

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_image(path: Path, img_size: int, grayscale: bool) -> torch.Tensor:
    """``[C, img_size, img_size]`` float32 in [0, 1] (C = 1 when ``grayscale``, else 3)."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("L" if grayscale else "RGB")
        width, height = image.size
        scale = img_size / min(width, height)
        size = (max(img_size, round(width * scale)), max(img_size, round(height * scale)))
        image = image.resize(size, Image.BILINEAR)
        left, top = (size[0] - img_size) // 2, (size[1] - img_size) // 2
        image = image.crop((left, top, left + img_size, top + img_size))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(pixels.copy())
    return tensor.unsqueeze(0) if grayscale else tensor.permute(2, 0, 1).contiguous()


class ImageFolderDataset(Dataset):
    """Images of ``samples`` (``(file, label)`` pairs) as ``(image [C,H,W], label)`` items."""

    time_major = False

    def __init__(self, samples: List[Tuple[Path, int]], classes: List[str], img_size: int,
                 grayscale: bool, train: bool, pad: int, flip: bool,
                 mean: Optional[Sequence[float]], std: Optional[Sequence[float]]):
        self.samples, self.classes = samples, classes
        self.num_classes, self.in_chans = len(classes), 1 if grayscale else 3
        self.img_size, self.grayscale = img_size, grayscale
        self.shift = RandomShift(pad) if train and pad else None
        self.flip = train and flip
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        image = load_image(path, self.img_size, self.grayscale)
        if self.shift is not None:
            image = self.shift(image)
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        if self.mean is not None:
            image = (image - self.mean) / self.std
        return image, label


def build_imagefolder(root: Optional[str] = None, img_size: int = 32, T: int = 4,
                      grayscale: bool = False, test_fraction: float = 0.2, pad: int = 4,
                      flip: bool = True, mean: Optional[Sequence[float]] = None,
                      std: Optional[Sequence[float]] = None):
    """``(train_set, test_set)`` of the image folder ``root`` (``data.root`` / ``--data-dir``).

    Args:
        grayscale: read images as one channel (``in_chans`` 1) instead of RGB (3).
        test_fraction: share of each class held out for testing when ``root`` has no
            ``train/`` + ``test/`` folders.
        pad: random shift of training images, in pixels (0: none).
        flip: random horizontal flips of training images.
        mean, std: per-channel normalisation (both or neither; one value per channel).
    """
    channels = 1 if grayscale else 3
    if (mean is None) != (std is None):
        raise ValueError("imagefolder: give both data.options.mean and data.options.std, or "
                         "neither")
    if mean is not None and not (len(mean) == len(std) == channels):
        raise ValueError(f"imagefolder: mean and std need {channels} value(s) each (one per "
                         f"channel), got {list(mean)} and {list(std)}")
    classes, train, test = find_samples(root, EXTENSIONS, test_fraction, "imagefolder",
                                        "CLASS/*.png")
    common = dict(classes=classes, img_size=img_size, grayscale=grayscale, pad=pad, flip=flip,
                  mean=mean, std=std)
    return (ImageFolderDataset(train, train=True, **common),
            ImageFolderDataset(test, train=False, **common))
