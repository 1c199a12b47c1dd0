"""Rate-based backprop on the layers and joins of SpikingJelly's model zoo: dropouts (torch's
and SpikingJelly's), VotingLayer, OTTT's Scale, and the models it must refuse up front.

Value* = the rate-pass output equals the time-mean of the plain SNN's logits (same seed, so
the same dropout masks); at T=1 the rate-BP gradients equal BPTT's."""
import copy

import pytest
import torch
from torch import nn
from spikingjelly.activation_based import layer

from sj_distill import rate, sj


def _lif(step_mode="m"):
    return sj.make_neuron(kind="lif", decay=0.5, reset="soft", detach_reset=True,
                          v_threshold=0.3, step_mode=step_mode)


def _value_and_T1_gradients(net, x_shape, T=3):
    """Value* at ``T`` and rate-BP == BPTT gradients at T=1, both with shared seeds."""
    net.train()
    reference = copy.deepcopy(net)
    rated = rate.enable(copy.deepcopy(net), scale_grad_by_T=False)
    x = torch.rand(T, *x_shape) * 2
    torch.manual_seed(5)
    expected = reference(x).mean(0)
    sj.reset(reference)
    torch.manual_seed(5)
    out = rated(x)
    sj.reset(rated)
    torch.testing.assert_close(out.detach(), expected.detach(), rtol=1e-6, atol=1e-6)
    assert expected.std() > 0

    x1 = x[:1]
    direction = torch.randn(expected.shape)
    torch.manual_seed(6)
    (reference(x1).mean(0) * direction).sum().backward()
    sj.reset(reference)
    torch.manual_seed(6)
    (rated(x1) * direction).sum().backward()
    sj.reset(rated)
    for (name, p), q in zip(reference.named_parameters(), rated.parameters()):
        assert p.grad.abs().sum() > 0, name
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-5, atol=1e-7, msg=name)
    return out


def _dropout_net(where):
    if where == "dropout2d":  # channel masks on [T*B, C, H, W]
        return nn.Sequential(layer.Conv2d(2, 8, 3, padding=1, step_mode="m"), _lif(),
                             layer.SeqToANNContainer(nn.Dropout2d(0.5), nn.Conv2d(8, 4, 3)),
                             layer.Flatten(step_mode="m"), layer.Linear(16, 4, step_mode="m"))
    body = ([layer.SeqToANNContainer(nn.Dropout(0.5), nn.Linear(16, 4))] if where == "seq_to_ann"
            else [nn.Dropout(0.5), layer.Linear(16, 4, step_mode="m")])  # on [T, B, 16]
    return nn.Sequential(layer.Linear(6, 16, step_mode="m"), _lif(), *body)


@pytest.mark.parametrize("where", ["seq_to_ann", "multi_step", "dropout2d"])
def test_torch_dropout_keeps_its_spike_pass_masks(where):
    """nn.Dropout draws a new mask per step: the rate pass returns the time-mean of the
    dropped-out spikes (not a fresh mask on the rates) and gradients match BPTT at T=1."""
    _value_and_T1_gradients(_dropout_net(where), (5, 2, 4, 4) if where == "dropout2d" else (5, 6))


def test_torch_dropout_in_a_single_step_model():
    net = nn.Sequential(layer.Linear(6, 16), _lif("s"), nn.Dropout(0.5), layer.Linear(16, 4))
    net.train()
    reference, rated = copy.deepcopy(net), rate.enable(copy.deepcopy(net))
    x = torch.rand(3, 5, 6) * 2
    torch.manual_seed(5)
    expected = torch.stack([reference(x_t) for x_t in x]).mean(0)
    torch.manual_seed(5)
    torch.testing.assert_close(rated(x).detach(), expected.detach(), rtol=1e-6, atol=1e-6)


def test_rate_pass_gradient_through_dropout_is_the_mean_mask():
    """Hand-derived: out = dropout(x) summed; d out / d x_rate = mean_t(mask_t), the value is
    mean_t(mask_t * x_t)."""
    x = torch.rand(4, 3, 7)
    torch.manual_seed(2)
    masks = torch.nn.functional.dropout(torch.ones(4 * 3, 7), 0.5, True).view(4, 3, 7)
    model = nn.Sequential(layer.SeqToANNContainer(nn.Dropout(0.5)), _lif())  # enable needs a neuron
    rate.enable(model, scale_grad_by_T=False).train()
    record = {}
    model[0].register_forward_hook(lambda m, i, o: record.setdefault(rate.current_phase(), o))
    x_rate = x.clone().requires_grad_(True)
    torch.manual_seed(2)
    model(x_rate)
    sj.reset(model)
    rate_out = record["rate"]
    torch.testing.assert_close(rate_out.detach(), (masks * x).mean(0))
    rate_out.sum().backward()
    # the rate input is x.mean(0), so each x_t receives mean_t(mask_t) / T
    torch.testing.assert_close(x_rate.grad, masks.mean(0).expand(4, 3, 7) / 4)


