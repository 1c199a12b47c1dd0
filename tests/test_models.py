"""Registered backbones: common builder arguments, shapes under both SpikingJelly versions,
the rate-BP public code's layouts and initialisation, a rate-BP step, reset, zoo helper."""
import functools
import math

import pytest
import torch
from torch import nn
from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg

from sj_distill import models, rate, sj, staa, zoo
from sj_distill.models.resnet import PreActBlock

SMALL = dict(num_classes=5)
NEW = ["resnet18", "resnet19", "vgg11", "vgg13", "vggsnn", "sew_resnet34", "preact_resnet34"]


def _options(name: str) -> dict:
    """``vggsnn``'s and ``csnn``'s fc sizes depend on the input size: build them for 16x16
    inputs."""
    return dict(img_size=16) if "vggsnn" in name or name == "csnn" else {}


def _input(name: str, T: int, batch: int = 2, in_chans: int = 0) -> torch.Tensor:
    """The smallest input each layout allows: 8x8 for the CIFAR ResNets, 16x16 for the VGGs
    (4 pools) and the ImageNet-stem ResNets; ``in_chans`` 0: the model's default (2 for
    ``vggsnn``, 3 otherwise)."""
    in_chans = in_chans or (2 if "vggsnn" in name else 3)
    cifar_resnet = name in ("resnet18", "resnet19", "cifar_resnet20", "staa_resnet19")
    size = 8 if cifar_resnet else 16
    return torch.rand(T, batch, in_chans, size, size)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def _count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _neurons(model: nn.Module):
    return [m for m in model.modules() if sj.is_spiking_neuron(m)]


