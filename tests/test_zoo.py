"""zoo.cifar_student on every supported layout: measured feature_info, BRD pairing on a zoo
VGG (dotted stage names), refusals; teachers that cannot be split are refused up front."""
import pytest
import torch
from torch import nn

from sj_distill import sj, zoo
from sj_distill.hybrid import BlockReplacement, PointModules

from _cached_teachers import teacher


def test_zoo_vgg_feature_info_is_the_first_neuron_then_every_pool():
    from spikingjelly.activation_based.model import spiking_vgg

    model = zoo.cifar_student(spiking_vgg.spiking_vgg11(spiking_neuron=sj.neuron_factory()), 10)
    assert model.feature_info == [
        dict(module="features.1", num_chs=64, reduction=1),
        dict(module="features.2", num_chs=64, reduction=2),
        dict(module="features.5", num_chs=128, reduction=4),
        dict(module="features.10", num_chs=256, reduction=8),
        dict(module="features.15", num_chs=512, reduction=16),
        dict(module="features.20", num_chs=512, reduction=32)]
    assert model.training  # the probe forward restores the mode


def test_zoo_vgg_bn_pairs_with_a_vgg_teacher_by_reduction():
    from spikingjelly.activation_based.model import spiking_vgg

    student = zoo.cifar_student(
        spiking_vgg.spiking_vgg11_bn(spiking_neuron=sj.neuron_factory()), 10)
    hybrid = BlockReplacement(student, teacher("vgg11_bn"))
    assert list(hybrid.adapters) == ["features.3", "features.7", "features.14", "features.21"]
    assert hybrid.pairs == {"features.3": "features.3", "features.7": "features.7",
                            "features.14": "features.14", "features.21": "features.21"}
    assert "adapters.features:3.conv.weight" in hybrid.state_dict()
    assert hybrid.adapters["features.7"].conv.in_channels == 128


def test_point_modules_map_dotted_names():
    modules = PointModules({"layer1": nn.Identity(), "features.4": nn.ReLU()})
    assert list(modules) == modules.keys() == ["layer1", "features.4"]
    assert "features.4" in modules and isinstance(modules["features.4"], nn.ReLU)
    assert [name for name, _ in modules.items()] == ["layer1", "features.4"]


def test_ms_resnet_student_keeps_its_first_stage_stride():
    ms_resnet = pytest.importorskip("spikingjelly.activation_based.model.ms_resnet")
    model = zoo.cifar_student(ms_resnet.ms_resnet18(T=2, spiking_neuron=sj.neuron_factory()),
                              10, in_chans=2)
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in model.feature_info] == [
        ("stem", 64, 1), ("layer1", 64, 2), ("layer2", 128, 4), ("layer3", 256, 8),
        ("layer4", 512, 16)]
    assert model(torch.rand(2, 3, 2, 16, 16)).shape == (3, 10)  # time-mean logits


def test_unknown_layout_is_refused():
    with pytest.raises(TypeError, match=r"^cifar_student\(\) supports .* Sequential has none of "
                                        r"these layouts"):
        zoo.cifar_student(nn.Sequential(nn.Linear(2, 2)), num_classes=3)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_token_teachers_are_refused_up_front(name):
    from sj_distill.teachers import create_teacher

    with pytest.raises(TypeError, match=rf"^{name} is a token model \(patch_embed.*use a "
                                        r"convolutional timm teacher"):
        create_teacher(name, num_classes=10)
