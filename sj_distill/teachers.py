"""timm ANN teachers: create by name, load local weights, split into stem / stages / head, freeze.

The split is read from the timm model itself: its ``feature_info`` names the module at the
end of every stage, and the model's children (expanded through ``nn.Sequential`` containers
holding a cut point) give the execution order. A pooling layer that directly follows a cut
point belongs to the stage that ends there, so a VGG stage ends after its down-sampling pool,
as the project's spiking VGGs do. The split is checked once against ``model(x)``; a model whose
forward is not the sequence of its children gets one clear error.

Nothing is downloaded: ``pretrained=False`` unless a local file is given.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.Identity)


class Teacher(nn.Module):
    """A frozen ANN split into ``stem``, ``stages`` and ``head`` (all ``nn.Sequential``).

    Input ``[B, C, H, W]``, output logits ``[B, K]``. ``feature_info`` lists the stem and then
    every stage as ``dict(module=name, num_chs=C, reduction=r)``: ``module`` is the last child
    it runs, ``r`` the measured input/feature stride; entry ``i`` is the input of
    ``stages[i]``. The teacher is always in eval mode:
    ``train(True)`` (e.g. from a parent module) leaves it in eval, so its BatchNorm statistics
    never change, and its parameters have ``requires_grad=False``. Gradients still flow through
    its activations (needed by block-wise replacement).
    """

    def __init__(self, stem: nn.Sequential, stages: Sequence[nn.Sequential], head: nn.Sequential,
                 feature_info: List[Dict], name: str = ""):
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.feature_info = feature_info
        self.name = name
        freeze(self)

    def train(self, mode: bool = True) -> "Teacher":
        """Always eval: a teacher's BatchNorm statistics and dropout never switch to training."""
        return super().train(False)

    def forward_from(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Run stages ``index..`` and the head on ``x`` (the input of stage ``index``);
        ``index == len(stages)`` runs the head only."""
        for stage in self.stages[index:]:
            x = stage(x)
        return self.head(x)

    def features(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The stem output and every stage output (one per ``feature_info`` entry),
        ``[B, C_i, H_i, W_i]`` each."""
        outputs = [self.stem(x)]
        for stage in self.stages:
            outputs.append(stage(outputs[-1]))
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"a teacher takes [B, C, H, W] images, got shape {tuple(x.shape)}; "
                             "for SNN input [T, B, C, H, W] pass x.mean(0)")
        return self.forward_from(0, self.stem(x))


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad=False`` on every parameter and eval mode; returns ``module``."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def _unwrap_state_dict(obj) -> Dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "teacher", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise ValueError("the checkpoint is not a state dict (nor a dict holding one under "
                         "'state_dict', 'model' or 'teacher')")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The state dict in the local file ``path`` (see :func:`load_weights` for the layouts it
    accepts), read with ``weights_only=True``: a file holding other pickled objects is refused
    before any of it is unpickled (:class:`~sj_distill.engine.checkpoint.CheckpointError`), one
    that holds no state dict is one ``ValueError``."""
    from .engine.checkpoint import read

    try:
        return _unwrap_state_dict(read(path))
    except ValueError as err:
        raise ValueError(f"teacher weights file {path!r}: {err}") from None


def load_weights(model: nn.Module, path: str, ignore_head: bool = False) -> nn.Module:
    """Load a local timm / torchvision state dict or an sj-distill checkpoint into ``model``.

    Accepts a bare state dict or a dict holding one under ``state_dict`` / ``model`` /
    ``teacher``; a ``module.`` prefix (DDP) is stripped. ``ignore_head=True`` skips the
    classifier (``pretrained_cfg['classifier']``), e.g. ImageNet weights for a 10-class teacher.
    Any other missing, unexpected or mis-shaped key raises one ``ValueError`` naming them; a
    file that is not tensors and plain data is refused without being unpickled
    (:class:`~sj_distill.engine.checkpoint.CheckpointError`).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"teacher weights file {path!r} does not exist; nothing is "
                                "downloaded, give the path of a local .pth/.pt state dict")
    state = read_state_dict(path)
    own = model.state_dict()
    head = getattr(model, "pretrained_cfg", {}).get("classifier") if ignore_head else None
    skip = (lambda k: head is not None and k.startswith(head + "."))
    missing = [k for k in own if k not in state and not skip(k)]
    unexpected = [k for k in state if k not in own and not skip(k)]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and not skip(k) and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f"weights in {path!r} do not fit {type(model).__name__}: "
            f"missing {missing[:5]} ({len(missing)}), unexpected {unexpected[:5]} "
            f"({len(unexpected)}), shape mismatches {shapes[:5]} ({len(shapes)}); check the "
            "model name, num_classes (ignore_head=True drops the classifier) and cifar=")
    model.load_state_dict({k: v for k, v in state.items() if not skip(k)}, strict=not head)
    return model


