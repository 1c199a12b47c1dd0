"""Engine: recipe validation, checkpoints, exact resume after SIGKILL, torchrun DDP."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sj_distill import cli, config
from sj_distill.engine import checkpoint

TINY = Path(__file__).parent / "recipes" / "tiny.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _run(args, **kwargs):
    return subprocess.run([sys.executable, "-m", "sj_distill", *args], env=ENV,
                          capture_output=True, text=True, **kwargs)


def _final_row(run_dir: Path) -> dict:
    import csv

    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return {k: v for k, v in rows[-1].items() if k != "seconds"}


def test_unknown_recipe_lists_known_ones(capsys):
    assert cli.main(["recipe", "no-such-recipe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "unknown recipe 'no-such-recipe'" in err[0]
    for name in config.known_recipes():
        assert name in err[0]


def test_unknown_key_names_key_and_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("epochs: 3", "epochs: 3, epoch_count: 4"))
    with pytest.raises(config.RecipeError, match=r"bad\.yaml: unknown key 'train\.epoch_count'"):
        config.load_recipe(str(bad))


def test_wrong_type_and_bad_choice_name_the_key(tmp_path):
    with pytest.raises(config.RecipeError, match=r"'train\.epochs' must be int, got str 'three'"):
        config.load_recipe(str(TINY), ["train.epochs=three"])
    with pytest.raises(config.RecipeError, match=r"'train\.method' must be one of"):
        config.load_recipe(str(TINY), ["train.method=magic"])
    with pytest.raises(config.RecipeError, match=r"'train\.sync_bn' must be bool, got str"):
        config.load_recipe(str(TINY), ["train.sync_bn=sometimes"])
    with pytest.raises(config.RecipeError, match="missing required key 'student.model'"):
        config.validate({"name": "x", "data": {"name": "digits"}, "student": {}}, "x.yaml")


def test_overrides_are_typed_and_dotted():
    recipe = config.load_recipe(str(TINY), ["train.optimizer.lr=0.05", "train.amp=bf16",
                                            "student.neuron.reset=hard"])
    assert recipe["train"]["optimizer"]["lr"] == 0.05
    assert recipe["student"]["neuron"] == {"decay": 0.5, "v_threshold": 0.5, "reset": "hard"}
    assert recipe["train"]["scheduler"]["name"] == "cosine"  # default filled in


def test_unknown_loss_parameter_names_recipe_key():
    from sj_distill.engine.build import build_loss

    recipe = config.load_recipe(str(TINY), ["train.loss.params.smoothing=0.1"])
    with pytest.raises(config.RecipeError,
                       match=r"'train\.loss\.params\.smoothing' is not a parameter"):
        build_loss(recipe)


def test_checkpoint_is_atomic_and_damage_is_one_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic({"a": torch.arange(1000)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(checkpoint.CheckpointError, match="corrupt or truncated"):
        checkpoint.load(path)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.pt")


@pytest.mark.slow
def test_cli_reports_truncated_checkpoint_in_one_line(tmp_path):
    path = tmp_path / "student.pt"
    path.write_bytes(b"\x80\x02truncated")
    out = _run(["eval", str(path)])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("sj-distill: error: checkpoint") and "corrupt" in lines[-1]


def test_existing_run_is_not_overwritten_without_resume(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"x")
    from sj_distill.engine.trainer import run_recipe

    with pytest.raises(config.RecipeError, match="pass --resume"):
        run_recipe(config.load_recipe(str(TINY)), tmp_path)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    args = [str(TINY), "train.epochs=3", "train.max_batches=6"]
    ref = _run(["recipe", *args, "--out", str(straight)], timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    proc = subprocess.Popen([sys.executable, "-m", "sj_distill", "recipe", *args, "--out",
                             str(killed)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (killed / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # into the second epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = checkpoint.load(killed / "last.pt")["epoch"]
    assert 1 <= done < 3, "the kill should land before the last epoch"
    resumed = _run(["recipe", *args, "--out", str(killed), "--resume"], timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {killed / 'last.pt'} after epoch {done}" in resumed.stderr

    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert (a["top1"], a["top5"], a["epochs"]) == (b["top1"], b["top5"], b["epochs"])
    assert a["weight_digest_per_rank"] == b["weight_digest_per_rank"]
    assert _final_row(straight) == _final_row(killed)


def _two_process_run(args, out_dir: Path) -> dict:
    """``sj-distill recipe *args`` under torchrun with two gloo processes; asserts that it
    succeeds and that both ranks end with the same weights; returns ``summary.json``."""
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "sj_distill", "recipe", *args, "--out", str(out_dir)],
        env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((out_dir / "summary.json").read_text())
    digests = summary["weight_digest_per_rank"]
    assert summary["world_size"] == 2 and len(digests) == 2 and digests[0] == digests[1]
    return summary


@pytest.mark.slow
def test_torchrun_two_processes_sync_bn_rate_bp_identical_weights_then_resume_refused(tmp_path):
    """Two gloo processes, rate-BP with synchronised BatchNorm: both ranks end with the same
    weights; resuming that run in one process is refused with the reason."""
    args = [str(TINY), "train.epochs=1", "train.method=rate", "train.sync_bn=true"]
    summary = _two_process_run(args, tmp_path)
    assert summary["top1"] is not None
    assert checkpoint.load(tmp_path / "last.pt")["world_size"] == 2

    resumed = _run(["recipe", *args[:1], "train.epochs=2", *args[2:], "--out", str(tmp_path),
                    "--resume"], timeout=240)
    assert resumed.returncode != 0
    assert "was written by a run of 2 process(es), this run has 1" in resumed.stderr


def test_teacher_stage_then_brd_with_rate_bp(tmp_path):
    from sj_distill.engine.trainer import run_recipe

    recipe = config.load_recipe(str(Path(__file__).parent / "recipes" / "tiny-brd.yaml"))
    summary = run_recipe(recipe, tmp_path)
    assert summary["teacher_top1"] is not None and summary["loss"] == "brd"
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"train_loss_hybrid_ce", "train_loss_hybrid_kd", "train_loss_kd"} <= set(header)
    assert [r.split(",")[0] for r in rows[1:]] == ["teacher", "student"]
    saved = checkpoint.load(tmp_path / "last.pt")
    assert set(saved["modules"]) == {"student", "adapters"}
    assert (tmp_path / "teacher.pt").is_file()
    with pytest.raises(config.RecipeError, match="pass --resume"):
        run_recipe(recipe, tmp_path)


def test_tser_with_rate_bp_is_refused():
    from sj_distill.engine.build import build_student, student_objective

    recipe = config.load_recipe(str(TINY), ["train.method=rate", "train.loss.name=tser"])
    with pytest.raises(config.RecipeError, match="needs per-step logits"):
        student_objective(recipe, build_student(recipe, 10, 1), teacher=object())


@pytest.mark.slow
def test_torchrun_brd_with_hybrids_weighted_zero_finishes_with_identical_weights(tmp_path):
    """BRD under DDP (two gloo processes) with the hybrid terms switched off by zero weights:
    the adapters still take part in every backward, so DDP does not wait for gradients that
    never come (no hang, no unused-parameter error), and the ranks agree."""
    args = [str(Path(__file__).parent / "recipes" / "tiny-brd.yaml"), "train.epochs=1",
            "teacher.train.epochs=1", "train.loss.params.hybrid_ce_weight=0.0",
            "train.loss.params.hybrid_kd_weight=0.0"]
    _two_process_run(args, tmp_path)
