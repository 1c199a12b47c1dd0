"""Block-wise replacement: pairing, adapters, gradient paths, frozen teacher, rate-BP, distill_step."""
import copy

import pytest
import torch
from torch import nn
from spikingjelly.activation_based import neuron
from spikingjelly.activation_based.model import spiking_resnet

from sj_distill import rate, sj, zoo
from sj_distill.distill import distill_step
from sj_distill.hybrid import Adapter, BlockReplacement
from sj_distill.losses import BRDLoss, KDLoss
from sj_distill.models import create_model

from _cached_teachers import teacher


def small_pair(**kwargs):
    """cifar_resnet20 (width 8) + timm resnet18 (widths 8..64): pairs layer1, layer2."""
    student = create_model("cifar_resnet20", 10, width=8)
    return BlockReplacement(student, teacher("resnet18", small=True), **kwargs)


def grads(module):
    return [p.grad for p in module.parameters()]


def reached(module):
    return any(g is not None and g.abs().sum() > 0 for g in grads(module))


def untouched(module):
    return all(g is None or g.abs().sum() == 0 for g in grads(module))


def zoo_resnet18():
    return zoo.cifar_student(spiking_resnet.spiking_resnet18(spiking_neuron=neuron.LIFNode), 10)


@pytest.mark.parametrize("make_student, teacher_name, pairs, size, batch", [
    (lambda: create_model("resnet18", 10), "resnet18",
     {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3"}, 8, 2),
    (lambda: create_model("resnet19", 10), "resnet34",
     {"layer1": "layer1", "layer2": "layer2"}, 8, 2),
    (zoo_resnet18, "resnet18", {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3"}, 8, 2),
    pytest.param(lambda: create_model("vgg11", 10), "vgg11_bn",
                 {"layer1": "features.3", "layer2": "features.7", "layer3": "features.14",
                  "layer4": "features.21"}, 32, 1, marks=pytest.mark.slow),
], ids=["resnet18+resnet18", "resnet19+resnet34", "zoo_spiking_resnet18+resnet18",
        "vgg11+vgg11_bn"])
def test_required_pairs_train_end_to_end(make_student, teacher_name, pairs, size, batch):
    student = make_student()
    hybrid = BlockReplacement(student, teacher(teacher_name))
    assert hybrid.pairs == pairs
    t_info = {f["module"]: f for f in hybrid.teacher.feature_info}
    for point, adapter in hybrid.adapters.items():
        assert adapter.conv.out_channels == t_info[pairs[point]]["num_chs"]
    hybrid.train()
    out = hybrid(torch.rand(2, batch, 3, size, size))
    assert out["student"].shape == (2, batch, 10) and out["teacher"].shape == (batch, 10)
    assert set(out["hybrids"]) == set(pairs)
    for point, (adapted, feature) in out["feature_pairs"].items():
        assert adapted.shape == feature.shape
    BRDLoss()(out["student"], out["teacher"], torch.tensor([0, 1])[:batch],
              hybrid_logits=out["hybrids"]).backward()
    first_conv = next(m for m in student.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in hybrid.teacher.parameters())


@pytest.mark.parametrize("use_rate", [False, True], ids=["bptt", "rate_bp"])
def test_each_hybrid_reaches_only_the_student_stages_before_its_point(use_rate):
    hybrid = small_pair()
    assert hybrid.pairs == {"layer1": "layer1", "layer2": "layer2"}
    if use_rate:
        rate.enable(hybrid.student)
    hybrid.train()
    s = hybrid.student
    for point, before, after in [("layer1", [s.conv1, s.layer1], [s.layer2, s.layer3, s.fc]),
                                 ("layer2", [s.conv1, s.layer1, s.layer2], [s.layer3, s.fc])]:
        hybrid.zero_grad(set_to_none=True)
        out = hybrid(torch.rand(2, 3, 3, 16, 16))
        assert out["student"].shape == ((3, 10) if use_rate else (2, 3, 10))
        out["hybrids"][point].pow(2).sum().backward()
        assert all(reached(m) for m in before), point
        assert all(untouched(m) for m in after), point
        assert reached(hybrid.adapters[point])
        assert all(p.grad is None for p in hybrid.teacher.parameters())
        sj.reset(hybrid.student)


def test_rate_features_equal_the_time_mean_of_bptt_spikes():
    bptt = small_pair()
    student = copy.deepcopy(bptt.student)
    rated = BlockReplacement(rate.enable(student), bptt.teacher)
    rated.adapters.load_state_dict(bptt.adapters.state_dict())
    spikes = {}
    bptt.student.layer1.register_forward_hook(lambda m, i, o: spikes.setdefault("layer1", o))
    x = torch.rand(4, 3, 3, 16, 16)
    bptt.train(), rated.train()
    out_b, out_r = bptt(x), rated(x)
    assert spikes["layer1"].dim() == 5
    torch.testing.assert_close(out_r["student"], out_b["student"].mean(0), atol=1e-5, rtol=1e-5)
    for point in ("layer1", "layer2"):
        torch.testing.assert_close(out_r["feature_pairs"][point][0],
                                   out_b["feature_pairs"][point][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out_b["feature_pairs"]["layer1"][0],
                               bptt.adapters["layer1"](spikes["layer1"].mean(0)))


def test_teacher_bn_statistics_and_weights_never_change():
    hybrid = small_pair()
    before = copy.deepcopy(hybrid.teacher.state_dict())
    opt = torch.optim.SGD(hybrid.trainable_parameters(), lr=0.5)
    hybrid.train()
    assert not hybrid.teacher.training and hybrid.student.training
    for _ in range(2):
        distill_step(hybrid, None, (torch.rand(2, 3, 16, 16), torch.tensor([0, 1])), BRDLoss(),
                     opt, time_steps=2)
    for key, value in hybrid.teacher.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert all(not p.requires_grad for p in hybrid.teacher.parameters())


def test_explicit_pairs_across_reductions_resize():
    student = create_model("cifar_resnet20", 10, width=8)
    vgg = teacher("vgg11_bn")
    with pytest.raises(ValueError, match="no teacher feature has reduction 1"):
        BlockReplacement(student, vgg, points=["layer1"])
    hybrid = BlockReplacement(student, vgg, points={"layer1": "features.3", "layer2": "features.14"})
    assert hybrid.adapters["layer2"].scale == pytest.approx(2 / 8)
    out = hybrid(torch.rand(2, 2, 3, 32, 32))
    assert out["feature_pairs"]["layer1"][0].shape == (2, 64, 16, 16)
    assert out["feature_pairs"]["layer2"][0].shape == (2, 256, 4, 4)


def test_adapter_resizes_both_ways_and_rejects_fractional_sizes():
    assert Adapter(4, 6, 1, 4)(torch.rand(2, 4, 8, 8)).shape == (2, 6, 2, 2)
    assert Adapter(4, 6, 4, 2)(torch.rand(2, 4, 3, 3)).shape == (2, 6, 6, 6)
    with pytest.raises(ValueError, match="cannot resize features"):
        Adapter(4, 6, 1, 4)(torch.rand(2, 4, 6, 6))


def test_bad_points_and_students_give_clear_errors():
    student = create_model("cifar_resnet20", 10, width=8)
    small = teacher("resnet18", small=True)
    with pytest.raises(ValueError, match=r"\['layer9'\] are not student stages"):
        BlockReplacement(student, small, points=["layer9"])
    with pytest.raises(ValueError, match=r"\['layer7'\] are not teacher features"):
        BlockReplacement(student, small, points={"layer1": "layer7"})
    with pytest.raises(TypeError, match="has no feature_info"):
        BlockReplacement(nn.Sequential(nn.Conv2d(3, 3, 1)), small)
    liar = create_model("cifar_resnet20", 10, width=8)
    liar.feature_info = [dict(f) for f in liar.feature_info]
    liar.feature_info[1]["num_chs"] = 12
    hybrid = BlockReplacement(liar, small, points=["layer1"])
    with pytest.raises(ValueError, match="gives 8 channels, its feature_info says 12"):
        hybrid(torch.rand(1, 2, 3, 16, 16))


def test_distill_step_resets_neurons_and_returns_losses():
    student = create_model("cifar_resnet20", 10, width=8)
    small = teacher("resnet18", small=True)
    loss_fn = KDLoss()
    out = distill_step(student, small, (torch.rand(2, 3, 16, 16), torch.tensor([3, 4])), loss_fn,
                       time_steps=2)
    assert out["loss"].requires_grad and out["student"].shape == (2, 10)
    assert out["student_steps"].shape == (2, 2, 10)
    torch.testing.assert_close(out["student"], out["student_steps"].mean(0))
    assert set(out["parts"]) == {"ce", "kl", "total"}
    neurons = [m for m in student.modules() if isinstance(m, neuron.BaseNode)]
    assert all(isinstance(n.v, float) for n in neurons)  # reset_net restores the float state
    weight = student.fc.weight.detach().clone()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    out = distill_step(student, small, (torch.rand(2, 3, 16, 16), torch.tensor([3, 4])), loss_fn,
                       opt, time_steps=2)
    assert not out["loss"].requires_grad and not torch.equal(student.fc.weight, weight)
    assert all(isinstance(n.v, float) for n in neurons)
    with pytest.raises(ValueError, match="time_steps=T"):
        distill_step(student, small, (torch.rand(2, 3, 16, 16), torch.tensor([3, 4])), loss_fn)
    with pytest.raises(ValueError, match="carries its own teacher"):
        distill_step(small_pair(), teacher("resnet18"), (torch.rand(2, 3, 16, 16),
                     torch.tensor([3, 4])), BRDLoss(), time_steps=2)


def test_distill_step_gives_time_mean_logits_under_both_trainings():
    """``student`` is [B, K] under BPTT and rate-based backprop alike (the same value on the
    same weights); ``student_steps`` [T, B, K] only where the steps exist."""
    small = teacher("resnet18", small=True)
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([1, 2, 3])
    torch.manual_seed(0)
    bptt = create_model("cifar_resnet20", 10, width=8)
    by_rate = create_model("cifar_resnet20", 10, width=8)
    by_rate.load_state_dict(bptt.state_dict())
    rate.enable(by_rate)
    outs = [distill_step(m, small, (x, y), KDLoss(), time_steps=2) for m in (bptt, by_rate)]
    assert outs[0]["student"].shape == outs[1]["student"].shape == (3, 10)
    torch.testing.assert_close(outs[0]["student"], outs[1]["student"])
    assert outs[0]["student_steps"].shape == (2, 3, 10) and outs[1]["student_steps"] is None


def _hybrid_only_student_grads(hybrid, x, y, objective=None):
    """Student gradients of a loss on the hybrids alone (CE + KD of every hybrid)."""
    loss_fn = BRDLoss(ce_weight=0.0, kd_weight=0.0)
    hybrid.train()
    if objective is None:
        out = hybrid(x)
        loss = loss_fn(out["student"], out["teacher"], y, hybrid_logits=out["hybrids"])
    else:
        loss = objective(hybrid, x, None, y, None)[0]
    loss.backward()
    sj.reset(hybrid.student)
    return [p.grad.clone() for p in hybrid.student.parameters() if p.grad is not None]


def test_hybrids_get_the_students_1_over_T_in_a_users_loop_and_in_the_engine():
    """Under rate-BP the SNN's gradient from the hybrids is scaled by 1/T like its output's,
    whether the hybrid is used directly or through the engine's objective."""
    from sj_distill import config
    from sj_distill.engine.build import student_objective
    from pathlib import Path

    T = 4
    torch.manual_seed(0)
    base = create_model("cifar_resnet20", 10, width=8)
    x, y = torch.rand(T, 2, 3, 16, 16), torch.tensor([1, 7])
    small = teacher("resnet18", small=True)

    def user_hybrid(scale):
        return BlockReplacement(rate.enable(copy.deepcopy(base), scale_grad_by_T=scale), small)

    scaled, unscaled = user_hybrid(True), user_hybrid(False)
    unscaled.adapters.load_state_dict(scaled.adapters.state_dict())
    g_scaled = _hybrid_only_student_grads(scaled, x, y)
    g_unscaled = _hybrid_only_student_grads(unscaled, x, y)

    recipe = config.load_recipe(str(Path(__file__).parent / "recipes" / "tiny.yaml"), [
        "train.method=rate", "train.loss.name=brd", f"data.T={T}",
        "train.loss.params.ce_weight=0.0", "train.loss.params.kd_weight=0.0"])
    engine_hybrid, objective, _ = student_objective(recipe, copy.deepcopy(base), small)
    engine_hybrid.adapters.load_state_dict(scaled.adapters.state_dict())
    g_engine = _hybrid_only_student_grads(engine_hybrid, x, y, objective)

    assert len(g_scaled) == len(list(base.parameters())) and len(g_engine) == len(g_scaled)
    atol = 1e-6 * max(g.abs().max() for g in g_scaled)  # float32 round-off
    for gs, gu, ge in zip(g_scaled, g_unscaled, g_engine):
        torch.testing.assert_close(gs, gu / T, rtol=1e-4, atol=atol)
        torch.testing.assert_close(ge, gs, rtol=1e-4, atol=atol)


def test_documented_brd_call_gives_the_full_loss():
    """docs/distill.md's own-loop call equals distill_step's total and holds the hybrid terms
    (called as the docs once showed it, the loss was plain KD: 2.303 instead of 4.605)."""
    torch.manual_seed(0)
    model = small_pair()
    loss_fn = BRDLoss()
    x, y = torch.rand(2, 2, 3, 16, 16), torch.tensor([1, 7])
    model.eval()  # same BatchNorm statistics for both calls
    with torch.no_grad():
        out = model(x)
        loss = loss_fn(out["student"], out["teacher"], y, hybrid_logits=out["hybrids"])
        sj.reset(model.student)
        step = distill_step(model, None, (x, y), loss_fn)
    parts = loss_fn.parts
    assert set(parts) == {"ce", "kd", "hybrid_ce", "hybrid_kd", "total"}
    assert loss.item() == pytest.approx(step["loss"].item(), rel=1e-6)
    assert loss.item() == pytest.approx(
        parts["ce"] + parts["kd"] + parts["hybrid_ce"] + parts["hybrid_kd"], rel=1e-6)
    assert parts["hybrid_ce"] > 0.1 and parts["hybrid_kd"] > 0  # the hybrids are really in


def test_brd_without_feature_info_points_to_measure_feature_info():
    student = create_model("cifar_resnet20", 10, width=8)
    del student.feature_info
    with pytest.raises(TypeError) as err:
        BlockReplacement(student, teacher("resnet18", small=True))
    assert str(err.value) == (
        "SpikingResNet has no feature_info, so BRD cannot find its stages: set "
        "student.feature_info = sj_distill.zoo.measure_feature_info(student, [stem, stage1, "
        "stage2, ...], in_chans) with the names of the modules that end the stem and each stage "
        "(a SpikingJelly zoo model: sj_distill.zoo.cifar_student does it)")


def test_brd_refuses_a_single_step_student():
    student = create_model("cifar_resnet20", 10, width=8)
    sj.set_step_mode(student, "s")
    with pytest.raises(ValueError, match=r"^BlockReplacement: the student is single-step; "):
        BlockReplacement(student, teacher("resnet18", small=True))


def test_help_of_block_replacement_is_its_own():
    """help() showed nn.Module's boilerplate for __init__ and forward."""
    import pydoc

    text = pydoc.render_doc(BlockReplacement, renderer=pydoc.plaintext)
    own = text[:text.index("Methods inherited from")]
    assert "zoo.measure_feature_info(" in own and "hybrid_logits=out[\"hybrids\"]" in own
    for boilerplate in ("Initialize internal Module state", "Should be overridden by all"):
        assert boilerplate not in own
