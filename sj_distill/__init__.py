"""sj-distill: ANN-guided training for SpikingJelly models.

Rate-based backprop, block-wise replacement distillation from timm teachers, temporal
separation KD losses and STAA attention aggregators, as a plugin for SpikingJelly.
Importing this package does not import torch; import the submodules you need
(``sj_distill.sj``, ``sj_distill.models``, ...).
"""
__version__ = "0.1.0"
