"""The command line around a run: Ctrl-C / SIGTERM, --resume / --restart, damaged checkpoints,
``eval`` on a run folder, overrides anywhere, the run folder in ``table`` (issue 14, items 2-3)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sj_distill import cli
from sj_distill.engine import checkpoint

RECIPES = Path(__file__).parent / "recipes"
TINY, TINY_BRD = RECIPES / "tiny.yaml", RECIPES / "tiny-brd.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
INTERRUPTED = re.compile(r"^sj-distill: interrupted in student epoch (\d+); the last finished "
                         r"epoch \((\d+)\) is saved in (.+last\.pt): resume with: (.+)$")


def _cli(capsys, *args):
    """``(exit status, stderr lines)`` of ``sj-distill ARGS`` run in this process."""
    status = cli.main([str(a) for a in args])
    return status, capsys.readouterr().err.strip().splitlines()


def _errors(lines):
    return [line for line in lines if line.startswith("sj-distill:")]


@pytest.mark.parametrize("sig", [
    signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_signal_stops_the_run_with_one_line_and_an_intact_checkpoint(sig, tmp_path):
    out = tmp_path / "run"
    # A shell starting pytest in the background hands its children SIGINT ignored; a terminal's
    # Ctrl-C finds it at its default, which is what the run is started with here.
    proc = subprocess.Popen(
        [sys.executable, "-m", "sj_distill", "recipe", str(TINY), "train.epochs=1000",
         "train.max_batches=1", "data.eval_batch_size=360", "--out", str(out)],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while not (out / "last.pt").exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert (out / "last.pt").exists(), "no epoch finished"
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(_errors(lines)) == 1 and lines[-1] == _errors(lines)[0], lines[-5:]
    match = INTERRUPTED.match(lines[-1])
    assert match, lines[-1]
    epoch, finished, path = int(match[1]), int(match[2]), Path(match[3])
    assert path == out / "last.pt" and epoch == finished + 1
    assert match[4] == (f"sj-distill recipe {TINY} train.epochs=1000 train.max_batches=1 "
                        f"data.eval_batch_size=360 --out {out} --resume")
    saved = checkpoint.load(path)
    assert saved["epoch"] == finished >= 1 and len(saved["history"]) == finished


def test_interruption_inside_fit_names_stage_epoch_and_checkpoint(tmp_path):
    from sj_distill.engine import runfolder

    message = str(runfolder.RunInterrupted.in_epoch("teacher", 3, tmp_path / "teacher_last.pt", 2))
    assert message == (f"interrupted in teacher epoch 3; the last finished epoch (2) is saved in "
                       f"{tmp_path / 'teacher_last.pt'}: resume with --resume")
    message = str(runfolder.RunInterrupted.in_epoch("student", 1, tmp_path / "last.pt", 0))
    assert message.endswith("nothing was saved yet: run again without --resume")
    (tmp_path / "teacher.pt").write_bytes(b"x")
    message = str(runfolder.RunInterrupted.in_epoch("student", 1, tmp_path / "last.pt", 0))
    assert message.endswith("; teacher.pt is saved: resume with --resume")


def test_resume_without_a_run_says_so(tmp_path, capsys):
    out = tmp_path / "empty"
    status, err = _cli(capsys, "recipe", TINY, "--out", out, "--resume")
    assert status == 2 and len(err) == 1
    assert err[0] == (f"sj-distill: error: --resume: {out} holds no run to resume (none of "
                      "teacher.pt, teacher_last.pt, last.pt); run without --resume to start one")
    assert not out.exists()
    status, err = _cli(capsys, "recipe", TINY, "--out", out, "--resume", "--restart")
    assert status == 2 and "pass one" in err[0]


FAST = ["train.max_batches=1", "data.eval_batch_size=360"]


def test_damaged_teacher_pt_is_one_line_naming_the_file(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "teacher.pt").write_bytes(b"\x80\x02truncated")
    for resume in ([], ["--resume"]):
        status, err = _cli(capsys, "recipe", TINY_BRD, "--out", out, *resume)
        assert status == 2
        assert _errors(err) == [
            f"sj-distill: error: checkpoint {out / 'teacher.pt'} is corrupt or truncated "
            "(IndexError): rerun with --restart to start the run over (it deletes the run's "
            "checkpoints)"]


def test_the_advice_for_damaged_checkpoints_works_as_written(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "teacher.pt").write_bytes(b"\x80\x02truncated")
    brd = [TINY_BRD, *FAST, "--out", out]
    status, err = _cli(capsys, "recipe", *brd, "--restart")
    assert status == 0, err
    assert checkpoint.load(out / "teacher.pt")["teacher"]

    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    status, err = _cli(capsys, "recipe", *brd)
    assert status == 2 and "pass --resume to continue it, --restart to start it over" in err[-1]
    status, err = _cli(capsys, "recipe", *brd, "--resume")
    assert status == 2
    assert _errors(err) == [
        f"sj-distill: error: checkpoint {out / 'last.pt'} is corrupt or truncated "
        f"(RuntimeError): delete {out / 'last.pt'} and rerun with --resume to train the student "
        "again from the saved teacher, or rerun with --restart to start the whole run over"]
    (out / "last.pt").unlink()
    status, err = _cli(capsys, "recipe", *brd, "--resume")
    assert status == 0, err
    assert any("weights from this run's" in line for line in err)  # the teacher was kept
    assert checkpoint.load(out / "last.pt")["epoch"] == 1


def test_eval_accepts_a_run_folder_student_pt_and_last_pt(tmp_path, capsys):
    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, "train.epochs=1", *FAST, "--out", out)
    assert status == 0, err
    capsys.readouterr()
    results = {}
    for target in (out, out / "student.pt", out / "last.pt"):
        status, err = _cli(capsys, "eval", target, "--out", tmp_path / "eval")
        assert status == 0, err
        results[target.name] = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert results["run"]["checkpoint"] == str(out / "student.pt")
    # the final epoch's weights, once from student.pt and once from the epoch checkpoint
    assert results["student.pt"]["top1"] == results["last.pt"]["top1"]
    summary = json.loads((out / "summary.json").read_text())
    assert results["last.pt"]["top1"] == pytest.approx(summary["top1"])
    status, err = _cli(capsys, "eval", tmp_path)
    assert status == 2 and err == [f"sj-distill: error: run folder {tmp_path} holds neither "
                                   "student.pt nor last.pt: run `sj-distill recipe` into it first"]


@pytest.mark.parametrize("argv", [
    ["recipe", "digits", "--epochs", "1", "teacher.train.epochs=0", "train.amp=bf16"],
    ["recipe", "digits", "teacher.train.epochs=0", "--epochs", "1", "train.amp=bf16"],
    ["recipe", "digits", "teacher.train.epochs=0", "train.amp=bf16", "--epochs", "1"],
])
def test_overrides_before_or_after_options(argv):
    args = cli.parse_args(cli.build_parser(), argv)
    assert args.name == "digits" and args.epochs == 1
    assert sorted(args.overrides) == ["teacher.train.epochs=0", "train.amp=bf16"]


def test_override_after_an_option_reaches_the_recipe(tmp_path, capsys):
    status, err = _cli(capsys, "recipe", TINY, "--out", tmp_path / "run", "--epochs", "1",
                       "train.optimizer.lr=-1")
    assert status == 2 and err == ["sj-distill: error: train.optimizer: Invalid learning rate: -1"]


def test_unknown_option_is_still_refused(capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(cli.build_parser(), ["recipe", "digits", "--nope", "1"])
    assert "unrecognized arguments: --nope 1" in capsys.readouterr().err


def test_table_has_a_run_folder_column(tmp_path, capsys):
    for name, top1 in (("a", 91.0), ("b/deeper", 88.5)):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "summary.json").write_text(json.dumps(
            {"recipe": "digits", "top1": top1, "expected_top1": 90.0, "run": "moved/elsewhere"}))
    assert cli.main(["table", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| run | recipe |")
    assert lines[2].startswith(f"| {tmp_path / 'a'} | digits |") and "| 1.00 |" in lines[2]
    assert lines[3].startswith(f"| {tmp_path / 'b' / 'deeper'} | digits |")
    assert "| -1.50 |" in lines[3]
