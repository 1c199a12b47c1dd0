"""Fashion-MNIST (Xiao et al. 2017) through torchvision's ``FashionMNIST`` reader.

Accepted folders (``--data-dir`` / ``data.root``):

* the four original idx files as Debian's ``dataset-fashion-mnist`` installs them, gzipped
  (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
  ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) or already decompressed;
* torchvision's layout, ``root/FashionMNIST/raw/`` holding those files.

No folder given: :data:`DEBIAN_FOLDER` when it exists. Gzipped files are decompressed once into
torchvision's layout under ``cache_dir`` (default ``~/.cache/sj-distill/fashion-mnist``), since
torchvision reads only the decompressed files (one cache
folder per source folder and file versions, see :func:`source_key`). ``download=True`` fetches the files with
torchvision into ``root`` (needs internet).

Images are served as SpikingJelly's Fashion-MNIST example feeds them: ``ToTensor`` only
(``[1, 28, 28]`` in [0, 1], no normalisation, no augmentation); the engine repeats the frame T
times and the network's first conv is the encoder. ``train_subset=N`` keeps the first N/10
training images of every class in file order: a fixed, balanced subset for short budgets;
``test_subset=N`` does the same for the test set (default: all 10,000).
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch.utils.data import Dataset

from .errors import DatasetError

#: Where Debian's ``dataset-fashion-mnist`` package puts the gzipped idx files.
DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")
COUNTS = (60000, 10000)
NUM_CLASSES = 10
HOW_TO_GET = ("install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, files in "
              f"{DEBIAN_FOLDER}) and pass nothing, or pass --data-dir DIR holding the four idx "
              "files (.gz or not, or torchvision's FashionMNIST/raw/), or set data.download: "
              "true to fetch them with torchvision")


class FashionMNISTImages(Dataset):
    """Images ``[1, 28, 28]`` float32 in [0, 1] and integer labels, held as one uint8 tensor.

    Attributes ``classes``, ``num_classes`` (10), ``in_chans`` (1) and ``source`` (the folder
    the files were read from)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: List[str],
                 source: Path):
        self.images, self.labels = images, labels
        self.classes, self.source = classes, source
        self.num_classes, self.in_chans = len(classes), 1

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.images[index].unsqueeze(0).float().div_(255), int(self.labels[index])


def default_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "sj-distill" / "fashion-mnist"


