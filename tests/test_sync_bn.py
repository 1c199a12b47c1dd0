"""Synchronised BatchNorm (sj_distill.sync_bn): two gloo processes on CPU, each with half the
batch, against one process on the whole batch, under BPTT and rate-based backprop."""
import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
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
    if method == "rate":
        rate.enable(model)
    out = model(x)
    out = out if method == "rate" else out.mean(0)
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
    for method in ("bptt", "rate"):
        model = sync_bn.convert(_model())
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
