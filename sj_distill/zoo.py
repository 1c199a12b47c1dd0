"""Make SpikingJelly zoo models CIFAR-ready multi-step students, in place.

Works on the ``spikingjelly.activation_based.model`` families with a fixed stem, stages and a
classifier head:

* ResNets (``spiking_resnet*``, ``sew_resnet*``; torchvision layout ``conv1, bn1, sn1,
  maxpool, layer1..4, avgpool, fc``);
* MS-ResNets (``ms_resnet*``, ``max_resnet18``, ``att_ms_resnet18``; SpikingJelly 2.x
  layout ``stem, layer1..4, head``);
* VGGs (``spiking_vgg*`` and OTTT's ``ottt_spiking_vgg*``; ``features, classifier``).

``model.feature_info`` (timm style, stem first) is measured on a probe forward, so its channels
and reductions are those the model really produces. See ``docs/zoo.md`` for every family.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, List, Optional

import torch
from torch import nn
from spikingjelly.activation_based import layer, neuron

from . import sj

#: Input size the feature reductions are measured at (CIFAR).
PROBE_SIZE = 32


def _is_resnet(model: nn.Module) -> bool:
    return all(hasattr(model, n) for n in ("conv1", "maxpool", "layer1", "fc"))


def _is_ms_resnet(model: nn.Module) -> bool:
    return (all(hasattr(model, n) for n in ("stem", "layer1", "head"))
            and isinstance(model.stem, nn.Sequential) and isinstance(model.head, nn.Linear))


def _is_vgg(model: nn.Module) -> bool:
    return all(hasattr(model, n) for n in ("features", "classifier")) \
        and isinstance(model.features, nn.Sequential)


def _stage_names(model: nn.Module) -> List[str]:
    names, i = [], 1
    while isinstance(getattr(model, f"layer{i}", None), nn.Module):
        names.append(f"layer{i}")
        i += 1
    return names


def _cifar_resnet(model: nn.Module, num_classes: int, in_chans: int) -> List[str]:
    """3x3/1 stem conv, no stem max-pool, new ``fc``; stem ``sn1`` then ``layer1..``."""
    old = model.conv1
    model.conv1 = layer.Conv2d(in_chans, old.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    model.fc = layer.Linear(model.fc.in_features, num_classes)
    return ["sn1"] + _stage_names(model)


def _cifar_ms_resnet(model: nn.Module, num_classes: int, in_chans: int) -> List[str]:
    """3x3/1 stem conv, no stem max-pool, new ``head``; stem ``stem`` then ``layer1..``.

    The first stage keeps SpikingJelly's stride 2, so stages sit at 1/2 .. 1/16."""
    old = model.stem[0]
    model.stem[0] = layer.Conv2d(in_chans, old.out_channels, 3, 1, 1, bias=False)
    for i in reversed(range(len(model.stem))):
        if isinstance(model.stem[i], nn.MaxPool2d):
            del model.stem[i]
    model.head = type(model.head)(model.head.in_features, num_classes)
    return ["stem"] + _stage_names(model)


def _cifar_vgg(model: nn.Module, num_classes: int, in_chans: int, avgpool_vgg: bool) -> List[str]:
    """First conv takes ``in_chans`` (3x3/1), global average pooling and one linear layer as
    the head; stem: the first spiking neuron, stages: every pool of ``features``."""
    features = model.features
    first = next(i for i, m in enumerate(features) if isinstance(m, nn.Conv2d))
    old = features[first]
    features[first] = type(old)(in_chans, old.out_channels, 3, 1, 1, bias=old.bias is not None)
    if avgpool_vgg:
        for i, m in enumerate(features):
            if isinstance(m, nn.MaxPool2d):
                features[i] = layer.AvgPool2d(2, 2)
    width = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
    if hasattr(model, "avgpool"):  # SpikingVGG: features -> avgpool -> flatten -> classifier
        model.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        model.classifier = nn.Sequential(layer.Linear(width, num_classes))
    else:  # OTTT VGG: features -> classifier
        model.classifier = nn.Sequential(layer.AdaptiveAvgPool2d((1, 1)), layer.Flatten(1),
                                         layer.Linear(width, num_classes))
    stem = next(i for i, m in enumerate(features) if isinstance(m, neuron.BaseNode))
    pools = [i for i, m in enumerate(features)
             if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) and i > stem]
    return [f"features.{i}" for i in [stem] + pools]


class _FeatureMismatch(Exception):
    """A linear layer got another number of features than it was built for."""

    def __init__(self, module: str, expected: int, got: int):
        super().__init__(module, expected, got)
        self.module, self.expected, self.got = module, expected, got

    def size_for(self, size: int) -> Optional[int]:
        """The input height/width that gives the layer its features, when a flattened feature
        map scales with the input's area (a flatten head); None when no whole size does."""
        guess = size * math.sqrt(self.expected / self.got)
        return round(guess) if round(guess) > 0 and abs(guess - round(guess)) < 1e-6 else None

    def explain(self, what: str, size: int, fix: str) -> str:
        """One line: what did not fit, the input size it needs, how to give it (``fix``)."""
        expected = self.size_for(size)
        line = (f"{what} does not take {size}x{size} inputs: its {self.module!r} takes "
                f"{self.expected} features, a {size}x{size} input gives it {self.got}")
        if expected is None:
            return f"{line}; give the input size the model is built for ({fix})"
        return f"{line}; it expects {expected}x{expected} inputs ({fix}{expected})"


