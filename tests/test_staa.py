"""STAA: the aggregator around a neuron (placement, order of parts, switches), step-attention
gates, TSRD, adaptive LIF dynamics and how it replaces a neuron, patching and unpatching of
project backbones and SpikingJelly zoo models, overhead counts, rate-BP refusal."""
import copy

import pytest
import torch
from torch import nn
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based.model import sew_resnet, spiking_resnet

from sj_distill import models, sj, staa, zoo

ALL_OFF = dict(pe=False, gc=False, alif=False, sa=False, tsrd=False)
ALIF_ONLY = dict(ALL_OFF, alif=True)


def _small_backbone(**neuron):
    return models.create_model("cifar_resnet20", num_classes=5, width=8, in_chans=2, **neuron)


def _zoo_student(builder, **kwargs):
    model = builder(spiking_neuron=sj.neuron_factory(step_mode="s"), **kwargs)
    return zoo.cifar_student(model, num_classes=5, in_chans=2)


def _spikes(t, b=2, c=8, h=5, w=5, p=0.3):
    return (torch.rand(t, b, c, h, w) < p).float()


def _wrap(c=8, hw=(5, 5), **kwargs):
    return staa.STAANeuron(sj.make_neuron("lif", decay=0.2), c, hw, **kwargs)


def _run(model, x):
    out = model(x)
    sj.reset(model)
    return out


@pytest.mark.parametrize("t", [1, 2, 4])
def test_wrapper_and_patched_model_shapes(t):
    wrapper = _wrap(time_steps=4)
    x = torch.randn(t, 2, 8, 5, 5)
    assert wrapper(x).shape == x.shape
    assert wrapper.last_input == (t, 8, 5, 5)
    model = staa.patch(_small_backbone(), (2, 8, 8), time_steps=4)
    assert model(torch.rand(t, 3, 2, 8, 8)).shape == (t, 3, 5)


def test_parts_act_in_the_papers_order_around_one_neuron():
    # PE and GC on the input current, the adaptive LIF fires once, step attention gates spikes.
    wrapper = _wrap(beta=0.0)
    with torch.no_grad():
        wrapper.neuron.m.uniform_(0.1, 0.9)
    x = torch.randn(4, 3, 8, 5, 5) * 2
    current = wrapper.gc(wrapper.pos_enc(x))
    reference_lif = staa.AdaptiveLIF(8)
    reference_lif.load_state_dict(wrapper.neuron.state_dict())
    spikes = reference_lif(current)
    out = wrapper(x)
    assert torch.equal(out, spikes * wrapper.step_attn.gates(spikes))
    assert 0 < spikes.mean() < 1
    assert [type(m).__name__ for m in wrapper.children()] == [
        "TemporalPositionEncoding", "GCBlock", "AdaptiveLIF", "StepAttention",
        "TimeStepRandomDropout"]
    assert wrapper.parts == dict(pe=True, gc=True, alif=True, sa=True, tsrd=True)


def test_eval_is_deterministic_and_ignores_beta():
    low, high = _wrap(beta=0.0), _wrap(beta=0.9)
    high.load_state_dict(low.state_dict())
    low.eval()
    high.eval()
    x = torch.randn(4, 2, 8, 5, 5) * 2
    first = _run(low, x)
    assert torch.equal(first, _run(low, x))
    assert torch.equal(first, _run(high, x))
    high.train()
    assert not torch.equal(first, _run(high, x))


def test_tsrd_per_sample_and_step_with_probability_beta_from_torch_rng():
    drop = staa.TimeStepRandomDropout(beta=0.3).train()
    gates = torch.full((4, 2000, 1, 1, 1), 0.25)
    torch.manual_seed(3)
    out = drop(gates)
    torch.manual_seed(3)
    assert torch.equal(out, drop(gates))
    assert set(out.unique().tolist()) == {0.25, 1.0}
    assert (out == 1.0).float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert torch.equal(drop.eval()(gates), gates)


def test_tsrd_per_forward_skips_all_gates_together():
    drop = staa.TimeStepRandomDropout(beta=0.3, unit="forward").train()
    gates = torch.full((4, 8, 1, 1, 1), 0.25)
    skipped = []
    for _ in range(2000):
        out = drop(gates)
        assert out.unique().numel() == 1
        skipped.append(out[0, 0].item() == 1.0)
    assert sum(skipped) / len(skipped) == pytest.approx(0.3, abs=0.03)
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        staa.TimeStepRandomDropout(1.0)
    with pytest.raises(ValueError, match="tsrd_unit must be one of"):
        staa.TimeStepRandomDropout(0.1, unit="batch")


