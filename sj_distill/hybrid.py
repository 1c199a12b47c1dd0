"""Block-wise replacement distillation (BRD; Yang, Yu et al., CVPR 2025): hybrid models.

For a replacement point ``k`` (a student stage), the hybrid ``M_k`` runs the student up to
and including stage ``k``, turns its spikes into rate features (the time-mean under BPTT, the
rate tensor of the rate pass under rate-based backprop), maps them with a learnable adapter
into the teacher's feature space at the paired teacher stage and finishes with the teacher's
later stages and head. The teacher stays frozen (no parameter gradients, BatchNorm statistics
fixed) while gradients flow through it into the adapter and the student stages before ``k``.
At inference only the student is used.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from . import rate, sj
from .teachers import Teacher

AdapterFactory = Callable[[int, int, int, int], nn.Module]


class Adapter(nn.Module):
    """1x1 conv + BatchNorm from ``in_chs`` to ``out_chs``, with a spatial resize when the
    reductions differ (average pooling to shrink, nearest upsampling to grow).

    Input ``[B, in_chs, H, W]`` at stride ``in_reduction``; output ``[B, out_chs, H', W']`` with
    ``H' = H * in_reduction / out_reduction``.
    """

    def __init__(self, in_chs: int, out_chs: int, in_reduction: int = 1, out_reduction: int = 1):
        super().__init__()
        self.in_chs, self.out_chs = in_chs, out_chs
        self.scale = Fraction(in_reduction, out_reduction)
        self.conv = nn.Conv2d(in_chs, out_chs, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1:
            size = [dim * self.scale for dim in x.shape[-2:]]
            if any(s.denominator != 1 or s < 1 for s in size):
                raise ValueError(f"cannot resize features {tuple(x.shape[-2:])} by {self.scale}")
            size = [int(s) for s in size]
            x = (F.adaptive_avg_pool2d(x, size) if self.scale < 1
                 else F.interpolate(x, size=size, mode="nearest"))
        return self.bn(self.conv(x))


class PointModules(nn.ModuleDict):
    """An ``nn.ModuleDict`` keyed by student module paths, which may contain dots (a VGG
    stage ``features.4``): stored under ``:`` instead of ``.`` (torch forbids dots in module
    names), read and listed by the path itself."""

    @staticmethod
    def _key(point: str) -> str:
        return point.replace(".", ":")

    @staticmethod
    def _point(key: str) -> str:
        return key.replace(":", ".")

    def __init__(self, modules: Mapping[str, nn.Module]):
        super().__init__({self._key(p): m for p, m in modules.items()})

    def __getitem__(self, point: str) -> nn.Module:
        return super().__getitem__(self._key(point))

    def __contains__(self, point: str) -> bool:
        return super().__contains__(self._key(point))

    def __iter__(self):
        return (self._point(k) for k in super().__iter__())

    def keys(self):
        return list(iter(self))

    def items(self):
        return [(self._point(k), m) for k, m in super().items()]


def student_stages(student: nn.Module) -> List[Dict]:
    """``feature_info`` rows of the student's main stages (``student.stages()`` when present,
    else every ``feature_info`` entry after the stem)."""
    info = getattr(student, "feature_info", None)
    if not info:
        raise TypeError(
            f"{type(student).__name__} has no feature_info, so BRD cannot find its stages: set "
            "student.feature_info = sj_distill.zoo.measure_feature_info(student, [stem, "
            "stage1, stage2, ...], in_chans) with the names of the modules that end the stem "
            "and each stage (a SpikingJelly zoo model: sj_distill.zoo.cifar_student does it)")
    by_name = {row["module"]: row for row in info}
    if hasattr(student, "stages"):
        return [by_name[name] for name, _ in student.stages()]
    return list(info[1:])


def _pair_by_reduction(row: Dict, teacher: Teacher) -> int:
    """Deepest teacher feature with the student's reduction, preferring equal channels."""
    same = [i for i, t in enumerate(teacher.feature_info) if t["reduction"] == row["reduction"]]
    if not same:
        raise ValueError(
            f"no teacher feature has reduction {row['reduction']} like student stage "
            f"{row['module']!r}; teacher features: "
            f"{[(t['module'], t['reduction']) for t in teacher.feature_info]}; pass points="
            "{student_stage: teacher_module} to pair them explicitly (the adapter resizes)")
    same_chs = [i for i in same if teacher.feature_info[i]["num_chs"] == row["num_chs"]]
    return (same_chs or same)[-1]


