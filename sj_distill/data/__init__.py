"""Datasets, resolved by name through :data:`sj_distill.registry.DATASETS`.

Every builder returns ``(train_set, test_set)``; items are ``(x, label)`` where ``x`` is a
static image ``[C,H,W]`` (the engine repeats it over T: direct encoding) or, for datasets
with ``time_major = True``, event frames ``[T,C,H,W]``.
"""
from __future__ import annotations

from typing import Optional


def build_digits(root: Optional[str] = None, img_size: int = 32, T: int = 4, max_shift: int = 2):
    """sklearn digits (embedded, ``root`` unused), upsampled to ``img_size``; train-time random
    shifts of up to ``max_shift`` pixels."""
    from .digits import DigitsDataset

    return (DigitsDataset(True, img_size, max_shift=max_shift),
            DigitsDataset(False, img_size))


def build_digits_dvs(root: Optional[str] = None, img_size: int = 32, T: int = 8,
                     n_steps: int = 60, amplitude: float = 2.0, contrast: float = 0.25):
    """Digits seen by a simulated moving event camera, framed into ``T`` bins."""
    from .digits_dvs import DigitsDVSDataset

    kwargs = dict(img_size=img_size, T=T, n_steps=n_steps, amplitude=amplitude, contrast=contrast)
    return DigitsDVSDataset(True, **kwargs), DigitsDVSDataset(False, **kwargs)
