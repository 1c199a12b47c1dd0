"""Synchronised BatchNorm (sj_distill.sync_bn): two gloo processes on CPU, each with half the
batch, against one process on the whole batch, under BPTT and rate-based backprop; and the
public code's local rate-pass statistics against a reference written from its formulas."""
import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from spikingjelly.activation_based import functional, layer

from sj_distill import rate, sj, sync_bn

T, B = 3, 8


def _model():
    """SJ multi-step BN and nn.BatchNorm2d inside a SeqToANNContainer, LIF neurons, float64."""
    torch.manual_seed(0)
    sn = dict(kind="lif", decay=0.2, reset="soft", detach_reset=True, step_mode="m")
    net = nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, step_mode="m"), layer.BatchNorm2d(4, step_mode="m"),
        sj.make_neuron(**sn),
        layer.SeqToANNContainer(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)),
        sj.make_neuron(**sn), layer.Flatten(step_mode="m"), layer.Linear(4 * 5 * 5, 3, step_mode="m"))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    return net.double()


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(T, B, 2, 5, 5, generator=g, dtype=torch.float64) * 2
    return x, torch.randn(B, 3, generator=g, dtype=torch.float64)


def _step(model, method, x, upstream):
    """One training step's output [b, 3], parameter gradients of sum(out*upstream)/B and BN
    running statistics."""
    model.train()
    if method.startswith("rate"):
        rate.enable(model)
    out = model(x)
    out = out if method.startswith("rate") else out.mean(0)
    ((out * upstream).sum() / B).backward()
    functional.reset_net(model)
    grads = [p.grad for p in model.parameters()]
    stats = [b.clone() for name, b in model.named_buffers() if "running" in name]
    return out.detach(), grads, stats


