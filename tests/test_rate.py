"""Rate-based backprop (sj_distill.rate): gradients against hand-written formulas and against
SpikingJelly's own BPTT, forward values, BatchNorm statistics, patch/unpatch, hook phases,
errors, real models, and a seeded digits run against BPTT."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional, layer

from _zoo_students import zoo_student
from sj_distill import models, rate, sj


def _neuron(**kw):
    return sj.make_neuron(step_mode="m", **kw)


NEURON_CONFIGS = [
    dict(kind="lif", decay=0.5, decay_input=False, reset="soft", detach_reset=True),
    dict(kind="lif", decay=0.5, decay_input=False, reset="soft", detach_reset=False),
    dict(kind="lif", decay=0.4, decay_input=True, reset="soft", detach_reset=True),
    dict(kind="lif", decay=0.4, decay_input=True, reset="hard", detach_reset=False),
    dict(kind="lif", decay=0.3, decay_input=False, reset="hard", v_reset=-0.2, detach_reset=True),
    dict(kind="if", reset="soft", detach_reset=False),
    dict(kind="if", reset="hard", detach_reset=True),
    dict(kind="plif", decay=0.3, decay_input=False, reset="soft", detach_reset=True),
    dict(kind="plif", decay=0.3, decay_input=True, reset="hard", detach_reset=False,
         surrogate_fn="atan", alpha=2.0),
]


@pytest.mark.parametrize("config", NEURON_CONFIGS, ids=lambda c: "-".join(
    f"{k}={v}" for k, v in c.items() if k in ("kind", "decay_input", "reset", "detach_reset")))
def test_eligibility_equals_bptt_derivative_wrt_mean_input(config):
    """e = d r / d xbar where every x_t moves with xbar: SpikingJelly's BPTT through
    x_t = xbar + (x_t - xbar).detach() gives it independently of our recurrences."""
    T, N = 6, 300
    x = torch.randn(T, N) * 0.9 + 0.5
    upstream = torch.randn(N)
    reference = _neuron(**config)
    model = nn.Sequential(copy.deepcopy(reference))
    rate.enable(model, scale_grad_by_T=False).train()

    x_rate = x.clone().requires_grad_(True)
    out = model(x_rate)
    (out * upstream).sum().backward()

    x_bar = x.mean(0).requires_grad_(True)
    spikes = reference(x_bar.expand(T, N) + (x - x.mean(0)).detach())
    (spikes.mean(0) * upstream).sum().backward()

    assert torch.equal(out.detach(), spikes.detach().mean(0))
    assert 0 < spikes.mean() < 1
    # d out / d x_t = e / T for every t, so the sum over t is e * upstream
    torch.testing.assert_close(x_rate.grad.sum(0), x_bar.grad, rtol=1e-5, atol=1e-6)
    if config["kind"] == "plif":
        torch.testing.assert_close(model[0].w.grad, reference.w.grad, rtol=1e-4, atol=1e-6)


def test_one_lif_network_gradients_equal_written_out_formulas():
    """(a) linear -> LIF (decay 0.5, soft detached reset, sigmoid alpha 4) -> linear."""
    T, B, D, H, K = 5, 7, 4, 6, 3
    net = nn.Sequential(layer.Linear(D, H, step_mode="m"),
                        _neuron(kind="lif", decay=0.5, reset="soft", detach_reset=True),
                        layer.Linear(H, K, step_mode="m"))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    W1, b1, W2, b2 = (p.detach().clone() for p in (net[0].weight, net[0].bias,
                                                     net[2].weight, net[2].bias))
    x = torch.rand(T, B, D)
    G = torch.randn(B, K)
    rate.enable(net).train()
    out = net(x)
    (out * G).sum().backward()

    # spike pass, written out: h_t = 0.5 v_{t-1} + z_t, s_t = [h_t >= 1], v_t = h_t - s_t
    lam, alpha = 0.5, 4.0
    v = torch.zeros(B, H)
    kappa = torch.zeros(B, H)
    rate_sum = torch.zeros(B, H)
    elig_sum = torch.zeros(B, H)
    for t in range(T):
        h = lam * v + x[t] @ W1.T + b1
        s = (h >= 1.0).float()
        sig = torch.sigmoid(alpha * (h - 1.0))
        sg = alpha * sig * (1 - sig)
        kappa = 1.0 + lam * kappa  # kappa_t = 1 + lam * kappa_{t-1}, kappa_1 = 1
        elig_sum += sg * kappa
        rate_sum += s
        v = h - s
    r, e = rate_sum / T, elig_sum / T
    # rate pass: out = W2 r + b2, loss gradient scaled by 1/T
    g_out = G / T
    g_r = g_out @ W2
    g_z = g_r * e
    x_bar = x.mean(0)
    torch.testing.assert_close(out.detach(), r @ W2.T + b2)
    torch.testing.assert_close(net[2].weight.grad, g_out.T @ r)
    torch.testing.assert_close(net[2].bias.grad, g_out.sum(0))
    torch.testing.assert_close(net[0].weight.grad, g_z.T @ x_bar)
    torch.testing.assert_close(net[0].bias.grad, g_z.sum(0))
    assert r.min() < r.max() and (e > 0).any()


def _conv_net(step_mode="m", bn=False, maxpool=False):
    sn = dict(kind="lif", decay=0.5, reset="soft", detach_reset=True, step_mode=step_mode)
    mods = [layer.Conv2d(2, 6, 3, padding=1, step_mode=step_mode)]
    mods += [layer.BatchNorm2d(6, step_mode=step_mode)] if bn else []
    mods += [sj.make_neuron(**sn),
             (layer.MaxPool2d if maxpool else layer.AvgPool2d)(2, 2, step_mode=step_mode),
             layer.Conv2d(6, 8, 3, padding=1, step_mode=step_mode)]
    mods += [layer.BatchNorm2d(8, step_mode=step_mode)] if bn else []
    mods += [sj.make_neuron(**{**sn, "kind": "if"}),
             layer.AdaptiveAvgPool2d((2, 2), step_mode=step_mode),
             layer.Flatten(step_mode=step_mode), layer.Linear(32, 5, step_mode=step_mode)]
    return nn.Sequential(*mods)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_T1_rate_gradients_equal_bptt():
    """(b) T=1, soft detached reset, no BN: rate-BP and BPTT gradients agree."""
    bptt = _conv_net()
    with torch.no_grad():  # make both layers fire
        bptt[0].weight.mul_(4.0)
        bptt[3].weight.mul_(8.0)
        bptt[3].bias.add_(0.5)
    rate_net = rate.enable(copy.deepcopy(bptt)).train()
    x, y = torch.rand(1, 8, 2, 8, 8), torch.randint(0, 5, (8,))
    F.cross_entropy(bptt(x).mean(0), y).backward()
    F.cross_entropy(rate_net(x), y).backward()
    for name, g in _grads(bptt).items():
        torch.testing.assert_close(_grads(rate_net)[name], g, rtol=1e-5, atol=1e-7)
    assert all(g.abs().sum() > 0 for g in _grads(bptt).values())


def test_train_output_is_time_mean_of_eval_logits_with_bn_in_eval_statistics():
    """(c) linear after the last neuron, BN with running statistics, max-pool inside."""
    net = _conv_net(bn=True, maxpool=True)
    for bn in (net[1], net[5]):
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 1.5)
    rate.enable(net).train()
    net[1].eval(), net[5].eval()
    x = torch.rand(4, 3, 2, 8, 8) * 2
    out_train = net(x)
    functional.reset_net(net)
    net.eval()
    with torch.no_grad():
        out_eval = net(x)
    assert out_train.shape == (3, 5) and out_eval.shape == (4, 3, 5)
    torch.testing.assert_close(out_train.detach(), out_eval.mean(0), rtol=1e-5, atol=1e-6)


def test_bn_running_stats_updated_once_like_bptt_and_rate_value_uses_spike_stats():
    plain = _conv_net(bn=True)
    enabled = rate.enable(copy.deepcopy(plain)).train()
    x = torch.rand(3, 4, 2, 8, 8)
    spike_logits = []
    enabled[-1].register_forward_hook(
        lambda m, i, o: spike_logits.append(o) if rate.current_phase() == "spike" else None)
    plain(x)
    out = enabled(x)
    for bn_plain, bn_rate in ((plain[1], enabled[1]), (plain[5], enabled[5])):
        assert int(bn_rate.num_batches_tracked) == 1
        torch.testing.assert_close(bn_rate.running_mean, bn_plain.running_mean)
        torch.testing.assert_close(bn_rate.running_var, bn_plain.running_var)
    torch.testing.assert_close(out.detach(), spike_logits[0].mean(0), rtol=1e-5, atol=1e-6)


def _snapshot(model):
    return {name: dict(vars(m)) for name, m in model.named_modules()}


def test_eval_bit_identical_before_enable_after_disable_and_nothing_left_behind():
    """(d) also after a training step while enabled (weights restored afterwards)."""
    net = _conv_net(bn=True, maxpool=True)
    net[2] = _neuron(kind="plif", decay=0.3, reset="soft", detach_reset=True)
    net.eval()
    x = torch.rand(4, 2, 2, 8, 8)
    with torch.no_grad():
        before = net(x)
    functional.reset_net(net)
    keys_before = {n: set(d) for n, d in _snapshot(net).items()}
    weights = copy.deepcopy(net.state_dict())

    rate.enable(net)
    assert rate.is_enabled(net)
    with torch.no_grad():
        during = net(x)
    functional.reset_net(net)
    net.train()
    net(x).sum().backward()
    functional.reset_net(net)
    assert list(net.state_dict()) == list(weights)
    net.load_state_dict(weights)
    rate.disable(net)
    assert not rate.is_enabled(net)
    net.eval()
    with torch.no_grad():
        after = net(x)
    assert torch.equal(before, during) and torch.equal(before, after)
    assert {n: set(d) for n, d in _snapshot(net).items()} == keys_before


def test_stage_hook_sees_rate_phase_with_grad_carrying_B_C_H_W_tensor():
    model = models.create_model("cifar_resnet20", num_classes=10)
    rate.enable(model).train()
    seen = []
    model.layer2.register_forward_hook(
        lambda m, i, o: seen.append((rate.current_phase(), tuple(o.shape), o.requires_grad)))
    x = torch.rand(2, 3, 3, 16, 16)
    assert rate.current_phase() is None
    out = model(x)
    assert rate.current_phase() is None
    assert seen == [("spike", (2, 3, 32, 8, 8), False), ("rate", (3, 32, 8, 8), True)]
    out.sum().backward()
    assert model.conv1.weight.grad is not None


def test_module_declaring_no_rate_support_is_refused():
    class StepAttention(nn.Module):
        supports_rate_bp = False

        def forward(self, x):
            return x

    net = nn.Sequential(layer.Linear(3, 3, step_mode="m"), _neuron())
    net.add_module("attn", StepAttention())
    with pytest.raises(rate.UnsupportedModuleError, match=r"'attn' \(StepAttention\).*BPTT"):
        rate.enable(net)
    assert not rate.is_enabled(net) and "forward" not in vars(net[1])


def test_unknown_leaf_and_unsupported_neuron_are_named():
    net = nn.Sequential(layer.Linear(3, 3, step_mode="m"),
                        nn.Sequential(nn.ReLU()), _neuron())
    with pytest.raises(rate.UnsupportedModuleError, match=r"'1\.0' \(ReLU\)"):
        rate.enable(net)
    from spikingjelly.activation_based import neuron
    net = nn.Sequential(layer.Linear(3, 3, step_mode="m"),
                        neuron.KLIFNode(step_mode="m") if hasattr(neuron, "KLIFNode")
                        else neuron.QIFNode(step_mode="m"))
    with pytest.raises(rate.UnsupportedModuleError, match=r"'1' \(\w+Node\).*IFNode, LIFNode"):
        rate.enable(net)


def test_mixed_step_modes_are_refused_before_patching():
    net = nn.Sequential(layer.Linear(3, 3, step_mode="m"), _neuron(),
                        sj.make_neuron(step_mode="s"))
    with pytest.raises(ValueError, match=r"^rate\.enable: Sequential mixes step modes "
                                         r"\(multi-step: '0', '1'; single-step: '2'\)"):
        rate.enable(net)
    assert not rate.is_enabled(net) and "forward" not in vars(net[1])


def test_single_step_model_is_driven_step_by_step_and_matches_multi_step():
    single = _conv_net(step_mode="s")
    with torch.no_grad():
        single[0].weight.mul_(3.0)
    multi = copy.deepcopy(single)
    sj.set_step_mode(multi, "m")
    rate.enable(single).train()
    rate.enable(multi).train()
    x = torch.rand(4, 3, 2, 8, 8)
    out_single, out_multi = single(x), multi(x)
    out_single.sum().backward()
    out_multi.sum().backward()
    torch.testing.assert_close(out_single, out_multi)
    for name, g in _grads(multi).items():
        torch.testing.assert_close(_grads(single)[name], g, rtol=1e-5, atol=1e-7)
    functional.reset_net(single)
    single.eval()  # eval: the untouched single-step SNN, driven by the caller
    with torch.no_grad():
        logits = torch.stack([single(x[t]) for t in range(4)])
    torch.testing.assert_close(logits.mean(0), out_single.detach())


@pytest.mark.parametrize("name", ["spiking_resnet18", "sew_resnet18", "spiking_vgg11_bn",
                                  "vgg11", "sew_resnet34"])
def test_real_models_one_rate_step(name):
    """SJ zoo students and project backbones: the rate-pass value is the time-mean of the
    spike-pass logits, every parameter gets a finite gradient, disable restores."""
    model = zoo_student(name) if name not in ("vgg11", "sew_resnet34") \
        else models.create_model(name, num_classes=10)
    head = model.classifier if hasattr(model, "classifier") else model.fc
    rate.enable(model).train()
    logits = {}
    head.register_forward_hook(lambda m, i, o: logits.setdefault(rate.current_phase(), o))
    out = model(torch.rand(2, 2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 10)
    torch.testing.assert_close(out.detach(), logits["spike"].mean(0), rtol=1e-4, atol=1e-5)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    rate.disable(model)
    assert "forward" not in vars(model)


def _digits(T):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(y), generator=g)
    return x[perm[:1400]], y[perm[:1400]], x[perm[1400:]], y[perm[1400:]]


def _digits_net():
    sn = dict(kind="lif", decay=0.5, reset="soft", detach_reset=True, step_mode="m")
    return nn.Sequential(
        layer.Flatten(step_mode="m"),
        layer.Linear(64, 128, step_mode="m"), layer.SeqToANNContainer(nn.BatchNorm1d(128)),
        sj.make_neuron(**sn),
        layer.Linear(128, 64, step_mode="m"), layer.SeqToANNContainer(nn.BatchNorm1d(64)),
        sj.make_neuron(**sn),
        layer.Linear(64, 10, step_mode="m"))


def _train_digits(use_rate, T=4, epochs=4):
    torch.manual_seed(0)
    net = _digits_net()
    if use_rate:
        rate.enable(net, scale_grad_by_T=False)
    x_tr, y_tr, x_te, y_te = _digits(T)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(y_tr), generator=g).split(50):
            x = x_tr[idx].unsqueeze(0).repeat(T, 1, 1, 1, 1)
            out = net(x)
            out = out if use_rate else out.mean(0)
            opt.zero_grad()
            F.cross_entropy(out, y_tr[idx]).backward()
            opt.step()
            functional.reset_net(net)
    net.eval()
    with torch.no_grad():
        pred = net(x_te.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0).argmax(1)
    functional.reset_net(net)
    return (pred == y_te).float().mean().item() * 100


def test_digits_rate_bp_within_two_points_of_bptt(capsys):
    """(e) same seeded model, data order and budget; accuracies printed for the report."""
    acc_bptt = _train_digits(use_rate=False)
    acc_rate = _train_digits(use_rate=True)
    with capsys.disabled():
        print(f"\n[digits] BPTT {acc_bptt:.2f}%  rate-BP {acc_rate:.2f}%")
    assert acc_bptt > 85
    assert abs(acc_rate - acc_bptt) <= 2.0


@pytest.mark.parametrize("name", ["sigmoid", "atan", "rect"])
@pytest.mark.parametrize("alpha", [None, 3.0])
def test_closed_form_surrogate_derivative_equals_surrogate_backward(name, alpha):
    """The spike pass's closed-form g'(x) equals the surrogate's own backward (autograd)."""
    from sj_distill.rate.surrogate_grad import CLOSED_FORMS, surrogate_derivative
    fn = sj.make_surrogate(name, alpha)
    assert type(fn) in CLOSED_FORMS
    x = torch.linspace(-3, 3, 2001)
    reference = sj.surrogate_derivative(fn, x)
    torch.testing.assert_close(surrogate_derivative(fn, x), reference, rtol=1e-6, atol=1e-7)
    assert reference.max() > 0.1 * float(fn.alpha)