def test_spikingjelly_dropout_shares_one_mask_and_the_rate_pass_reuses_it():
    net = nn.Sequential(layer.Linear(6, 16, step_mode="m"), _lif(),
                        layer.Dropout(0.5, step_mode="m"), layer.Linear(16, 4, step_mode="m"))
    _value_and_T1_gradients(net, (5, 6))
    rated = rate.enable(copy.deepcopy(net)).train()
    rated(torch.rand(3, 5, 6))
    assert rated[2].mask.shape == (5, 16)  # one mask per sequence, kept until reset_net
    sj.reset(rated)
    assert rated[2].mask is None


def test_spikingjelly_dropout_inside_seq_to_ann_container_is_refused():
    net = nn.Sequential(layer.Linear(6, 16, step_mode="m"), _lif(),
                        layer.SeqToANNContainer(layer.Dropout(0.5), nn.Linear(16, 4)))
    with pytest.raises(rate.UnsupportedModuleError,
                       match=r"module '2\.0' \(Dropout\) inside a SeqToANNContainer draws a new "
                             r"mask for every time step"):
        rate.enable(net)
    assert not rate.is_enabled(net)


def test_voting_layer_commutes_with_the_time_mean():
    """VotingLayer averages groups of 5 outputs: linear, so Value* holds and T=1 gradients
    equal BPTT."""
    net = nn.Sequential(layer.Linear(6, 20, step_mode="m"), _lif(),
                        layer.VotingLayer(5, step_mode="m"))
    out = _value_and_T1_gradients(net, (5, 6))
    assert out.shape == (5, 4)


def test_ottt_scale_is_linear():
    ottt = pytest.importorskip("spikingjelly.activation_based.model.spiking_vggws_ottt")
    net = nn.Sequential(layer.Linear(6, 16, step_mode="m"), _lif(), ottt.Scale(2.74),
                        layer.Linear(16, 4, step_mode="m"))
    _value_and_T1_gradients(net, (5, 6))


@pytest.mark.parametrize("cnf", ["AND", "IAND"])
def test_sew_product_joins_are_refused_with_the_fix(cnf):
    from spikingjelly.activation_based.model import sew_resnet

    model = sew_resnet.sew_resnet18(spiking_neuron=sj.neuron_factory(), cnf=cnf)
    sj.set_step_mode(model, "m")  # factory neurons are multi-step: the whole model must be
    with pytest.raises(rate.UnsupportedModuleError) as error:
        rate.enable(model)
    assert str(error.value) == (
        f"rate-based backprop cannot train module 'layer1.0' (BasicBlock): it joins its "
        f"branches with cnf='{cnf}', a product of spike trains, and the time-mean of a product "
        "of spike trains is not the product of their firing rates, so no rate pass can "
        "reproduce its value. Build the model with cnf='ADD', or train it with BPTT.")
    assert not rate.is_enabled(model) and "forward" not in vars(model.sn1)


def test_a_model_that_repeats_its_input_over_T_is_refused():
    class Repeats(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.sn = layer.Linear(3, 3, step_mode="m"), _lif()

        def _to_sequence(self, x):
            return x.unsqueeze(0).repeat(4, 1, 1) if x.dim() == 2 else x

        def forward(self, x):
            return self.sn(self.fc(self._to_sequence(x))).mean(0)

    wrapped = nn.Sequential(Repeats())
    with pytest.raises(rate.UnsupportedModuleError,
                       match=r"cannot train Repeats \(module '0'\): its forward repeats a "
                             r"\[B,C,H,W\] image over its own T \(_to_sequence\)"):
        rate.enable(wrapped)


def test_spiking_self_attention_models_are_refused():
    spikformer = pytest.importorskip("spikingjelly.activation_based.model.spikformer")
    model = spikformer.spikformer_cifar10(T=2, spiking_neuron=sj.neuron_factory())
    with pytest.raises(rate.UnsupportedModuleError,
                       match=r"^rate-based backprop cannot train Spikformer: its spiking "
                             r"self-attention multiplies spike tensors .*not the product of "
                             r"their firing rates.*Train it with BPTT"):
        rate.enable(model)
