"""The one error a missing, partial or corrupt dataset raises."""
from __future__ import annotations


class DatasetError(FileNotFoundError):
    """A dataset that cannot be used. The message is one line: the folder looked in, what was
    expected there, and how to get it (download page, ``--data-dir`` / ``data.root``)."""


def where_to_put(root, download: str) -> str:
    """The common tail of every dataset error message (``root`` None: no folder was given)."""
    looked = f"; looked in {root}" if root is not None else ""
    return (f"download it from {download}, then pass the folder with --data-dir DIR "
            f"(or set data.root in the recipe){looked}")


def require_root(root, dataset: str, expected: str, download: str):
    """``root`` as a ``Path``; a :class:`DatasetError` if it is not given or not a folder."""
    from pathlib import Path

    if root is None:
        raise DatasetError(f"{dataset}: no data folder given (expected {expected}); "
                           f"{where_to_put(None, download)}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{dataset}: folder {root} does not exist (expected {expected}); "
                           f"{where_to_put(root, download)}")
    return root
