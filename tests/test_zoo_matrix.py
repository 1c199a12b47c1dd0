"""Every SpikingJelly zoo constructor x neuron x operation: right numbers or one clear error.

Cells come from ``zoo_cells.constructors()`` (the installed SpikingJelly's model registry),
so running this file with each SpikingJelly version covers the models that version ships.
Each cell must end as :func:`expected` says: ``ok`` (for ``rate``, with the rate-pass value
equal to the plain SNN's time-mean logits, Value*) or ``refused`` (one sj-distill error
before any forward). A fast representative subset (the smallest model of each family, LIF)
runs by default (and in CI); the full matrix, about 20 minutes per SpikingJelly version on two
cores, is marked ``zoo_matrix`` (``pytest -m zoo_matrix tests/test_zoo_matrix.py``).
"""
import pytest

import zoo_cells
from zoo_cells import constructors, run_cell

#: Families whose forward rate-based backprop refuses (attention products of spikes, or a
#: forward that repeats its input over T and averages over time itself).
RATE_REFUSED = {"spikformer", "spike_driven_transformer", "qkformer", "maxformer", "masnn",
                "ms_resnet"}
#: Families ``zoo.cifar_student`` (and so BlockReplacement on it) supports.
STUDENT_FAMILIES = {"spiking_resnet", "sew_resnet", "spiking_vgg", "spiking_vggws_ottt",
                    "ms_resnet"}
STUDENT_CONSTRUCTORS = {"att_ms_resnet18"}
#: Fast subset: every family's smallest model under rate.enable (refusals cost little), and
#: one ResNet, VGG, MS-ResNet and an unsupported layout under cifar_student and BRD.
FAST = {
    "rate": {"spiking_resnet18", "sew_resnet18[ADD]", "sew_resnet18[AND]", "sew_resnet18[IAND]",
             "spiking_vgg11", "MNISTNet", "ms_resnet18", "att_ms_resnet18",
             "masnn_dvs128_gesture", "spikformer_cifar10", "sdt_8_384", "qkformer_10_384",
             "maxformer_cifar"},
    "student": {"spiking_resnet18", "spiking_vgg11_bn", "ms_resnet18", "MNISTNet"},
    "brd": {"spiking_resnet18", "spiking_vgg11_bn", "ms_resnet18"},
    "staa": {"spiking_resnet18", "spiking_vgg11_bn"},
}
CHECKED_OPS = ("rate", "student", "brd", "staa")
#: staa.patch's default placement: the last neuron of every residual stage, or for VGG
#: layouts the last neuron before each pool of feature_info (set by cifar_student).
STAA_REFUSED = set()


def expected(c: zoo_cells.Constructor, op: str) -> str:
    """What the documented support table says for this cell."""
    if op == "rate":
        refused = c.family in RATE_REFUSED or c.cnf in ("AND", "IAND")
        return "refused" if refused else "ok"
    supported = c.family in STUDENT_FAMILIES or c.name in STUDENT_CONSTRUCTORS
    if op == "staa" and c.family in STAA_REFUSED:
        supported = False
    return "ok" if supported else "refused"


def _cells(fast: bool):
    cells = []
    for c in constructors():
        for neuron_name in (("LIF",) if fast else tuple(zoo_cells.NEURONS)):
            for op in CHECKED_OPS:
                is_fast = neuron_name == "LIF" and c.id in FAST[op]
                if is_fast == fast:
                    cells.append(pytest.param(c, neuron_name, op,
                                              id=f"{c.id}-{neuron_name}-{op}"))
    return cells


def _check(c, neuron_name, op):
    outcome = run_cell(c, neuron_name, op)
    assert outcome.status != "FAIL", outcome.detail
    assert outcome.status == expected(c, op), outcome.detail
    if outcome.status == "refused":
        assert "\n" not in outcome.detail and len(outcome.detail) > 40, outcome.detail
    if op == "rate" and outcome.status == "ok":
        assert outcome.numbers["value_err"] <= zoo_cells.VALUE_TOL


@pytest.mark.parametrize("c, neuron_name, op", _cells(fast=True))
def test_zoo_cell(c, neuron_name, op):
    _check(c, neuron_name, op)


@pytest.mark.zoo_matrix
@pytest.mark.parametrize("c, neuron_name, op", _cells(fast=False))
def test_zoo_cell_full_matrix(c, neuron_name, op):
    _check(c, neuron_name, op)


def test_every_family_of_the_registry_is_in_the_matrix():
    """A new SpikingJelly family shows up here (and in the matrix) instead of going unseen."""
    import pkgutil
    from spikingjelly.activation_based import model

    families = {c.family for c in constructors()} | set(zoo_cells.NOT_COVERED)
    modules = {m.name for m in pkgutil.iter_modules(model.__path__)
               if not m.ispkg and not m.name.startswith(("_", "train"))}
    assert modules <= families
    if zoo_cells.sj.LEGACY:
        assert families >= {"spiking_resnet", "sew_resnet", "spiking_vgg", "parametric_lif_net"}
    else:
        assert families >= {"spiking_resnet", "sew_resnet", "spiking_vgg", "spiking_vggws_ottt",
                            "parametric_lif_net", "ms_resnet", "masnn", "spikformer",
                            "spike_driven_transformer", "qkformer", "maxformer"}


def test_value_check_catches_a_wrong_rate_value(monkeypatch):
    """The Value* check can fail: with the SEW AND refusal switched off, the rate pass
    multiplies firing rates where the SNN multiplies spikes, and the cell fails."""
    from sj_distill.rate import classify

    monkeypatch.setattr(classify, "_refuse_product_join", lambda where, module: None)
    sew_and = next(c for c in constructors() if c.id == "sew_resnet18[AND]")
    outcome = run_cell(sew_and, "LIF", "rate")
    assert outcome.status == "FAIL" and "Value*" in outcome.detail, outcome
