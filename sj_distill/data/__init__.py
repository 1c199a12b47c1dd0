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


def build_cifar10(root: Optional[str] = None, img_size: int = 32, T: int = 4,
                  download: bool = False, verify: bool = True, augment: str = "public_code",
                  cutout: int = 16):
    """CIFAR-10 from ``root/cifar-10-batches-py`` (see :mod:`sj_distill.data.cifar`);
    ``augment``: ``public_code`` | ``torchvision`` | ``none`` (the AutoAugment policy)."""
    from . import cifar

    _require_size("cifar10", img_size, 32)
    return cifar.build("cifar10", root, download, verify, augment, cutout)


def build_cifar100(root: Optional[str] = None, img_size: int = 32, T: int = 4,
                   download: bool = False, verify: bool = True, augment: str = "public_code",
                   cutout: int = 16):
    """CIFAR-100 from ``root/cifar-100-python`` (see :mod:`sj_distill.data.cifar`);
    ``augment``: ``public_code`` | ``torchvision`` | ``none`` (the AutoAugment policy)."""
    from . import cifar

    _require_size("cifar100", img_size, 32)
    return cifar.build("cifar100", root, download, verify, augment, cutout)


def build_imagenet(root: Optional[str] = None, img_size: int = 224, T: int = 4,
                   verify: bool = True):
    """ImageNet image folder ``root/{train,val}/<wnid>/`` (see :mod:`sj_distill.data.imagenet`)."""
    from . import imagenet

    return imagenet.build(root, img_size, verify)


def build_cifar10dvs(root: Optional[str] = None, img_size: int = 48, T: int = 10,
                     framing: str = "spikingjelly", resize: str = "public_code",
                     split_by: str = "number", samples_per_class: Optional[int] = 1000,
                     test_per_class: int = 100, cache_dir: Optional[str] = None,
                     max_roll: int = 5, verify_md5: bool = True):
    """CIFAR10-DVS framed into ``T`` frames (see :mod:`sj_distill.data.cifar10dvs`)."""
    from .cifar10dvs import CIFAR10DVS

    kwargs = dict(framing=framing, T=T, img_size=img_size, resize=resize, split_by=split_by,
                  samples_per_class=samples_per_class, test_per_class=test_per_class,
                  cache_dir=cache_dir, max_roll=max_roll, verify_md5=verify_md5)
    return CIFAR10DVS(root, train=True, **kwargs), CIFAR10DVS(root, train=False, **kwargs)


def build_fashion_mnist(root: Optional[str] = None, img_size: int = 28, T: int = 4,
                        download: bool = False, verify: bool = True,
                        train_subset: Optional[int] = None, test_subset: Optional[int] = None,
                        cache_dir: Optional[str] = None):
    """Fashion-MNIST, ``[1, 28, 28]`` images (see :mod:`sj_distill.data.fashion_mnist`); no
    ``root``: Debian's ``/usr/share/datasets/fashion-mnist``; ``train_subset`` / ``test_subset``:
    the first N/10 images of each class."""
    from . import fashion_mnist

    return fashion_mnist.build(root, img_size, download, verify, train_subset, cache_dir,
                               test_subset)


#: Input channels of the built-in datasets, known without opening them (the pre-run check
#: builds the student and teacher with these).
KNOWN_CHANNELS = {"digits": 1, "digits-dvs": 2, "cifar10": 3, "cifar100": 3, "imagenet": 3,
                  "cifar10dvs": 2, "fashion-mnist": 1}


def input_channels(name: str, options: dict, builder=None) -> Optional[int]:
    """The input channels dataset ``name`` will give with ``options``, when known before it is
    read: built-in datasets, ``imagefolder`` (1 with ``grayscale``, else 3), or a registered
    builder with an integer attribute ``in_chans``; None otherwise."""
    if name == "imagefolder":
        return 1 if options.get("grayscale") else 3
    if name in KNOWN_CHANNELS:
        return KNOWN_CHANNELS[name]
    declared = getattr(builder, "in_chans", None)
    return declared if isinstance(declared, int) else None


def _require_size(name: str, img_size: int, size: int) -> None:
    if img_size != size:
        raise ValueError(f"data.img_size must be {size} for {name}, got {img_size}")


def check_dataset(name: str, root: Optional[str], **options) -> list:
    """Verify a real dataset's layout and counts without training (``sj-distill data check``):
    lines describing it, or a :class:`~sj_distill.data.errors.DatasetError`."""
    if name in ("cifar10", "cifar100"):
        from . import cifar

        return cifar.check(name, root, **options)
    if name == "imagenet":
        from . import imagenet

        return imagenet.check(root, **options)
    if name == "cifar10dvs":
        from . import cifar10dvs

        return cifar10dvs.check(root, **options)
    if name == "fashion-mnist":
        from . import fashion_mnist

        return fashion_mnist.check(root, **options)
    if name in ("imagefolder", "eventfolder"):
        return _check_folder(name, root, **options)
    raise KeyError(f"data check knows the real datasets cifar10, cifar100, imagenet, "
                   f"cifar10dvs, fashion-mnist and the folders imagefolder and eventfolder, "
                   f"not {name!r} (embedded datasets need no check)")


def _check_folder(name: str, root: Optional[str], **options) -> list:
    """Lines describing your own class-per-folder data (``imagefolder`` / ``eventfolder``):
    the split's sizes and classes, and the first sample's shape (it is read)."""
    from ..registry import DATASETS

    train, test = DATASETS.build(name, root=root, where="data.options", **options)
    x, _ = train[0]
    counts = [sum(1 for _, label in train.samples if label == c) for c in range(len(train.classes))]
    return [f"{name} read from {root}",
            f"{len(train)} train / {len(test)} test samples, {len(train.classes)} classes "
            f"({', '.join(train.classes[:5])}{', ...' if len(train.classes) > 5 else ''}); "
            f"training samples per class {min(counts)}..{max(counts)}",
            f"first sample {list(x.shape)} {str(x.dtype).replace('torch.', '')}"]