def test_unknown_surrogate_falls_back_to_autograd():
    """Erf has no closed form here: its backward, g'(x) = alpha / sqrt(pi) * exp(-(alpha x)^2)
    (the primitive is erfc(-alpha x) / 2), comes through autograd."""
    from sj_distill.rate.surrogate_grad import CLOSED_FORMS, surrogate_derivative
    fn = sj.make_surrogate("erf")
    assert type(fn) not in CLOSED_FORMS
    x = torch.linspace(-2, 2, 401)
    expected = 1.0 / torch.pi ** 0.5 * float(fn.alpha) * torch.exp(-(float(fn.alpha) * x) ** 2)
    torch.testing.assert_close(surrogate_derivative(fn, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("config", [NEURON_CONFIGS[1], NEURON_CONFIGS[4], NEURON_CONFIGS[-1]],
                         ids=["lif-soft", "lif-hard-detached", "plif-hard"])
def test_time_chunked_spike_pass_equals_whole_sequence(config):
    """Calling each neuron on 1, 2 or 4 steps at a time (T=5, so the last chunk is short)
    gives the same output and gradients as one call over all T steps."""
    T, N = 5, 200
    x = torch.randn(T, N) * 0.9 + 0.5
    net = nn.Sequential(layer.Linear(N, 64, step_mode="m"), _neuron(**config),
                        layer.Linear(64, 3, step_mode="m"))
    results = []
    for chunk in (T, 1, 2, 4):
        model = rate.enable(copy.deepcopy(net), time_chunk=chunk).train()
        out = model(x.unsqueeze(1).expand(T, 4, N).contiguous())
        out.pow(2).sum().backward()
        functional.reset_net(model)
        results.append((out.detach(), _grads(model)))
    assert 0 < results[0][0].abs().sum()
    for out, grads in results[1:]:
        assert torch.equal(out, results[0][0])
        for name, g in results[0][1].items():
            torch.testing.assert_close(grads[name], g, rtol=1e-6, atol=1e-7)


def test_time_chunk_must_be_positive_int():
    with pytest.raises(ValueError, match="time_chunk must be a positive int"):
        rate.enable(_conv_net(), time_chunk=0)


# --------------------------------------------------------------------------- rate-pass BatchNorm

def _reference_rate_grads(model, x, upstream, lam=0.2, threshold=1.0, alpha=4.0,
                          max_pool="rate"):
    """Rate-based backprop written out from the paper's formulas on a plain copy of ``model``
    (LIF with ``v <- lam*v + x``, soft detached reset, sigmoid surrogate), with forward hooks
    only: nothing of ``sj_distill.rate`` is used. Works for multi- and single-step models.

    Spike pass: every BN records the mean and biased variance of its input pooled over all
    steps (``T*B, H, W``); every neuron its rate ``r = mean_t s_t`` and eligibility
    ``e = mean_t kappa_t sg(h_t)``, ``kappa_t = 1 + lam kappa_{t-1}``. Rate pass on the time-mean
    input: BN returns ``gamma (x - m)/sqrt(v + eps) + beta`` with ``m = mu_s + (m_r - sg m_r)``,
    ``v = relu(var_s + (v_r - sg v_r))``, ``v_r = mean (x - m)^2``; neurons return
    ``r + x e - sg(x e)``. Max-pools: ``max_pool="rate"`` pools the rate map (the module
    itself, nothing added); ``"spikes"`` (multi-step models) returns the time-mean of the spike
    pass's pooled output with the gradient of pooling the rate map. Returns the parameter
    gradients of ``sum(out * upstream) / T``."""
    net = copy.deepcopy(model).train()
    multi = any(getattr(m, "step_mode", "s") == "m" for m in net.modules())
    T = x.shape[0]
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)] if max_pool == "spikes" \
        else []
    pooled = {}

    def record_pooled(m, args, out):
        pooled[m] = out.mean(0)  # multi-step [T, B, ...]

    spike_hooks = [m.register_forward_hook(record_pooled) for m in pools]
    inputs = {}
    is_bn = lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm)  # noqa: E731
    is_sn = lambda m: type(m).__name__ == "LIFNode"  # noqa: E731
    hooks = [m.register_forward_pre_hook(lambda m, args: inputs.setdefault(m, []).append(args[0]))
             for m in net.modules() if is_bn(m) or is_sn(m)]
    with torch.no_grad():
        if multi:
            net(x)
        else:
            for t in range(T):
                net(x[t])
    for h in hooks + spike_hooks:
        h.remove()
    records = {}
    for m, seq in inputs.items():
        if is_bn(m):  # [T*B, C, ...] over all steps
            z = torch.cat(seq, 0)
            z = z.flatten(0, 1) if getattr(m, "step_mode", "s") == "m" else z
            dims = [0] + list(range(2, z.dim()))
            records[m] = (z.mean(dims), z.var(dims, unbiased=False))
            continue
        z = seq[0] if multi else torch.stack(seq)  # [T, B, ...]
        v, kappa = torch.zeros_like(z[0]), torch.zeros_like(z[0])
        rate_sum, elig_sum = torch.zeros_like(z[0]), torch.zeros_like(z[0])
        for t in range(T):
            h = lam * v + z[t]
            s = (h >= threshold).to(z.dtype)
            sig = torch.sigmoid(alpha * (h - threshold))
            kappa = 1.0 + lam * kappa
            elig_sum += kappa * alpha * sig * (1 - sig)
            rate_sum += s
            v = h - s * threshold
        records[m] = (rate_sum / T, elig_sum / T)
    functional.reset_net(net)
    sj.set_step_mode(net, "s")
    for parent in list(net.modules()):  # SeqToANNContainer stays multi-step: unwrap it
        for name, child in parent.named_children():
            if isinstance(child, layer.SeqToANNContainer):
                setattr(parent, name, nn.Sequential(*child))

    def bn_rate(m, args, _out):
        x_in = args[0]
        mu_s, var_s = records[m]
        shape = [1, -1] + [1] * (x_in.dim() - 2)
        dims = [0] + list(range(2, x_in.dim()))
        m_r = x_in.mean(dims, keepdim=True)
        mean = mu_s.view(shape) + (m_r - m_r.detach())
        v_r = ((x_in - mean) ** 2).mean(dims, keepdim=True)
        var = F.relu(var_s.view(shape) + (v_r - v_r.detach()))
        return m.weight.view(shape) * (x_in - mean) / torch.sqrt(var + m.eps) + m.bias.view(shape)

    def sn_rate(m, args, _out):
        r, e = records[m]
        return r + (args[0] * e - (args[0] * e).detach())

    for m in records:
        m.register_forward_hook(bn_rate if is_bn(m) else sn_rate)
    for m in pools:
        m.register_forward_hook(lambda m, args, out: pooled[m] + (out - out.detach()))
    out = net(x.mean(0))
    ((out * upstream).sum() / T).backward()
    return out.detach(), {n: p.grad for n, p in net.named_parameters()}


