"""``data.name: eventfolder``: pre-framed event data (e.g. DVS recordings you framed yourself),
one file per sample, one folder per class, no code to write.

Layout (see :mod:`sj_distill.data.folder_layout`): ``ROOT/train/CLASS/*.npz`` and
``ROOT/test/CLASS/*.npz`` (or ``val/``), or ``ROOT/CLASS/*.npz`` split deterministically. Each
file holds one sample's frames ``[T', C, H, W]`` (C = 2 polarities for a DVS), any numeric
dtype: ``.npz`` (the array ``frames``, or the file's only array), ``.npy``, or ``.pt`` (a
tensor, or a dict holding ``frames``).

* ``T'`` must equal ``data.T`` or be a multiple of it; then each run of ``T'/T`` consecutive
  frames is summed into one (the counts a framing into ``T`` bins would give).
* Frames are resized to ``img_size x img_size`` when their size differs (bilinear with
  anti-aliasing, as torchvision's ``Resize`` on tensors, which the rate-BP code uses to bring
  CIFAR10-DVS to 48x48).
* Training augmentation: a horizontal flip with probability 1/2 (``flip``) and a random roll of
  up to ``roll`` pixels in x and y (the rate-BP code's CIFAR10-DVS augmentation is a flip and a
  roll of up to 5 px); both draw from torch's RNG, so ``--resume`` replays them exactly.

Items are ``(frames [T, C, H, W] float32, label)`` with ``time_major = True``: the engine feeds
``[T, B, C, H, W]`` to the student and the time-mean frame to an ANN teacher.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .folder_layout import find_samples

EXTENSIONS = (".npz", ".npy", ".pt")


def load_frames(path: Path) -> torch.Tensor:
    """The ``[T', C, H, W]`` frames stored in ``path``, as float32."""
    if path.suffix == ".pt":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        frames = obj["frames"] if isinstance(obj, dict) and "frames" in obj else obj
    elif path.suffix == ".npy":
        frames = np.load(path, allow_pickle=False)
    else:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if "frames" not in names and len(names) != 1:
                raise ValueError(f"eventfolder: {path} holds arrays {names}; name the frames "
                                 "array 'frames' (or store only one array)")
            frames = archive["frames" if "frames" in names else names[0]]
    frames = torch.as_tensor(frames).float()
    if frames.dim() != 4:
        raise ValueError(f"eventfolder: {path} holds shape {tuple(frames.shape)}; each sample "
                         "must be frames [T, C, H, W]")
    return frames


def rebin(frames: torch.Tensor, T: int, path: Path) -> torch.Tensor:
    """``[T', C, H, W] -> [T, C, H, W]`` by summing runs of ``T'/T`` consecutive frames."""
    steps = frames.shape[0]
    if steps % T:
        raise ValueError(f"eventfolder: {path} has {steps} frames, not data.T={T} nor a "
                         "multiple of it; frame the events into T bins (or a multiple of T)")
    return frames.reshape(T, steps // T, *frames.shape[1:]).sum(1)


class EventFolderDataset(Dataset):
    """Frames of ``samples`` (``(file, label)`` pairs) as ``(frames [T,C,H,W], label)``."""

    time_major = True

    def __init__(self, samples: List[Tuple[Path, int]], classes: List[str], img_size: int,
                 T: int, train: bool, flip: bool, roll: int):
        self.samples, self.classes, self.num_classes = samples, classes, len(classes)
        self.img_size, self.T = img_size, T
        self.flip, self.roll = train and flip, roll if train else 0
        self.in_chans = self._load(0).shape[1]

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> torch.Tensor:
        path = self.samples[index][0]
        frames = rebin(load_frames(path), self.T, path)
        if frames.shape[-2:] != (self.img_size, self.img_size):
            frames = F.interpolate(frames, size=(self.img_size, self.img_size),
                                   mode="bilinear", align_corners=False, antialias=True)
        return frames

    def __getitem__(self, index: int):
        frames = self._load(index)
        if self.flip and torch.rand(()) < 0.5:
            frames = frames.flip(-1)
        if self.roll:
            dy, dx = torch.randint(-self.roll, self.roll + 1, (2,)).tolist()
            frames = torch.roll(frames, shifts=(dy, dx), dims=(2, 3))
        return frames, self.samples[index][1]


def build_event_folder(root: Optional[str] = None, img_size: int = 48, T: int = 10,
                       test_fraction: float = 0.1, flip: bool = True, roll: int = 5):
    """``(train_set, test_set)`` of the frame folder ``root`` (``data.root`` / ``--data-dir``).

    Args:
        test_fraction: share of each class held out for testing when ``root`` has no
            ``train/`` + ``test/`` folders (0.1: CIFAR10-DVS's 900/100 split).
        flip: random horizontal flips of training samples.
        roll: largest random roll of training samples, in pixels (0: none).
    """
    if roll < 0:
        raise ValueError(f"eventfolder: roll must be >= 0 pixels, got {roll}")
    classes, train, test = find_samples(root, EXTENSIONS, test_fraction, "eventfolder",
                                        "CLASS/*.npz")
    common = dict(classes=classes, img_size=img_size, T=T, flip=flip, roll=roll)
    return (EventFolderDataset(train, train=True, **common),
            EventFolderDataset(test, train=False, **common))
