"""Every recipe mistake stops ``sj-distill recipe`` before the run folder is written or any
data is read: one error line naming the recipe key (issue 14, item 1; how fast is measured in
issue 24's notes, not asserted here)."""
from pathlib import Path

import pytest
from sj_distill import cli, models  # noqa: F401
from sj_distill.engine import trainer
from sj_distill.registry import DATASETS

RECIPES = Path(__file__).parent / "recipes"
TINY, TINY_BRD = RECIPES / "tiny.yaml", RECIPES / "tiny-brd.yaml"

#: (recipe, override, expected text of the error line), one per kind of mistake. tiny-brd
#: trains a teacher first: before validation, most of these surfaced only after it.
MISTAKES = [
    (TINY_BRD, "data.name=no-such-data",
     f"data.name: unknown dataset 'no-such-data'; known: {', '.join(DATASETS.names())}"),
    (TINY_BRD, "data.options.nope=1", "'data.options.nope' is not a parameter of dataset 'digits'"),
    (TINY_BRD, "data.options.T=3", "data.options.T: set data.T instead"),
    (TINY_BRD, "student.model=no_such_net", "student.model: unknown model 'no_such_net'"),
    (TINY_BRD, "student.neuron.nope=1",
     "student.neuron / student.options: make_neuron() got an unexpected keyword argument 'nope'"),
    (TINY, "student.staa.nope=1", "'student.staa.nope' is not a parameter of staa.patch"),
    (TINY_BRD, "teacher.model=no_such_timm_net",
     "teacher.model: unknown timm model 'no_such_timm_net'"),
    (TINY_BRD, "teacher.options.nope=1",
     "teacher.options: ResNet.__init__() got an unexpected keyword argument 'nope'"),
    (TINY_BRD, "teacher.train.lr=-1", "teacher.train: Invalid learning rate: -1"),
    (TINY_BRD, "teacher.checkpoint=/no/such/teacher.pth",
     "teacher.checkpoint: /no/such/teacher.pth does not exist"),
    (TINY_BRD, "teacher.train.epochs=0", "teacher.model is 'resnet10t' but there are no weights"),
    (TINY_BRD, "train.loss.name=no-such-loss", "train.loss.name: unknown loss 'no-such-loss'"),
    (TINY_BRD, "train.loss.params.temp=3",
     "'train.loss.params.temp' is not a parameter of loss 'brd' (parameters: ce_weight,"),
    (TINY_BRD, "train.loss.params.tau=-1",
     "train.loss.params: loss weights must be >= 0 and tau > 0"),
    (TINY, "train.loss.name=kd", "train.loss 'kd' needs a teacher: set teacher.model"),
    (TINY_BRD, "train.loss.name=tser", "train.loss 'tser' needs per-step logits"),
    (TINY_BRD, "train.brd.points=[layer9]",
     "train.brd: replacement points ['layer9'] are not student stages"),
    (TINY_BRD, "train.brd.params.nope=1",
     "'train.brd.params.nope' is not a parameter of BlockReplacement"),
    (TINY_BRD, "train.optimizer.lr=-1", "train.optimizer: Invalid learning rate: -1"),
    (TINY_BRD, "train.optimizer.name=no-such-opt",
     "train.optimizer: unknown optimizer 'no-such-opt'; known: adamw, sgd"),
    (TINY_BRD, "train.scheduler.name=no-such-schedule",
     "train.scheduler: unknown scheduler 'no-such-schedule'; known: constant, cosine"),
    (TINY_BRD, "train.scheduler.warmup_epochs=-1",
     "train.scheduler: warmup_epochs must be >= 0, got -1"),
    (TINY, "train.sync_bn_rate_pass=mean", "'train.sync_bn_rate_pass' must be 'global' (the "
     "global batch in both rate-BP passes) or 'local' (each rank's own statistics in the rate "
     "pass, as the public rate-BP code), got 'mean'"),
    (TINY, "train.max_pool=max", "'train.max_pool' must be 'rate' (max-pool the rate map, the "
     "rate-BP public code's rule) or 'spikes' (the time-mean of the pooled spikes), got 'max'"),
]


@pytest.fixture
def no_data(monkeypatch):
    """Fail the test if the engine opens the data set."""
    def refuse(*args, **kwargs):
        raise AssertionError("the data set was read before the recipe was validated")

    monkeypatch.setattr(trainer, "build_data", refuse)


@pytest.mark.parametrize("recipe, override, expected", MISTAKES,
                         ids=[m[1] for m in MISTAKES])
def test_mistake_is_one_line_before_any_write_or_read(recipe, override, expected, tmp_path,
                                                       capsys, no_data):
    out = tmp_path / "run"
    status = cli.main(["recipe", str(recipe), override, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1, err
    assert err[0].startswith("sj-distill: error: ")
    assert expected in err[0]
    assert not out.exists(), "the run folder was created before the mistake was reported"


def test_a_valid_recipe_passes_the_check(tmp_path):
    from sj_distill import config
    from sj_distill.engine.validate import check_recipe

    for recipe in (TINY, TINY_BRD):
        check_recipe(config.load_recipe(str(recipe)), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_dry_run_uses_the_datasets_own_channels(tmp_path):
    """A student that only takes 1 channel passes the pre-run check on grayscale data (the
    check used to build it with 3 channels and blame student.neuron / student.options)."""
    from sj_distill import config, registry
    from sj_distill.engine.validate import check_recipe, probe_channels

    def one_channel_net(num_classes, in_chans=1, **params):
        if in_chans != 1:
            raise ValueError(f"this net reads 1 channel, got {in_chans}")
        return models.create_model("csnn", num_classes, in_chans=1, width=4, **params)

    if "one_channel_net_for_validation" not in models.list_models():
        registry.register_student("one_channel_net_for_validation", one_channel_net)
    recipe = config.load_recipe("fmnist-bptt", ["student.model=one_channel_net_for_validation",
                                                "student.options={}"])
    assert probe_channels(recipe) == 1
    check_recipe(recipe, tmp_path)
    folder = config.load_recipe(str(TINY), ["data.name=imagefolder",
                                            "data.options={grayscale: true}"])
    assert probe_channels(folder) == 1
    folder["data"]["options"] = {}
    assert probe_channels(folder) == 3


def test_a_missing_teacher_of_a_teacher_recipe_says_how_to_make_it(tmp_path, capsys, no_data,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["recipe", "fmnist-kd", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == (
        "sj-distill: error: teacher.checkpoint: runs/fmnist-teacher/teacher.pt does not exist; "
        "make it with `sj-distill recipe fmnist-teacher`")
    assert cli.main(["recipe", "fmnist-kd", "teacher.checkpoint=t/fmnist-teacher/teacher.pt",
                     "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "make it with `sj-distill recipe fmnist-teacher --out t/fmnist-teacher`")


@pytest.mark.parametrize("rule", ["rate", "spikes", None])
def test_train_max_pool_reaches_rate_enable(rule):
    from sj_distill import config, rate
    from sj_distill.engine.build import build_student, student_objective
    from sj_distill.rate.passes import MODEL_STATE

    overrides = ["train.method=rate"] + ([f"train.max_pool={rule}"] if rule else [])
    recipe = config.load_recipe(str(TINY), overrides)
    student = build_student(recipe, 10, 1)
    student_objective(recipe, student, None)
    assert getattr(student, MODEL_STATE).max_pool == (rule or "rate")
    assert config.MAX_POOL_RULES == rate.MAX_POOL_RULES
