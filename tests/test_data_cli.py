"""`sj-distill data check`, `sj-distill recipe cifar10dvs` on a synthetic CIFAR10-DVS folder
(and without one), and `sj-distill table --csv`."""
import csv
import json

from _synthetic_data import write_cifar10dvs
from sj_distill.cli import main

SMALL = ["data.options.samples_per_class=3", "data.options.test_per_class=1"]


def test_data_check_ok_and_missing(tmp_path, capsys):
    write_cifar10dvs(tmp_path, per_class=3)
    assert main(["data", "check", "cifar10dvs", "samples_per_class=3", "test_per_class=1",
                 "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "ok" and out[1].startswith("recordings per class: airplane 3")
    assert main(["data", "check", "cifar10", "--data-dir", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sj-distill: error: CIFAR-10: folder ")
    assert "cifar-10-python.tar.gz" in err[0] and "--data-dir" in err[0]


def test_recipe_cifar10dvs_without_data_is_one_error_line(tmp_path, capsys):
    assert main(["recipe", "cifar10dvs", "--out", str(tmp_path / "run")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1
    assert err[0].startswith("sj-distill: error: CIFAR10-DVS: no data folder given")
    assert "figshare" in err[0] and "--data-dir DIR" in err[0] and "data.root" in err[0]


def test_recipe_cifar10dvs_trains_on_a_synthetic_folder(tmp_path, capsys):
    """The headline recipe end to end on the real loading code; shrunk by overrides (a tiny
    timm teacher instead of VGG-11-BN, T=2, one batch) so that it takes seconds."""
    data = tmp_path / "CIFAR10DVS-root"
    write_cifar10dvs(data, per_class=3)
    run = tmp_path / "run"
    overrides = SMALL + ["data.T=2", "data.batch_size=4", "data.eval_batch_size=10",
                         "data.workers=0", "train.max_batches=1", "teacher.model=resnet10t",
                         "teacher.options={channels: [8, 16, 32, 64], stem_width: 8}",
                         "teacher.train.epochs=1"]
    assert main(["recipe", "cifar10dvs", *overrides, "--data-dir", str(data), "--out", str(run),
                 "--epochs", "1"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recipe"] == "cifar10dvs" and summary["epochs"] == 1
    assert (summary["method"], summary["loss"]) == ("rate", "brd")
    assert 0.0 <= summary["top1"] <= 100.0
    assert (data / "sj-distill-cache").is_dir()
    assert main(["table", str(tmp_path), "--csv", str(tmp_path / "table.csv")]) == 0
    out = capsys.readouterr().out
    assert "| cifar10dvs | rate | brd | 1 |" in out
    rows = list(csv.DictReader((tmp_path / "table.csv").open()))
    assert len(rows) == 1 and rows[0]["recipe"] == "cifar10dvs"
    assert float(rows[0]["top1"]) == summary["top1"] and rows[0]["expected_top1"] == ""