def _rate_grads(model, x, upstream, **options):
    net = rate.enable(copy.deepcopy(model), **options).train()
    out = net(x)
    (out * upstream).sum().backward()
    return out.detach(), {n: p.grad for n, p in net.named_parameters()}


def _assert_grads_match(got, want, tol):
    out_got, grads_got = got
    out_want, grads_want = want
    torch.testing.assert_close(out_got, out_want, rtol=tol, atol=tol)
    scale = max(g.norm() for g in grads_want.values())  # a bias before a BN has ~0 gradient
    assert scale > 0
    for name, g in grads_want.items():
        err = ((grads_got[name] - g).norm() / torch.maximum(g.norm(), 1e-4 * scale)).item()
        assert err < tol, f"{name}: relative error {err:.2e}"


def test_resnet18_rate_gradients_equal_reference_formulas_float64():
    """resnet18, T=4, float64: value and every parameter gradient equal the reference
    written from the formulas (BN normaliser from the spike-pass statistics) to 1e-10."""
    torch.manual_seed(0)
    model = models.create_model("resnet18", num_classes=10, decay=0.2, reset="soft",
                                detach_reset=True, surrogate_fn="sigmoid", alpha=4.0).double()
    x = torch.rand(4, 4, 3, 8, 8, dtype=torch.float64) * 2
    upstream = torch.randn(4, 10, dtype=torch.float64)
    _assert_grads_match(_rate_grads(model, x, upstream), _reference_rate_grads(model, x, upstream),
                        1e-10)


