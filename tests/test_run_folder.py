"""A researcher's first hour (issue 24, items 3, 4, 5 and 9): out-folder problems are one line
given before torch is imported, failed runs leave no half-written folder, errors that need no
compute come before any model is built, and the small ones (``list PATTERN``, YAML line and
column, the student's own CE, the eval progress bar, the resume command, "expected None")."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sj_distill import cli

RECIPES = Path(__file__).parent / "recipes"
TINY = RECIPES / "tiny.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
FAST = ["train.max_batches=1", "data.eval_batch_size=360"]

#: Runs ``sj-distill ARGV`` in a fresh interpreter and reports which heavy modules it imported.
PROBE = """
import sys
from sj_distill import cli
status = cli.main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "spikingjelly", "timm") if m in sys.modules)
print("status", status, "imported", ",".join(heavy) or "-")
"""


def _probe(*argv):
    """``(status, heavy modules imported, stderr lines)`` of ``sj-distill ARGV``."""
    out = subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], env=ENV,
                         capture_output=True, text=True, timeout=300)
    status, imported = out.stdout.split()[1], out.stdout.split()[3]
    return int(status), imported, out.stderr.strip().splitlines()


def _cli(capsys, *args):
    status = cli.main([str(a) for a in args])
    return status, capsys.readouterr().err.strip().splitlines()


# --- item 3: out-folder problems, one line before any compute ---------------------------------

def test_out_naming_a_file_is_one_line_before_torch(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    status, imported, err = _probe("recipe", TINY, "--out", target)
    assert (status, imported) == (2, "-")
    assert err == [f"sj-distill: error: --out {target} is a file, not a folder: choose another "
                   "--out"]


def test_out_under_a_file_is_one_line(tmp_path):
    target = tmp_path / "a-file"
    target.write_text("x")
    status, imported, err = _probe("recipe", TINY, "--out", target / "run")
    assert (status, imported) == (2, "-")
    assert err == [f"sj-distill: error: --out {target / 'run'}: {target} is a file, not a "
                   "folder: choose another --out"]


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no one may write to: a read-only tmpfs when running as root (root ignores
    permission bits), else a folder without write permission."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1M", "tmpfs",
                                  str(folder)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip("root, and cannot mount a read-only tmpfs")
        yield folder, "is on a read-only file system"
        subprocess.run(["umount", "-l", str(folder)], check=False)
    else:
        folder.chmod(0o555)
        yield folder, "cannot be written (Permission denied)"
        folder.chmod(0o755)


def test_read_only_out_is_one_line_before_torch(read_only_folder):
    folder, reason = read_only_folder
    for out, where in ((folder, f"{folder}"), (folder / "run", f"{folder / 'run'} (in {folder})")):
        status, imported, err = _probe("recipe", TINY, "--out", out)
        assert (status, imported) == (2, "-")
        assert err == [f"sj-distill: error: --out {where}: the folder {reason}; choose another "
                       "--out or fix its permissions"]


def test_immutable_out_is_one_line(tmp_path):
    folder = tmp_path / "frozen"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i needs root and a file system that supports it")
    try:
        status, imported, err = _probe("recipe", TINY, "--out", folder)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    assert (status, imported) == (2, "-")
    assert err == [f"sj-distill: error: --out {folder}: the folder cannot be written (Operation "
                   "not permitted); choose another --out or fix its permissions"]


def test_eval_out_read_only_is_one_line_before_torch(read_only_folder, tmp_path):
    folder, reason = read_only_folder
    status, imported, err = _probe("eval", tmp_path / "student.pt", "--out", folder)
    assert (status, imported) == (2, "-")
    assert err == [f"sj-distill: error: --out {folder}: the folder {reason}; choose another "
                   "--out or fix its permissions"]


# --- item 4: no half-written run folders ------------------------------------------------------

@pytest.mark.parametrize("recipe, options, message", [
    ("cifar10dvs", [], "CIFAR10-DVS: no data folder given"),
    ("ratebp-cifar10", ["--data-dir", "/nonexistent"], "CIFAR-10: folder /nonexistent does not "
                                                       "exist"),
    ("ratebp-imagenet", ["--data-dir", RECIPES], f"ImageNet: {RECIPES / 'train'} does not exist"),
])
def test_missing_data_is_one_line_before_torch_and_leaves_no_folder(recipe, options, message,
                                                                    tmp_path):
    out = tmp_path / "run"
    status, imported, err = _probe("recipe", recipe, "--out", out, *options)
    assert (status, imported) == (2, "-")
    assert len(err) == 1 and err[0].startswith(f"sj-distill: error: {message}"), err
    assert not out.exists()


def test_ctrl_c_before_the_first_epoch_leaves_nothing(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sj_distill", "recipe", str(TINY), "train.max_batches=null",
         "--out", str(out)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while not (out / "train.log").exists() and time.time() < deadline:
            time.sleep(0.01)
        assert not (out / "last.pt").exists()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].endswith("nothing was saved yet: run again without "
                                                    "--resume")
    assert not out.exists()


def test_an_error_in_an_existing_folder_is_written_to_its_train_log(tmp_path, capsys):
    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, *FAST, "train.epochs=1", "--out", out)
    assert status == 0, err
    data = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(data[: len(data) // 2])
    status, err = _cli(capsys, "recipe", TINY, *FAST, "train.epochs=2", "--out", out, "--resume")
    assert status == 2 and "is corrupt or truncated" in err[-1]
    assert (out / "train.log").read_text().splitlines()[-1].endswith(err[-1])


# --- item 5: errors that need no compute come before torch ------------------------------------

def test_flag_and_folder_errors_come_before_torch_is_imported(tmp_path):
    status, imported, err = _probe("recipe", TINY, "--out", tmp_path, "--resume", "--restart")
    assert (status, imported) == (2, "-") and "pass one" in err[0]
    (tmp_path / "last.pt").write_bytes(b"x")
    status, imported, err = _probe("recipe", TINY, "--out", tmp_path)
    assert (status, imported) == (2, "-") and "already holds a run (last.pt)" in err[0]
    status, imported, err = _probe("recipe", TINY, "data.batch_size=0", "--out", tmp_path / "x")
    assert (status, imported) == (2, "-") and "'data.batch_size' must be >= 1" in err[0]


# --- item 9: small ones -----------------------------------------------------------------------

def test_list_pattern_filters_recipes_and_models(capsys):
    assert cli.main(["list", "digits-*"]) == 0
    out = capsys.readouterr().out
    recipes = [line.split()[0] for line in out.split("models")[0].splitlines()[2:]
               if line.startswith("    ")]
    assert recipes == ["digits-dvs", "digits-staa", "digits-tser"]
    assert "models: none match 'digits-*'" in out
    assert cli.main(["list", "nothing-matches-this"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "recipes: none match 'nothing-matches-this'"


def test_yaml_syntax_error_gives_line_and_column(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\ndata: {name: digits\nstudent: {model: x}\n")
    status, err = _cli(capsys, "recipe", path)
    assert status == 2 and err == [f"sj-distill: error: {path}: not valid YAML at line 3, "
                                   "column 8: expected ',' or '}', but got ':'"]


def test_epoch_line_reports_the_students_own_ce(tmp_path, capsys):
    status, err = _cli(capsys, "recipe", TINY, *FAST, "train.epochs=1", "--out", tmp_path / "r")
    assert status == 0, err
    line = next(line for line in err if "student epoch 1:" in line)
    assert " (student CE " in line
    import csv

    row = next(csv.DictReader((tmp_path / "r" / "metrics.csv").open()))
    # plain CE training: the loss is the student's CE
    assert float(row["train_ce"]) == pytest.approx(float(row["train_loss"]), rel=1e-6)


def test_brd_epoch_line_gives_the_students_ce_beside_the_total(tmp_path, capsys):
    status, err = _cli(capsys, "recipe", RECIPES / "tiny-brd.yaml", "--out", tmp_path / "r")
    assert status == 0, err
    import csv
    import re

    line = next(line for line in err if "student epoch 1:" in line)
    total, ce = map(float, re.search(r"train loss (\S+) \(student CE (\S+)\)", line).groups())
    row = next(r for r in csv.DictReader((tmp_path / "r" / "metrics.csv").open())
               if r["stage"] == "student")
    # BRD's total adds KD and hybrid terms to the student's CE
    assert total > ce and ce == pytest.approx(float(row["train_ce"]), abs=1e-4)
    assert float(row["train_loss_ce"]) == pytest.approx(float(row["train_ce"]), rel=1e-5)
    assert "teacher epoch 1:" in "".join(err) and "(teacher CE " in "".join(err)


def test_student_ce_differs_from_a_distillation_total():
    import torch

    from sj_distill.engine.metrics import Meter

    meter = Meter()
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    target = torch.tensor([0, 0])
    meter.update(torch.tensor(274.0), logits, target)
    result = meter.result()
    expected_ce = float(torch.nn.functional.cross_entropy(logits, target))
    assert result["loss"] == 274.0 and result["ce"] == pytest.approx(expected_ce)


def test_eval_progress_bar_has_a_total(monkeypatch):
    import itertools

    import torch

    from sj_distill.engine import loop

    totals = []

    class Recorder:
        def __init__(self, iterable, total=None, **kwargs):
            totals.append(total)
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

    monkeypatch.setattr(loop, "tqdm", Recorder)
    model = torch.nn.Linear(3, 2)
    batches = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))] * 5
    loop.evaluate(model, batches, lambda x: x, torch.device("cpu"))
    loop.evaluate(model, itertools.islice(batches, 2), lambda x: x, torch.device("cpu"), total=2)
    assert totals == [5, 2]


def test_eval_command_gives_its_bar_a_total(tmp_path, capsys, monkeypatch):
    from sj_distill.engine import loop

    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, *FAST, "train.epochs=1", "--out", out)
    assert status == 0, err
    totals = []
    real = loop.evaluate

    def spy(*args, **kwargs):
        totals.append(kwargs.get("total"))
        return real(*args, **kwargs)

    monkeypatch.setattr("sj_distill.engine.evaluation.evaluate", spy)
    assert cli.main(["eval", str(out), "--max-batches", "3", "--batch-size", "100",
                     "--out", str(tmp_path / "e")]) == 0
    assert totals == [3]


def test_a_recipe_without_an_expected_value_does_not_say_none(tmp_path, capsys):
    status, err = _cli(capsys, "recipe", TINY, *FAST, "train.epochs=1", "--out", tmp_path / "r")
    assert status == 0
    done = next(line for line in err if " done: " in line)
    assert "None" not in done and "no expected value in the recipe" in done


def test_an_error_before_the_run_starts_is_appended_to_an_existing_train_log(tmp_path, capsys):
    out = tmp_path / "run"
    status, err = _cli(capsys, "recipe", TINY, *FAST, "train.epochs=1", "--out", out)
    assert status == 0, err
    status, err = _cli(capsys, "recipe", TINY, *FAST, "--out", out)  # no --resume: refused
    assert status == 2 and "already holds a run" in err[-1]
    last = (out / "train.log").read_text().splitlines()[-1]
    assert last.endswith(err[-1]) and last != err[-1]  # with its time stamp