@contextlib.contextmanager
def _linear_inputs_checked(model: nn.Module) -> Iterator[None]:
    """Raise :class:`_FeatureMismatch` before a linear layer of ``model`` multiplies an input of
    the wrong width (instead of torch's ``mat1 and mat2 shapes cannot be multiplied``)."""
    def check(name):
        def pre_hook(module, inputs):
            got = inputs[0].shape[-1]
            if got != module.in_features:
                raise _FeatureMismatch(name, module.in_features, got)
        return pre_hook

    handles = [m.register_forward_pre_hook(check(n)) for n, m in model.named_modules()
               if isinstance(m, nn.Linear)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def input_size_checked(model: nn.Module, what: str, size: int, fix: str) -> Iterator[None]:
    """Run ``model`` inside the block on ``size`` x ``size`` inputs; a linear layer (a flatten
    head) that gets another number of features than it was built for raises one
    ``ValueError`` naming the input size the model expects: ``"{what} does not take 16x16
    inputs: ...; it expects 48x48 inputs ({fix}48)"``."""
    try:
        with _linear_inputs_checked(model):
            yield
    except _FeatureMismatch as mismatch:
        raise ValueError(mismatch.explain(what, size, fix)) from None


def _probe_shapes(model: nn.Module, modules: List[str], in_chans: int, size: int) -> dict:
    """Output shapes of ``modules`` on one ``[1, 1, in_chans, size, size]`` probe (eval mode,
    no autograd; the model's state is reset and its mode restored)."""
    shapes = {}

    def hook(name):
        def record(module, inputs, output):
            shapes[name] = tuple(output.shape)
        return record

    handles = [model.get_submodule(name).register_forward_hook(hook(name)) for name in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), _linear_inputs_checked(model):
            model(torch.zeros(1, 1, in_chans, size, size))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
        sj.reset(model)
    return shapes


def measure_feature_info(model: nn.Module, modules: List[str], in_chans: int,
                         size: Optional[int] = None) -> List[dict]:
    """timm-style ``feature_info`` of a multi-step model: ``dict(module, num_chs, reduction)``
    for each named module, measured on one ``[1, 1, in_chans, size, size]`` probe (eval mode,
    no autograd; the model's state is reset and its mode restored).

    ``size``: the input height/width the model is built for. None (default): 32
    (:data:`PROBE_SIZE`), or, when a flatten head does not take a 32x32 input's features (a
    model built for 28x28 images), the size whose features it takes. A probe that does not
    run raises one ``ValueError`` naming the size to pass."""
    what = f"measure_feature_info: {type(model).__name__}"
    probe_size = PROBE_SIZE if size is None else size
    try:
        shapes = _probe_shapes(model, modules, in_chans, probe_size)
    except _FeatureMismatch as mismatch:
        inferred = mismatch.size_for(probe_size)
        if size is not None or inferred is None:
            raise ValueError(mismatch.explain(what, probe_size, "size=")) from None
        probe_size = inferred
        try:
            shapes = _probe_shapes(model, modules, in_chans, probe_size)
        except _FeatureMismatch as again:
            raise ValueError(again.explain(what, probe_size, "size=")) from None
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{what}: the probe forward on a [1, 1, {in_chans}, {probe_size}, "
                         f"{probe_size}] input failed ({first}); pass size=<the input height/"
                         "width the model is built for> and in_chans=<its input channels>"
                         ) from None
    missing = [name for name in modules if name not in shapes]
    if missing:
        raise ValueError(f"{what}: modules {missing} did not run in the probe forward; name "
                         "modules that the forward calls")
    from .teachers import measured_reduction

    return [dict(module=name, num_chs=shapes[name][2],
                 reduction=measured_reduction(probe_size, shapes[name][-1]))
            for name in modules]


def cifar_student(model: nn.Module, num_classes: int, in_chans: int = 3,
                  avgpool_vgg: bool = False) -> nn.Module:
    """Turn a SpikingJelly zoo model into a multi-step CIFAR student, in place, and return it.

    * ResNets (``spiking_resnet*``, ``sew_resnet*``): the 7x7/2 stem conv becomes a 3x3/1
      conv with ``in_chans`` inputs, the stem max-pool is removed and ``fc`` gets
      ``num_classes`` outputs; ``feature_info``: ``sn1``, ``layer1..4``.
    * MS-ResNets (``ms_resnet*``, ``max_resnet18``, ``att_ms_resnet18``): the same for
      ``stem`` and ``head``; the first stage keeps its stride 2; ``feature_info``: ``stem``,
      ``layer1..4``. Their forward returns time-mean logits ``[B, K]``.
    * VGGs (``spiking_vgg*``, ``ottt_spiking_vgg*``): the first conv takes ``in_chans``; the
      7x7 pooling and the 4096-wide classifier become global average pooling and one linear
      layer; with ``avgpool_vgg`` every max-pool becomes a 2x2 average pool;
      ``feature_info``: the first spiking neuron, then every pool of ``features``.

    Everything is switched to ``step_mode='m'``: input ``[T,B,C,H,W]``, output ``[T,B,K]``
    (``[B,K]`` for MS-ResNets). ``feature_info`` channels and reductions are measured on a
    32x32 probe.
    """
    if _is_resnet(model):
        modules = _cifar_resnet(model, num_classes, in_chans)
    elif _is_ms_resnet(model):
        modules = _cifar_ms_resnet(model, num_classes, in_chans)
    elif _is_vgg(model):
        modules = _cifar_vgg(model, num_classes, in_chans, avgpool_vgg)
    else:
        raise TypeError(
            f"cifar_student() supports SpikingJelly zoo ResNets and VGGs (conv1/maxpool/layer1/"
            f"fc, features/classifier) and MS-ResNets (stem/layer1/head); "
            f"{type(model).__name__} has none of these layouts: adapt it by hand and set "
            "model.feature_info (see docs/zoo.md)")
    model.num_classes = num_classes
    sj.set_step_mode(model, "m")
    model.feature_info = measure_feature_info(model, modules, in_chans)
    return model