def _bn_lif_net(step_mode, container=False):
    sn = dict(kind="lif", decay=0.2, reset="soft", detach_reset=True, step_mode=step_mode)
    if container:
        convs = [layer.SeqToANNContainer(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6)),
                 layer.SeqToANNContainer(nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4))]
    else:
        convs = [nn.Sequential(layer.Conv2d(2, 6, 3, padding=1, step_mode=step_mode),
                               layer.BatchNorm2d(6, step_mode=step_mode)),
                 nn.Sequential(layer.Conv2d(6, 4, 3, padding=1, step_mode=step_mode),
                               layer.BatchNorm2d(4, step_mode=step_mode))]
    return nn.Sequential(convs[0], sj.make_neuron(**sn), convs[1], sj.make_neuron(**sn),
                         layer.Flatten(step_mode=step_mode),
                         layer.Linear(4 * 6 * 6, 3, step_mode=step_mode)).double()


@pytest.mark.parametrize("variant", ["multi-step SJ BN", "nn.BatchNorm2d in SeqToANNContainer",
                                     "single-step SJ BN"])
def test_bn_variants_rate_gradients_equal_reference_formulas(variant):
    """SpikingJelly BN and nn.BatchNorm2d inside SeqToANNContainer (multi-step), and a
    single-step model (spike pass step by step, rate pass with the statistics pooled over all
    steps), against the reference, with a time-varying input."""
    torch.manual_seed(1)
    model = _bn_lif_net("s" if variant.startswith("single") else "m",
                        container="SeqToANN" in variant)
    x = torch.rand(5, 6, 2, 6, 6, dtype=torch.float64) * 3
    upstream = torch.randn(6, 3, dtype=torch.float64)
    _assert_grads_match(_rate_grads(model, x, upstream), _reference_rate_grads(model, x, upstream),
                        1e-10)


