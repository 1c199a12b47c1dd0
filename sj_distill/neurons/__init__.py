"""Neuron- and layer-level pieces of rate-based backpropagation (see :mod:`sj_distill.rate`).

* :mod:`.eligibility`: charge equations and eligibility recurrences of SpikingJelly's
  ``IFNode``, ``LIFNode`` and ``ParametricLIFNode`` (soft / hard reset, detached or not).
* :mod:`.rate_layers`: what a spiking neuron, a BatchNorm and a max-pool record in the spike
  pass and return in the rate pass.
"""
from .eligibility import NeuronDynamics, EligibilityTrace, SUPPORTED_NEURONS
from .rate_layers import BatchNormRecord, MaxPoolRecord, NeuronRecord

__all__ = ["NeuronDynamics", "EligibilityTrace", "SUPPORTED_NEURONS", "BatchNormRecord",
           "MaxPoolRecord", "NeuronRecord"]
