"""The SpikingJelly model-zoo support matrix: every constructor x neuron x operation.

A *cell* is one constructor of ``spikingjelly.activation_based.model`` (built with small
inputs), one spiking neuron and one operation of sj-distill:

* ``rate``: ``rate.enable`` on the multi-step model; if accepted, one training forward at
  ``T=2`` whose value must equal the time-mean of the plain SNN's logits (*Value\\**, same
  seed, within 1e-5 of the logits' scale) and a backward pass that reaches the first layer.
* ``student``: ``zoo.cifar_student``; if accepted, a forward ``[T,B,K]`` (or
  ``[B,K]`` for models that average over time themselves) and every ``feature_info`` entry
  checked against the module's measured output (channels and reduction).
* ``brd``: ``BlockReplacement`` on that student with a small timm teacher; if accepted, a
  forward and a backward that reaches the student's first layer (BPTT, and under rate-BP
  when ``rate.enable`` accepts the student).
* ``staa``: ``staa.patch(student, x)`` (default placement: the last neuron of every stage);
  if accepted, a training forward and backward.

Every cell ends ``ok`` or ``refused``: refused means one sj-distill error, raised by
sj-distill code *before* any forward (``UnsupportedModuleError``, ``TypeError`` or
``ValueError``, one line). Anything else (a crash inside forward, a wrong value, an error
from SpikingJelly or torch) is ``FAIL``. ``tests/test_zoo_matrix.py`` asserts this;
``PYTHONPATH=$PWD python tests/zoo_cells.py --write docs/zoo.md`` rewrites the table of
``docs/zoo.md`` for the installed SpikingJelly version.
"""
from __future__ import annotations

import argparse
import copy
import functools
import gc
import importlib
import inspect
import os
import pkgutil
import sys
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from spikingjelly.activation_based import functional, model as sj_model, neuron

import sj_distill
from sj_distill import rate, sj, zoo

T, BATCH = 2, 2
VALUE_TOL = 1e-5
#: Families left out of the matrix: architecture-search supernets built from search
#: arguments (``args``, connection matrices), not trainable models with a fixed forward.
NOT_COVERED = {"snas_net": "needs NAS search arguments (args, con_mat)",
               "spike_dhs": "needs NAS search arguments (args)"}
NEURONS = {
    "LIF": (neuron.LIFNode, dict(tau=2.0, v_threshold=0.1)),
    "IF": (neuron.IFNode, dict(v_threshold=0.1)),
    "PLIF": (neuron.ParametricLIFNode, dict(init_tau=2.0, v_threshold=0.1)),
}
OPS = ("rate", "student", "brd", "staa")
SMALL_TEACHER = dict(channels=(8, 16, 32, 64), stem_width=8)
_PACKAGE_DIR = os.path.dirname(os.path.abspath(sj_distill.__file__))


@dataclass(frozen=True)
class Constructor:
    """One model constructor of the zoo and how to build it small."""

    family: str  # submodule of spikingjelly.activation_based.model
    name: str  # builder function or class name
    in_chans: int = 3
    size: int = 16  # input height and width
    kwargs: Tuple[Tuple[str, object], ...] = ()
    cnf: Optional[str] = None  # SEW connect function
    steps: int = T  # time steps of the input (models with a temporal attention need more)

    @property
    def id(self) -> str:
        return self.name if self.cnf is None else f"{self.name}[{self.cnf}]"

    def build(self, neuron_name: str) -> nn.Module:
        module = importlib.import_module(f"{sj_model.__name__}.{self.family}")
        factory = getattr(module, self.name)
        node, node_kwargs = NEURONS[neuron_name]
        kwargs = dict(self.kwargs)
        if self.cnf is not None:
            kwargs["cnf"] = self.cnf
        params = inspect.signature(factory).parameters
        if "num_classes" in params or any(p.kind == p.VAR_KEYWORD for p in params.values()):
            kwargs.setdefault("num_classes", 10)
        if self.family == "parametric_lif_net":
            kwargs.pop("num_classes", None)
        return factory(spiking_neuron=node, **kwargs, **node_kwargs)