@pytest.mark.parametrize("parts", [ALL_OFF, ALIF_ONLY], ids=["all_off", "alif_only"])
def test_neutral_parts_give_the_unpatched_outputs_and_gradients(parts):
    # The adaptive LIF starts at the replaced neuron's leak and gain and keeps its threshold,
    # reset, detach_reset and surrogate: a non-default neuron must give the same forward and
    # the same input gradient (atol: M = 1 - 1/tau is rounded differently from LIF's v/tau).
    # Train mode: SpikingJelly 0.0.0.0.14's LIF has no surrogate path in eval mode.
    neuron = dict(decay=0.5, v_threshold=0.7, reset="hard", v_reset=0.0, detach_reset=False,
                  surrogate_fn="rect", alpha=1.0)
    x = torch.rand(3, 2, 2, 6, 6) * 2
    for base, where in ((_small_backbone(**neuron), "all"),
                        (_zoo_student(spiking_resnet.spiking_resnet18), "stage_last")):
        patched = staa.patch(copy.deepcopy(base), (2, 6, 6), where=where, **parts)
        assert len(staa.staa_neurons(patched)) == (19 if where == "all" else 4)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        expected, got = _run(base, xa), _run(patched, xb)
        assert torch.allclose(got, expected, atol=1e-5)
        expected.square().sum().backward()
        got.square().sum().backward()
        assert torch.allclose(xb.grad, xa.grad, atol=1e-4) and xa.grad.abs().sum() > 0


def test_step_attention_gates_lie_in_unit_interval_and_differ_over_time():
    attn = staa.StepAttention(8, reduction=4)
    x = _spikes(4, b=3)
    gates = attn.gates(x)
    assert gates.shape == (4, 3, 1, 1, 1)
    assert ((gates > 0) & (gates < 1)).all()
    assert (gates.squeeze().std(dim=0) > 1e-4).all()
    assert torch.allclose(attn(x), x * gates)


@pytest.mark.parametrize("kernel", [1, 3])
def test_step_attention_temporal_kernel_sets_its_reach(kernel):
    # two stacked temporal convs of kernel k: the gate of step t sees steps t +- (k - 1)
    attn = staa.StepAttention(8, kernel=kernel)
    x = _spikes(4)
    y = x.clone()
    y[3] = 1.0 - y[3]
    changed = [not torch.equal(attn.gates(x)[t], attn.gates(y)[t]) for t in range(4)]
    assert changed == ([False, False, False, True] if kernel == 1 else [False, True, True, True])
    with pytest.raises(ValueError, match="sa_kernel must be a positive odd number"):
        staa.StepAttention(8, kernel=2)


@pytest.mark.parametrize("norm,gate", [(True, "residual"), (False, "plain")])
def test_gc_block_matches_an_independent_loop_formula(norm, gate):
    gc = staa.GCBlock(6, reduction=2, norm=norm, gate=gate)
    if norm:
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
        if norm:
            pre = (pre - pre.mean()) / torch.sqrt(pre.var(unbiased=False) + 1e-5)
            pre = pre * gc.norm.weight.view(3) + gc.norm.bias.view(3)
        gate_values = torch.sigmoid(gc.up.weight.view(6, 3) @ torch.relu(pre) + gc.up.bias)
        scale = (1 + gate_values) if gate == "residual" else gate_values
        assert torch.allclose(out[:, b], x[:, b] * scale[None, :, None, None], atol=1e-6)
    assert (gc.norm is None) is (not norm)
    with pytest.raises(ValueError, match="gc_gate must be one of"):
        staa.GCBlock(6, gate="x*g")


def test_gradients_reach_every_learnable_parameter():
    model = staa.patch(_small_backbone(), (2, 8, 8), time_steps=4, beta=0.0)
    model(torch.rand(4, 4, 2, 8, 8)).sum().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    wrapper = staa.staa_neurons(model)["layer1.2.sn2"]
    assert [n for n, _ in wrapper.named_parameters()] == [
        "pos_enc.weight", "gc.key.weight", "gc.down.weight", "gc.down.bias", "gc.norm.weight",
        "gc.norm.bias", "gc.up.weight", "gc.up.bias", "neuron.m", "neuron.n",
        "step_attn.conv1.weight", "step_attn.conv1.bias", "step_attn.norm.weight",
        "step_attn.norm.bias", "step_attn.conv2.weight", "step_attn.conv2.bias"]