def cifar_stem(model: nn.Module) -> None:
    """In place: a down-sampling stem becomes a 3x3/1 conv with the max-pool removed.

    Only touches models whose first feature is strided (ImageNet stems, e.g. ResNets); a stem
    that already keeps full resolution (e.g. VGG) is left alone."""
    if model.feature_info[0]["reduction"] <= 1:
        return
    first = model.pretrained_cfg.get("first_conv")
    if not first:
        raise ValueError(f"{type(model).__name__} names no first_conv in its pretrained_cfg; "
                         "cannot build a CIFAR stem, create it with cifar=False")
    old = model.get_submodule(first)
    parent_name, _, attr = first.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Conv2d(old.in_channels, old.out_channels, 3, 1, 1,
                                    bias=old.bias is not None))
    stem_end = model.feature_info[0]["module"]
    units = _execution_units(model, [f["module"] for f in model.feature_info])
    names = [n for n, _ in units]
    for name, module in units[names.index(stem_end) + 1:]:
        if not isinstance(module, (nn.MaxPool2d, nn.Identity)):
            break
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, nn.Identity())


def _execution_units(model: nn.Module, cuts: Sequence[str]) -> List[Tuple[str, nn.Module]]:
    """Children of ``model`` in registration order, expanding every ``nn.Sequential`` that
    holds a cut point, so that each cut point is one unit."""
    units = []

    def visit(module: nn.Module, prefix: str):
        for name, child in module.named_children():
            path = prefix + name
            if any(c.startswith(path + ".") for c in cuts):
                if not isinstance(child, nn.Sequential):
                    raise TypeError(
                        f"cannot split {type(model).__name__}: cut point inside {path!r} "
                        f"({type(child).__name__}), which is not an nn.Sequential")
                visit(child, path + ".")
            else:
                units.append((path, child))

    visit(model, "")
    return units


