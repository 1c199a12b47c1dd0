"""Checkpoints that are atomic and cannot run code.

Writing: to a temporary file in the same folder, flushed to disk, then renamed over the old
one, so a crash never leaves a half-written checkpoint behind; a full disk is one
:class:`CheckpointError` naming the disk and the file. Reading: always
``torch.load(weights_only=True)``, which accepts tensors and plain data (dicts, lists, numbers,
strings) and refuses any other pickled object *without creating it*, so a checkpoint with a
``__reduce__`` payload is refused before its code can run. Everything a run checkpoint holds is
plain data: the RNG states too (:func:`rng_state`).

``python -m sj_distill.engine.checkpoint convert PATH`` rewrites an old-format checkpoint
(numpy RNG state pickled as numpy objects) in the new format; it unpickles the file fully,
so run it only on files whose origin you trust.
"""
from __future__ import annotations

import errno
import os
import pickle
import random
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable

import numpy as np
import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, truncated, unsafe or of the wrong kind."""


#: What the numpy RNG state of an old-format ``last.pt`` (before RNG states became tensors)
#: pickles first: a file refused for one of these gets the advice to convert it.
OLD_FORMAT_GLOBALS = ("numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct")

#: How temporary files of :func:`save_atomic` are named: ``.NAME.<random>.tmp``.
TMP_SUFFIX = ".tmp"


def no_space_error(path: Path) -> CheckpointError:
    """The one line for a full disk while writing ``path``."""
    return CheckpointError(
        f"no space left on the disk holding {path.parent} while writing {path}: free space "
        "there (or choose another --out), then rerun with --resume to continue from the last "
        "saved epoch (saved checkpoints are intact)")


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically; ``ENOSPC`` (disk full) is one
    :class:`CheckpointError` naming the disk and the file, and leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise no_space_error(path) from None
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if _is_disk_full(err):
            raise no_space_error(path) from None
        raise


def _is_disk_full(err: BaseException) -> bool:
    """``ENOSPC`` from the OS, or torch's zip writer failing for the same reason (it reports
    ``unexpected pos`` / ``file write failed`` without the errno)."""
    if isinstance(err, OSError):
        return err.errno == errno.ENOSPC
    text = str(err)
    return isinstance(err, RuntimeError) and ("unexpected pos" in text
                                              or "file write failed" in text)


def remove_stale_temporaries(folder: str | os.PathLike) -> list:
    """Delete temporaries ``.NAME.*.tmp`` that :func:`save_atomic` left in ``folder`` when its
    process was killed mid-write (call it while holding the run-folder lock); returns their
    names."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(f".*.pt.*{TMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)
        removed.append(tmp.name)
    return removed


def read(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` on CPU with ``weights_only=True``; :class:`CheckpointError` for a
    missing, damaged or unsafe file (an unsafe one is refused before any of its code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": one line, not two
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        unsafe = re.search(r"GLOBAL (\S+) was not an allowed global", str(err))
        if unsafe and unsafe[1] in OLD_FORMAT_GLOBALS:
            raise CheckpointError(
                f"checkpoint {path} is in the old format (numpy objects, refused because "
                "unpickling them could run code): if it comes from a source you trust, convert "
                f"it with `python -m sj_distill.engine.checkpoint convert {path}`, else rerun "
                "with --restart") from None
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} holds a pickled {unsafe[1]} object and is refused without "
                "loading it (it could run code): use a checkpoint holding only tensors and "
                "plain data") from None
        raise _damaged(path, err) from None
    except Exception as err:  # torch raises several types for damaged files
        raise _damaged(path, err) from None


class _Damaged(CheckpointError):
    pass


def _damaged(path: Path, err: BaseException) -> CheckpointError:
    return _Damaged(f"checkpoint {path} is corrupt or truncated ({type(err).__name__})")


def load(path: str | os.PathLike, required: Iterable[str] = (),
         advice: str = "point to an intact copy") -> Dict[str, Any]:
    """Load a checkpoint on CPU (safely, see :func:`read`); one clear :class:`CheckpointError`
    if it cannot be used, ending with ``advice`` (what to do) when the file is damaged."""
    path = Path(path)
    try:
        obj = read(path)
    except _Damaged as err:
        raise CheckpointError(f"{err}: {advice}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: "
                              "it was not written by `sj-distill recipe`")
    return obj


def rng_state() -> Dict[str, Any]:
    """Every RNG a run draws from, as tensors and plain lists (loadable with
    ``weights_only=True``): torch's CPU generator (uint8 tensor), numpy's global MT19937
    (key as an int64 tensor [624], position, cached Gaussian), Python's ``random`` (its state
    tuple as lists) and, when CUDA is available, every CUDA generator (uint8 tensors)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": str(kind), "key": torch.from_numpy(key.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss),
                       "cached_gaussian": float(gauss)},
             "python": [int(version), list(internal), gauss_next]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what :func:`rng_state` recorded."""
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["key"].numpy().astype(np.uint32),
                         numpy_state["pos"], numpy_state["has_gauss"],
                         numpy_state["cached_gaussian"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def convert(path: str | os.PathLike) -> bool:
    """Rewrite an old-format checkpoint ``path`` (RNG states as numpy objects) in the current
    format, atomically. Unpickles the file fully: only for files from a trusted source.
    Returns whether anything changed."""
    path = Path(path)
    obj = torch.load(path, map_location="cpu", weights_only=False)
    rng = obj.get("rng") if isinstance(obj, dict) else None
    if not isinstance(rng, dict) or not isinstance(rng.get("numpy"), tuple):
        return False
    kind, key, pos, has_gauss, gauss = rng["numpy"]
    version, internal, gauss_next = rng["python"]
    rng["numpy"] = {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, np.int64)),
                    "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}
    rng["python"] = [int(version), list(internal), gauss_next]
    save_atomic(obj, path)
    read(path)  # the converted file loads safely
    return True


def _main(argv) -> int:
    if len(argv) != 2 or argv[0] != "convert":
        print("usage: python -m sj_distill.engine.checkpoint convert PATH", file=sys.stderr)
        return 2
    changed = convert(argv[1])
    print(f"{argv[1]}: {'converted' if changed else 'already in the current format'}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
