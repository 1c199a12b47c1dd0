"""A recipe run's folder: what it may hold before a run starts (``--resume``, ``--restart``),
whether it can be written at all (:func:`preflight`, before anything is imported or built),
the lock that keeps a second run out (:class:`RunLock`), the advice when one of its checkpoints
is damaged, and the line printed when a run is interrupted (Ctrl-C / SIGTERM).

Imports no torch: the command line checks the folder in well under a second.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from ..config import RecipeError

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
    from . import distributed

    out_dir = Path(out_dir)
    check_resume_flags(out_dir, resume, restart)
    if restart:
        if distributed.is_main():
            for name in RESTART_DELETES:
                path = out_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        distributed.barrier()


def check_resume_flags(out_dir: Path, resume: bool, restart: bool) -> None:
    """Refuse ``--resume`` with ``--restart``, ``--resume`` of an empty folder, and a new run
    into a folder that holds one (the files are only looked at)."""
    if resume and restart:
        raise RecipeError("--resume continues a run and --restart starts it over: pass one")
    if restart:
        return
    if resume and not saved_checkpoints(out_dir):
        raise RecipeError(f"--resume: {out_dir} holds no run to resume (none of "
                          f"{', '.join(CHECKPOINTS)}); run without --resume to start one")
    running = saved_checkpoints(out_dir, IN_PROGRESS)
    if running and not resume:
        raise RecipeError(f"{out_dir} already holds a run ({', '.join(running)}): pass --resume "
                          "to continue it, --restart to start it over, or choose another --out")


#: The lock file of a run folder: JSON ``{"pid", "host", "started"}`` of the run holding it.
LOCK_NAME = ".sj-distill.lock"
#: Free space below which a run is refused before it starts (bytes).
MIN_FREE_BYTES = 8 * 2**20


def preflight(out_dir: Path, resume: bool, restart: bool) -> None:
    """Everything about ``out_dir`` that can be checked without writing to it: the
    ``--resume`` / ``--restart`` flags against what it holds, that it is (or can become) a
    writable folder with some free space, and that no other run holds its lock. One
    :class:`RecipeError` naming the folder; nothing is created."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise RecipeError(f"--out {out_dir} is a file, not a folder: choose another --out")
    check_writable(out_dir, "--out")
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 holds the lock
        holder = RunLock(out_dir).holder()
        if holder is not None:
            raise RecipeError(RunLock.busy_message(out_dir, holder))
    check_resume_flags(out_dir, resume, restart)


def check_writable(folder: Path, option: str) -> None:
    """``folder`` (or, if it does not exist yet, the closest folder above it) accepts a new
    file, tried for real (a read-only mount, an immutable folder or missing permissions all
    fail), and has at least :data:`MIN_FREE_BYTES` free."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RecipeError(f"{option} {folder}: {existing} is a file, not a folder: choose "
                          f"another {option}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".sj-distill-probe-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = {errno.EROFS: "is on a read-only file system",
                  errno.ENOSPC: "is on a full disk"}.get(err.errno, f"cannot be written "
                                                             f"({err.strerror})")
        where = folder if existing == folder else f"{folder} (in {existing})"
        raise RecipeError(f"{option} {where}: the folder {reason}; choose another {option} or "
                          "fix its permissions") from None
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise RecipeError(f"{option} {folder}: the disk holding {existing} has only "
                          f"{free / 2**20:.1f} MiB free: free space there or choose another "
                          f"{option}")


class RunLock:
    """A lock file in the run folder naming the process (pid, host) of the run writing it.

    :meth:`acquire` creates it atomically (``O_EXCL``); a lock whose process is gone on this
    host is stale and is taken over; a live one (or one from another host, which cannot be
    checked) refuses the run with one line saying how to go on."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_NAME
        self.held = False

    def holder(self) -> Optional[dict]:
        """The live run holding the lock, or ``None`` (free, or stale)."""
        try:
            info = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "started": "?"}
        if info.get("host") == socket.gethostname() and not _alive(info.get("pid")):
            return None
        return info

    @staticmethod
    def busy_message(out_dir: Path, info: dict) -> str:
        return (f"{out_dir} is in use by another run (process {info.get('pid')} on "
                f"{info.get('host')}, started {info.get('started')}): wait for it to end or "
                f"choose another --out; if that run is gone, delete {Path(out_dir) / LOCK_NAME}")

    def acquire(self) -> None:
        """Take the lock (creating the folder); :class:`RecipeError` if a live run holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is not None:
                    raise RecipeError(self.busy_message(self.path.parent, info)) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(record)
            self.held = True
            return
        raise RecipeError(f"{self.path.parent}: another run took the lock at the same time; "
                          "choose another --out")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid) -> bool:
    """Whether process ``pid`` exists on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def append_to_log(out_dir: Path, line: str) -> None:
    """Append ``line`` (an error that stopped a run before it took the folder) to an existing
    run folder's ``train.log``, so the folder tells what happened; nothing when the folder has
    no log, another live run holds it, or it cannot be written."""
    log_file = Path(out_dir) / "train.log"
    if not log_file.is_file() or RunLock(out_dir).holder() is not None:
        return
    try:
        with log_file.open("a") as handle:
            handle.write(f"{time.strftime('%H:%M:%S')} {line}\n")
    except OSError:
        pass


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

    def with_resume_command(self, command: str) -> "RunInterrupted":
        """The same line with its closing ``resume with --resume`` spelled out as the whole
        ``command`` to run."""
        tail = "resume with --resume"
        if not self.message.endswith(tail):
            return self
        return RunInterrupted(self.message[:-len(tail)] + f"resume with: {command}")

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