def _linear_shapes(model: nn.Module):
    return [tuple(m.weight.shape) for m in model.modules() if isinstance(m, nn.Linear)]


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", models.list_models())
def test_every_model_takes_the_common_arguments_and_maps_TBCHW_to_TBK(name):
    model = models.create_model(name, num_classes=7, in_chans=2, decay=0.5, v_threshold=0.5,
                                **_options(name))
    assert _first_conv(model).in_channels == 2
    assert model.fc.out_features == 7
    neurons = [n for n in _neurons(model) if n.v_threshold == 0.5]
    # STAA's adaptive LIFs keep the replaced neuron's threshold and start at its leak 1 - 1/tau
    adaptive = [n for n in neurons if isinstance(n, staa.AdaptiveLIF)]
    neurons = [n for n in neurons if not isinstance(n, staa.AdaptiveLIF)]
    assert neurons and all(n.tau == 2.0 and n.step_mode == "m" for n in neurons)
    assert all(torch.all(n.m == 0.5) for n in adaptive)
    out = model(_input(name, T=3, in_chans=2))
    assert out.shape == (3, 2, 7)
    # a batch-asymmetric loss: a plain sum has zero gradient through a final BatchNorm
    (out.mean(0) * torch.randn(2, 7)).sum().backward()
    grad = _first_conv(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0
    sj.reset(model)
    assert model.eval()(_input(name, T=1, batch=1, in_chans=2)).shape == (1, 1, 7)


@functools.lru_cache(maxsize=None)
def _built(name: str, init: str = "kaiming") -> nn.Module:
    """A 10-class model shared by the tests that only read its structure or weights."""
    return models.create_model(name, num_classes=10, init=init)


def _vgg_tokens(layout, in_chans):
    """The module sequence the rate-BP code builds for a VGG layout's features: conv (with
    bias) + BN + SN per number, a 2x2 average pool per "A"."""
    tokens = []
    for item in layout:
        tokens += ["avg"] if item == "A" else [f"conv{in_chans}-{item}+b", "bn", "sn"]
        in_chans = in_chans if item == "A" else item
    return tokens


def _tokens(model: nn.Module):
    out = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            bias = "+b" if m.bias is not None else ""
            out.append(f"conv{m.in_channels}-{m.out_channels}{bias}")
        elif isinstance(m, nn.BatchNorm2d):
            out.append("bn")
        elif sj.is_spiking_neuron(m):
            out.append("sn")
        elif isinstance(m, nn.AvgPool2d):
            assert (m.kernel_size, m.stride) == (2, 2)
            out.append("avg")
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            out.append("gap")
        elif isinstance(m, nn.Linear):
            out.append(f"fc{m.in_features}-{m.out_features}")
    return out


A = "A"
VGG_LAYOUTS = {  # the lists, checked against model/vgg.py of the rate-BP public code
    # name: (layout, input channels, head modules, fc input features)
    "vgg11": ([64, A, 128, 256, A, 512, 512, A, 512, A, 512, 512], 3, ["gap", "fc512-10"], 512),
    "vgg13": ([64, 64, A, 128, 128, A, 256, 256, A, 512, 512, 512, A, 512], 3,
              ["gap", "fc512-10"], 512),
    "vggsnn": ([64, 128, A, 256, 256, A, 512, 512, A, 512, 512, A], 2, ["fc4608-10"], 4608),
}
#: parameter counts of the public code's vgg11 / vgg13 / vggsnn_dvs (10 classes), read off
#: instances of it; the test re-derives them from the layout by hand.
VGG_PUBLIC_PARAMS = {"vgg11": 11_001_354, "vgg13": 9_416_010, "vggsnn": 9_271_498}


@pytest.mark.parametrize("name", sorted(VGG_LAYOUTS))
def test_vgg_layout_and_parameter_count_are_the_public_codes(name):
    layout, in_chans, head, fc_in = VGG_LAYOUTS[name]
    model = _built(name)
    assert _tokens(model) == _vgg_tokens(layout, in_chans) + head
    assert all((m.kernel_size, m.padding, m.stride) == ((3, 3), (1, 1), (1, 1))
               for m in model.modules() if isinstance(m, nn.Conv2d))
    by_hand, c = 0, in_chans
    for item in layout:
        if item != A:
            by_hand += 9 * c * item + item + 2 * item  # conv weight + bias, BN gamma/beta
            c = item
    by_hand += fc_in * 10 + 10
    assert _n_params(model) == by_hand == VGG_PUBLIC_PARAMS[name]


def test_vggsnn_flattens_3x3x512_at_48x48():
    model = models.create_model("vggsnn", num_classes=10)
    assert model.fc.in_features == 3 * 3 * 512 == 4608
    assert model.forward_features(torch.rand(1, 1, 2, 48, 48)).shape == (1, 1, 512, 3, 3)


def test_vgg_stages_end_at_the_pools():
    model = _built("vgg11")
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in model.feature_info] == [
        ("layer1", 64, 2), ("layer2", 256, 4), ("layer3", 512, 8), ("layer4", 512, 16),
        ("layer5", 512, 16)]
    assert _tokens(model.layer5) == ["conv512-512+b", "bn", "sn"] * 2


def test_vgg_too_small_input_size_is_one_clear_error():
    with pytest.raises(ValueError, match=r"img_size 8 is too small for the 4 pools of this VGG "
                                         r"\(needs at least 16\)"):
        models.create_model("vggsnn", img_size=8)


def _conv(i, o, k=3, bias=False):
    return k * k * i * o + (o if bias else 0)


def _bn(c):
    return 2 * c


def test_resnet19_layout_and_parameter_count():
    model = _built("resnet19")
    # 1 stem conv + 8 blocks x 2 convs + 2 shortcut convs (layer2, layer3 first blocks)
    assert _count(model, nn.Conv2d) == _count(model, nn.BatchNorm2d) == 19
    assert len(_neurons(model)) == 1 + 8 * 2 + 1  # stem, blocks, head
    assert _linear_shapes(model) == [(256, 512), (10, 256)]
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert _tokens(model)[:3] == ["conv3-128", "bn", "sn"]
    assert _tokens(model)[-4:] == ["gap", "fc512-256", "sn", "fc256-10"]
    stages = [(128, 128, 3), (128, 256, 3), (256, 512, 2)]
    by_hand = _conv(3, 128) + _bn(128)
    for c_in, c, depth in stages:
        by_hand += _conv(c_in, c) + _conv(c, c) + 2 * _bn(c)
        by_hand += (_conv(c_in, c, 1) + _bn(c)) if c_in != c else 0
        by_hand += (depth - 1) * (2 * _conv(c, c) + 2 * _bn(c))
    by_hand += 512 * 256 + 256 + 256 * 10 + 10
    assert _n_params(model) == by_hand == 12_697_994  # the public code's resnet19 count


