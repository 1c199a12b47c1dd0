"""The SpikingJelly compatibility module: neuron dynamics against hand-computed traces."""
import subprocess
import sys

import pytest
import torch

from sj_distill import sj


def _trace(neuron, x: float, steps: int = 5):
    """Run a single-step neuron on a constant input; return (spikes, membrane after reset)."""
    spikes, volts = [], []
    for _ in range(steps):
        spikes.append(float(neuron(torch.full((1,), x, dtype=torch.float64))))
        volts.append(float(neuron.v))
    return spikes, volts


# Hand-derived, threshold 1:
#   decay_input=False, decay 0.5 (tau 2): h_t = 0.5 v_{t-1} + x, x = 0.8
#     soft: h = .8, 1.2*, .9, 1.25*, .925   -> v = .8, .2, .9, .25, .925
#     hard: h = .8, 1.2*, .8, 1.2*, .8      -> v = .8, 0, .8, 0, .8
#   decay_input=True, tau 2: h_t = v_{t-1} + (x - v_{t-1}) / 2, x = 1.5
#     soft: h = .75, 1.125*, .8125, 1.15625*, .828125 -> v = .75, .125, .8125, .15625, .828125
#     hard: h = .75, 1.125*, .75, 1.125*, .75         -> v = .75, 0, .75, 0, .75
CASES = [
    (False, "soft", 0.8, [0, 1, 0, 1, 0], [0.8, 0.2, 0.9, 0.25, 0.925]),
    (False, "hard", 0.8, [0, 1, 0, 1, 0], [0.8, 0.0, 0.8, 0.0, 0.8]),
    (True, "soft", 1.5, [0, 1, 0, 1, 0], [0.75, 0.125, 0.8125, 0.15625, 0.828125]),
    (True, "hard", 1.5, [0, 1, 0, 1, 0], [0.75, 0.0, 0.75, 0.0, 0.75]),
]


@pytest.mark.parametrize("decay_input,reset,x,spikes,volts", CASES)
def test_lif_trace_matches_hand_computation(decay_input, reset, x, spikes, volts):
    neuron = sj.make_neuron("lif", tau=2.0, decay_input=decay_input, reset=reset, step_mode="s")
    got_spikes, got_volts = _trace(neuron, x)
    assert got_spikes == spikes
    assert got_volts == pytest.approx(volts, abs=1e-12)


@pytest.mark.parametrize("decay_input,reset,x,spikes,volts", CASES)
def test_multi_step_neuron_matches_single_step(decay_input, reset, x, spikes, volts):
    neuron = sj.make_neuron("lif", tau=2.0, decay_input=decay_input, reset=reset, step_mode="m")
    out = neuron(torch.full((5, 1), x, dtype=torch.float64))
    assert out.flatten().tolist() == spikes


def test_if_trace_soft_reset():
    # h_t = v_{t-1} + 0.45: .45, .9, 1.35*, .8, 1.25* -> v = .45, .9, .35, .8, .25
    spikes, volts = _trace(sj.make_neuron("if", step_mode="s"), 0.45)
    assert spikes == [0, 0, 1, 0, 1]
    assert volts == pytest.approx([0.45, 0.9, 0.35, 0.8, 0.25], abs=1e-12)


def test_decay_maps_to_tau_and_plif_starts_at_tau():
    assert sj.make_neuron("lif", decay=0.2).tau == pytest.approx(1.25)
    plif = sj.make_neuron("plif", decay=0.5)
    assert float(1.0 / plif.w.detach().sigmoid()) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="tau or decay"):
        sj.make_neuron("lif", tau=2.0, decay=0.5)
    with pytest.raises(ValueError, match="unknown neuron kind"):
        sj.make_neuron("izhikevich")


def test_surrogate_derivative_matches_sigmoid_formula():
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    s = torch.sigmoid(4.0 * x)
    expected = 4.0 * s * (1 - s)
    assert torch.allclose(sj.surrogate_derivative(sj.make_surrogate("sigmoid", 4.0), x), expected)


def test_rect_surrogate_window():
    x = torch.tensor([-0.6, -0.4, 0.0, 0.4, 0.6], dtype=torch.float64)
    grad = sj.surrogate_derivative(sj.make_surrogate("rect", 1.0), x)
    assert grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.skipif(sj.cupy_available(), reason="CuPy and CUDA are present")
def test_cupy_backend_without_cupy_is_one_clear_error():
    with pytest.raises(RuntimeError, match=r"backend='cupy' was requested but .*(CUDA|CuPy)"):
        sj.make_neuron("lif", backend="cupy")


def test_auto_backend_on_cpu():
    expected = "torch" if sj.LEGACY else "auto"
    assert sj.neuron_backend(sj.make_neuron("lif")) == expected


def test_cli_help_does_not_import_torch():
    code = ("import sys; from sj_distill import cli\n"
            "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "list" in out.stdout and out.stdout.strip().endswith("NO-TORCH")


def test_cli_version_and_unknown_model(capsys):
    from sj_distill import __version__, cli

    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert __version__ in capsys.readouterr().out
    assert cli.main(["info", "no_such_model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'no_such_model'" in err[0]