def measured_reduction(image_size: int, size: int) -> int:
    """The stride that turns ``image_size`` into ``size``: the power of two ``r`` with
    ``ceil(image_size / r) == size`` (a stride-2 layer rounds odd sizes up: 28 -> 14 -> 7 ->
    4 is stride 8, not 28 // 4 = 7), else the rounded ratio."""
    for k in range(16):
        if -(-image_size // 2 ** k) == size:
            return 2 ** k
    return round(image_size / size)


def _measured(group: List[Tuple[str, nn.Module]], x: torch.Tensor, image_size: int) -> Dict:
    """One ``feature_info`` row: the group's last module that is not an ``nn.Identity`` (a
    max-pool the CIFAR stem removed is not the stem's end), channels, measured stride."""
    name = next((n for n, m in reversed(group) if not isinstance(m, nn.Identity)), group[-1][0])
    return dict(module=name, num_chs=x.shape[1],
                reduction=measured_reduction(image_size, x.shape[-1]))


def split_model(model: nn.Module, image_size: int = 32, name: str = "") -> Teacher:
    """Split a timm classifier into a frozen :class:`Teacher` using its ``feature_info``.

    The first feature is the stem, each later one ends a stage (plus any pool directly after
    it), the rest is the head. The split is checked on a ``[2, C, image_size, image_size]``
    probe against ``model(x)``; channels and reductions in ``feature_info`` are measured on it.
    """
    if not hasattr(model, "feature_info"):
        raise TypeError(f"{type(model).__name__} has no feature_info; use a timm model")
    if hasattr(model, "patch_embed"):
        raise TypeError(
            f"{name or type(model).__name__} is a token model (patch_embed: its stages give "
            "[B, N, D] tokens, not [B, C, H, W] feature maps), which the block-wise replacement "
            "adapters cannot map SNN features to; use a convolutional timm teacher (e.g. "
            "resnet18, vgg11_bn, convnext_atto, efficientnet_b0, regnetx_002)")
    cuts = [f["module"] for f in model.feature_info]
    units = _execution_units(model, cuts)
    names = [n for n, _ in units]
    missing = [c for c in cuts if c not in names]
    if missing:
        raise TypeError(f"feature_info modules {missing} are not children of "
                        f"{type(model).__name__}; cannot split it into stages")
    ends = []
    for cut in cuts:
        i = names.index(cut)
        while i + 1 < len(units) and isinstance(units[i + 1][1], _POOLS) \
                and names[i + 1] not in cuts:
            i += 1
        ends.append(i)
    groups, start = [], 0
    for end in ends:
        group = units[start:end + 1]
        if groups and all(isinstance(m, _POOLS) for _, m in group):
            groups[-1] = groups[-1] + group  # a pool-only "stage" ends the previous one
        else:
            groups.append(group)
        start = end + 1
    head = nn.Sequential(*[m for _, m in units[start:]])
    stem, *stages = [nn.Sequential(*[m for _, m in g]) for g in groups]
    freeze(model)
    in_chans = next(m for m in model.modules() if isinstance(m, nn.Conv2d)).in_channels
    probe = torch.randn(2, in_chans, image_size, image_size)
    with torch.no_grad():
        x = stem(probe)
        feature_info = [_measured(groups[0], x, image_size)]
        for group, stage in zip(groups[1:], stages):
            x = stage(x)
            feature_info.append(_measured(group, x, image_size))
        split_out, full_out = head(x), model(probe)
        if split_out.shape != full_out.shape or not torch.allclose(split_out, full_out,
                                                                   atol=1e-4, rtol=1e-4):
            raise TypeError(f"{type(model).__name__}.forward is not the sequence of its "
                            "children; cannot split it into stem / stages / head")
    return Teacher(stem, stages, head, feature_info, name=name)


def create_ann(name: str, num_classes: int = 10, in_chans: int = 3, cifar: bool = True,
               **timm_kwargs) -> nn.Module:
    """A trainable (not frozen, not split) timm model, with the CIFAR stem when ``cifar``;
    nothing is downloaded (``pretrained=False``)."""
    import timm

    if "pretrained" in timm_kwargs:
        raise ValueError("sj-distill downloads nothing: pass checkpoint=PATH for weights")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes,
                              in_chans=in_chans, **timm_kwargs)
    if cifar:
        cifar_stem(model)
    return model


def create_teacher(name: str, num_classes: int = 10, in_chans: int = 3, cifar: bool = True,
                   checkpoint: Optional[str] = None, ignore_head: bool = False,
                   image_size: int = 32, **timm_kwargs) -> Teacher:
    """A frozen, split timm teacher.

    Args:
        name: timm model name of a convolutional classifier (tested: ResNet, ResNet-D,
            SE-ResNet, Wide-ResNet, ResNetV2, VGG, ConvNeXt, EfficientNet, MobileNetV3,
            RegNet); token models (ViT, DeiT, ...) are refused with a ``TypeError``.
        num_classes / in_chans: classifier outputs and input channels.
        cifar: 3x3/1 stem without max-pool (like the CIFAR students) for small images.
        checkpoint: local weights (see :func:`load_weights`), loaded after the stem patch.
        ignore_head: load all but the classifier.
        image_size: probe size used to check the split and measure reductions.
        timm_kwargs: passed to ``timm.create_model`` (e.g. ``channels=(16, 32, 64, 128)``).
    """
    model = create_ann(name, num_classes, in_chans, cifar, **timm_kwargs)
    if checkpoint is not None:
        load_weights(model, checkpoint, ignore_head=ignore_head)
    return split_model(model, image_size=image_size, name=name)