def test_identity_container_shortcuts_are_accepted_as_linear():
    """The public ResNets' idiom: ``self.shortcut = nn.Sequential()`` as the identity."""

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = layer.Conv2d(3, 3, 3, padding=1, step_mode="m")
            self.shortcut = nn.Sequential()
            self.skip = nn.Identity()
            self.sn = sj.make_neuron(kind="lif", decay=0.2, step_mode="m")

        def forward(self, x):
            return self.sn(self.conv(x) + self.shortcut(x) + self.skip(x))

    torch.manual_seed(2)
    model = nn.Sequential(Block(), layer.Flatten(step_mode="m"),
                          layer.Linear(3 * 4 * 4, 2, step_mode="m")).double()
    x = torch.rand(3, 5, 3, 4, 4, dtype=torch.float64)
    upstream = torch.randn(5, 2, dtype=torch.float64)
    _assert_grads_match(_rate_grads(model, x, upstream), _reference_rate_grads(model, x, upstream),
                        1e-10)


def test_rate_pass_bn_gradient_is_that_of_the_time_averaged_spike_pass_bn():
    """Independent formula: the rate-pass BN gradient equals d/dx of mean_t BN(x_t), where the
    training-mode BN normalises all T*B samples together and every x_t = x + (x_t - x) moves
    with the time-mean x (autograd through torch's own batch norm)."""
    torch.manual_seed(3)
    T, B, C = 5, 6, 3
    bn = layer.BatchNorm2d(C, step_mode="m").double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    z = torch.randn(T, B, C, 4, 4, dtype=torch.float64) * torch.rand(T, 1, C, 1, 1) + 0.3
    upstream = torch.randn(B, C, 4, 4, dtype=torch.float64)

    x = z.mean(0).requires_grad_(True)
    steps = x.expand(T, *x.shape) + (z - z.mean(0))
    y = F.batch_norm(steps.flatten(0, 1), None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
    (y.view(T, B, C, 4, 4).mean(0) * upstream).sum().backward()

    net = rate.enable(nn.Sequential(copy.deepcopy(bn), sj.make_neuron(kind="if", step_mode="m")),
                      scale_grad_by_T=False).train()
    bn_out = {}
    net[0].register_forward_hook(lambda m, i, o: bn_out.setdefault(rate.current_phase(), o))
    z_in = z.clone().requires_grad_(True)
    net(z_in)
    (bn_out["rate"] * upstream).sum().backward()
    torch.testing.assert_close(bn_out["rate"].detach(), y.view(T, B, C, 4, 4).mean(0).detach())
    torch.testing.assert_close(z_in.grad.sum(0), x.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (4, 6, 1, 28, 28)], ids=["image", "sequence"])
