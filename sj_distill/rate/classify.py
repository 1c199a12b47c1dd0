"""Which modules of a model rate-based backprop patches, and which it refuses (and why).

:func:`patch_plan` walks a model once and names every module to patch with its kind
(``"neuron"``, ``"batchnorm"``, ``"maxpool"``, ``"dropout"``, ``"seq_to_ann"``); any module whose
forward the rate pass cannot reproduce raises :class:`UnsupportedModuleError` with the reason
and the fix.
"""
from __future__ import annotations

from typing import List, Tuple

from torch import nn
from spikingjelly.activation_based import layer, neuron

from ..sync_bn import SyncBatchNorm
from .eligibility import SUPPORTED_NEURONS


def _ottt_scale() -> tuple:
    """OTTT's ``Scale`` (``x * constant``), on SpikingJelly versions that ship it."""
    try:
        from spikingjelly.activation_based.model.spiking_vggws_ottt import Scale
    except ImportError:
        return ()
    return (Scale,)


#: Leaf modules that are linear in their input (they commute with the time-mean).
#: ``layer.Dropout`` draws one mask per sequence (kept until ``reset_net``), so the rate pass
#: reuses the spike pass's mask; ``layer.VotingLayer`` is an average pool over the last dim.
LINEAR_LEAVES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.Flatten, nn.Identity,
    layer.Dropout, layer.VotingLayer,
) + _ottt_scale()
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, SyncBatchNorm)
MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
#: torch's dropouts draw a new mask on every call: the spike pass records its masks.
TORCH_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
#: SpikingJelly zoo models whose forward cannot be rate-trained, and why (by module name).
_ZOO_REFUSALS = {
    "spikformer": "its spiking self-attention multiplies spike tensors (Q K^T V)",
    "spike_driven_transformer": "its spike-driven self-attention multiplies spike tensors "
                                "(Q * column-sum(K * V))",
    "qkformer": "its Q-K attention multiplies spike tensors (a query spike mask gates the keys)",
    "maxformer": "its spiking self-attention multiplies spike tensors (Q K^T V)",
    "masnn": "its attention (temporal / channel / spatial gates computed from the activations) "
             "multiplies activations by data-dependent gates",
}
_PRODUCT_WHY = ("the time-mean of a product of spike trains is not the product of their "
                "firing rates, so no rate pass can reproduce its value")


class UnsupportedModuleError(TypeError):
    """A module that rate-based backprop cannot train correctly."""


def _refuse_model(model: nn.Module) -> None:
    """Refuse a model whose forward rate-based backprop cannot run or cannot reproduce."""
    for name, module in model.named_modules():
        cls = type(module)
        family = cls.__module__.rpartition(".")[2]
        what = f"{cls.__name__}" + (f" (module '{name}')" if name else "")
        if cls.__module__.startswith("spikingjelly.") and family in _ZOO_REFUSALS:
            raise UnsupportedModuleError(
                f"rate-based backprop cannot train {what}: {_ZOO_REFUSALS[family]}, and "
                f"{_PRODUCT_WHY}. Train it with BPTT (plain loss.backward()).")
        if callable(getattr(module, "_to_sequence", None)):
            raise UnsupportedModuleError(
                f"rate-based backprop cannot train {what}: its forward repeats a [B,C,H,W] "
                "image over its own T (_to_sequence) and averages the outputs over time itself, "
                "so it cannot run once on the time-mean input. Train it with BPTT (plain "
                "loss.backward()), or use a model whose forward maps [T,B,...] to [T,B,K] step "
                "by step (e.g. spiking_resnet, sew_resnet, spiking_vgg).")


def _refuse_product_join(where: str, module: nn.Module) -> None:
    """SEW blocks joining their branches with AND / IAND (a product of spike trains)."""
    cnf = getattr(module, "cnf", None)
    if isinstance(cnf, str) and cnf.upper() != "ADD":
        raise UnsupportedModuleError(
            f"rate-based backprop cannot train {where}: it joins its branches with "
            f"cnf='{cnf}', a product of spike trains, and {_PRODUCT_WHY}. Build the model "
            "with cnf='ADD', or train it with BPTT.")


