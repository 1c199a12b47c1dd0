"""The spike pass's kernels: the fused eligibility against the step-by-step reference, the
time-chunk knob, SpikingJelly's CUDA kernels against its torch kernels, and AMP (the CUDA
tests skip without a GPU)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional, layer

from sj_distill import models, rate, sj
from sj_distill.rate.eligibility import EligibilityTrace, NeuronDynamics

from test_rate import NEURON_CONFIGS

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CONFIG_IDS = ["-".join(f"{k}={v}" for k, v in c.items()
                       if k in ("kind", "decay_input", "reset", "detach_reset"))
              for c in NEURON_CONFIGS]


def _neuron(**kw):
    return sj.make_neuron(step_mode="m", **kw)


def _spike_record(neuron, x):
    """SpikingJelly's own multi-step run of ``neuron`` on ``x`` ``[T, N]``: the post-reset
    potentials ``v_seq`` and the spikes, as the spike pass hands them to the trace."""
    neuron.store_v_seq = True
    with torch.no_grad():
        spikes = neuron(x)
    v_seq = neuron.v_seq
    functional.reset_net(neuron)
    return v_seq, spikes


def _trace(neuron, x, v_seq, spikes, chunks, fused):
    """Feed the trace ``chunks`` (step counts summing to T) and return its result."""
    trace = EligibilityTrace(NeuronDynamics.from_module(neuron), fused=fused)
    v_start = torch.full_like(x[0], 0.0 if neuron.v_reset is None else neuron.v_reset)
    start = 0
    for steps in chunks:
        stop = start + steps
        trace.update(x[start:stop], v_start if start == 0 else v_seq[start - 1],
                     v_seq[start:stop], spikes[start:stop])
        start = stop
    return trace.result()


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)],
                         ids=["float32", "float64"])
@pytest.mark.parametrize("config", NEURON_CONFIGS, ids=CONFIG_IDS)
def test_fused_eligibility_equals_step_by_step_reference(config, dtype, tol):
    """Every supported neuron configuration, fed in uneven chunks (6 = 1 + 3 + 2, so the
    recurrence state crosses chunk borders) and in one chunk: the fused trace gives the
    reference's rate, eligibility and ParametricLIF decay eligibility."""
    T, N = 6, 400
    neuron = _neuron(**config).to(dtype)
    x = (torch.randn(T, N) * 0.9 + 0.5).to(dtype)
    v_seq, spikes = _spike_record(neuron, x)
    assert v_seq.dtype == dtype and 0 < spikes.mean() < 1
    reference = _trace(neuron, x, v_seq, spikes, [1] * T, fused=False)
    assert reference[1].abs().max() > 0.05
    for chunks in ([T], [1, 3, 2]):
        fused = _trace(neuron, x, v_seq, spikes, chunks, fused=True)
        assert torch.equal(fused[0], reference[0])
        for got, want in zip(fused[1:], reference[1:]):
            if want is None:
                assert got is None
                continue
            assert got.dtype == dtype
            torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_constant_kappa_eligibility_is_the_geometric_weighted_sum():
    """Soft detached reset, LIF v <- lam*v + x: e = (1/T) sum_t (1 - lam^t)/(1 - lam) g'_t,
    written out here from the surrogate derivative at h_t = v_t + theta*s_t."""
    T, N, lam, alpha = 5, 300, 0.5, 4.0
    neuron = _neuron(kind="lif", decay=lam, reset="soft", detach_reset=True)
    x = torch.randn(T, N) + 0.6
    v_seq, spikes = _spike_record(neuron, x)
    _, elig, _ = _trace(neuron, x, v_seq, spikes, [T], fused=True)
    sig = torch.sigmoid(alpha * (v_seq + spikes - 1.0))
    weights = torch.tensor([(1 - lam ** t) / (1 - lam) for t in range(1, T + 1)])
    expected = (weights[:, None] * alpha * sig * (1 - sig)).sum(0) / T
    torch.testing.assert_close(elig, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("config", NEURON_CONFIGS, ids=CONFIG_IDS)
def test_time_chunk_T_and_1_give_identical_rates_eligibilities_and_gradients(config):
    """One neuron layer alone: its output is the rate, and with scale_grad_by_T=False the
    gradient reaching every input step is eligibility * upstream / T. time_chunk=None is one
    step per call on the CPU."""
    T, N = 5, 300
    x = torch.randn(T, N) * 0.9 + 0.5
    upstream = torch.randn(N)
    found = {}
    for chunk in (T, 1, None):
        model = rate.enable(nn.Sequential(_neuron(**config)), scale_grad_by_T=False,
                            time_chunk=chunk).train()
        x_in = x.clone().requires_grad_(True)
        out = model(x_in)
        (out * upstream).sum().backward()
        found[chunk] = (out.detach(), x_in.grad.sum(0) / upstream,
                        None if config["kind"] != "plif" else model[0].w.grad)
    assert 0 < found[T][0].mean() < 1
    for chunk in (1, None):
        assert torch.equal(found[chunk][0], found[T][0])
        torch.testing.assert_close(found[chunk][1], found[T][1], rtol=1e-6, atol=1e-7)
        if config["kind"] == "plif":
            torch.testing.assert_close(found[chunk][2], found[T][2], rtol=1e-6, atol=1e-7)


def _exact_net():
    """LIF (decay 0.5) -> linear -> IF -> linear, inputs and weights on a 1/64 grid: every sum
    is exact in float32, so CUDA and CPU kernels see bit-identical potentials."""
    net = nn.Sequential(_neuron(kind="lif", decay=0.5), layer.Linear(64, 32, step_mode="m"),
                        _neuron(kind="if", reset="hard", detach_reset=False),
                        layer.Linear(32, 10, step_mode="m"))
    with torch.no_grad():
        for lin in (net[1], net[3]):
            lin.weight.copy_((lin.weight * 64).round() / 64)
            lin.bias.copy_((lin.bias * 64).round() / 64)
    return net


@needs_cuda
def test_cuda_fused_kernel_spike_pass_equals_cpu_torch_kernel():
    """SpikingJelly's CUDA kernels (CuPy on 0.0.0.0.14, its own choice on 2.x), all T steps
    in one call, against the torch kernels on the CPU: same rates (outputs), eligibilities
    (input gradients) and parameter gradients."""
    T, B = 6, 16
    x = ((torch.rand(T, B, 64) * 3 * 64).round() / 64).requires_grad_(True)
    net = _exact_net()
    gpu = rate.enable(copy.deepcopy(net).cuda(), scale_grad_by_T=False).train()
    cpu = rate.enable(net, scale_grad_by_T=False).train()
    kernels = []
    gpu[0].register_forward_hook(lambda m, i, o: kernels.append(
        m._sj_rate.records[0].kernel) if rate.current_phase() == "spike" else None)
    x_gpu = x.detach().cuda().requires_grad_(True)
    out_cpu, out_gpu = cpu(x), gpu(x_gpu)
    out_cpu.pow(2).sum().backward()
    out_gpu.pow(2).sum().backward()
    if sj.LEGACY and sj.cupy_available():
        assert kernels[0] == "cupy"
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_gpu.grad.cpu(), x.grad, rtol=1e-5, atol=1e-6)
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{name}: {m}")