#: How to build a constructor small (input channels, size, keyword arguments); the default
#: is 3x16x16 with ``num_classes=10`` (32x32 for the families in :data:`_FAMILIES_AT_32`).
_SPECS: Dict[str, Dict] = {
    "MNISTNet": dict(in_chans=1, size=28, kwargs=(("channels", 8),)),
    "FashionMNISTNet": dict(in_chans=1, size=28, kwargs=(("channels", 8),)),
    "NMNISTNet": dict(in_chans=2, size=34, kwargs=(("channels", 8),)),
    "CIFAR10Net": dict(size=32, kwargs=(("channels", 8),)),
    "CIFAR10DVSNet": dict(in_chans=2, size=128, kwargs=(("channels", 8),)),
    "DVSGestureNet": dict(in_chans=2, size=128, kwargs=(("channels", 8),)),
    "masnn_dvs128_gesture": dict(in_chans=2, size=32, steps=5,
                                 kwargs=(("T", 5), ("in_channels", 2))),
    "spikformer_ti": dict(kwargs=(("T", T), ("img_size_h", 32), ("img_size_w", 32))),
    "spikformer_s": dict(kwargs=(("T", T), ("img_size_h", 32), ("img_size_w", 32))),
}
#: Families that need 32x32 inputs (five 2x2 pools; fixed position-embedding sizes).
_FAMILIES_AT_32 = {"spiking_vgg", "spiking_vggws_ottt", "spikformer", "spike_driven_transformer",
                   "qkformer", "maxformer"}
_T_ARG = ("ms_resnet18", "ms_resnet34", "max_resnet18", "att_ms_resnet18", "spikformer_cifar10",
          "sdt_8_384", "qkformer_10_384", "maxformer_10_384", "maxformer_cifar")


def _builders(module) -> List[str]:
    """Public model constructors of one zoo submodule: builder functions, else classes."""
    names = getattr(module, "__all__", None) or [n for n in dir(module) if not n.startswith("_")]
    objs = {n: getattr(module, n, None) for n in names}
    functions = [n for n, o in objs.items() if inspect.isfunction(o)
                 and o.__module__ == module.__name__ and n[0].islower()
                 and "spiking_neuron" in inspect.signature(o).parameters]
    if functions:
        return functions
    return [n for n, o in objs.items() if inspect.isclass(o) and issubclass(o, nn.Module)
            and o.__module__ == module.__name__
            and "spiking_neuron" in inspect.signature(o.__init__).parameters]


@functools.lru_cache(maxsize=None)
def constructors() -> Tuple[Constructor, ...]:
    """Every constructor of ``spikingjelly.activation_based.model`` in this SpikingJelly
    (SEW ResNets once per connect function), minus :data:`NOT_COVERED`."""
    found = []
    for info in pkgutil.iter_modules(sj_model.__path__):
        if info.name in NOT_COVERED or info.name.startswith("_") or info.ispkg:
            continue
        try:
            module = importlib.import_module(f"{sj_model.__name__}.{info.name}")
        except Exception:  # a script module (train_*.py) or an optional dependency
            continue
        for name in _builders(module):
            spec = dict(_SPECS.get(name, {}))
            if info.name in _FAMILIES_AT_32:
                spec.setdefault("size", 32)
            if name in _T_ARG:
                spec["kwargs"] = (("T", T),) + tuple(spec.get("kwargs", ()))
            cnfs = ("ADD", "AND", "IAND") if info.name == "sew_resnet" else (None,)
            found += [Constructor(info.name, name, cnf=c, **spec) for c in cnfs]
    return tuple(found)


# --------------------------------------------------------------------------- outcomes

@dataclass
class Outcome:
    status: str  # "ok" | "refused" | "FAIL"
    detail: str = ""
    numbers: Dict[str, float] = field(default_factory=dict)


class _Refused(Exception):
    pass


def _setup(call: Callable):
    """Run a set-up call; an sj-distill error raised by sj-distill code becomes a refusal."""
    try:
        return call()
    except (rate.UnsupportedModuleError, TypeError, ValueError, KeyError) as error:
        raise_site = traceback.extract_tb(error.__traceback__)[-1].filename
        if os.path.abspath(raise_site).startswith(_PACKAGE_DIR):
            raise _Refused(f"{type(error).__name__}: {error}") from error
        raise


def _logits_mean(out: torch.Tensor) -> torch.Tensor:
    return out.mean(0) if out.dim() == 3 else out


def _input(c: Constructor) -> torch.Tensor:
    return torch.rand(c.steps, BATCH, c.in_chans, c.size, c.size)


def _first_weight(model: nn.Module) -> nn.Parameter:
    return next(p for n, p in model.named_parameters() if p.dim() > 1)


