"""STAA: spatial-temporal attention aggregators for SpikingJelly models (Zhang, Yu et al.,
CVPR 2025). ``patch(model)`` inserts :class:`STAABlock` after every residual stage, in place;
``overhead(model)`` counts the parameters and MACs the blocks add. Shapes: ``docs/staa.md``.
"""
from .adaptive_lif import AdaptiveLIF
from .modules import (PARTS, GCBlock, STAABlock, StepAttention, TemporalPositionEncoding,
                      TimeStepRandomDropout)
from .patching import AfterModule, overhead, patch, staa_blocks, stage_names

__all__ = ["AdaptiveLIF", "AfterModule", "GCBlock", "PARTS", "STAABlock", "StepAttention",
           "TemporalPositionEncoding", "TimeStepRandomDropout", "overhead", "patch",
           "staa_blocks", "stage_names"]
