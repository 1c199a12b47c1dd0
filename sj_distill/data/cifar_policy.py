"""The CIFAR-10 AutoAugment policy as the rate-BP public code applies it (``augment: public_code``).

AutoAugment (Cubuk et al., CVPR 2019) learned 25 sub-policies on CIFAR-10; each is two
operations, each applied with its own probability at a fixed magnitude. The rate-BP public code
(``util/image_augment.py``) applies them with its own operation table, which differs from
torchvision's ``AutoAugment(CIFAR10)`` (``augment: torchvision``):

============  ===============================  ======================================
              public code (this module)        torchvision
============  ===============================  ======================================
fill          grey (128, 128, 128)             black
shear         bicubic, about the top-left      nearest, about the top-left
rotate        counter-clockwise only           either direction
solarize      threshold 256 - 256 i / 9        threshold 255 - 255 i / 9
translate     14.5 px at most (not rounded)    14 px at most (truncated)
============  ===============================  ======================================

Magnitude index ``i`` (0..9) maps linearly: shear ``0.3 i/9``, translate ``(150/331) i/9`` of
the image size (14.5 px at ``i = 9`` on 32 px), rotate ``30 i/9`` degrees, colour / contrast / sharpness /
brightness factor ``1 +- 0.9 i/9``, posterize ``round(8 - 4 i/9)`` bits, solarize threshold
``256 (1 - i/9)`` (pixels ``>=`` it are inverted: 256 inverts none). Shears, translations and
the four enhancements draw their sign (+ or -, 1/2 each) at every call; rotation does not.
Translation and rotation resample with nearest neighbour. Auto-contrast, equalize and invert
take no magnitude. Randomness comes from torch's RNG (so ``--resume`` replays it); the public
code draws from Python's ``random``: same distribution, different streams.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import torch
from PIL import Image, ImageEnhance, ImageOps

GREY = (128, 128, 128)
BINS = 10

#: The 25 CIFAR-10 sub-policies: ``((operation, probability, magnitude index), (...))``.
SUB_POLICIES: List[Tuple[Tuple[str, float, int], Tuple[str, float, int]]] = [
    (("invert", 0.1, 7), ("contrast", 0.2, 6)),
    (("rotate", 0.7, 2), ("translateX", 0.3, 9)),
    (("sharpness", 0.8, 1), ("sharpness", 0.9, 3)),
    (("shearY", 0.5, 8), ("translateY", 0.7, 9)),
    (("autocontrast", 0.5, 8), ("equalize", 0.9, 2)),
    (("shearY", 0.2, 7), ("posterize", 0.3, 7)),
    (("color", 0.4, 3), ("brightness", 0.6, 7)),
    (("sharpness", 0.3, 9), ("brightness", 0.7, 9)),
    (("equalize", 0.6, 5), ("equalize", 0.5, 1)),
    (("contrast", 0.6, 7), ("sharpness", 0.6, 5)),
    (("color", 0.7, 7), ("translateX", 0.5, 8)),
    (("equalize", 0.3, 7), ("autocontrast", 0.4, 8)),
    (("translateY", 0.4, 3), ("sharpness", 0.2, 6)),
    (("brightness", 0.9, 6), ("color", 0.2, 8)),
    (("solarize", 0.5, 2), ("invert", 0.0, 3)),
    (("equalize", 0.2, 0), ("autocontrast", 0.6, 0)),
    (("equalize", 0.2, 8), ("equalize", 0.8, 4)),
    (("color", 0.9, 9), ("equalize", 0.6, 6)),
    (("autocontrast", 0.8, 4), ("solarize", 0.2, 8)),
    (("brightness", 0.1, 3), ("color", 0.7, 0)),
    (("solarize", 0.4, 5), ("autocontrast", 0.9, 3)),
    (("translateY", 0.9, 9), ("translateY", 0.7, 9)),
    (("autocontrast", 0.9, 2), ("solarize", 0.8, 3)),
    (("equalize", 0.8, 8), ("invert", 0.1, 3)),
    (("translateY", 0.7, 9), ("autocontrast", 0.9, 1)),
]

#: Magnitude at index 0 and at index ``BINS - 1`` (linear in between) of each operation.
_RANGES: Dict[str, Tuple[float, float]] = {
    "shearX": (0.0, 0.3), "shearY": (0.0, 0.3),
    "translateX": (0.0, 150 / 331), "translateY": (0.0, 150 / 331),
    "rotate": (0.0, 30.0),
    "color": (0.0, 0.9), "contrast": (0.0, 0.9), "sharpness": (0.0, 0.9), "brightness": (0.0, 0.9),
    "posterize": (8.0, 4.0), "solarize": (256.0, 0.0),
}


def magnitude(operation: str, index: int) -> float:
    """The magnitude of ``operation`` at ``index`` (0..9); 0 for operations without one.
    Posterize: bits, rounded half to even (``round(4.5) == 4`` never occurs: 8 - 4 i/9 is never
    a half)."""
    if operation not in _RANGES:
        return 0.0
    low, high = _RANGES[operation]
    # the public table's evenly spaced values, to the last bit (the bicubic shears see it)
    value = high if index == BINS - 1 else index * ((high - low) / (BINS - 1)) + low
    return float(round(value)) if operation == "posterize" else value


def _sign() -> int:
    return 1 if torch.rand(()).item() < 0.5 else -1


def _affine(img: Image.Image, coefficients, resample) -> Image.Image:
    """PIL affine: output pixel (x, y) samples the input at (a x + b y + c, d x + e y + f)."""
    return img.transform(img.size, Image.AFFINE, coefficients, resample, fillcolor=GREY)


def shear_x(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, (1, m, 0, 0, 1, 0), Image.BICUBIC)


def shear_y(img: Image.Image, m: float) -> Image.Image:
    return _affine(img, (1, 0, 0, m, 1, 0), Image.BICUBIC)


def translate_x(img: Image.Image, fraction: float) -> Image.Image:
    return _affine(img, (1, 0, fraction * img.size[0], 0, 1, 0), Image.NEAREST)


def translate_y(img: Image.Image, fraction: float) -> Image.Image:
    return _affine(img, (1, 0, 0, 0, 1, fraction * img.size[1]), Image.NEAREST)


def rotate(img: Image.Image, degrees: float) -> Image.Image:
    """Counter-clockwise about the centre, nearest neighbour, grey where nothing maps."""
    return img.rotate(degrees, resample=Image.NEAREST, fillcolor=GREY)


#: ``operation -> (function(img, magnitude), draws a sign)``.
OPERATIONS: Dict[str, Tuple[Callable[[Image.Image, float], Image.Image], bool]] = {
    "shearX": (shear_x, True),
    "shearY": (shear_y, True),
    "translateX": (translate_x, True),
    "translateY": (translate_y, True),
    "rotate": (rotate, False),
    "color": (lambda img, m: ImageEnhance.Color(img).enhance(1 + m), True),
    "contrast": (lambda img, m: ImageEnhance.Contrast(img).enhance(1 + m), True),
    "sharpness": (lambda img, m: ImageEnhance.Sharpness(img).enhance(1 + m), True),
    "brightness": (lambda img, m: ImageEnhance.Brightness(img).enhance(1 + m), True),
    "posterize": (lambda img, bits: ImageOps.posterize(img, int(bits)), False),
    "solarize": (lambda img, threshold: ImageOps.solarize(img, threshold), False),
    "autocontrast": (lambda img, _: ImageOps.autocontrast(img), False),
    "equalize": (lambda img, _: ImageOps.equalize(img), False),
    "invert": (lambda img, _: ImageOps.invert(img), False),
}


def apply(img: Image.Image, operation: str, index: int) -> Image.Image:
    """``operation`` at magnitude ``index`` on an RGB PIL image (drawing its sign if it has one)."""
    function, signed = OPERATIONS[operation]
    m = magnitude(operation, index)
    return function(img, m * _sign() if signed else m)


class PublicCIFAR10Policy:
    """One uniformly drawn sub-policy of :data:`SUB_POLICIES` per call, on an RGB PIL image;
    each of its two operations applies with its probability."""

    def __call__(self, img: Image.Image) -> Image.Image:
        steps = SUB_POLICIES[int(torch.randint(len(SUB_POLICIES), ()))]
        for operation, probability, index in steps:
            if torch.rand(()).item() < probability:
                img = apply(img, operation, index)
        return img

    def __repr__(self) -> str:
        return f"{type(self).__name__}(25 CIFAR-10 sub-policies, grey fill {GREY[0]})"
