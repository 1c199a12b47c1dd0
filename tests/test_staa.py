"""STAA: block shapes, switches, step-attention gates, TSRD, adaptive LIF dynamics, patching of
project backbones and SpikingJelly zoo models, overhead counts, rate-BP refusal."""
import copy

import pytest
import torch
from torch import nn
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.model import sew_resnet, spiking_resnet

from sj_distill import models, sj, staa, zoo

ALL_OFF = dict(pe=False, gc=False, alif=False, sa=False, tsrd=False)


def _small_backbone():
    return models.create_model("cifar_resnet20", num_classes=5, width=8, in_chans=2)


def _zoo_student(builder, **kwargs):
    model = builder(spiking_neuron=sj.neuron_factory(step_mode="s"), **kwargs)
    return zoo.cifar_student(model, num_classes=5, in_chans=2)


def _spikes(t, b=2, c=8, h=5, w=5, p=0.3):
    return (torch.rand(t, b, c, h, w) < p).float()


@pytest.mark.parametrize("t", [1, 2, 4])
def test_block_and_patched_model_shapes(t):
    block = staa.STAABlock(8, time_steps=4)
    x = _spikes(t)
    assert block(x).shape == x.shape
    assert block.last_input == (t, 8, 5, 5)
    model = staa.patch(_small_backbone(), time_steps=4)
    assert model(torch.rand(t, 3, 2, 8, 8)).shape == (t, 3, 5)


def test_eval_is_deterministic_and_ignores_beta():
    low = staa.STAABlock(8, beta=0.0)
    high = staa.STAABlock(8, beta=0.9)
    high.load_state_dict(low.state_dict())
    low.eval()
    high.eval()
    x = _spikes(4)
    first = low(x)
    functional.reset_net(low)
    assert torch.equal(first, low(x))
    assert torch.equal(first, high(x))
    high.train()
    functional.reset_net(high)
    assert not torch.equal(first, high(x))


def test_tsrd_skips_whole_steps_with_probability_beta_from_torch_rng():
    drop = staa.TimeStepRandomDropout(beta=0.3).train()
    gates = torch.full((4, 2000, 1, 1, 1), 0.25)
    torch.manual_seed(3)
    out = drop(gates)
    torch.manual_seed(3)
    assert torch.equal(out, drop(gates))
    assert set(out.unique().tolist()) == {0.25, 1.0}
    assert (out == 1.0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.equal(drop.eval()(gates), gates)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        staa.TimeStepRandomDropout(1.0)


def test_every_part_off_gives_exactly_the_unpatched_outputs():
    x = torch.rand(3, 2, 2, 8, 8)
    for base in (_small_backbone(), _zoo_student(spiking_resnet.spiking_resnet18)):
        base.eval()
        patched = staa.patch(copy.deepcopy(base), **ALL_OFF)
        assert len(staa.staa_blocks(patched)) == len(staa.stage_names(base))
        expected = base(x)
        functional.reset_net(base)
        assert torch.equal(patched(x), expected)


def test_step_attention_gates_lie_in_unit_interval_and_differ_over_time():
    attn = staa.StepAttention(8, reduction=4)
    x = _spikes(4, b=3)
    gates = attn.gates(x)
    assert gates.shape == (4, 3, 1, 1, 1)
    assert ((gates > 0) & (gates < 1)).all()
    assert (gates.squeeze().std(dim=0) > 1e-4).all()
    assert torch.allclose(attn(x), x * gates)


def test_step_attention_mixes_time_steps():
    attn = staa.StepAttention(8, kernel=3)
    x = _spikes(4)
    y = x.clone()
    y[3] = 1.0 - y[3]
    assert not torch.equal(attn.gates(x)[2], attn.gates(y)[2])
    assert torch.equal(attn.gates(x)[0], attn.gates(y)[0])


def test_gc_block_matches_an_independent_loop_formula():
    gc = staa.GCBlock(6, reduction=2)
    with torch.no_grad():
        gc.norm.weight.uniform_(0.5, 1.5)
        gc.norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 2, 6, 3, 3)
    out = gc(x)
    for b in range(2):
        positions = x[:, b].permute(0, 2, 3, 1).reshape(-1, 6)
        weights = torch.softmax(positions @ gc.key.weight.view(6), dim=0)
        context = (weights[:, None] * positions).sum(0)
        pre = gc.down.weight.view(3, 6) @ context + gc.down.bias
        normed = (pre - pre.mean()) / torch.sqrt(pre.var(unbiased=False) + 1e-5)
        hidden = torch.relu(normed * gc.norm.weight.view(3) + gc.norm.bias.view(3))
        gate = torch.sigmoid(gc.up.weight.view(6, 3) @ hidden + gc.up.bias)
        assert torch.allclose(out[:, b], x[:, b] * (1 + gate[None, :, None, None]), atol=1e-6)