class _OneNeuron(nn.Module):
    """conv 3->4 and conv 3->12, concatenated (16 channels), then one neuron: the channels a
    last-conv guess would give (12) differ from what the neuron gets (16)."""

    def __init__(self, kind="lif"):
        super().__init__()
        self.a = layer.Conv2d(3, 4, 1, step_mode="m")
        self.b = layer.Conv2d(3, 12, 1, step_mode="m")
        self.sn = sj.make_neuron(kind, step_mode="m") if kind != "lif" else sj.make_neuron(
            "lif", decay=0.2)

    def forward(self, x):
        return self.sn(torch.cat([self.a(x), self.b(x)], dim=2))


@pytest.mark.parametrize("kind,alif_macs", [("lif", 4096), ("if", 8192)])
def test_overhead_matches_a_hand_count_for_one_neuron(kind, alif_macs):
    # C=16, r=4 (hidden 4), T=4, H=W=8, temporal kernel 3; P = T*H*W = 256 positions.
    # params: PE 4*16 = 64; GC key 16 + down 16*4+4 + LN 2*4 + up 4*16+16 = 172;
    #         ALIF 2*16 = 32; SA conv1 16*4*3+4 + LN 2*4 + conv2 4*3+1 = 217  -> 485
    # MACs:   GC 3*P*C + 2*C*4 + LN 3*4 = 12428; SA 4*3*4*(16+1) + LN 3*4*4 + P*C = 4960;
    #         ALIF 2*P*C against the LIF's 1*P*C (leak) or the IF's 0: + 4096 or + 8192.
    model = staa.patch(_OneNeuron(kind), (3, 8, 8), where=["sn"], time_steps=4)
    assert model.sn.channels == 16 and model.sn.map_size == (8, 8)
    cost = staa.overhead(model, torch.zeros(4, 1, 3, 8, 8))
    expected = dict(channels=16, input=(4, 16, 8, 8), params=485, macs=12428 + 4960 + alif_macs)
    assert cost["neurons"] == {"sn": expected}
    assert (cost["params"], cost["macs"]) == (485, expected["macs"])


def test_full_coefficient_maps_use_the_probed_map_size():
    model = staa.patch(_OneNeuron(), (3, 6, 5), where=["sn"], alif_maps="full")
    assert model.sn.neuron.m.shape == model.sn.neuron.n.shape == (16, 6, 5)
    assert staa.overhead(model, torch.zeros(4, 1, 3, 6, 5))["params"] == 485 - 32 + 2 * 16 * 30
    with pytest.raises(ValueError, match=r"build it with channels=16 and map_size=\(7, 7\)"):
        model(torch.zeros(4, 1, 3, 7, 7))
    with pytest.raises(ValueError, match="alif_maps must be 'channel' or 'full'"):
        _wrap(alif_maps="pixel")


def test_overhead_params_equal_the_parameter_growth_of_a_zoo_model():
    base = _zoo_student(sew_resnet.sew_resnet18, cnf="ADD")
    before = sum(p.numel() for p in base.parameters())
    staa.patch(base, (2, 8, 8), time_steps=2)
    cost = staa.overhead(base, torch.rand(2, 1, 2, 8, 8))
    assert cost["params"] == sum(p.numel() for p in base.parameters()) - before
    assert [r["channels"] for r in cost["neurons"].values()] == [64, 128, 256, 512]
    assert [r["input"][2] for r in cost["neurons"].values()] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match="no STAA neurons"):
        staa.overhead(_small_backbone())


@pytest.mark.parametrize("builder,kwargs", [(spiking_resnet.spiking_resnet18, {}),
                                            (sew_resnet.sew_resnet18, {"cnf": "ADD"})],
                         ids=["spiking_resnet18", "sew_resnet18"])
def test_patch_and_unpatch_zoo_models_keep_other_state_dict_keys(builder, kwargs):
    model = _zoo_student(builder, **kwargs)
    x = torch.rand(2, 2, 2, 8, 8)
    old_state = copy.deepcopy(model.state_dict())
    old_neurons = {n: m for n, m in model.named_modules() if sj.is_spiking_neuron(m)}
    expected = _run(model.eval(), x)
    staa.patch(model, (2, 8, 8), time_steps=2)
    wrapped = ["layer1.1.sn2", "layer2.1.sn2", "layer3.1.sn2", "layer4.1.sn2"]
    assert list(staa.staa_neurons(model)) == wrapped
    missing, unexpected = model.load_state_dict(old_state, strict=False)
    assert unexpected == [] and missing and all(k.startswith(tuple(wrapped)) for k in missing)
    assert _run(model, x).shape == (2, 2, 5)
    staa.unpatch(model)
    assert staa.staa_neurons(model) == {}
    assert all(model.get_submodule(n) is m for n, m in old_neurons.items())
    assert list(model.state_dict()) == list(old_state)
    assert torch.equal(_run(model, x), expected)