def _flat_grads(model):
    return torch.cat([p.grad.flatten().float() for p in model.parameters()])


@needs_cuda
def test_cuda_bf16_autocast_rate_bp_gradients_match_fp32():
    """bf16 autocast in both passes (eligibilities kept in fp32): the whole gradient of
    ResNet-19 within 2% (relative norm of the difference) and cosine > 0.999 of fp32."""
    torch.manual_seed(0)
    model = models.create_model("resnet19", num_classes=10).cuda().train()
    rate.enable(model)
    x = torch.rand(4, 32, 3, 32, 32, device="cuda")
    y = torch.randint(0, 10, (32,), device="cuda")
    grads = {}
    for amp in (False, True):
        model.zero_grad(set_to_none=True)
        state = copy.deepcopy(model.state_dict())
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        functional.reset_net(model)
        model.load_state_dict(state)  # the same BN running statistics for both passes
        grads[amp] = _flat_grads(model)
    ref, got = grads[False], grads[True]
    assert torch.isfinite(got).all()
    assert (got - ref).norm() / ref.norm() <= 0.02
    assert F.cosine_similarity(got, ref, dim=0) > 0.999


def test_cpu_bf16_autocast_keeps_traces_in_fp32_and_tracks_fp32_gradients():
    """Linear -> LIF -> linear under CPU bf16 autocast (the linear layers run in bf16, the
    neuron gets bf16 inputs): rates and eligibilities are float32, the rate-pass output is
    the time-mean of the spike-pass logits, and the gradients stay close to float32's."""
    T, B = 4, 64
    net = nn.Sequential(layer.Linear(32, 48, step_mode="m"), _neuron(kind="lif", decay=0.5),
                        layer.Linear(48, 10, step_mode="m"))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
    x = torch.rand(T, B, 32)
    grads, seen = {}, {}
    for amp in (False, True):
        model = rate.enable(copy.deepcopy(net)).train()
        spike_logits = []
        model[2].register_forward_hook(lambda m, i, o: spike_logits.append(o)
                                       if rate.current_phase() == "spike" else None)

        def record_dtypes(module, inputs, output, amp=amp):
            if rate.current_phase() == "rate":
                record = module._sj_rate.records[0]
                seen[amp] = (record.rate.dtype, record.elig.dtype)

        model[1].register_forward_hook(record_dtypes)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
        assert out.dtype == (torch.bfloat16 if amp else torch.float32)
        torch.testing.assert_close(out.float(), spike_logits[0].float().mean(0),
                                   rtol=2e-2, atol=2e-2)
        out.float().pow(2).sum().backward()
        grads[amp] = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert seen[True] == (torch.float32, torch.float32)
    assert F.cosine_similarity(grads[True], grads[False], dim=0) > 0.99