def source_key(folder: Path, layout: str) -> str:
    """A cache folder name for the files in ``folder``: a digest of its path and of every
    file's size and modification time (other or changed files get another cache)."""
    import hashlib

    suffix = ".gz" if layout == "gz" else ""
    digest = hashlib.sha1(str(folder.resolve()).encode())
    for name in FILES:
        stat = (folder / (name + suffix)).stat()
        digest.update(f"{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _complete(folder: Path, suffix: str) -> bool:
    return all((folder / (name + suffix)).is_file() for name in FILES)


def locate(root) -> Tuple[Path, str]:
    """``(folder, layout)`` holding the four files: layout ``torchvision`` (``folder`` is
    torchvision's root, files decompressed under ``FashionMNIST/raw``) or ``gz`` (``folder``
    holds the gzipped files). One :class:`DatasetError` line when they are not there."""
    if root is None:
        if not DEBIAN_FOLDER.is_dir():
            raise DatasetError(f"Fashion-MNIST: no data folder given and {DEBIAN_FOLDER} does "
                               f"not exist; {HOW_TO_GET}")
        root = DEBIAN_FOLDER
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Fashion-MNIST: folder {root} does not exist; {HOW_TO_GET}")
    for folder in (root, root / "raw", root / "FashionMNIST" / "raw"):
        if _complete(folder, ""):
            if folder == root / "FashionMNIST" / "raw":
                return root, "torchvision"
            return folder, "plain"
        if _complete(folder, ".gz"):
            return folder, "gz"
    present = sorted(p.name for p in root.iterdir())[:6]
    raise DatasetError(f"Fashion-MNIST: {root} does not hold the four idx files "
                       f"({', '.join(n + '[.gz]' for n in FILES)}; found {present}); {HOW_TO_GET}")


def _torchvision_root(folder: Path, layout: str, cache_dir: Optional[str]) -> Path:
    """A folder in torchvision's layout with the decompressed files (made under the cache from
    a flat or gzipped folder; each file written to a temporary name, then renamed).
    Debian recompressed the .gz files, so torchvision's MD5 sums of the originals do not apply:
    gzip's CRC and the image counts are the checks."""
    if layout == "torchvision":
        return folder
    cache = (Path(cache_dir).expanduser() if cache_dir else default_cache()) / source_key(
        folder, layout)
    raw = cache / "FashionMNIST" / "raw"
    if _complete(raw, ""):
        return cache
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        partial = raw / (name + ".partial")
        if layout == "gz":  # gzip checks each file's CRC: a corrupt copy raises here
            try:
                with gzip.open(folder / (name + ".gz"), "rb") as src, \
                        open(partial, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError) as err:
                partial.unlink(missing_ok=True)
                raise DatasetError(f"Fashion-MNIST: {folder / (name + '.gz')} cannot be "
                                   f"decompressed ({err}); a partial or corrupt copy; "
                                   f"{HOW_TO_GET}") from None
        else:
            shutil.copyfile(folder / name, partial)
        partial.replace(raw / name)
    return cache


def balanced_subset(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Indices of the first ``size / 10`` images of every class, in file order (sorted)."""
    if size % NUM_CLASSES or not 0 < size <= len(labels):
        raise ValueError(f"train_subset must be a multiple of {NUM_CLASSES} in "
                         f"(0, {len(labels)}], got {size}")
    per_class = size // NUM_CLASSES
    chosen = [torch.nonzero(labels == c).flatten()[:per_class] for c in range(NUM_CLASSES)]
    return torch.cat(chosen).sort().values


def build(root=None, img_size: int = 28, download: bool = False, verify: bool = True,
          train_subset: Optional[int] = None, cache_dir: Optional[str] = None,
          test_subset: Optional[int] = None) -> Tuple:
    """``(train_set, test_set)`` of :class:`FashionMNISTImages` (see the module docstring)."""
    from torchvision.datasets import FashionMNIST

    if img_size != 28:
        raise ValueError(f"data.img_size must be 28 for fashion-mnist, got {img_size}")
    if download:
        root = Path(root or ".").expanduser()
        root.mkdir(parents=True, exist_ok=True)
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
    folder, layout = locate(root)
    tv_root = _torchvision_root(folder, layout, cache_dir)
    sets = []
    for train in (True, False):
        try:
            tv = FashionMNIST(str(tv_root), train=train)
        except Exception as err:  # a truncated or foreign idx file
            raise DatasetError(f"Fashion-MNIST: the files in {tv_root / 'FashionMNIST' / 'raw'} "
                               f"cannot be read ({type(err).__name__}: {err}); {HOW_TO_GET}"
                               ) from None
        sets.append(FashionMNISTImages(tv.data, tv.targets, list(tv.classes), folder))
    train_set, test_set = sets
    if verify and (len(train_set), len(test_set)) != COUNTS:
        raise DatasetError(f"Fashion-MNIST: {len(train_set)} train / {len(test_set)} test "
                           f"images in {folder}, expected {COUNTS[0]} / {COUNTS[1]}")
    return _subset(train_set, train_subset), _subset(test_set, test_subset)


def _subset(dataset: FashionMNISTImages, size: Optional[int]) -> FashionMNISTImages:
    if size is None:
        return dataset
    keep = balanced_subset(dataset.labels, size)
    return FashionMNISTImages(dataset.images[keep], dataset.labels[keep], dataset.classes,
                              dataset.source)


def check(root=None, verify: bool = True, **_ignored) -> List[str]:
    """Lines describing the data found (``sj-distill data check fashion-mnist``)."""
    folder, layout = locate(root)
    train, test = build(root, verify=verify)
    kind = {"gz": "gzipped idx files", "plain": "idx files",
            "torchvision": "torchvision's FashionMNIST/raw layout"}[layout]
    return [f"Fashion-MNIST read from {folder} ({kind})",
            f"{len(train)} train / {len(test)} test images, {train.num_classes} classes"]