def test_unpatch_restores_a_parametric_neuron_and_its_key():
    model = _small_backbone(kind="plif", tau=2.0)
    old_keys = list(model.state_dict())
    staa.patch(model, (2, 8, 8), where=["layer2.0.sn1"])
    wrapper = model.layer2[0].sn1
    assert isinstance(wrapper, staa.STAANeuron)
    # added: the wrapper's parameters less the replaced neuron's one (its w)
    assert wrapper.neuron.m[0].item() == pytest.approx(0.5) and wrapper.added_params() == (
        sum(p.numel() for p in wrapper.parameters()) - 1)
    new_keys = list(model.state_dict())
    assert [k for k in old_keys if k not in new_keys] == ["layer2.0.sn1.w"]
    assert all(k.startswith("layer2.0.sn1.") for k in new_keys if k not in old_keys)
    staa.unpatch(model)
    assert list(model.state_dict()) == old_keys


def test_registered_and_project_backbones_wrap_the_last_neuron_of_each_stage():
    expected = {"resnet19": {"layer1.2.sn2": 128, "layer2.2.sn2": 256, "layer3.1.sn2": 512},
                "vgg11": {"layer1.2": 64, "layer2.5": 256, "layer3.5": 512, "layer4.2": 512,
                          "layer5.5": 512},
                "vggsnn": {"layer1.5": 128, "layer2.5": 256, "layer3.5": 512, "layer4.5": 512}}
    for name, wrapped in expected.items():
        model = models.create_model(name, num_classes=3)
        size = (2, 48, 48) if name == "vggsnn" else (3, 32 if "vgg" in name else 8, 32 if
                                                         "vgg" in name else 8)
        staa.patch(model, size, time_steps=2)
        assert {n: w.channels for n, w in staa.staa_neurons(model).items()} == wrapped
    assert models.list_models("staa_*") == ["staa_resnet19", "staa_resnet34", "staa_vggsnn"]
    model = models.create_model("staa_resnet19", num_classes=4, img_size=8, time_steps=2,
                                sa=False, tsrd=False, reduction=8, staa_neuron=dict(init_m=0.5,
                                                                                     init_n=2.0))
    wrappers = staa.staa_neurons(model).values()
    assert [w.channels for w in wrappers] == [128, 256, 512]
    assert all(w.step_attn is None and w.gc.hidden == w.channels // 8
               and w.neuron.m[0].item() == 0.5 and w.neuron.n[0].item() == 2.0 for w in wrappers)
    assert model(torch.rand(2, 1, 3, 8, 8)).shape == (2, 1, 4)


def test_where_all_names_and_clear_errors():
    model = staa.patch(_small_backbone(), (2, 8, 8), where=["layer2.1", "layer3.0.sn1"],
                       time_steps=2)
    assert list(staa.staa_neurons(model)) == ["layer2.1.sn2", "layer3.0.sn1"]
    assert model.layer3[0].sn1.channels == 32
    assert model(torch.rand(2, 1, 2, 8, 8)).shape == (2, 1, 5)
    with pytest.raises(ValueError, match="'layer2.1.sn2' is already wrapped by STAA"):
        staa.patch(model, (2, 8, 8), where=["layer2.1.sn2"])
    with pytest.raises(ValueError, match="built for 2; build STAA with time_steps >= 4"):
        model(torch.rand(4, 1, 2, 8, 8))
    everything = staa.patch(_small_backbone(), (2, 8, 8), where="all")
    assert len(staa.staa_neurons(everything)) == 19
    with pytest.raises(ValueError, match="where must be 'stage_last', 'all' or a list"):
        staa.patch(_small_backbone(), (2, 8, 8), where="layer1")
    with pytest.raises(KeyError, match=r"no module named 'layer9'"):
        staa.patch(_small_backbone(), (2, 8, 8), where=["layer9"])
    with pytest.raises(ValueError, match="no unwrapped spiking neuron of 'conv1' ran"):
        staa.patch(_small_backbone(), (2, 8, 8), where=["conv1"])
    with pytest.raises(TypeError, match=r"pass where=\[module names\] or where='all'"):
        staa.patch(nn.Sequential(layer.Conv2d(1, 1, 1, step_mode="m")), (1, 4, 4))
    with pytest.raises(ValueError, match=r"sample must be a \[T, B, C, H, W\] input or a"):
        staa.patch(_small_backbone(), (8, 8))
    fc_neuron = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(4, 3, step_mode="m"),
                              sj.make_neuron("lif", decay=0.2))
    with pytest.raises(ValueError, match=r"gets input \(1, 1, 3\); STAA needs"):
        staa.patch(fc_neuron, (1, 2, 2), where=["2"])
    shared = sj.make_neuron("lif", decay=0.2)
    with pytest.raises(ValueError, match="run more than once per forward"):
        staa.patch(nn.Sequential(shared, shared), (1, 2, 2), where="all")
    with pytest.raises(ValueError, match="needs sa=True"):
        _wrap(sa=False, tsrd=True)
    with pytest.raises(ValueError, match=r"expects \[T, B, 8, H, W\]"):
        _wrap()(torch.rand(2, 1, 7, 3, 3))


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