def test_spike_pass_only_updates_bn_like_a_training_forward_and_needs_enable():
    net = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1, step_mode="m"),
                        layer.BatchNorm2d(4, step_mode="m"), _neuron(kind="lif", decay=0.5),
                        layer.Flatten(step_mode="m"), layer.Linear(4 * 36, 3, step_mode="m"))
    with pytest.raises(RuntimeError, match="needs a model switched on with rate.enable"):
        rate.spike_pass_only(net, torch.rand(2, 3, 2, 6, 6))
    enabled = rate.enable(copy.deepcopy(net)).train()
    x = torch.rand(3, 5, 2, 6, 6)
    with torch.no_grad():
        net.train()(x)
    assert rate.spike_pass_only(enabled, x) is None
    assert int(enabled[1].num_batches_tracked) == 1
    torch.testing.assert_close(enabled[1].running_mean, net[1].running_mean)
    torch.testing.assert_close(enabled[1].running_var, net[1].running_var)
    assert enabled[2]._sj_rate.records == []


def _bench_row(method, T, mem, step_s, dtype="fp32"):
    return dict(model="m", dtype=dtype, method=method, T=T, batch=8, step_s=step_s,
                images_per_s=8 / step_s, peak_cuda_mb=mem)


def test_bench_table_and_targets_from_measurements():
    """Issue 12's targets computed from the rows: T=6 memory 300/1000 = 0.30 (met), step
    0.7/1.0 = 0.70 (missed), growth 2 -> 16 of 330/300 - 1 = +10% (met); a failed worker
    shows as failed and its ratios as '-'."""
    from sj_distill.bench import rate as rate_bench
    rows = [_bench_row("bptt", 2, 500, 0.4), _bench_row("rate", 2, 300, 0.3),
            _bench_row("bptt", 6, 1000, 1.0), _bench_row("rate", 6, 300, 0.7),
            _bench_row("bptt", 16, 2500, 3.0), _bench_row("rate", 16, 330, 1.2),
            dict(model="m", dtype="bf16", method="rate", T=2, batch=8, device="cuda",
                 error="RuntimeError: boom")]
    assert rate_bench.check_targets(rows) == [
        "met    m fp32: rate-BP/BPTT memory at T=6 0.30 (target <= 0.4)",
        "missed m fp32: rate-BP/BPTT step time at T=6 0.70 (target <= 0.6)",
        "met    m fp32: rate-BP memory growth T=2 -> 16 +10.0% (target <= +25%)",
    ]
    table = rate_bench.markdown_table(rows).splitlines()
    assert "CUDA peak (MB)" in table[0]
    assert table[2] == "| m | bf16 | 2 | - | failed: RuntimeError: boom | - | - | - | - |"
    assert table[4] == "| m | fp32 | 6 | 1000 | 300 | 0.30 | 8.0 | 11.4 | 0.70 |"


