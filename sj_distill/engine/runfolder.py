"""A recipe run's folder: what it may hold before a run starts (``--resume``, ``--restart``),
the advice when one of its checkpoints is damaged, and the line printed when a run is
interrupted (Ctrl-C / SIGTERM)."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

from ..config import RecipeError
from . import distributed

#: Checkpoints of a run, in the order the stages write them.
CHECKPOINTS = ("teacher.pt", "teacher_last.pt", "last.pt")
#: Checkpoints of an epoch loop still in progress (a finished teacher.pt is reused as is).
IN_PROGRESS = ("teacher_last.pt", "last.pt")
#: What ``--restart`` deletes: every checkpoint and every result of the run.
RESTART_DELETES = CHECKPOINTS + ("student.pt", "summary.json", "metrics.csv", "tensorboard")


def saved_checkpoints(out_dir: Path, names=CHECKPOINTS) -> List[str]:
    """The names among ``names`` that exist in ``out_dir``."""
    return [name for name in names if (Path(out_dir) / name).is_file()]


def prepare(out_dir: Path, resume: bool, restart: bool) -> None:
    """Refuse a run that would overwrite or silently ignore what ``out_dir`` holds; with
    ``restart``, delete the run's checkpoints and results (rank 0) so it starts over."""
    out_dir = Path(out_dir)
    if resume and restart:
        raise RecipeError("--resume continues a run and --restart starts it over: pass one")
    if restart:
        if distributed.is_main():
            for name in RESTART_DELETES:
                path = out_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        distributed.barrier()
        return
    if resume and not saved_checkpoints(out_dir):
        raise RecipeError(f"--resume: {out_dir} holds no run to resume (none of "
                          f"{', '.join(CHECKPOINTS)}); run without --resume to start one")
    running = saved_checkpoints(out_dir, IN_PROGRESS)
    if running and not resume:
        raise RecipeError(f"{out_dir} already holds a run ({', '.join(running)}): pass --resume "
                          "to continue it, --restart to start it over, or choose another --out")


def corrupt_advice(path: Path) -> str:
    """What to do when the run checkpoint ``path`` cannot be loaded; the advice works as
    written (see ``tests/test_cli.py``)."""
    path = Path(path)
    if path.name == "last.pt" and (path.parent / "teacher.pt").is_file():
        return (f"delete {path} and rerun with --resume to train the student again from the "
                "saved teacher, or rerun with --restart to start the whole run over")
    return "rerun with --restart to start the run over (it deletes the run's checkpoints)"


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; ``str()`` is the one line to print, saying what is
    saved and how to go on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    @classmethod
    def in_epoch(cls, stage: str, epoch: int, ckpt_path: Path, finished: int) -> "RunInterrupted":
        """Stopped in epoch ``epoch`` (1-based) of ``stage``, whose checkpoint ``ckpt_path``
        holds ``finished`` epochs."""
        where = f"interrupted in {stage} epoch {epoch}"
        if finished:
            return cls(f"{where}; the last finished epoch ({finished}) is saved in {ckpt_path}: "
                       "resume with --resume")
        return cls(f"{where}; {interrupted_advice(Path(ckpt_path).parent)}")

    @classmethod
    def outside_epoch(cls, out_dir: Path) -> "RunInterrupted":
        """Stopped while building, evaluating or saving, not inside an epoch."""
        return cls(f"interrupted outside a training epoch; {interrupted_advice(out_dir)}")


def interrupted_advice(out_dir: Path) -> str:
    """How to go on after an interruption, from the checkpoints ``out_dir`` holds."""
    saved = saved_checkpoints(out_dir)
    if not saved:
        return "nothing was saved yet: run again without --resume"
    return f"{', '.join(saved)} {'is' if len(saved) == 1 else 'are'} saved: resume with --resume"
