"""STAA: spatial-temporal attention aggregators for SpikingJelly models (Zhang, Yu et al.,
CVPR 2025). ``patch(model, sample)`` wraps chosen spiking neurons (by default the last of every
residual stage) in :class:`STAANeuron`, in place: attention on the neuron's input current, an
adaptive LIF in its place, step attention on its spikes. ``unpatch`` undoes it; ``overhead``
counts the parameters and MACs added. Shapes and measurements: ``docs/staa.md``.
"""
from .adaptive_lif import AdaptiveLIF, leak_and_gain
from .modules import (GC_GATES, PARTS, TSRD_UNITS, GCBlock, STAANeuron, StepAttention,
                      TemporalPositionEncoding, TimeStepRandomDropout)
from .patching import overhead, patch, probe, stage_names, staa_neurons, unpatch

__all__ = ["AdaptiveLIF", "GCBlock", "GC_GATES", "PARTS", "STAANeuron", "StepAttention",
           "TSRD_UNITS", "TemporalPositionEncoding", "TimeStepRandomDropout", "leak_and_gain",
           "overhead", "patch", "probe", "staa_neurons", "stage_names", "unpatch"]