def test_gradients_reach_every_learnable_parameter():
    model = staa.patch(models.create_model("cifar_resnet20", num_classes=5, width=16, in_chans=2),
                       time_steps=4, beta=0.0)
    model(torch.rand(4, 4, 2, 8, 8)).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    block = staa.staa_blocks(model)["layer1.3"]
    assert [n for n, _ in block.named_parameters()] == [
        "pos_enc.weight", "gc.key.weight", "gc.down.weight", "gc.down.bias", "gc.norm.weight",
        "gc.norm.bias", "gc.up.weight", "gc.up.bias", "alif.m", "alif.n",
        "step_attn.conv1.weight", "step_attn.conv1.bias", "step_attn.norm.weight",
        "step_attn.norm.bias", "step_attn.conv2.weight", "step_attn.conv2.bias"]


def test_overhead_matches_a_hand_count_for_one_block():
    # C=16, r=4 (hidden 4), T=4, H=W=8, temporal kernel 3; P = T*H*W = 256 positions.
    # params: PE 4*16 = 64; GC key 16 + down 16*4+4 + LN 2*4 + up 4*16+16 = 172;
    #         ALIF 2*16 = 32; SA conv1 16*4*3+4 + LN 2*4 + conv2 4*3+1 = 217  -> 485
    # MACs:   GC 3*P*C + 2*C*4 + LN 3*4 = 12428; ALIF 2*P*C = 8192;
    #         SA 4*3*4*(16+1) + LN 3*4*4 + P*C = 4960  -> 25580
    model = nn.Sequential(nn.Sequential(nn.Identity()))
    staa.patch(model, where=["0"], time_steps=4, channels={"0": 16})
    cost = staa.overhead(model, torch.zeros(4, 1, 16, 8, 8))
    assert (cost["params"], cost["macs"]) == (485, 25580)
    assert cost["blocks"]["0.1"] == dict(channels=16, input=(4, 16, 8, 8), params=485, macs=25580)


def test_overhead_params_equal_the_parameter_growth_of_a_zoo_model():
    base = _zoo_student(sew_resnet.sew_resnet18, cnf="ADD")
    before = sum(p.numel() for p in base.parameters())
    staa.patch(base, time_steps=2)
    cost = staa.overhead(base, torch.rand(2, 1, 2, 8, 8))
    assert cost["params"] == sum(p.numel() for p in base.parameters()) - before
    assert [r["channels"] for r in cost["blocks"].values()] == [64, 128, 256, 512]
    assert [r["input"][2] for r in cost["blocks"].values()] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match="no STAA blocks"):
        staa.overhead(_small_backbone())


@pytest.mark.parametrize("builder,kwargs", [(spiking_resnet.spiking_resnet18, {}),
                                            (sew_resnet.sew_resnet18, {"cnf": "ADD"})],
                         ids=["spiking_resnet18", "sew_resnet18"])
def test_patch_zoo_models_keeps_parameter_names(builder, kwargs):
    model = _zoo_student(builder, **kwargs)
    old_state = copy.deepcopy(model.state_dict())
    staa.patch(model, time_steps=2)
    assert list(staa.staa_blocks(model)) == ["layer1.2", "layer2.2", "layer3.2", "layer4.2"]
    missing, unexpected = model.load_state_dict(old_state, strict=False)
    assert unexpected == [] and all(".2." in k for k in missing)
    out = model(torch.rand(2, 2, 2, 8, 8))
    assert out.shape == (2, 2, 5)


def test_patch_after_chosen_blocks_and_clear_errors():
    model = staa.patch(_small_backbone(), where=["layer2.1", "layer3"], time_steps=2)
    assert isinstance(model.layer2[1], staa.AfterModule)
    assert list(staa.staa_blocks(model)) == ["layer2.1.staa", "layer3.3"]
    assert model.layer2[1].staa.channels == 16
    assert model(torch.rand(2, 1, 2, 8, 8)).shape == (2, 1, 5)
    with pytest.raises(ValueError, match="'layer3' is already followed by a STAA block"):
        staa.patch(model, where=["layer3"])
    with pytest.raises(ValueError, match="where must be 'stages' or a list"):
        staa.patch(_small_backbone(), where="layer1")
    with pytest.raises(KeyError, match=r"no module named \['layer9'\]"):
        staa.patch(_small_backbone(), where=["layer9"])
    with pytest.raises(TypeError, match="pass where=\\[module names\\]"):
        staa.patch(nn.Sequential(nn.Conv2d(1, 1, 1)))
    with pytest.raises(ValueError, match="built for 2; build STAA with time_steps >= 4"):
        model(torch.rand(4, 1, 2, 8, 8))
    with pytest.raises(ValueError, match="needs sa=True"):
        staa.STAABlock(8, sa=False, tsrd=True)
    with pytest.raises(ValueError, match=r"expects \[T, B, 8, H, W\]"):
        staa.STAABlock(8)(torch.rand(2, 1, 7, 3, 3))


