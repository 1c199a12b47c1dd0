"""Where each real data set comes from and which folder it expects, without importing torch:
:func:`check_root` lets the command line refuse a missing data folder in well under a second,
before torch is imported or any model is built. The data set modules use the same texts."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from .errors import DatasetError, require_root, where_to_put

CIFAR_DOWNLOAD = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (extract it there; or "
               "set data.download: true)",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (extract it there; "
                "or set data.download: true)",
}
CIFAR_TITLE = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}
#: torchvision's folder inside the data folder (``CIFAR10.base_folder``, ``CIFAR100.base_folder``)
CIFAR_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}

DVS_DOWNLOAD = {
    "spikingjelly": "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671 (the ten "
                    "<class>.zip)",
    "tonic": "https://figshare.com/ndownloader/files/38023437 (CIFAR10DVS.zip, aedat4)",
}
DVS_LAYOUT = {"spikingjelly": "SpikingJelly's CIFAR10DVS folder (download/, extract/ or "
                              "events_np/)",
              "tonic": "tonic's CIFAR10DVS/<class>/*.aedat4"}

IMAGENET_DOWNLOAD = ("https://image-net.org/download-images.php (ILSVRC2012 train and val, "
                     "with val/ sorted into class folders)")
IMAGENET_LAYOUT = "train/ and val/ with one folder per class"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def check_root(name: str, root: Optional[str], options: Dict, download: bool = False) -> None:
    """For the shipped real data sets (CIFAR-10/100, ImageNet, CIFAR10-DVS): the data folder is
    given and exists (for ImageNet: with matching ``train/`` and ``val/`` class folders), else
    the data set's own :class:`~sj_distill.data.errors.DatasetError`.
    Other names (embedded or registered data) are left to their builder."""
    if name in CIFAR_TITLE:
        if not download:
            require_root(root, CIFAR_TITLE[name], f"torchvision's {CIFAR_FOLDER[name]}/ folder",
                         CIFAR_DOWNLOAD[name])
    elif name == "imagenet":
        check_imagenet_folders(root)
    elif name == "cifar10dvs":
        framing = options.get("framing", "spikingjelly")
        if framing in DVS_LAYOUT:
            require_root(root, "CIFAR10-DVS", DVS_LAYOUT[framing], DVS_DOWNLOAD[framing])


def check_imagenet_folders(root) -> Path:
    """``root`` with ``train/`` and ``val/`` holding the same class folders; else one error."""
    root = require_root(root, "ImageNet", IMAGENET_LAYOUT, IMAGENET_DOWNLOAD)
    for split in ("train", "val"):
        folder = root / split
        if not folder.is_dir():
            raise DatasetError(f"ImageNet: {folder} does not exist (expected train/ and val/ with "
                               f"one folder per class); {where_to_put(root, IMAGENET_DOWNLOAD)}")
        if not any(p.is_dir() for p in folder.iterdir()):
            flat = any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.iterdir())
            hint = (" (its images are not sorted into class folders: move each into its wnid "
                    "folder, e.g. with the ILSVRC2012 validation ground truth)") if flat else ""
            raise DatasetError(f"ImageNet: {folder} has no class folders{hint}; "
                               f"{where_to_put(root, IMAGENET_DOWNLOAD)}")
    train = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    val = sorted(p.name for p in (root / "val").iterdir() if p.is_dir())
    if train != val:
        odd = sorted(set(train) ^ set(val))
        raise DatasetError(f"ImageNet: train/ and val/ in {root} hold different class folders "
                           f"({len(train)} vs {len(val)}; e.g. {', '.join(odd[:3])}); a partial "
                           "download or extraction")
    return root