def _check_backward(model: nn.Module, out: torch.Tensor, what: str) -> None:
    weight = _first_weight(model)
    weight.grad = None
    direction = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
    (out.float() * direction).sum().backward()  # a linear loss: non-zero even for silent outputs
    if weight.grad is None or not torch.isfinite(weight.grad).all():
        raise AssertionError(f"{what}: the backward pass did not reach the first layer")
    # deep SEW AND chains are silent at initialisation (constant logits): a zero gradient
    # there is the network's, not a broken graph
    if weight.grad.abs().sum() == 0 and out.detach().flatten(0, -2).std(0).max() > 0:
        raise AssertionError(f"{what}: the gradient at the first layer is zero although the "
                             "outputs vary")


def op_rate(c: Constructor, neuron_name: str) -> Outcome:
    model = c.build(neuron_name)
    functional.set_step_mode(model, "m")
    model.train()
    reference = copy.deepcopy(model)
    _setup(lambda: rate.enable(model))
    x = _input(c)
    torch.manual_seed(1)
    expected = _logits_mean(reference(x)).detach()
    torch.manual_seed(1)
    out = model(x)
    sj.reset(model)
    if not expected.std() > 0:
        raise AssertionError("Value*: the SNN's logits are constant (a silent network); the "
                             "value check would prove nothing")
    scale = expected.abs().max()
    error = float((out.detach() - expected).abs().max() / scale)
    if out.shape != expected.shape or not error <= VALUE_TOL:
        raise AssertionError(f"Value*: rate-pass output {tuple(out.shape)} differs from the "
                             f"SNN's time-mean logits {tuple(expected.shape)} by {error:.2e} "
                             "(relative to the largest logit)")
    _check_backward(model, out, "rate")
    return Outcome("ok", numbers={"value_err": error})


def _student(c: Constructor, neuron_name: str) -> nn.Module:
    model = c.build(neuron_name)
    return _setup(lambda: zoo.cifar_student(model, num_classes=10, in_chans=c.in_chans))


def _check_feature_info(student: nn.Module, x: torch.Tensor) -> None:
    info = getattr(student, "feature_info", None) or []
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = tuple(output.shape)
        return hook

    hooks = [student.get_submodule(row["module"]).register_forward_hook(record(row["module"]))
             for row in info]
    try:
        with torch.no_grad():
            out = student(x)
    finally:
        for h in hooks:
            h.remove()
        sj.reset(student)
    for row in info:
        shape = seen.get(row["module"])
        if shape is None or len(shape) != 5:
            raise AssertionError(f"feature_info module {row['module']!r} gave {shape}, expected "
                                 "[T, B, C, H, W]")
        if shape[2] != row["num_chs"] or x.shape[-1] // shape[-1] != row["reduction"]:
            raise AssertionError(f"feature_info {row} does not match the measured output "
                                 f"{shape} for input {tuple(x.shape)}")
    if out.shape not in ((x.shape[0], BATCH, 10), (BATCH, 10)):
        raise AssertionError(f"student output {tuple(out.shape)}, expected [T, B, 10]")


def op_student(c: Constructor, neuron_name: str) -> Outcome:
    student = _student(c, neuron_name)
    _check_feature_info(student, _input(c))
    return Outcome("ok", numbers={"stages": len(getattr(student, "feature_info", []) or [])})


@functools.lru_cache(maxsize=None)
def _teacher(name: str, in_chans: int):
    from sj_distill.teachers import create_teacher

    kwargs = SMALL_TEACHER if name.startswith("resnet") else dict(mlp_ratio=1 / 64)
    return create_teacher(name, num_classes=10, in_chans=in_chans, **kwargs)


def _teacher_for(student: nn.Module) -> str:
    """A VGG teacher for students whose stages go below 1/8 resolution, else a ResNet-18."""
    reductions = [row["reduction"] for row in getattr(student, "feature_info", None) or []]
    return "vgg11_bn" if reductions and max(reductions[:-1] or [1]) > 8 else "resnet18"


def op_brd(c: Constructor, neuron_name: str) -> Outcome:
    from sj_distill.hybrid import BlockReplacement

    student = _student(c, neuron_name)
    teacher = _teacher(_teacher_for(student), c.in_chans)
    hybrid = _setup(lambda: BlockReplacement(student, teacher))
    hybrid.train()
    x = _input(c)
    modes = ["bptt"]
    try:
        rate.enable(student)
        modes.append("rate")
    except rate.UnsupportedModuleError:
        pass
    for mode in reversed(modes):
        if mode == "bptt":
            rate.disable(student)
        out = hybrid(x)
        logits = torch.stack([_logits_mean(out["student"])] + list(out["hybrids"].values()))
        _check_backward(student, logits, mode)
        sj.reset(student)
    return Outcome("ok", detail="+".join(modes), numbers={"points": len(hybrid.pairs)})


