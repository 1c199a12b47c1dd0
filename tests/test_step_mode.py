"""Models in mixed step modes (multi-step neurons, single-step layers) mix the samples of a
batch without an error: every entry point refuses them with one line; the README's zoo
pattern gives the same logits for a sample batched and alone."""
import pytest
import torch
from spikingjelly.activation_based import layer, neuron
from spikingjelly.activation_based.model import spiking_resnet
from torch import nn

from _cached_teachers import teacher
from sj_distill import models, rate, registry, sj, staa, zoo
from sj_distill.hybrid import BlockReplacement

# A threshold this low makes every layer spike, so a leak between samples changes the logits.
LOW_THRESHOLD = dict(decay=0.2, v_threshold=0.05)


def _zoo_mixed() -> nn.Module:
    """The zoo model as built before ``cifar_student``: factory neurons are multi-step, the
    zoo's convolutions, BatchNorms and pools single-step."""
    return spiking_resnet.spiking_resnet18(spiking_neuron=sj.neuron_factory(**LOW_THRESHOLD),
                                           num_classes=10)


def _batched_and_alone(model: nn.Module, x: torch.Tensor, batch_axis: int):
    """Outputs for the last sample of ``x``, computed in the batch and alone (eval mode)."""
    model.eval()
    last = x.shape[batch_axis] - 1
    with torch.no_grad():
        batched = model(x).select(batch_axis, last)
        sj.reset(model)
        alone = model(x.narrow(batch_axis, last, 1)).select(batch_axis, 0)
        sj.reset(model)
    return batched, alone


def test_mixed_zoo_model_leaks_between_samples_without_an_error():
    """What the refusal guards against: the mixed model runs, and its numbers are wrong."""
    net = _zoo_mixed()
    assert sj.step_modes(net)["m"] and sj.step_modes(net)["s"]
    batched, alone = _batched_and_alone(net, torch.rand(4, 3, 32, 32), 0)
    assert (batched - alone).abs().max() > 0.05


def test_readme_zoo_pattern_gives_the_same_logits_batched_and_alone():
    # README: net = zoo.cifar_student(spiking_resnet.spiking_resnet18(spiking_neuron=...), ...)
    net = zoo.cifar_student(
        spiking_resnet.spiking_resnet18(spiking_neuron=sj.neuron_factory(**LOW_THRESHOLD)),
        num_classes=10)
    assert sj.check_step_mode(net, "test") == "m"
    x = torch.rand(2, 4, 3, 32, 32)
    batched, alone = _batched_and_alone(net, x, 1)
    net.eval()
    with torch.no_grad():
        rates = [m for m in net.modules() if sj.is_spiking_neuron(m)]
        spikes = []
        hooks = [m.register_forward_hook(lambda _m, _i, out: spikes.append(out.mean()))
                 for m in rates]
        net(x)
        sj.reset(net)
        for h in hooks:
            h.remove()
    assert min(spikes) > 0  # every layer spikes, so a leak would show
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)


MESSAGE = (": SpikingResNet mixes step modes (multi-step: 'sn1', 'layer1.0.sn1' and 15 more; "
           "single-step: 'conv1', 'bn1' and 41 more), so its neurons would take the batch for "
           "time and mix the samples; call spikingjelly.activation_based.functional."
           "set_step_mode(model, 'm') first (a SpikingJelly zoo model: sj_distill.zoo."
           "cifar_student(model, num_classes) does it)")


def test_rate_enable_refuses_a_mixed_model():
    net = _zoo_mixed()
    with pytest.raises(sj.MixedStepModeError) as err:
        rate.enable(net)
    assert str(err.value) == "rate.enable" + MESSAGE
    assert not rate.is_enabled(net)


def test_staa_patch_refuses_a_mixed_model():
    with pytest.raises(sj.MixedStepModeError) as err:
        staa.patch(_zoo_mixed(), (3, 32, 32))
    assert str(err.value) == "staa.patch" + MESSAGE


def test_block_replacement_refuses_a_mixed_model():
    with pytest.raises(sj.MixedStepModeError) as err:
        BlockReplacement(_zoo_mixed(), teacher("resnet18", small=True))
    assert str(err.value) == "BlockReplacement" + MESSAGE


def test_engine_refuses_a_registered_mixed_student(monkeypatch, tmp_path):
    """The engine builds every student through ``models.create_model``: the recipe is refused
    before its run folder is written."""
    from sj_distill import api
    from sj_distill.config import RecipeError
    from sj_distill.models import _registry

    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))  # undone after the test
    registry.register_student("test_mixed_zoo", lambda num_classes, **_: _zoo_mixed())
    with pytest.raises(sj.MixedStepModeError) as err:
        models.create_model("test_mixed_zoo", num_classes=10)
    assert str(err.value) == "student 'test_mixed_zoo'" + MESSAGE
    recipe = dict(name="mixed", data=dict(name="digits", img_size=16, T=2),
                  student=dict(model="test_mixed_zoo"), train=dict(epochs=1))
    with pytest.raises(RecipeError) as err:
        api.run_recipe(recipe, tmp_path / "run")
    assert str(err.value) == "student.neuron / student.options: student 'test_mixed_zoo'" + MESSAGE
    assert not (tmp_path / "run").exists()


def test_children_of_step_mode_containers_keep_their_own_mode():
    """A multi-step container running a single-step neuron step by step is consistent."""
    model = nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(3, 4, 3)),
                          layer.MultiStepContainer(neuron.IFNode(step_mode="s")),
                          layer.Flatten(step_mode="m"))
    assert sj.step_modes(model) == {"m": ["0", "1", "2"], "s": []}
    assert sj.check_step_mode(model, "test") == "m"
    single = nn.Sequential(layer.Conv2d(3, 4, 3), neuron.IFNode())
    assert sj.check_step_mode(single, "test") == "s"
