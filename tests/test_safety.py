"""Engine safety (issue 20): checkpoints that cannot run code, exact RNG round trips in the
safe format, the NaN/inf guard, the run-folder lock, up-front bounds, and one line for every
failure (malformed override, non-weights teacher file, full disk, YAML 1.2 floats, stale
temporaries, TensorBoard after resume, damaged summary.json, recipe names)."""
import errno
import json
import os
import pickle
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sj_distill import cli, config
from sj_distill.engine import checkpoint, runfolder
from sj_distill.engine.guard import FiniteGuard, NonFiniteError

RECIPES = Path(__file__).parent / "recipes"
TINY, TINY_BRD = RECIPES / "tiny.yaml", RECIPES / "tiny-brd.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
FAST = ["train.max_batches=1", "data.eval_batch_size=360"]


def _cli(capsys, *args):
    """``(exit status, stderr lines)`` of ``sj-distill ARGS`` run in this process."""
    status = cli.main([str(a) for a in args])
    return status, capsys.readouterr().err.strip().splitlines()


def _errors(lines):
    return [line for line in lines if line.startswith("sj-distill:")]


class Payload:
    """Unpickling this runs code: it writes ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def _payload_checkpoint(path: Path, marker: Path, **plain) -> Path:
    torch.save({**plain, "trap": Payload(marker)}, path)
    return path


# --- 1. checkpoints that cannot run code ------------------------------------------------------

def test_the_payload_runs_when_unpickled_unsafely(tmp_path):
    """The trap used below is real: ``weights_only=False`` runs it."""
    marker = tmp_path / "marker"
    path = _payload_checkpoint(tmp_path / "x.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.read_text() == "ran"


def test_checkpoint_load_refuses_a_payload_without_running_it(tmp_path):
    marker = tmp_path / "marker"
    path = _payload_checkpoint(tmp_path / "student.pt", marker, model={})
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path)
    assert str(caught.value) == (
        f"checkpoint {path} holds a pickled exec object and is refused without loading "
        "it (it could run code): use a checkpoint holding only tensors and plain data")
    assert not marker.exists()


def test_eval_refuses_a_payload_student_pt(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = _payload_checkpoint(tmp_path / "student.pt", marker, model={})
    status, err = _cli(capsys, "eval", path, "--out", tmp_path / "eval")
    assert status == 2 and len(err) == 1 and "is refused without loading it" in err[0], err
    assert not marker.exists()


def _finished_tiny_run(out: Path, capsys, *extra):
    status, err = _cli(capsys, "recipe", TINY, "train.epochs=1", *FAST, *extra, "--out", out)
    assert status == 0, err


def test_resume_refuses_a_payload_last_pt(tmp_path, capsys):
    out = tmp_path / "run"
    _finished_tiny_run(out, capsys)
    saved = checkpoint.load(out / "last.pt")
    marker = tmp_path / "marker"
    _payload_checkpoint(out / "last.pt", marker, **saved)
    status, err = _cli(capsys, "recipe", TINY, "train.epochs=2", *FAST, "--out", out, "--resume")
    assert status == 2 and _errors(err) == [
        f"sj-distill: error: checkpoint {out / 'last.pt'} holds a pickled exec object "
        "and is refused without loading it (it could run code): use a checkpoint holding only "
        "tensors and plain data"]
    assert not marker.exists()


def test_a_payload_teacher_pt_in_the_run_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "marker"
    _payload_checkpoint(out / "teacher.pt", marker, teacher={})
    status, err = _cli(capsys, "recipe", TINY_BRD, *FAST, "--out", out, "--resume")
    assert status == 2 and len(_errors(err)) == 1
    assert f"checkpoint {out / 'teacher.pt'} holds a pickled exec" in err[-1]
    assert not marker.exists()


def test_a_payload_teacher_checkpoint_is_refused(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = _payload_checkpoint(tmp_path / "teacher.pth", marker, state_dict={})
    status, err = _cli(capsys, "recipe", TINY_BRD, *FAST, "teacher.train.epochs=0",
                       f"teacher.checkpoint={path}", "--out", tmp_path / "run")
    assert status == 2 and len(_errors(err)) == 1
    assert f"{path} holds a pickled exec object and is refused" in err[-1], err
    assert not marker.exists()


def test_teacher_checkpoint_that_is_not_weights_is_one_line(tmp_path, capsys):
    path = tmp_path / "notes.pkl"
    path.write_bytes(pickle.dumps(["not", "weights"], protocol=2))
    status, err = _cli(capsys, "recipe", TINY_BRD, *FAST, "teacher.train.epochs=0",
                       f"teacher.checkpoint={path}", "--out", tmp_path / "run")
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith("sj-distill: error: teacher.checkpoint:") and str(path) in err[0]
    assert not (tmp_path / "run").exists()


def test_every_torch_load_in_the_package_is_weights_only():
    package = Path(__file__).parent.parent / "sj_distill"
    calls = [(p.name, line.strip()) for p in package.rglob("*.py")
             for line in p.read_text().splitlines() if "torch.load(" in line]
    assert calls and all("weights_only=" in line for _, line in calls), calls
    # the one exception: `checkpoint convert`, the explicit command for trusted old files
    assert [c for c in calls if "weights_only=True" not in c[1]] == [
        ("checkpoint.py", 'obj = torch.load(path, map_location="cpu", weights_only=False)')]


def _draws():
    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)],
            float(np.random.randn()))


def test_rng_state_round_trips_through_a_safe_checkpoint(tmp_path):
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    np.random.randn()  # leaves a cached Gaussian in numpy's state
    path = tmp_path / "rng.pt"
    checkpoint.save_atomic({"rng": checkpoint.rng_state()}, path)
    expected = _draws()
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    checkpoint.set_rng_state(checkpoint.read(path)["rng"])  # weights_only=True
    assert _draws() == expected


def test_an_old_format_checkpoint_gets_one_line_and_converts(tmp_path):
    path = tmp_path / "last.pt"
    old_rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
               "python": random.getstate()}
    torch.save({"epoch": 1, "rng": old_rng}, path)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load(path)
    assert str(caught.value) == (
        f"checkpoint {path} is in the old format (numpy objects, refused because unpickling "
        "them could run code): if it comes from a source you trust, convert it with `python -m "
        f"sj_distill.engine.checkpoint convert {path}`, else rerun with --restart")
    out = subprocess.run([sys.executable, "-m", "sj_distill.engine.checkpoint", "convert",
                          str(path)], env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"{path}: converted", out.stderr
    np.random.seed(3)
    checkpoint.set_rng_state(checkpoint.load(path)["rng"])
    assert np.random.get_state()[1].tolist() == old_rng["numpy"][1].tolist()


# --- 2. the NaN/inf guard ---------------------------------------------------------------------

def _toy_stage(blow_up_in_epoch: int, epochs: int = 3):
    from sj_distill.engine.loop import Stage

    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = {"epoch": 0}

    def step(x, y):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if calls["epoch"] == blow_up_in_epoch:
            loss = loss * float("inf")
        return loss, {}, logits.detach()

    def evaluate():
        calls["epoch"] += 1
        return {"loss": 0.0, "top1": 0.0, "top5": 0.0}

    stage = Stage(name="student", model=model, state={"student": model}, optimizer=optimizer,
                  scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0),
                  epochs=epochs, train_step=step, evaluate=evaluate)
    data = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(5)]
    return stage, data


class _Log:
    def begin(self, stage, finished):
        pass

    def epoch(self, row):
        pass


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    from sj_distill.engine.loop import fit

    stage, data = _toy_stage(blow_up_in_epoch=1)
    path = tmp_path / "last.pt"
    with pytest.raises(NonFiniteError) as caught:
        fit(stage, data, path, _Log(), seed=0, device=torch.device("cpu"), resume=False)
    assert re.fullmatch(
        r"student epoch 2, step 1: the loss is not finite \(loss inf\); training diverged, "
        r"stopped before this epoch was saved: lower the learning rate \(train\.optimizer\.lr\) "
        rf"or set train\.amp=none if AMP is on; {re.escape(str(path))} still holds epoch 1: fix "
        r"the recipe and rerun with --resume", str(caught.value)), str(caught.value)
    saved = checkpoint.load(path)
    assert saved["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in saved["modules"]["student"].values())


def test_guard_names_a_non_finite_gradient_with_a_finite_loss():
    guard = FiniteGuard(torch.device("cpu"))
    weight = nn.Parameter(torch.ones(2))
    weight.grad = torch.tensor([1.0, 2.0])
    guard.observe(0, torch.tensor(0.5), [weight])
    guard.check("teacher", 1, "x")  # all finite: nothing happens
    weight.grad = torch.tensor([1.0, float("nan")])
    guard.observe(1, torch.tensor(0.25), [weight])
    guard.observe(2, torch.tensor(float("nan")), [weight])
    with pytest.raises(NonFiniteError, match=r"^teacher epoch 1, step 2: a gradient is not "
                                             r"finite \(loss 0\.25\); .*\(teacher\.train\.lr\)"):
        guard.check("teacher", 1, "x")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to count synchronisations")
def test_guard_observe_never_synchronises_with_the_device():
    guard = FiniteGuard(torch.device("cuda"))
    weight = nn.Parameter(torch.ones(1000, device="cuda"))
    weight.grad = torch.randn(1000, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(5):
            guard.observe(step, weight.sum(), [weight])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    guard.check("student", 1, "x")


def test_huge_learning_rate_is_one_line_and_no_student_pt(tmp_path, capsys):
    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, "train.optimizer.lr=1e30", "train.epochs=1",
                       "--out", out)
    assert status == 2 and len(_errors(err)) == 1 and err[-1] == _errors(err)[0], err
    assert re.match(r"sj-distill: error: student epoch 1, step \d+: (the loss|a gradient) is not "
                    r"finite", err[-1]), err[-1]
    assert not (out / "student.pt").exists() and not (out / "last.pt").exists()
    assert err[-1] in (out / "train.log").read_text()  # the folder holds the error too


# --- 3. the run-folder lock -------------------------------------------------------------------

def test_a_second_run_into_a_busy_folder_is_refused_then_the_lock_is_released(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "sj_distill", "recipe", str(TINY), "train.epochs=1000", *FAST,
         "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while not (out / "last.pt").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.05)
        lock = json.loads((out / runfolder.LOCK_NAME).read_text())
        assert lock["pid"] == first.pid and lock["host"] == socket.gethostname()
        for flags in ([], ["--resume"], ["--restart"]):
            second = subprocess.run(
                [sys.executable, "-m", "sj_distill", "recipe", str(TINY), *FAST, "--out",
                 str(out), *flags], env=ENV, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2
            assert second.stderr.strip().splitlines() == [
                f"sj-distill: error: {out} is in use by another run (process {first.pid} on "
                f"{socket.gethostname()}, started {lock['started']}): wait for it to end or "
                f"choose another --out; if that run is gone, delete {out / runfolder.LOCK_NAME}"]
        assert first.poll() is None  # the first run was not disturbed
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 130
    assert not (out / runfolder.LOCK_NAME).exists()


def test_a_stale_lock_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / runfolder.LOCK_NAME).write_text(json.dumps(
        {"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}))
    runfolder.preflight(out, resume=False, restart=False)
    lock = runfolder.RunLock(out)
    lock.acquire()
    assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    other = runfolder.RunLock(out)
    with pytest.raises(config.RecipeError, match="is in use by another run"):
        other.acquire()
    lock.release()
    assert not lock.path.exists()


# --- 4. bounds before the folder is written ---------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("data.batch_size=0", "'data.batch_size' must be >= 1, got 0"),
    ("data.img_size=0", "'data.img_size' must be >= 1, got 0"),
    ("data.eval_batch_size=-3", "'data.eval_batch_size' must be >= 1, got -3"),
    ("train.max_batches=0", "'train.max_batches' must be >= 1, got 0"),
    ("data.T=100000", "'data.T' is 100000, above the limit of 1024"),
    ("data.img_size=100000", "'data.img_size' is 100000, above the limit of 2048"),
])
def test_sizes_are_checked_before_the_folder_is_written(override, message, tmp_path, capsys):
    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, override, "--out", out)
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_batch_size_larger_than_the_training_set_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, "data.batch_size=100000000", "--out", out)
    assert status == 2 and err == [
        "sj-distill: error: data.batch_size 100000000 is larger than the training set (1437 "
        "samples): use data.batch_size <= 1437"], err
    assert not out.exists()


# --- 5. one line for every failure left -------------------------------------------------------

def test_malformed_override_is_one_line(tmp_path, capsys):
    status, err = _cli(capsys, "recipe", TINY, "train.epochs=[1", "--out", tmp_path / "run")
    assert status == 2 and err == [
        "sj-distill: error: override 'train.epochs=[1': the value is not valid YAML (line 1, "
        "column 3: expected ',' or ']', but got '<stream end>'); quote it to pass a string, "
        "e.g. train.epochs='\"[1\"'"]


@pytest.mark.parametrize("text, value", [("1e6", 1e6), ("5E-4", 5e-4), ("-2.5e+3", -2500.0),
                                         ("1.0e+30", 1e30), (".inf", float("inf")),
                                         ("12", 12), ("1e", "1e"), ("e6", "e6")])
def test_exponent_floats_read_as_numbers(text, value):
    assert config.parse_override(f"train.optimizer.lr={text}")[1] == value
    assert config.parse_yaml(f"lr: {text}")["lr"] == value


def test_recipe_name_with_folders_is_refused(capsys):
    status, err = _cli(capsys, "recipe", "../../x")
    assert status == 2 and err == [
        "sj-distill: error: '../../x' is not a recipe name (names have no folders; see "
        "`sj-distill list`): to run a recipe file, give its path with the .yaml ending, e.g. "
        "../../x.yaml"]


def test_table_names_a_damaged_summary(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text('{"recipe": ')
    status, err = _cli(capsys, "table", tmp_path)
    assert status == 2 and len(err) == 1
    assert err[0].startswith(f"sj-distill: error: {tmp_path / 'a' / 'summary.json'} is damaged "
                             "(not valid JSON")


def test_disk_full_during_a_save_names_the_disk_and_the_file(tmp_path, monkeypatch):
    def full(obj, handle):
        handle.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 32")

    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"epoch": 1}, path)
    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.save_atomic({"epoch": 2}, path)
    assert str(caught.value) == (
        f"no space left on the disk holding {tmp_path} while writing {path}: free space there "
        "(or choose another --out), then rerun with --resume to continue from the last saved "
        "epoch (saved checkpoints are intact)")
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def _tmpfs(path: Path, size: str) -> Path:
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("needs permission to mount a small tmpfs (root)")
    return path


@pytest.fixture
def small_disk(tmp_path):
    disk = _tmpfs(tmp_path / "disk", "12M")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_full_at_start_is_one_line_before_anything_is_written(small_disk, capsys):
    with open(small_disk / "filler", "wb") as handle:
        with pytest.raises(OSError) as caught:
            while True:
                handle.write(b"\0" * 2**20)
                handle.flush()
    assert caught.value.errno == errno.ENOSPC
    out = small_disk / "run"
    status, err = _cli(capsys, "recipe", TINY, "--out", out)
    assert status == 2 and len(err) == 1, err
    assert err[0].startswith(f"sj-distill: error: --out {out}: the disk holding {small_disk} "
                             "has only 0.0 MiB free: free space there"), err
    assert not out.exists()


def test_a_disk_that_fills_during_the_run_is_one_line(small_disk, capsys):
    out = small_disk / "run"
    # 12 MiB pass the up-front check; the checkpoint of a 4-million-parameter student does not fit
    status, err = _cli(capsys, "recipe", TINY, *FAST, "train.epochs=1", "student.options.width=64",
                       "--out", out)
    assert status == 2 and len(_errors(err)) == 1 and err[-1] == _errors(err)[0], err[-3:]
    assert err[-1] == (
        f"sj-distill: error: no space left on the disk holding {out} while writing "
        f"{out / 'last.pt'}: free space there (or choose another --out), then rerun with --resume "
        "to continue from the last saved epoch (saved checkpoints are intact)"), err[-1]
    assert not list(out.glob(".*.tmp"))


def test_stale_temporaries_of_a_killed_save_are_removed(tmp_path, capsys):
    out = tmp_path / "run"
    _finished_tiny_run(out, capsys)
    stale = [out / ".last.pt.abc123.tmp", out / ".teacher.pt.x9.tmp"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    keep = out / ".notes.tmp"
    keep.write_text("not ours")
    status, err = _cli(capsys, "recipe", TINY, "train.epochs=2", *FAST, "--out", out, "--resume")
    assert status == 0, err
    assert not any(p.exists() for p in stale) and keep.exists()
    assert any("removed 2 temporary file(s) of an interrupted save" in line for line in err)


def test_an_epoch_redone_after_resume_is_logged_once_in_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sj_distill.engine.runlog import RunLog

    def row(epoch, loss):
        return {"stage": "student", "epoch": epoch, "lr": 0.1, "seconds": 1.0, "train_loss": loss,
                "train_ce": loss, "train_top1": 0.0, "test_loss": loss, "test_top1": 0.0,
                "test_top5": 0.0}

    first = RunLog(tmp_path)
    first.begin("student", 0)
    first.epoch(row(1, 1.0))
    first.epoch(row(2, 2.0))  # logged, then killed before epoch 2 was checkpointed
    first.close()
    resumed = RunLog(tmp_path)
    resumed.begin("student", 1)
    resumed.epoch(row(2, 0.5))
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard" / "student"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("student/train_loss")] == [(1, 1.0),
                                                                                  (2, 0.5)]


# --- 6. evidence for docs/recipes.md: SIGKILL at random points, then an exact resume ----------

def _metrics_rows(run_dir: Path, keep_seconds: bool = False) -> list:
    import csv

    with (run_dir / "metrics.csv").open() as handle:
        return [{k: v for k, v in row.items() if keep_seconds or k != "seconds"}
                for row in csv.DictReader(handle)]


def _inode(path: Path):
    """The inode of ``path`` (each atomic save makes a new one), or None."""
    try:
        return path.stat().st_ino
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path):
    """Up to ten SIGKILLs, alternately at a random moment of the epoch after the attempt's
    first save and while a checkpoint is being written; every restart uses --resume. The final weights, the metrics and the saved epochs equal an
    uninterrupted run's, and no temporary file or lock is left behind."""
    args = [str(TINY), "train.epochs=8", "train.max_batches=6", "data.eval_batch_size=360"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    ref = subprocess.run([sys.executable, "-m", "sj_distill", "recipe", *args, "--out",
                          str(straight)], env=ENV, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    epoch_seconds = sum(float(r["seconds"]) for r in _metrics_rows(straight, keep_seconds=True)) / 8
    rng = random.Random(20)
    kills = []
    while len(kills) < 10:
        resume = ["--resume"] if runfolder.saved_checkpoints(killed) else []
        proc = subprocess.Popen([sys.executable, "-m", "sj_distill", "recipe", *args, "--out",
                                 str(killed), *resume], env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        during_save = len(kills) % 2 == 1
        first_inode = _inode(killed / "last.pt")
        give_up, deadline = time.time() + 600, None
        while time.time() < min(give_up, deadline or give_up) and proc.poll() is None:
            if during_save and list(killed.glob(".last.pt.*.tmp")):
                break
            if not during_save and deadline is None \
                    and _inode(killed / "last.pt") not in (None, first_inode):
                # this attempt saved an epoch: kill it at a random moment of the next one
                deadline = time.time() + rng.uniform(0.0, 1.0) * epoch_seconds
            time.sleep(0.002)
        if proc.poll() is not None:
            assert proc.returncode == 0
            break  # finished before the kill landed
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = checkpoint.load(killed / "last.pt")["epoch"] if (killed / "last.pt").exists() \
            else 0
        kills.append(("save" if during_save else "random", saved))
    if not (killed / "summary.json").exists():
        resume = ["--resume"] if runfolder.saved_checkpoints(killed) else []
        final = subprocess.run([sys.executable, "-m", "sj_distill", "recipe", *args, "--out",
                                str(killed), *resume], env=ENV, capture_output=True,
                               text=True, timeout=600)
        assert final.returncode == 0, final.stderr[-2000:]
    print("kills (where, epochs saved):", kills)
    assert len(kills) >= 6 and sum(where == "save" for where, _ in kills) >= 3
    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert a["weight_digest_per_rank"] == b["weight_digest_per_rank"]
    assert (a["top1"], a["top5"], a["epochs"]) == (b["top1"], b["top5"], b["epochs"])
    assert _metrics_rows(straight) == _metrics_rows(killed)
    assert [row["epoch"] for row in _metrics_rows(killed)] == [str(e) for e in range(1, 9)]
    assert not list(killed.glob(".*.tmp")) and not (killed / runfolder.LOCK_NAME).exists()


# --- 4b. a lower bound of the training memory against the device's ----------------------------

class _Probe(nn.Module):
    """``[T,B,1,S,S]`` -> conv(2 channels) -> BatchNorm -> global mean -> linear(3)."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), \
            nn.Linear(2, 3)

    def forward(self, x):
        T, B = x.shape[:2]
        y = self.bn(self.conv(x.flatten(0, 1))).mean((2, 3))
        return self.fc(y).view(T, B, 3)


def test_kept_values_are_counted_by_hand():
    from sj_distill.engine.memory import kept_values_per_sample_step

    # conv 2x4x4 = 32, BatchNorm 32, linear 3
    assert kept_values_per_sample_step(_Probe(), 1, 4) == (67, 32)
    # above the probe size (224) the image is probed at 224 and scaled by the area (x4)
    assert kept_values_per_sample_step(_Probe(), 1, 448) == ((4 * 224 ** 2 + 3) * 4,
                                                             2 * 448 ** 2)


@pytest.mark.parametrize("method, amp, expected", [
    ("bptt", "none", 67 * 8 * 10 * 4),
    ("bptt", "bf16", 67 * 8 * 10 * 2),
    ("rate", "none", 2 * 32 * 8 * 10 * 4),       # the spike pass's whole-sequence tensors
])
def test_memory_lower_bound(method, amp, expected):
    from sj_distill.engine.memory import lower_bound_bytes

    recipe = {"data": {"batch_size": 16, "T": 10}, "train": {"method": method, "amp": amp}}
    assert lower_bound_bytes((67, 32), recipe, world_size=2) == expected


def test_a_run_that_cannot_fit_in_memory_is_one_line_before_the_folder(tmp_path, capsys,
                                                                       monkeypatch):
    from sj_distill.engine import memory

    monkeypatch.setattr(memory, "available_bytes", lambda device: 2**30)
    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, "data.T=1000", "data.batch_size=1000",
                       "--out", out)
    assert status == 2 and len(err) == 1, err
    assert re.fullmatch(
        r"sj-distill: error: data\.T=1000, data\.batch_size=1000, data\.img_size=16: training "
        r"\(bptt\) keeps at least (\d+\.\d) GiB per process \(\d+ values per sample and time "
        r"step in conv/linear/BatchNorm outputs\), and cpu has 1\.0 GiB free: lower "
        r"data\.batch_size or data\.T, or use train\.method=rate \(its graph does not grow "
        r"with T\)", err[0]), err[0]
    assert not out.exists()


def test_any_other_failed_write_is_one_line(tmp_path, capsys, monkeypatch):
    from pathlib import Path as RealPath

    def refuse(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(RealPath, "write_text", refuse)  # recipe.yaml, summary.json, ...
    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, *FAST, "train.epochs=1", "--out", out)
    assert status == 2 and len(_errors(err)) == 1, err
    assert err[-1] == (f"sj-distill: error: no space left on the disk while writing "
                       f"{out / 'recipe.yaml'}: free space there, then rerun (with --resume to "
                       "continue from the last saved epoch)")
