"""sklearn's bundled handwritten digits (1797 8x8 images, 10 classes): the embedded default data.

The images ship inside scikit-learn, so nothing is downloaded. The split is deterministic
(stratified, 20% test, ``random_state=0``), images are scaled to [0, 1] and upsampled
bilinearly to ``img_size``.
"""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load_digits_split(train: bool, img_size: int = 32) -> Tuple[torch.Tensor, torch.Tensor]:
    """Images ``[N, 1, img_size, img_size]`` in [0, 1] (float32) and labels ``[N]`` (int64)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED,
        stratify=labels.numpy())
    idx = torch.as_tensor(idx_train if train else idx_test)
    images, labels = images[idx], labels[idx]
    if img_size != 8:
        images = F.interpolate(images, size=(img_size, img_size), mode="bilinear",
                               align_corners=False).clamp_(0.0, 1.0)
    return images, labels


class RandomShift:
    """Shift a ``[C,H,W]`` image by up to ``max_shift`` pixels (zero fill), drawn from torch's RNG;
    the pad-and-random-crop augmentation of CIFAR recipes."""

    def __init__(self, max_shift: int):
        self.max_shift = max_shift

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.max_shift == 0:
            return image
        s = self.max_shift
        padded = F.pad(image, (s, s, s, s))
        dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
        return padded[:, dy:dy + image.shape[1], dx:dx + image.shape[2]]


class DigitsDataset(Dataset):
    """Static digits images: items are ``(image [1,H,W] float32, label int)``.

    Args:
        train: training (80%) or test (20%) split.
        img_size: output height/width (bilinear upsampling of the 8x8 originals).
        max_shift: random shift augmentation in pixels (training split only).
    """

    num_classes = 10
    in_chans = 1

    def __init__(self, train: bool = True, img_size: int = 32, max_shift: int = 0):
        self.images, self.labels = load_digits_split(train, img_size)
        self.transform = RandomShift(max_shift) if train and max_shift else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])
