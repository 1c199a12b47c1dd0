"""Registered backbones: shapes under both SpikingJelly versions, gradients, reset, zoo helper."""
import pytest
import torch
from torch import nn
from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg

from sj_distill import models, sj, zoo

SMALL = dict(num_classes=5)


def _input(model_name: str, T: int, batch: int = 2) -> torch.Tensor:
    """VGGs need their design size (the fc input depends on it) and ImageNet-stem ResNets 32x32;
    CIFAR ResNets run on 16x16 to keep the CPU suite short."""
    if "vggsnn" in model_name:
        return torch.rand(T, batch, 2, 48, 48)
    size = 16 if model_name.startswith("cifar_resnet") or model_name == "staa_resnet19" else 32
    return torch.rand(T, batch, 3, size, size)


def _first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", models.list_models())
@pytest.mark.parametrize("T", [1, 4])
def test_backbone_maps_TBCHW_to_TBK_and_backpropagates(name, T):
    model = models.create_model(name, **SMALL)
    x = _input(name, T)
    out = model(x)
    assert out.shape == (T, 2, 5)
    out.mean(0).sum().backward()
    grad = _first_conv(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0
    sj.reset(model)


@pytest.mark.parametrize("name", ["cifar_resnet20", "cifar_vgg11", "sew_resnet34"])
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
    model = models.create_model("cifar_resnet18", **SMALL)
    seen = {}
    for info in model.feature_info:
        getattr(model, info["module"]).register_forward_hook(
            lambda _m, _i, out, name=info["module"]: seen.__setitem__(name, out.shape))
    model(torch.rand(2, 1, 3, 32, 32))
    for info in model.feature_info:
        T, B, C, H, W = seen[info["module"]]
        assert (C, 32 // H) == (info["num_chs"], info["reduction"])


def test_create_model_unknown_name_lists_known():
    with pytest.raises(KeyError, match="cifar_resnet18"):
        models.create_model("resnet_does_not_exist")


def test_neuron_params_reach_every_neuron():
    model = models.create_model("cifar_resnet20", decay=0.5, reset="hard", v_threshold=0.5,
                                surrogate_fn="atan", alpha=3.0, **SMALL)
    neurons = [m for m in model.modules() if sj.is_spiking_neuron(m)]
    assert len(neurons) == 1 + 9 * 2
    for n in neurons:
        assert (n.tau, n.v_reset, n.v_threshold, n.step_mode) == (2.0, 0.0, 0.5, "m")
        assert n.surrogate_function.alpha == 3.0


ZOO = [
    (spiking_resnet.spiking_resnet18, {}),
    (sew_resnet.sew_resnet18, {"cnf": "ADD"}),
    (spiking_vgg.spiking_vgg11_bn, {}),
]


@pytest.mark.parametrize("builder,kwargs", ZOO, ids=["spiking_resnet18", "sew_resnet18", "vgg11_bn"])
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
    assert [f["module"] for f in model.feature_info] == ["sn1", "layer1", "layer2", "layer3", "layer4"]
    assert [f["reduction"] for f in model.feature_info] == [1, 1, 2, 4, 8]
    with pytest.raises(TypeError, match="supports SpikingJelly zoo ResNets and VGGs"):
        zoo.cifar_student(nn.Sequential(nn.Linear(2, 2)), num_classes=3)