def test_a_model_with_its_own_time_loop_is_refused_in_one_line(shape):
    """SpikingJelly's example CSNN repeats its [B,C,H,W] input over its own T inside forward:
    rate-BP cannot run it once on the time-mean input, and says which part to enable."""
    from spikingjelly.activation_based.examples.conv_fashion_mnist import CSNN

    net = CSNN(T=4, channels=4)
    rate.enable(net)
    with pytest.raises(rate.UnsupportedModuleError) as err:
        net(torch.rand(*shape))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("rate-based backprop needs a model whose forward maps [T,B,...] "
                              f"to [T,B,...] step by step, but on input {list(shape)} ")
    assert message.endswith("use rate.enable(net.conv_fc) and call net.conv_fc on "
                            "x.unsqueeze(0).repeat(T, 1, 1, 1, 1), or train it with BPTT.")
    part = CSNN(T=4, channels=4).conv_fc  # the advice works
    rate.enable(part)
    x = torch.rand(6, 1, 28, 28)
    out = part(x.unsqueeze(0).repeat(4, 1, 1, 1, 1))
    assert out.shape == (6, 10)
    out.sum().backward()
    assert part[0].weight.grad is not None


def _pool_net():
    """LIF (decay 0.2, soft detached reset, sigmoid alpha 4) -> 2x2 max-pool -> Linear(1, 1)."""
    net = nn.Sequential(_neuron(kind="lif", decay=0.2, reset="soft", detach_reset=True,
                                surrogate_fn="sigmoid", alpha=4.0),
                        layer.MaxPool2d(2, 2, step_mode="m"), layer.Flatten(step_mode="m"),
                        layer.Linear(1, 1, step_mode="m")).double()
    with torch.no_grad():
        net[3].weight.fill_(2.0)
        net[3].bias.fill_(0.3)
    return net