def test_adaptive_lif_follows_a_hand_computed_trace():
    lif = staa.AdaptiveLIF(2)
    with torch.no_grad():
        lif.m.copy_(torch.tensor([0.5, 0.9]))
        lif.n.copy_(torch.tensor([2.0, 0.5]))
    x = torch.tensor([[0.3, 1.0], [0.4, 1.0], [0.0, 1.0], [0.6, 1.0]]).view(4, 1, 2)
    # channel 0: V = 0.6, 1.1 (spike, H 0.1), 0.05, 1.225 (spike, H 0.225)
    # channel 1: V = 0.5, 0.95, 1.355 (spike, H 0.355), 0.8195
    spikes = lif(x)
    assert spikes.view(4, 2).tolist() == [[0, 0], [1, 0], [0, 1], [1, 0]]
    assert torch.allclose(lif.v.view(2), torch.tensor([0.225, 0.8195]), atol=1e-6)
    functional.reset_net(lif)
    single = staa.AdaptiveLIF(2, step_mode="s")
    single.load_state_dict(lif.state_dict())
    assert torch.equal(torch.stack([single(x[t]) for t in range(4)]), lif(x))


def test_adaptive_lif_at_init_is_the_project_default_lif():
    x = torch.rand(6, 3, 4, 2, 2) * 1.5
    reference = sj.make_neuron("lif", decay=0.2, backend="torch")
    assert torch.equal(staa.AdaptiveLIF(4)(x), reference(x))


def test_adaptive_lif_membrane_gradient_matches_finite_differences():
    lif = staa.AdaptiveLIF(3).double()
    x = torch.rand(5, 2, 3, dtype=torch.float64) * 1.2
    lif(x)
    lif.v.sum().backward()
    grads = (lif.m.grad.clone(), lif.n.grad.clone())
    eps = 1e-6
    for p, g in zip((lif.m, lif.n), grads):
        for c in range(3):
            vals = []
            for sign in (1, -1):
                with torch.no_grad():
                    p[c] += sign * eps
                    functional.reset_net(lif)
                    lif(x)
                    vals.append(lif.v.sum().item())
                    p[c] -= sign * eps
            assert g[c].item() == pytest.approx((vals[0] - vals[1]) / (2 * eps), rel=1e-5, abs=1e-8)
    with pytest.raises(ValueError, match="channels=5"):
        staa.AdaptiveLIF(3)(torch.rand(2, 1, 5))


def test_registered_staa_backbones():
    assert models.list_models("staa_*") == ["staa_resnet19", "staa_resnet34", "staa_vggsnn"]
    expected = {"staa_resnet19": [128, 256, 512], "staa_resnet34": [64, 128, 256, 512],
                "staa_vggsnn": [128, 256, 512, 512]}
    for name, chans in expected.items():
        model = models.create_model(name, time_steps=2, reduction=8, beta=0.2)
        blocks = staa.staa_blocks(model).values()
        assert [b.channels for b in blocks] == chans
        assert all(b.tsrd.beta == 0.2 and b.gc.hidden == b.channels // 8 for b in blocks)
    model = models.create_model("staa_resnet19", num_classes=4, time_steps=2, sa=False,
                                tsrd=False, staa_neuron=dict(init_m=0.5))
    assert all(b.step_attn is None and b.alif.m[0].item() == 0.5
               for b in staa.staa_blocks(model).values())
    assert model(torch.rand(2, 1, 3, 8, 8)).shape == (2, 1, 4)


def test_time_mixing_modules_refuse_rate_bp():
    for cls in (staa.STAABlock, staa.StepAttention, staa.GCBlock, staa.TemporalPositionEncoding,
                staa.TimeStepRandomDropout, staa.AdaptiveLIF):
        assert cls.supports_rate_bp is False
    rate = pytest.importorskip("sj_distill.rate")
    model = staa.patch(_small_backbone(), time_steps=2)
    with pytest.raises(Exception, match="(?i)STAA|StepAttention|GCBlock|supports_rate_bp"):
        rate.enable(model)
