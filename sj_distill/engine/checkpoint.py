"""Atomic checkpoints: written to a temporary file in the same folder, flushed to disk, then
renamed over the old one, so a crash never leaves a half-written checkpoint behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, truncated or of the wrong kind."""


def save_atomic(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | os.PathLike, required: Iterable[str] = (),
         advice: str = "point to an intact copy") -> Dict[str, Any]:
    """Load a checkpoint on CPU; one clear :class:`CheckpointError` if it cannot be used,
    ending with ``advice`` (what to do) when the file is damaged."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises several types for damaged files
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated ({type(err).__name__}): {advice}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    missing = [k for k in required if k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}: "
                              "it was not written by `sj-distill recipe`")
    return obj