@pytest.mark.parametrize("max_pool, value, weight_grad", [("rate", 2 * 0.5 + 0.3, 0.5),
                                                          ("spikes", 2 * 1.0 + 0.3, 1.0)])
def test_max_pool_rules_by_hand(max_pool, value, weight_grad):
    """One 2x2 window, T=2: neuron a spikes at step 1 only, b at step 2 only (rates 0.5, 0.5),
    c and d never. 'rate' pools the rate map: 0.5. 'spikes' averages the pooled spikes:
    mean(max(1,0,0,0), max(0,1,0,0)) = 1. Both route the gradient to the arg-max of the rate
    map, a tie between a and b broken towards the first (a): dL/dx_t(a) = w e_a / T with
    e_a = (kappa_1 sg(h_1) + kappa_2 sg(h_2)) / 2, h = (1.5, 0.2 * 0.5 + 0), kappa = (1, 1.2)."""
    currents = torch.tensor([[[1.5, 0.0], [0.5, 0.0]], [[0.0, 1.5], [0.5, 0.0]]],
                            dtype=torch.float64)  # [T, H, W] = a b / c d
    x = currents.view(2, 1, 1, 2, 2).clone().requires_grad_(True)
    net = rate.enable(_pool_net(), scale_grad_by_T=False, max_pool=max_pool).train()
    out = net(x)
    out.sum().backward()

    def sg(h):
        s = torch.sigmoid(torch.tensor(4.0 * (h - 1.0), dtype=torch.float64))
        return 4.0 * s * (1 - s)

    e_a = (1.0 * sg(1.5) + 1.2 * sg(0.2 * 0.5)) / 2
    expected = torch.zeros_like(x)
    expected[:, 0, 0, 0, 0] = 2.0 * e_a / 2
    assert out.item() == pytest.approx(value, abs=1e-15)
    assert net[3].weight.grad.item() == pytest.approx(weight_grad, abs=1e-15)
    torch.testing.assert_close(x.grad, expected, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("max_pool", ["rate", "spikes"])
def test_sew_resnet18_max_pool_rules_equal_reference_formulas_float64(max_pool):
    """sew_resnet18 (7x7/2 stem, 3x3/2 max-pool on spike maps, ties in the rate map), T=3,
    float64: value and every parameter gradient against the reference written from each rule
    (the reference's neurons return exactly r, so ties fall to the first index as ours)."""
    torch.manual_seed(0)
    model = models.create_model("sew_resnet18", num_classes=10, decay=0.2, reset="soft",
                                detach_reset=True, surrogate_fn="sigmoid", alpha=4.0).double()
    x = torch.rand(3, 4, 3, 16, 16, dtype=torch.float64) * 3
    upstream = torch.randn(4, 10, dtype=torch.float64)
    _assert_grads_match(_rate_grads(model, x, upstream, max_pool=max_pool),
                        _reference_rate_grads(model, x, upstream, max_pool=max_pool), 1e-10)


def test_max_pool_rules_differ_at_T_above_1_and_agree_with_bptt_at_T_1():
    """conv -> LIF -> max-pool -> conv -> IF -> ... (no BN): at T=1 both rules give BPTT's
    gradients; at T=4 only the layers fed by the pool's value see the difference."""
    torch.manual_seed(4)
    bptt = _conv_net(maxpool=True).double()
    with torch.no_grad():
        bptt[0].weight.mul_(4.0)
    x = torch.rand(1, 6, 2, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    F.cross_entropy(bptt(x).mean(0), y).backward()
    functional.reset_net(bptt)
    for max_pool in rate.MAX_POOL_RULES:
        net = rate.enable(copy.deepcopy(bptt), max_pool=max_pool).train()
        net.zero_grad()
        F.cross_entropy(net(x), y).backward()
        for name, g in _grads(bptt).items():
            torch.testing.assert_close(_grads(net)[name], g, rtol=1e-10, atol=1e-12)
    x4 = torch.rand(4, 6, 2, 8, 8, dtype=torch.float64)
    by_rule = {m: _rate_grads(bptt, x4, torch.ones(6, 5, dtype=torch.float64), max_pool=m)[1]
               for m in rate.MAX_POOL_RULES}
    # the rules differ in the value the pool passes on (so in the next conv's weight gradient),
    # not in where the pool's gradient goes (the first conv's gradient is the same)
    assert not torch.allclose(by_rule["rate"]["3.weight"], by_rule["spikes"]["3.weight"])
    torch.testing.assert_close(by_rule["rate"]["0.weight"], by_rule["spikes"]["0.weight"])


def test_max_pool_rule_is_checked_and_switchable():
    net = _pool_net()
    with pytest.raises(ValueError, match=r"max_pool must be 'rate' .* or 'spikes' .*, got 'max'"):
        rate.enable(net, max_pool="max")
    x = torch.tensor([1.5, 0.0, 0.0, 0.0], dtype=torch.float64).view(1, 1, 1, 2, 2)
    x = torch.cat([x, x.flip(-1)])  # a fires at step 1, b at step 2
    rate.enable(net, max_pool="spikes").train()
    assert net(x).item() == pytest.approx(2.3)
    functional.reset_net(net)
    rate.enable(net, max_pool="rate")
    assert net(x).item() == pytest.approx(1.3)