def _worker(rank, init_file, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    x, upstream = _data()
    half = slice(rank * B // 2, (rank + 1) * B // 2)
    out_all = {}
    for method in ("bptt", "rate", "rate-local"):
        model = sync_bn.convert(_model(), rate_pass_stats="local" if "local" in method
                                else "global")
        out, grads, stats = _step(model, method, x[:, half], upstream[half])
        for g in grads:
            dist.all_reduce(g)  # the global objective is the sum of both ranks' shares
        outs = [torch.empty_like(out) for _ in range(2)]
        dist.all_gather(outs, out)
        out_all[method] = (torch.cat(outs), grads, stats)
    if rank == 0:
        torch.save(out_all, results)
    dist.barrier()  # neither rank tears gloo down while the other still talks to it
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sync_bn")
    mp.spawn(_worker, args=(str(tmp / "init"), str(tmp / "results.pt")), nprocs=2)
    return torch.load(tmp / "results.pt")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["bptt", "rate"])
def test_two_processes_equal_one_process_on_the_whole_batch(two_process_results, method):
    x, upstream = _data()
    want_out, want_grads, want_stats = _step(_model(), method, x, upstream)
    got_out, got_grads, got_stats = two_process_results[method]
    torch.testing.assert_close(got_out, want_out, rtol=1e-6, atol=1e-8)
    assert len(got_stats) == 4 and len(got_grads) == len(want_grads)
    for got, want in zip(got_stats, want_stats):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    assert sum(g.abs().sum() for g in want_grads[:2]) > 0  # the first conv learns


def _reference_local_rate_pass(x, upstream, lam=0.2, alpha=4.0):
    """The public code's rate-BP under SyncBN, written out for :func:`_model` on two ranks
    holding the halves of ``x``: the spike pass normalises with the whole batch's statistics
    (a synchronised BN), so neurons' rates and eligibilities are those of one process on the
    whole batch; the rate pass of each rank uses the mean and biased variance of *its own*
    spike-pass BN inputs and its own rate batch (``m = mu + (m_r - sg m_r)``,
    ``v = relu(var + (v_r - sg v_r))``). Returns the gathered outputs and the parameter
    gradients summed over the ranks, of ``sum(out * upstream) / B / T`` per rank."""
    net = _model().train()
    is_bn = lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm)  # noqa: E731
    is_sn = lambda m: type(m).__name__ == "LIFNode"  # noqa: E731
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: inputs.setdefault(m, args[0]))
             for m in net.modules() if is_bn(m) or is_sn(m)]
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    functional.reset_net(net)
    sj.set_step_mode(net, "s")
    net[3] = nn.Sequential(*net[3])  # the SeqToANNContainer, single-step
    plain = {m: n for n, m in net.named_modules()}
    outs, grads = [], None
    for rank in range(2):
        half = slice(rank * B // 2, (rank + 1) * B // 2)
        records = {}
        for m, z in inputs.items():
            z = z if z.dim() == 5 else z.view(T, B, *z.shape[1:])  # [T, B, C, H, W]
            z = z[:, half]
            if is_bn(m):
                records[plain[m]] = torch.var_mean(z.flatten(0, 1), (0, 2, 3), unbiased=False)
                continue
            v, kappa = torch.zeros_like(z[0]), torch.zeros_like(z[0])
            rate_sum, elig_sum = torch.zeros_like(z[0]), torch.zeros_like(z[0])
            for t in range(T):
                h = lam * v + z[t]
                s = (h >= 1.0).to(z.dtype)
                sig = torch.sigmoid(alpha * (h - 1.0))
                kappa = 1.0 + lam * kappa
                elig_sum += kappa * alpha * sig * (1 - sig)
                rate_sum += s
                v = h - s
            records[plain[m]] = (rate_sum / T, elig_sum / T)
        model = copy.deepcopy(net)
        model.zero_grad()
        named = dict(model.named_modules())

        def bn_rate(m, args, _out, name):
            x_in, (var_l, mu_l) = args[0], records[name]
            shape = [1, -1, 1, 1]
            m_r = x_in.mean((0, 2, 3), keepdim=True)
            mean = mu_l.view(shape) + (m_r - m_r.detach())
            v_r = ((x_in - mean) ** 2).mean((0, 2, 3), keepdim=True)
            var = F.relu(var_l.view(shape) + (v_r - v_r.detach()))
            return m.weight.view(shape) * (x_in - mean) / torch.sqrt(var + m.eps) \
                + m.bias.view(shape)

        def sn_rate(m, args, _out, name):
            r, e = records[name]
            return r + (args[0] * e - (args[0] * e).detach())

        for name in records:
            hook = bn_rate if is_bn(named[name]) else sn_rate
            named[name].register_forward_hook(
                lambda m, a, o, name=name, hook=hook: hook(m, a, o, name))
        out = model(x[:, half].mean(0))
        ((out * upstream[half]).sum() / B / T).backward()
        outs.append(out.detach())
        step = [p.grad.clone() for p in model.parameters()]
        grads = step if grads is None else [g + s for g, s in zip(grads, step)]
    return torch.cat(outs), grads


@pytest.mark.slow
def test_local_rate_pass_statistics_equal_the_public_codes_formulas(two_process_results):
    """``rate_pass_stats="local"``: spike pass over the global batch, rate pass with each
    rank's own statistics; differs from the global mode (so the test can tell them apart)."""
    x, upstream = _data()
    want_out, want_grads = _reference_local_rate_pass(x, upstream)
    got_out, got_grads, _ = two_process_results["rate-local"]
    torch.testing.assert_close(got_out, want_out, rtol=1e-6, atol=1e-8)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)
    global_grads = two_process_results["rate"][1]
    assert not torch.allclose(global_grads[0], got_grads[0], rtol=1e-4)


def test_rate_pass_stats_must_be_global_or_local():
    with pytest.raises(ValueError, match=r"rate_pass_stats must be 'global' .* or 'local' .*, "
                                         r"got 'mean'"):
        sync_bn.convert(_model(), rate_pass_stats="mean")


def test_convert_keeps_names_step_mode_and_values_in_one_process():
    plain = _model()
    converted = sync_bn.convert(copy.deepcopy(plain))
    assert isinstance(converted[1], sync_bn.SyncBatchNorm) and converted[1].step_mode == "m"
    assert isinstance(converted[3][1], sync_bn.SyncBatchNorm) and converted[3][1].step_mode == "s"
    assert list(converted.state_dict()) == list(plain.state_dict())
    x, upstream = _data()
    for method in ("bptt", "rate"):
        want = _step(copy.deepcopy(plain), method, x, upstream)
        got = _step(copy.deepcopy(converted), method, x, upstream)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        for g, w in zip(got[1], want[1]):
            torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_torch_sync_batchnorm_is_refused_by_rate_bp_with_the_fix():
    model = nn.Sequential(layer.SeqToANNContainer(nn.Conv2d(2, 2, 1), nn.SyncBatchNorm(2)),
                          sj.make_neuron(kind="if", step_mode="m"))
    with pytest.raises(rate.UnsupportedModuleError, match=r"sj_distill.sync_bn.convert\(model\)"):
        rate.enable(model)
