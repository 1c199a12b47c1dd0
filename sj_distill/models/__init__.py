"""Student backbones, registered by name (``list_models()``, ``create_model(name, ...)``),
laid out as in the rate-based backprop public code (see :mod:`.resnet`, :mod:`.vgg`).

Every backbone is multi-step: ``[T, B, C, H, W]`` in, ``[T, B, num_classes]`` out, built from
SpikingJelly layers and :func:`sj_distill.sj.make_neuron` neurons, with stage names that
follow torchvision / timm (``conv1``, ``bn1``, ``layer1..layerK``, ``fc``).
"""
from ._registry import create_model, list_models, register_model
from . import csnn, resnet, vgg  # noqa: F401  (registers the builders)
from . import staa_models  # noqa: F401  (registers staa_resnet19/34, staa_vggsnn)
from .resnet import SpikingResNet
from .vgg import SpikingVGG

__all__ = ["create_model", "list_models", "register_model", "SpikingResNet", "SpikingVGG"]