@pytest.mark.parametrize("dtype, cuda", [(torch.float32, True), (torch.bfloat16, True),
                                         (torch.float32, False)])
def test_fused_kernel_choice(monkeypatch, dtype, cuda):
    """0.0.0.0.14: a torch-backend neuron runs the spike pass on CuPy exactly when the input
    is a float32/float16 CUDA tensor and CuPy is there, and gets its backend back; 2.x:
    SpikingJelly chooses, nothing is switched. (The input is a stand-in with the two
    attributes the choice reads, so this runs without a GPU.)"""
    from types import SimpleNamespace
    from spikingjelly.activation_based import base
    monkeypatch.setattr(sj, "cupy_available", lambda: True)
    if sj.LEGACY:  # the backend setter checks that CuPy imports
        monkeypatch.setattr(base, "check_backend_library", lambda backend: None)
    neuron = _neuron(kind="lif", decay=0.5, backend="torch" if sj.LEGACY else "auto")
    with sj.fused_multi_step_kernel(neuron, SimpleNamespace(is_cuda=cuda, dtype=dtype)) as used:
        inside = sj.neuron_backend(neuron)
    if not sj.LEGACY:
        assert (used, inside) == ("auto", "auto")
    elif cuda and dtype == torch.float32:
        assert (used, inside) == ("cupy", "cupy")
    else:
        assert (used, inside) == ("torch", "torch")
    assert sj.neuron_backend(neuron) == ("torch" if sj.LEGACY else "auto")


def test_cpu_bf16_autocast_bn_statistics_are_fp32_and_equal_those_of_the_bf16_inputs():
    """Conv -> BN -> LIF under CPU bf16 autocast (the conv runs in bf16): the spike-pass BN
    statistics are float32 and equal the float32 statistics of the bf16 conv output, the
    running statistics stay float32, and the rate pass runs and sends gradients."""
    net = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1, step_mode="m"),
                        layer.BatchNorm2d(4, step_mode="m"), _neuron(kind="lif", decay=0.5),
                        layer.Flatten(step_mode="m"), layer.Linear(4 * 36, 3, step_mode="m"))
    model = rate.enable(net).train()
    conv_out, stats = [], {}
    model[0].register_forward_hook(lambda m, i, o: conv_out.append(o)
                                   if rate.current_phase() == "spike" else None)

    def keep_record(module, inputs, output):
        if rate.current_phase() == "rate":
            stats["record"] = module._sj_rate.records[0]

    model[1].register_forward_hook(keep_record)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(3, 5, 2, 6, 6))
    out.float().sum().backward()
    z = conv_out[0].float().flatten(0, 1)
    record = stats["record"]
    assert conv_out[0].dtype == torch.bfloat16
    assert record.mean.dtype == record.var.dtype == model[1].running_mean.dtype == torch.float32
    torch.testing.assert_close(record.mean, z.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(record.var, z.var((0, 2, 3), unbiased=False), rtol=1e-4, atol=1e-6)
    assert model[0].weight.grad.abs().sum() > 0