class BlockReplacement(nn.Module):
    """Hybrid block-wise replacement (BRD; Yang, Yu et al., CVPR 2025): a student SNN, a frozen
    :class:`Teacher` and one hybrid per replacement point, each running the student up to the
    point, an adapter, then the teacher's remaining stages and head.

    Args:
        student: multi-step SNN ``[T,B,C,H,W] -> [T,B,K]`` (``step_mode='m'``) with a
            timm-style ``feature_info`` naming its stem and stages (below); may have rate-based
            backprop enabled (``sj_distill.rate.enable``).
        teacher: from :func:`sj_distill.teachers.create_teacher`.
        points: student stage names (default: every main stage but the last, so a two-stage
            student such as ``csnn`` gets one hybrid: name both to get two), each paired
            with the deepest teacher feature of the same reduction (equal channels preferred),
            or a dict ``{student_stage: teacher_module}`` naming the pairs explicitly.
        adapter: ``factory(in_chs, out_chs, in_reduction, out_reduction) -> nn.Module``
            (default :class:`Adapter`).

    ``student.feature_info``: a list of ``dict(module=name, num_chs=C, reduction=R)``, stem
    first, then the module ending each stage. ``sj_distill.models`` backbones carry it; a zoo
    model gets it from :func:`sj_distill.zoo.cifar_student`; for your own model, measure it::

        student.feature_info = zoo.measure_feature_info(
            student, ["stem", "stage1", "stage2", "stage3"], in_chans=3)   # your module names
        model = BlockReplacement(student, create_teacher("resnet18", num_classes=10))
        out = model(x)                                  # x: [T, B, C, H, W]
        loss = BRDLoss()(out["student"], out["teacher"], y, hybrid_logits=out["hybrids"])

    ``forward(x, teacher_input=None)`` returns a dict: ``student`` (``[T,B,K]``, or ``[B,K]``
    from a rate pass), ``teacher`` ``[B,K]`` (on ``teacher_input``, default ``x.mean(0)``),
    ``hybrids`` ``{point: [B,K]}`` and ``feature_pairs`` ``{point: (adapted, teacher
    feature)}``. ``pairs`` maps each point to its teacher module name. Walk-through:
    ``docs/distill.md``.
    """

    def __init__(self, student: nn.Module, teacher: Teacher,
                 points: Union[None, Sequence[str], Mapping[str, str]] = None,
                 adapter: AdapterFactory = Adapter):
        """Pair each point with a teacher feature, build its adapter and hook the student's
        stage (see the class docstring for the arguments). Raises ``TypeError`` /
        ``ValueError`` naming the fix for a student without ``feature_info``, in mixed or
        single step modes, or unknown / unpairable points."""
        super().__init__()
        if not isinstance(teacher, Teacher):
            raise TypeError("teacher must be a sj_distill.teachers.Teacher (create_teacher / "
                            f"split_model), got {type(teacher).__name__}")
        if sj.check_step_mode(student, "BlockReplacement") != "m":
            raise ValueError("BlockReplacement: the student is single-step; BRD takes a "
                             "multi-step SNN ([T, B, C, H, W] in): call spikingjelly."
                             "activation_based.functional.set_step_mode(student, 'm') first")
        self.student, self.teacher = student, teacher
        stages = student_stages(student)
        by_name = {row["module"]: row for row in stages}
        if points is None:
            points = [row["module"] for row in stages[:-1]]
        unknown = [p for p in points if p not in by_name]
        if unknown:
            raise ValueError(f"replacement points {unknown} are not student stages; choose from "
                             f"{list(by_name)}")
        teacher_names = [t["module"] for t in teacher.feature_info]
        if isinstance(points, Mapping):
            bad = [t for t in points.values() if t not in teacher_names]
            if bad:
                raise ValueError(f"teacher modules {bad} are not teacher features; choose from "
                                 f"{teacher_names}")
            index = {p: teacher_names.index(t) for p, t in points.items()}
        else:
            index = {p: _pair_by_reduction(by_name[p], teacher) for p in points}
        self.teacher_index = index
        self.pairs = {p: teacher_names[i] for p, i in index.items()}
        self.adapters = PointModules({
            p: adapter(by_name[p]["num_chs"], teacher.feature_info[i]["num_chs"],
                       by_name[p]["reduction"], teacher.feature_info[i]["reduction"])
            for p, i in index.items()})
        self._captured: Dict[str, torch.Tensor] = {}
        self._hooks = [student.get_submodule(p).register_forward_hook(self._capture_hook(p))
                       for p in index]

    def _capture_hook(self, point: str):
        def hook(module, inputs, output):
            phase = rate.current_phase()
            if phase == "spike":
                return
            if phase == "rate":  # the SNN's gradient from the hybrids is scaled like its output's
                self._captured[point] = rate.tap(output)
            elif output.dim() == 5:
                self._captured[point] = output.mean(0)
            else:
                raise ValueError(f"student stage {point!r} gave shape {tuple(output.shape)}; "
                                 "expected multi-step [T, B, C, H, W] (step_mode='m')")
        return hook

    def remove_hooks(self) -> None:
        """Detach the feature hooks from the student (the wrapper is unusable afterwards)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def trainable_parameters(self) -> List[nn.Parameter]:
        """Student and adapter parameters (the teacher is frozen)."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor, teacher_input: Optional[torch.Tensor] = None) -> Dict:
        """Student, teacher and hybrids on ``x`` ``[T, B, C, H, W]``.

        The teacher sees ``teacher_input`` (default ``x.mean(0)``, ``[B, C, H, W]``) without
        gradients. Returns ``dict(student=[T,B,K] (or [B,K] from a rate pass),
        teacher=[B,K], hybrids={point: [B,K]}, feature_pairs={point: (adapted, teacher
        feature)})``; pass it to :class:`~sj_distill.losses.BRDLoss` as
        ``loss(out["student"], out["teacher"], y, hybrid_logits=out["hybrids"])``."""
        if x.dim() != 5:
            raise ValueError(f"expected student input [T, B, C, H, W], got {tuple(x.shape)}")
        self._captured = {}
        student_logits = self.student(x)
        captured, self._captured = self._captured, {}
        with torch.no_grad():
            teacher_features = self.teacher.features(x.mean(0) if teacher_input is None
                                                     else teacher_input)
            teacher_logits = self.teacher.forward_from(len(self.teacher.stages),
                                                       teacher_features[-1])
        hybrids, feature_pairs = {}, {}
        for point, index in self.teacher_index.items():
            if point not in captured:
                raise RuntimeError(f"student stage {point!r} did not run in the forward pass")
            features = captured[point]
            adapter = self.adapters[point]
            if getattr(adapter, "in_chs", features.shape[1]) != features.shape[1]:
                raise ValueError(f"student stage {point!r} gives {features.shape[1]} channels, "
                                 f"its feature_info says {adapter.in_chs}; fix "
                                 "student.feature_info")
            adapted = adapter(features)
            feature_pairs[point] = (adapted, teacher_features[index])
            hybrids[point] = self.teacher.forward_from(index, adapted)
        return dict(student=student_logits, teacher=teacher_logits, hybrids=hybrids,
                    feature_pairs=feature_pairs)
