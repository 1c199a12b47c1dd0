"""Where each real data set comes from and which folder it expects, without importing torch:
:func:`check_root` lets the command line refuse a missing data folder in well under a second,
before torch is imported or any model is built. The data set modules use the same texts."""
from __future__ import annotations

from typing import Dict, Optional

from .errors import require_root

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
        from .imagenet import check_folders  # torch-free: train/ and val/ class folders

        check_folders(root)
    elif name == "cifar10dvs":
        framing = options.get("framing", "spikingjelly")
        if framing in DVS_LAYOUT:
            require_root(root, "CIFAR10-DVS", DVS_LAYOUT[framing], DVS_DOWNLOAD[framing])