def test_resnet18_has_the_public_single_linear_head():
    model = _built("resnet18")
    assert _linear_shapes(model) == [(10, 512)]
    assert _count(model, nn.Conv2d) == 1 + 8 * 2 + 3
    assert len(_neurons(model)) == 1 + 8 * 2
    assert _tokens(model)[:3] == ["conv3-64", "bn", "sn"]
    assert _n_params(model) == 11_173_962  # the public code's resnet18 count


@pytest.mark.parametrize("name, neurons", [("sew_resnet34", 1 + 16 * 2 + 3),
                                           ("preact_resnet34", 16 * 2)])
def test_imagenet_resnets_have_biased_convs_and_the_public_neuron_count(name, neurons):
    model = _built(name)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 16 * 2 + 3 and all(c.bias is not None for c in convs)
    assert (convs[0].kernel_size, convs[0].stride) == ((7, 7), (2, 2))
    assert len(_neurons(model)) == neurons
    assert _n_params(model) == 21_298_314  # the public code's count, for both


def test_preact_block_starts_with_a_neuron_and_ends_with_bn():
    assert all(isinstance(b, PreActBlock) for _, stage in _built("preact_resnet34").stages()
               for b in stage)
    block = PreActBlock(64, 128, 2, sj.neuron_factory(step_mode="m"), bias=True)
    assert [type(m).__name__ for m in block.children()][:3] == [
        type(block.sn1).__name__, "Conv2d", "BatchNorm2d"] and sj.is_spiking_neuron(block.sn1)
    out = block(torch.randn(1, 2, 64, 8, 8))
    # BN output + BN(conv1x1) shortcut: real-valued, not spikes
    assert out.shape == (1, 2, 128, 4, 4) and not torch.all((out == 0) | (out == 1))


def _weights(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vggsnn"])
def test_public_vgg_init_is_normal_half_with_zero_biases(name):
    model = _built(name, "public")
    for m in _weights(model, (nn.Conv2d, nn.Linear)):
        n = m.weight.numel()
        # sample std of n N(0, 0.5) draws: standard error 0.5 / sqrt(2n); allow 6 of them
        assert abs(m.weight.std().item() - 0.5) < 6 * 0.5 / math.sqrt(2 * n)
        assert abs(m.weight.mean().item()) < 6 * 0.5 / math.sqrt(n)
        assert torch.count_nonzero(m.bias) == 0
    for bn in _weights(model, nn.BatchNorm2d):
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_default_init_is_kaiming_fan_out_and_resnet_public_init_is_pytorchs():
    vgg = _built("vgg11")
    conv = vgg.layer5[0]  # 512 -> 512, 3x3: fan_out 4608
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 4608), rel=0.01)
    resnet = _built("resnet19", "public")
    conv = resnet.layer1[0].conv1  # 128 -> 128: PyTorch's U(+-1/sqrt(fan_in)), fan_in 1152
    assert conv.weight.std().item() == pytest.approx(1 / math.sqrt(3 * 1152), rel=0.01)
    assert _built("resnet19").layer1[0].conv1.weight.std().item() == \
        pytest.approx(math.sqrt(2 / 1152), rel=0.01)


def test_init_errors_name_the_choices():
    with pytest.raises(ValueError, match="cifar_resnet20 has no counterpart in the rate-BP "
                                         r"public code, so it has no init='public'; choose one "
                                         r"of \['kaiming', 'normal', 'pytorch'\]"):
        models.create_model("cifar_resnet20", init="public")
    with pytest.raises(ValueError, match=r"unknown init 'xavier'; choose one of"):
        models.create_model("vgg11", init="xavier")