def test_adaptive_lif_reads_leak_and_gain_and_copies_the_replaced_neuron():
    assert staa.leak_and_gain(sj.make_neuron("if")) == (1.0, 1.0)
    assert staa.leak_and_gain(sj.make_neuron("lif", tau=4.0)) == (0.75, 1.0)
    assert staa.leak_and_gain(sj.make_neuron("lif", tau=4.0, decay_input=True)) == (0.75, 0.25)
    m, n = staa.leak_and_gain(sj.make_neuron("plif", tau=2.0, decay_input=True))
    assert (m, n) == (pytest.approx(0.5), pytest.approx(0.5))
    with pytest.raises(TypeError, match=r"pass neuron=dict\(init_m=..., init_n=...\)"):
        staa.leak_and_gain(staa.AdaptiveLIF(2))
    old = sj.make_neuron("lif", decay=0.5, v_threshold=0.3, reset="hard", v_reset=-0.1,
                         detach_reset=False, surrogate_fn="rect", alpha=2.0)
    new = staa.AdaptiveLIF.replacing(old, 3, v_threshold=0.4)
    assert (new.v_threshold, new.v_reset, new.detach_reset) == (0.4, -0.1, False)
    assert type(new.surrogate_function) is type(old.surrogate_function)
    assert new.surrogate_function.alpha == 2.0
    assert new.surrogate_function is not old.surrogate_function
    assert new.m.tolist() == [0.5] * 3 and new.n.tolist() == [1.0] * 3
    kept = staa.AdaptiveLIF.replacing(staa.AdaptiveLIF(2), 2, init_m=0.3, init_n=0.7)
    assert kept.m.tolist() == pytest.approx([0.3, 0.3])
    assert kept.n.tolist() == pytest.approx([0.7, 0.7])


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


def test_staa_modules_refuse_rate_bp():
    for cls in (staa.STAANeuron, staa.StepAttention, staa.GCBlock, staa.TemporalPositionEncoding,
                staa.TimeStepRandomDropout, staa.AdaptiveLIF):
        assert cls.supports_rate_bp is False
    rate = pytest.importorskip("sj_distill.rate")
    model = staa.patch(_small_backbone(), (2, 8, 8), time_steps=2)
    with pytest.raises(Exception, match="(?i)STAA|StepAttention|GCBlock|supports_rate_bp"):
        rate.enable(model)


def test_default_placement_on_a_zoo_vgg_wraps_the_last_neuron_before_each_pool():
    """A zoo VGG has no residual stages: after cifar_student its feature_info lists the pools,
    and the default placement wraps the last neuron before each of them."""
    from spikingjelly.activation_based.model import spiking_vgg

    model = zoo.cifar_student(spiking_vgg.spiking_vgg11_bn(
        spiking_neuron=sj.neuron_factory(kind="lif", decay=0.5, step_mode="m")), 10,
        avgpool_vgg=True)
    pools = [row["module"] for row in model.feature_info[1:]]
    modules = [n for n, _ in model.named_modules()]
    neurons = [n for n, m in model.named_modules() if sj.is_spiking_neuron(m)]
    expected = [[n for n in neurons if modules.index(n) < modules.index(p)][-1] for p in pools]
    staa.patch(model, (3, 32, 32), time_steps=2)
    wrapped = list(staa.staa_neurons(model))
    assert wrapped == expected and len(wrapped) == len(pools) >= 4
    assert model(torch.rand(2, 2, 3, 32, 32)).shape == (2, 2, 10)
