"""The sweep spike pass (``rate.enable(model, spike_pass="sweep")``): the same firing rates,
eligibilities, BatchNorm statistics, outputs and gradients as the layer pass, on the
project's backbones and SpikingJelly zoo models (float64, to 1e-12), with no ``[T, ...]``
activation, and the replay that keeps its cost down."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional, layer

from _zoo_students import zoo_student
from sj_distill import models, rate, sj
from sj_distill.rate import passes
from sj_distill.rate.sweep import pack, unpack

RECORD_FIELDS = ("rate", "elig", "decay_elig", "mean", "var", "total", "output", "mask")


def _small_net():
    """Conv-BN-PLIF (hard reset) - max-pool - SpikingJelly dropout - conv-BN-IF - linear."""
    return nn.Sequential(
        layer.Conv2d(2, 6, 3, padding=1, step_mode="m"), layer.BatchNorm2d(6, step_mode="m"),
        sj.make_neuron(kind="plif", decay=0.3, reset="hard", detach_reset=False, step_mode="m"),
        layer.MaxPool2d(2, 2, step_mode="m"), layer.Dropout(0.3, step_mode="m"),
        layer.Conv2d(6, 8, 3, padding=1, step_mode="m"), layer.BatchNorm2d(8, step_mode="m"),
        sj.make_neuron(kind="if", reset="soft", step_mode="m"),
        layer.Flatten(step_mode="m"), layer.Linear(8 * 4 * 4, 5, step_mode="m"))


#: (model, input [T, B, C, H, W]) of every checked model
CASES = {
    "resnet18": (lambda: models.create_model("resnet18", num_classes=10), (3, 2, 3, 16, 16)),
    "resnet19": (lambda: models.create_model("resnet19", num_classes=10), (3, 2, 3, 16, 16)),
    "vggsnn": (lambda: models.create_model("vggsnn", num_classes=10), (3, 2, 2, 48, 48)),
    "sew_resnet34": (lambda: models.create_model("sew_resnet34", num_classes=10),
                     (3, 2, 3, 32, 32)),
    "zoo_spiking_resnet18": (lambda: zoo_student("spiking_resnet18"), (3, 2, 3, 16, 16)),
    "zoo_sew_resnet18": (lambda: zoo_student("sew_resnet18"), (3, 2, 3, 16, 16)),
    "zoo_spiking_vgg11_bn": (lambda: zoo_student("spiking_vgg11_bn"), (3, 2, 3, 32, 32)),
    "small_net": (_small_net, (5, 3, 2, 8, 8)),
}


def _train_step(model, x, y, monkeypatch, **options):
    """One rate-BP step; returns (output, {record field: tensor}, grads, buffers)."""
    rate.enable(model, **options).train()
    records = {}
    finish = passes._finish_spike_pass

    def finish_and_keep(layers):
        finish(layers)
        for module in layers:
            state = getattr(module, passes.STATE)
            for index, record in enumerate(state.records):
                for field in RECORD_FIELDS:
                    value = getattr(record, field, None)
                    if isinstance(value, torch.Tensor):
                        records[f"{state.name}.{index}.{field}"] = value.clone()
    monkeypatch.setattr(passes, "_finish_spike_pass", finish_and_keep)
    out = model(x)
    monkeypatch.undo()
    F.cross_entropy(out, y).backward()
    functional.reset_net(model)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    buffers = {n: b.clone() for n, b in model.named_buffers() if b.is_floating_point()}
    return out.detach(), records, grads, buffers


def _assert_same(got: dict, want: dict, what: str, tol: float = 1e-12) -> None:
    assert got.keys() == want.keys() and want, what
    for key in want:
        scale = 1.0 + want[key].abs().max().item()
        error = (got[key] - want[key]).abs().max().item()
        assert error <= tol * scale, f"{what} {key}: {error:.3g} (scale {scale:.3g})"


SLOW_CASES = ("resnet19", "vggsnn", "sew_resnet34", "zoo_sew_resnet18", "zoo_spiking_vgg11_bn")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_CASES
                                  else n for n in CASES])
def test_sweep_equals_layer_pass_float64(name, monkeypatch):
    """Rates, eligibilities (ParametricLIF's decay one too), BatchNorm statistics, max-pool
    means, running statistics, outputs and every gradient agree with the layer pass to 1e-12
    (T=3: chunks of 2 steps, the last one short; the small net also one step at a time and
    with both max-pool rules)."""
    build, shape = CASES[name]
    torch.manual_seed(0)
    model = build().double()
    x = torch.rand(*shape, dtype=torch.float64) * 2
    y = torch.arange(shape[1]) % 5
    rules = ("rate", "spikes") if name == "small_net" else ("rate",)
    for max_pool in rules:
        torch.manual_seed(1)
        want = _train_step(copy.deepcopy(model), x, y, monkeypatch, spike_pass="layer",
                           max_pool=max_pool)
        assert want[0].abs().sum() > 0 and any(k.endswith(".elig") for k in want[1])
        assert any(r.max() > 0 for k, r in want[1].items() if k.endswith(".rate"))
        assert (max_pool == "spikes") == any(k.endswith(".total") for k in want[1])
        for chunk in ((1, 2) if name == "small_net" else (2,)):
            torch.manual_seed(1)
            got = _train_step(copy.deepcopy(model), x, y, monkeypatch, spike_pass="sweep",
                              time_chunk=chunk, max_pool=max_pool)
            torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
            for index, what in ((1, "record"), (2, "gradient"), (3, "buffer")):
                _assert_same(got[index], want[index], f"{name} chunk {chunk} {what}")


def test_sweep_keeps_no_activation_longer_than_its_chunk():
    """Every module of resnet18 sees at most ``time_chunk`` steps at once in the sweep pass
    (all ``T`` in the layer pass)."""
    model = models.create_model("resnet18", num_classes=10)
    x = torch.rand(6, 2, 3, 16, 16)
    seen = {}
    for module in model.modules():
        if getattr(module, "step_mode", None) == "m":
            module.register_forward_hook(lambda m, i, o: seen.setdefault(
                rate.current_phase(), set()).add(o.shape[0]))
    for spike_pass, longest in (("layer", 6), ("sweep", 2)):
        seen.clear()
        rate.enable(model, spike_pass=spike_pass, time_chunk=2).train()
        model(x)
        functional.reset_net(model)
        assert max(seen["spike"]) == longest


def test_sweeps_replay_stored_spikes_instead_of_running_the_layers_again():
    """A sequence conv-BN-LIF-pool-conv-BN-IF-linear: three sweeps (one per BN, one more);
    the first conv runs in the first two (the third starts after the stored spikes of the
    first neuron), the head in the last only; without replay (a torch dropout in the
    model) every sweep runs from the input."""
    def counted(net):
        calls = {}

        def count(index):
            if rate.current_phase() == "spike":
                calls[index] = calls.get(index, 0) + 1
        for index in (0, 5, 9):
            net[index].register_forward_hook(lambda m, i, o, index=index: count(index))
        return calls

    net = _small_net()
    net[4] = layer.Dropout(0.0, step_mode="m")
    calls = counted(net)
    rate.enable(net, spike_pass="sweep", time_chunk=2).train()
    net(torch.rand(5, 3, 2, 8, 8))  # three chunks
    assert calls == {0: 2 * 3, 5: 2 * 3, 9: 3}
    net = _small_net()
    net[4] = nn.Dropout(0.2)
    calls = counted(net)
    rate.enable(net, spike_pass="sweep", time_chunk=2).train()
    out = net(torch.rand(5, 3, 2, 8, 8))
    assert calls == {0: 3 * 3, 5: 2 * 3, 9: 3} and torch.isfinite(out).all()


def test_pack_unpack_round_trip():
    spikes = (torch.rand(3, 5, 7) > 0.5).float()
    kind, packed = pack(spikes)
    assert kind == "bits" and packed.dtype == torch.uint8 and packed.numel() == 14  # ceil(105/8)
    assert torch.equal(unpack(kind, packed, spikes.shape, spikes.dtype), spikes)
    counts = torch.randint(0, 4, (2, 9)).double()
    kind, packed = pack(counts)
    assert kind == "u8" and torch.equal(unpack(kind, packed, counts.shape, counts.dtype), counts)
    assert pack(torch.tensor([0.5, 1.0])) is None
    assert pack(torch.tensor([256.0])) is None and pack(torch.tensor([-1.0])) is None


def test_spike_pass_must_be_layer_or_sweep():
    with pytest.raises(ValueError, match="spike_pass must be 'layer' .* or 'sweep' .*, "
                                         "got 'chunked'"):
        rate.enable(_small_net(), spike_pass="chunked")


def test_sweep_leaves_the_model_as_it_was():
    """After a sweep step no module keeps a wrapped forward; eval is the plain SNN."""
    net = _small_net()
    reference = copy.deepcopy(net).eval()
    rate.enable(net, spike_pass="sweep").train()
    net(torch.rand(4, 2, 2, 8, 8))
    functional.reset_net(net)
    wrapped = [name for name, m in net.named_modules()
               if "forward" in vars(m) and not hasattr(m, passes.STATE) and m is not net]
    assert wrapped == []
    net.load_state_dict(reference.state_dict())
    x = torch.rand(4, 2, 2, 8, 8)
    net.eval()
    assert torch.equal(net(x), reference(x))