@pytest.mark.parametrize("name", NEW)
def test_new_models_train_one_step_under_rate_bp(name):
    model = models.create_model(name, **SMALL, **_options(name))
    rate.enable(model).train()
    out = model(_input(name, T=2))
    assert out.shape == (2, 5)  # the rate pass's [B, K]
    nn.functional.cross_entropy(out, torch.tensor([0, 3])).backward()
    grad = _first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", ["cifar_resnet20", "vgg11", "sew_resnet34"])
def test_reset_net_restores_initial_state(name):
    model = models.create_model(name, v_threshold=0.3, **SMALL).eval()
    x = 4 * _input(name, 3)
    with torch.no_grad():
        first = model(x)
        carried = model(x)  # no reset: membrane state carries over
        sj.reset(model)
        again = model(x)
    assert torch.equal(first, again)
    assert not torch.equal(first, carried)


def test_feature_info_matches_stage_outputs():
    model = models.create_model("resnet18", **SMALL)
    seen = {}
    for info in model.feature_info:
        getattr(model, info["module"]).register_forward_hook(
            lambda _m, _i, out, name=info["module"]: seen.__setitem__(name, out.shape))
    model(torch.rand(2, 1, 3, 32, 32))
    for info in model.feature_info:
        T, B, C, H, W = seen[info["module"]]
        assert (C, 32 // H) == (info["num_chs"], info["reduction"])


def test_create_model_unknown_name_lists_known():
    with pytest.raises(KeyError, match="resnet18"):
        models.create_model("resnet_does_not_exist")


def test_neuron_params_reach_every_neuron():
    model = models.create_model("cifar_resnet20", decay=0.5, reset="hard", v_threshold=0.5,
                                surrogate_fn="atan", alpha=3.0, **SMALL)
    neurons = _neurons(model)
    assert len(neurons) == 1 + 9 * 2
    for n in neurons:
        assert (n.tau, n.v_reset, n.v_threshold, n.step_mode) == (2.0, 0.0, 0.5, "m")
        assert n.surrogate_function.alpha == 3.0


ZOO = [
    (spiking_resnet.spiking_resnet18, {}),
    (sew_resnet.sew_resnet18, {"cnf": "ADD"}),
    (spiking_vgg.spiking_vgg11_bn, {}),
]


@pytest.mark.parametrize("builder,kwargs", ZOO,
                         ids=["spiking_resnet18", "sew_resnet18", "vgg11_bn"])
def test_zoo_helper_makes_multistep_cifar_student(builder, kwargs):
    model = builder(spiking_neuron=sj.neuron_factory(step_mode="s"), **kwargs)
    zoo.cifar_student(model, num_classes=7, in_chans=2, avgpool_vgg=True)
    first = _first_conv(model)
    assert (first.in_channels, first.kernel_size, first.stride) == (2, (3, 3), (1, 1))
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    out = model(torch.rand(3, 2, 2, 32, 32))
    assert out.shape == (3, 2, 7)
    assert all(m.step_mode == "m" for m in model.modules() if sj.is_spiking_neuron(m))


def test_zoo_helper_sets_feature_info_and_rejects_unknown_models():
    model = zoo.cifar_student(spiking_resnet.spiking_resnet18(
        spiking_neuron=sj.neuron_factory()), num_classes=10)
    assert [f["module"] for f in model.feature_info] == [
        "sn1", "layer1", "layer2", "layer3", "layer4"]
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4, 8]
    with pytest.raises(TypeError, match="supports SpikingJelly zoo ResNets and VGGs"):
        zoo.cifar_student(nn.Sequential(nn.Linear(2, 2)), num_classes=3)


def test_readme_lists_every_registered_student():
    """README's "Students" section names every backbone ``sj-distill list`` prints (it left
    out ``sew_resnet18``)."""
    from pathlib import Path

    from sj_distill.models import _registry

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("## Students"):readme.index("## Development")]
    shipped = [name for name in models.list_models()  # not those tests register
               if _registry._MODELS[name].__module__.startswith("sj_distill.models")]
    missing = [name for name in shipped if f"`{name}`" not in section]
    assert missing == []
