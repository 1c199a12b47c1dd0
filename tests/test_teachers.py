"""timm teachers: CIFAR stem, stage split read from the model, freezing, local weights."""
import pytest
import timm
import torch
from torch import nn

from sj_distill.teachers import Teacher, cifar_stem, create_teacher, load_weights, split_model

from _cached_teachers import SMALL, teacher as cached_teacher


@pytest.fixture(scope="module")
def resnet18():
    return cached_teacher("resnet18")


def test_resnet_cifar_stem_and_split(resnet18):
    conv = resnet18.stem[0]
    assert (conv.kernel_size, conv.stride) == ((3, 3), (1, 1))
    assert isinstance(resnet18.stem[-1], nn.Identity)  # the max-pool is gone
    assert [(f["module"], f["num_chs"], f["reduction"]) for f in resnet18.feature_info] == [
        ("act1", 64, 1), ("layer1", 64, 1), ("layer2", 128, 2), ("layer3", 256, 4),
        ("layer4", 512, 8)]  # the stem ends at act1: the max-pool after it is an Identity
    assert resnet18(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_odd_sizes_give_power_of_two_reductions():
    """At 28x28 the CIFAR-stem ResNet's stages are 28, 28, 14, 7 and 4 pixels: strides 1, 1, 2,
    4, 8 (28 // 4 would say 7)."""
    teacher = create_teacher("resnet10t", num_classes=10, in_chans=1, image_size=28, **SMALL)
    assert [(f["module"], f["reduction"]) for f in teacher.feature_info] == [
        ("act1", 1), ("layer1", 1), ("layer2", 2), ("layer3", 4), ("layer4", 8)]
    assert [f.shape[-1] for f in teacher.features(torch.rand(1, 1, 28, 28))] == [28, 28, 14, 7, 4]


def test_split_reproduces_the_timm_forward():
    model = timm.create_model("resnet10t", num_classes=7, in_chans=2, **SMALL)
    cifar_stem(model)
    model.eval()
    x = torch.randn(3, 2, 16, 16)
    expected = model(x)
    teacher = split_model(model, image_size=16)
    torch.testing.assert_close(teacher(x), expected)
    feats = teacher.features(x)
    torch.testing.assert_close(teacher.forward_from(2, feats[2]), expected)


def test_vgg_stages_end_at_pools_like_the_spiking_vgg():
    teacher = cached_teacher("vgg11_bn")
    assert [(f["num_chs"], f["reduction"]) for f in teacher.feature_info] == [
        (64, 2), (128, 4), (256, 8), (512, 16), (512, 32)]
    for part in [teacher.stem, *teacher.stages]:
        assert isinstance(part[-1], nn.MaxPool2d)
    assert isinstance(teacher.stem[0], nn.Conv2d) and teacher.stem[0].stride == (1, 1)


def test_deep_stem_resnet_gets_a_stride_one_stem():
    teacher = create_teacher("resnet10t", num_classes=10, **SMALL)
    assert teacher.stem[0][0].stride == (1, 1)
    assert [f["reduction"] for f in teacher.feature_info] == [1, 1, 2, 4, 8]


def test_teacher_is_frozen_and_stays_in_eval(resnet18):
    parent = nn.ModuleDict(dict(teacher=resnet18, other=nn.BatchNorm2d(3)))
    parent.train()
    assert parent["other"].training and not resnet18.training
    assert not any(p.requires_grad for p in resnet18.parameters())
    bn = resnet18.stem[1]
    before = bn.running_mean.clone()
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    resnet18(x).sum().backward()
    torch.testing.assert_close(bn.running_mean, before)
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients flow through activations
    assert all(p.grad is None for p in resnet18.parameters())


def _perturbed_small():
    model = timm.create_model("resnet18", num_classes=10, **SMALL)
    cifar_stem(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def test_local_weights_roundtrip_in_any_wrapper(tmp_path):
    model = _perturbed_small()
    x = torch.randn(2, 3, 32, 32)
    expected = model.eval()(x)
    plain = tmp_path / "plain.pth"
    torch.save(model.state_dict(), plain)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()},
                "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        teacher = create_teacher("resnet18", num_classes=10, checkpoint=str(path), **SMALL)
        torch.testing.assert_close(teacher(x), expected)


def test_ignore_head_loads_everything_but_the_classifier(tmp_path):
    source = _perturbed_small()
    source.reset_classifier(1000)
    path = tmp_path / "imagenet_head.pth"
    torch.save(source.state_dict(), path)
    with pytest.raises(ValueError, match=r"shape mismatches \['fc.weight"):
        create_teacher("resnet18", num_classes=10, checkpoint=str(path), **SMALL)
    teacher = create_teacher("resnet18", num_classes=10, checkpoint=str(path), ignore_head=True,
                             **SMALL)
    torch.testing.assert_close(teacher.stem[0].weight, source.conv1.weight)


def test_missing_and_mismatched_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; nothing is downloaded"):
        create_teacher("resnet18", checkpoint=str(tmp_path / "nope.pth"), **SMALL)
    other = timm.create_model("resnet34", num_classes=10, **SMALL)
    path = tmp_path / "r34.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match=r"do not fit ResNet: missing \[\] \(0\), unexpected"):
        create_teacher("resnet18", checkpoint=str(path), cifar=False, **SMALL)
    torch.save({"epoch": 1}, path)
    with pytest.raises(ValueError, match="not a state dict"):
        load_weights(other, str(path))


def test_bad_models_and_download_requests_are_refused():
    with pytest.raises(ValueError, match="downloads nothing"):
        create_teacher("resnet18", pretrained=True)
    with pytest.raises(TypeError, match="has no feature_info"):
        split_model(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(TypeError, match="sj_distill.teachers.Teacher"):
        from sj_distill.hybrid import BlockReplacement
        BlockReplacement(nn.Identity(), nn.Identity())
    assert issubclass(Teacher, nn.Module)