def patch_plan(model: nn.Module) -> List[Tuple[str, nn.Module, str]]:
    """``(path, module, kind)`` of every module to patch; raises on anything unsupported."""
    _refuse_model(model)
    for name, module in model.named_modules():
        if getattr(module, "supports_rate_bp", True) is False:
            raise UnsupportedModuleError(
                f"rate-based backprop cannot train module '{name or '<model>'}' "
                f"({type(module).__name__}): it declares supports_rate_bp = False (its output "
                "depends on the individual spikes over time, not only on firing rates). "
                "Train this model with BPTT instead of sj_distill.rate.enable()."
            )
    found: List[Tuple[str, nn.Module, str]] = []

    def visit(prefix: str, module: nn.Module, in_seq_to_ann: bool) -> None:
        path = prefix or "<model>"
        where = f"module '{path}' ({type(module).__name__})"
        _refuse_product_join(where, module)
        if isinstance(module, neuron.BaseNode):
            if type(module) not in SUPPORTED_NEURONS:
                raise UnsupportedModuleError(
                    f"rate-based backprop has no eligibility recurrence for the spiking neuron "
                    f"{where}; supported: {', '.join(c.__name__ for c in SUPPORTED_NEURONS)}. "
                    "Use one of those neurons, or train with BPTT."
                )
            found.append((path, module, "neuron"))
            return
        if isinstance(module, nn.SyncBatchNorm):
            raise UnsupportedModuleError(
                f"{where}: torch's nn.SyncBatchNorm is not supported by rate-based backprop; "
                "build the model with BatchNorm and synchronise it with "
                "sj_distill.sync_bn.convert(model) instead."
            )
        if isinstance(module, BATCH_NORMS):
            found.append((path, module, "batchnorm"))
            return
        if isinstance(module, MAX_POOLS):
            found.append((path, module, "maxpool"))
            return
        if isinstance(module, TORCH_DROPOUTS):
            found.append((path, module, "dropout"))
            return
        if isinstance(module, layer.Dropout) and in_seq_to_ann:
            raise UnsupportedModuleError(
                f"{where} inside a SeqToANNContainer draws a new mask for every time step; "
                "rate-based backprop needs SpikingJelly's one-mask-per-sequence dropout: move "
                "it out of the container (step_mode='m'), or use torch's nn.Dropout there.")
        if isinstance(module, layer.SeqToANNContainer):
            found.append((path, module, "seq_to_ann"))
        elif "Container" in type(module).__name__ and type(module).__module__.startswith(
                "spikingjelly"):
            raise UnsupportedModuleError(
                f"rate-based backprop does not support the SpikingJelly container {where}; "
                "use multi-step layers (step_mode='m') or SeqToANNContainer instead."
            )
        children = list(module.named_children())
        if not children and isinstance(module, nn.Sequential):
            return  # an empty container (the ``nn.Sequential()`` shortcut idiom) is the identity
        if not children and not isinstance(module, LINEAR_LEAVES):
            raise UnsupportedModuleError(
                f"rate-based backprop does not know how to treat {where}. Supported: "
                "SpikingJelly IFNode/LIFNode/ParametricLIFNode, BatchNorm1d/2d/3d, Conv, "
                "Linear, average pooling, max-pooling, Flatten, Dropout, Identity, VotingLayer, "
                "OTTT's Scale and SeqToANNContainer; replace the module or train with BPTT."
            )
        inside = in_seq_to_ann or isinstance(module, layer.SeqToANNContainer)
        for child_name, child in children:
            visit(f"{prefix}.{child_name}" if prefix else child_name, child, inside)

    visit("", model, False)
    if not any(kind == "neuron" for _, _, kind in found):
        raise ValueError("rate-based backprop found no SpikingJelly spiking neuron in the model")
    return found