def op_staa(c: Constructor, neuron_name: str) -> Outcome:
    from sj_distill import staa

    student = _student(c, neuron_name)
    x = _input(c)
    _setup(lambda: staa.patch(student, x, time_steps=c.steps))
    student.train()
    out = student(x)
    _check_backward(student, _logits_mean(out), "staa")
    sj.reset(student)
    return Outcome("ok", numbers={"neurons": len(staa.staa_neurons(student))})


OP_FUNCTIONS = {"rate": op_rate, "student": op_student, "brd": op_brd, "staa": op_staa}


def run_cell(c: Constructor, neuron_name: str, op: str) -> Outcome:
    """``ok``, ``refused`` (one sj-distill error before any forward) or ``FAIL``."""
    torch.manual_seed(0)
    try:
        return OP_FUNCTIONS[op](c, neuron_name)
    except _Refused as refused:
        message = str(refused)
        if "\n" in message:
            return Outcome("FAIL", f"refusal is not one line: {message!r}")
        return Outcome("refused", message)
    except Exception as error:  # noqa: BLE001 - every other error is a failure of the cell
        return Outcome("FAIL", f"{type(error).__name__}: {str(error).splitlines()[0][:300]}")
    finally:
        gc.collect()  # patched models are reference cycles: free them before the next cell


# --------------------------------------------------------------------------- table

def _short(outcome: Outcome) -> str:
    if outcome.status == "ok":
        return "ok" + (f" ({outcome.detail})" if outcome.detail else "")
    if outcome.status == "refused":
        return "refused"
    return "**FAIL**"


def table(neurons: List[str], ops: List[str], only: Optional[set] = None) -> str:
    """The markdown support table of this SpikingJelly version (runs every cell)."""
    lines = [f"SpikingJelly {sj.SJ_VERSION}, torch {torch.__version__}; T={T}, batch {BATCH}; "
             f"neurons {', '.join(neurons)}; a cell lists every outcome its neurons gave.", "",
             "| family | constructor | " + " | ".join(ops) + " |",
             "|---|---|" + "---|" * len(ops)]
    reasons: Dict[str, List[str]] = {}
    for c in constructors():
        if only and c.name not in only:
            continue
        row = []
        for op in ops:
            outcomes = [run_cell(c, n, op) for n in neurons]
            kinds = sorted({_short(o) for o in outcomes})
            row.append(" / ".join(kinds))
            for n, o in zip(neurons, outcomes):
                if o.status != "ok":
                    reasons.setdefault(o.detail, []).append(f"{c.id}/{n}/{op}")
        lines.append(f"| {c.family} | {c.id} | " + " | ".join(row) + " |")
        print(lines[-1], file=sys.stderr, flush=True)
    lines += ["", "Not covered: " + "; ".join(f"`{k}` ({v})" for k, v in NOT_COVERED.items())
              + ".", "", "The error of every cell that is not `ok` (first cells shown):", ""]
    for message, cells in sorted(reasons.items(), key=lambda kv: kv[1][0]):
        shown = ", ".join(cells[:3]) + (f" and {len(cells) - 3} more" if len(cells) > 3 else "")
        lines.append(f"- {shown}: `{message}`")
    return "\n".join(lines) + "\n"


def write_section(path: str, text: str) -> None:
    """Replace (or append) this SpikingJelly version's section of the markdown file ``path``,
    delimited by ``<!-- zoo-matrix spikingjelly=VERSION -->`` and ``<!-- /zoo-matrix -->``."""
    begin, end = f"<!-- zoo-matrix spikingjelly={sj.SJ_VERSION} -->", "<!-- /zoo-matrix -->"
    with open(path) as f:
        doc = f.read()
    section = f"{begin}\n{text}{end}"
    if begin in doc:
        head, rest = doc.split(begin, 1)
        doc = head + section + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip("\n") + f"\n\n### SpikingJelly {sj.SJ_VERSION}\n\n{section}\n"
    with open(path, "w") as f:
        f.write(doc)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neurons", default="LIF,IF,PLIF")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--only", default="", help="comma-separated constructor names")
    parser.add_argument("--write", default="", help="markdown file whose section for this "
                        "SpikingJelly version is replaced (e.g. docs/zoo.md); default: stdout")
    args = parser.parse_args(argv)
    text = table(args.neurons.split(","), args.ops.split(","),
                 set(filter(None, args.only.split(","))))
    if args.write:
        write_section(args.write, text)
    else:
        print(text)


if __name__ == "__main__":
    main()
