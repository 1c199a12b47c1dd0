"""Distillation losses against values worked out by hand, and gradients by finite differences."""
import math

import pytest
import torch

from sj_distill.losses import BRDLoss, FeatureAlignmentLoss, KDLoss, TSERLoss


# Plain-Python references (no torch): the formulas of DESIGN.md 2.3 written out per element.
def softmax(z, tau=1.0):
    e = [math.exp(v / tau) for v in z]
    return [v / sum(e) for v in e]


def ce(z, y):
    return -math.log(softmax(z)[y])


def kl(teacher, student, tau):
    p, q = softmax(teacher, tau), softmax(student, tau)
    return tau * tau * sum(a * math.log(a / b) for a, b in zip(p, q))


def entropy(z, tau):
    return -sum(p * math.log(p) for p in softmax(z, tau))


# T=2, B=1, K=2: step logits that disagree, so per-step and time-mean losses differ.
STEPS = [[2.0, 0.0], [0.0, 2.0]]
TEACHER = [math.log(3.0), 0.0]  # softmax -> [3/4, 1/4] at tau=1
TARGET = 0


def tensors():
    return (torch.tensor(STEPS).unsqueeze(1), torch.tensor([TEACHER]), torch.tensor([TARGET]))


def test_ce_on_mean_logits_is_log2_and_per_step_ce_is_larger():
    z, z_a, y = tensors()
    kd = KDLoss(alpha=0.0)
    assert kd(z, z_a, y).item() == pytest.approx(math.log(2.0), abs=1e-6)  # mean logits [1, 1]
    tser = TSERLoss(alpha=0.0, gamma=0.0)
    per_step = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(2))) / 2  # = 1.126928
    assert tser(z, z_a, y).item() == pytest.approx(per_step, abs=1e-6)
    assert per_step == pytest.approx(1.126928, abs=1e-6)


def test_kd_matches_hand_formula_with_tau_squared_scaling():
    z, z_a, y = tensors()
    loss = KDLoss(alpha=0.3, tau=2.0)
    total = loss(z, z_a, y)
    mean = [1.0, 1.0]
    expected_kl = kl(TEACHER, mean, 2.0)
    # KL(softmax([ln3, 0]/2) || uniform) * 4, worked out: p = [sqrt3, 1]/(sqrt3+1)
    p1 = math.sqrt(3) / (math.sqrt(3) + 1)
    by_hand = 4 * (p1 * math.log(2 * p1) + (1 - p1) * math.log(2 * (1 - p1)))
    assert expected_kl == pytest.approx(by_hand, rel=1e-9)
    assert loss.parts["kl"] == pytest.approx(by_hand, rel=1e-5)
    assert loss.parts["ce"] == pytest.approx(math.log(2.0), rel=1e-5)
    assert total.item() == pytest.approx(0.7 * math.log(2.0) + 0.3 * by_hand, rel=1e-5)
    assert loss.parts["total"] == pytest.approx(total.item())


def test_tser_parts_match_per_step_formula_and_differ_from_kd():
    z, z_a, y = tensors()
    alpha, gamma, tau = 0.4, 0.2, 3.0
    loss = TSERLoss(alpha=alpha, gamma=gamma, tau=tau)
    total = loss(z, z_a, y).item()
    tsce = sum(ce(s, TARGET) for s in STEPS) / 2
    tskl = sum(kl(TEACHER, s, tau) for s in STEPS) / 2
    ent = sum(entropy(s, tau) for s in STEPS) / 2
    assert loss.parts["tsce"] == pytest.approx(tsce, rel=1e-5)
    assert loss.parts["tskl"] == pytest.approx(tskl, rel=1e-5)
    assert loss.parts["entropy"] == pytest.approx(ent, rel=1e-5)
    assert total == pytest.approx((1 - alpha) * tsce + alpha * tskl - gamma * ent, rel=1e-5)
    kd_on_mean = (1 - alpha) * ce([1.0, 1.0], TARGET) + alpha * kl(TEACHER, [1.0, 1.0], tau)
    assert abs(total - kd_on_mean) > 0.1


def test_tser_equals_kd_when_every_step_is_the_same_and_no_entropy():
    z = torch.tensor([[[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]]]).expand(3, 2, 3)
    z_a, y = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([2, 0])
    tser = TSERLoss(alpha=0.5, gamma=0.0, tau=3.0)(z, z_a, y)
    kd = KDLoss(alpha=0.5, tau=3.0)(z, z_a, y)
    assert tser.item() == pytest.approx(kd.item(), rel=1e-6)


def test_brd_objective_sums_weighted_terms_and_averages_hybrids():
    z, z_a, y = tensors()
    h1, h2 = [0.0, 1.0], [3.0, 0.0]
    hybrids = {"layer1": torch.tensor([h1]), "layer2": torch.tensor([h2])}
    loss = BRDLoss(ce_weight=1.0, kd_weight=0.5, hybrid_ce_weight=2.0, hybrid_kd_weight=0.25,
                   tau=2.0)
    total = loss(z, z_a, y, hybrid_logits=hybrids).item()
    mean = [1.0, 1.0]
    hce = (ce(h1, 0) + ce(h2, 0)) / 2
    hkd = (kl(TEACHER, h1, 2.0) + kl(TEACHER, h2, 2.0)) / 2
    expected = ce(mean, 0) + 0.5 * kl(TEACHER, mean, 2.0) + 2.0 * hce + 0.25 * hkd
    assert total == pytest.approx(expected, rel=1e-5)
    assert loss.parts["hybrid_ce"] == pytest.approx(hce, rel=1e-5)
    assert loss.parts["hybrid_kd"] == pytest.approx(hkd, rel=1e-5)


def test_brd_feature_term_is_mean_squared_error():
    z, z_a, y = tensors()
    adapted = torch.tensor([[[[1.0, 2.0]]]])
    teacher = torch.tensor([[[[0.0, 4.0]]]])
    loss = BRDLoss(hybrid_ce_weight=0.0, hybrid_kd_weight=0.0, feature_weight=3.0)
    loss(z, z_a, y, hybrid_logits={}, feature_pairs={"layer1": (adapted, teacher)})
    assert loss.parts["feature"] == pytest.approx((1 + 4) / 2)
    assert loss.parts["total"] == pytest.approx(loss.parts["ce"] + loss.parts["kd"] + 3 * 2.5,
                                                rel=1e-6)
    with pytest.raises(ValueError, match="feature_pairs"):
        loss(z, z_a, y, hybrid_logits={})


def test_brd_loss_cannot_be_called_without_the_hybrids():
    """Leaving the hybrids out once gave plain KD without a word (2.303 instead of 4.605)."""
    z, z_a, y = tensors()
    with pytest.raises(TypeError, match="missing 1 required keyword-only argument: "
                                        "'hybrid_logits'"):
        BRDLoss()(z, z_a, y)
    with pytest.raises(ValueError) as err:
        BRDLoss()(z, z_a, y, hybrid_logits={})
    assert str(err.value) == (
        "BRDLoss got no hybrid logits (hybrid_logits is empty): pass hybrid_logits="
        "out['hybrids'] from a BlockReplacement with at least one point, or set "
        "hybrid_ce_weight=hybrid_kd_weight=0 for plain KD")
    plain_kd = BRDLoss(hybrid_ce_weight=0.0, hybrid_kd_weight=0.0)
    assert plain_kd(z, z_a, y, hybrid_logits={}).item() == pytest.approx(
        ce([1.0, 1.0], 0) + kl(TEACHER, [1.0, 1.0], 4.0), rel=1e-6)


def test_rate_pass_logits_count_as_one_step():
    z_mean = torch.tensor([[1.0, 1.0]])
    z_a, y = torch.tensor([TEACHER]), torch.tensor([0])
    loss = TSERLoss(alpha=0.0, gamma=0.0)
    assert loss(z_mean, z_a, y).item() == pytest.approx(math.log(2.0), abs=1e-6)


@pytest.mark.parametrize("make", [lambda: KDLoss(0.3, 2.0), lambda: TSERLoss(0.4, 0.2, 3.0),
                                  lambda: BRDLoss(kd_weight=0.5, tau=2.0)])
def test_gradcheck_double(make):
    torch.manual_seed(1)
    z = torch.randn(3, 2, 4, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    z_a, y = torch.randn(2, 4, dtype=torch.float64), torch.tensor([1, 3])
    loss = make()
    if isinstance(loss, BRDLoss):
        assert torch.autograd.gradcheck(lambda a, b: loss(a, z_a, y, hybrid_logits={"p": b}),
                                        (z, h))
    else:
        assert torch.autograd.gradcheck(lambda a: loss(a, z_a, y), (z,))


def test_gradcheck_feature_alignment():
    a = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: FeatureAlignmentLoss()({"p": (x, t)}), (a,))


def test_teacher_gets_no_gradient():
    z = torch.randn(2, 2, 3, requires_grad=True)
    z_a = torch.randn(2, 3, requires_grad=True)
    TSERLoss()(z, z_a, torch.tensor([0, 1])).backward()
    assert z_a.grad is None and z.grad.abs().sum() > 0


def test_bad_shapes_and_parameters_give_clear_errors():
    z, z_a, y = tensors()
    with pytest.raises(ValueError, match=r"teacher_logits must be \[B, K\]"):
        KDLoss()(z, z_a.expand(2, 2, 2), y)
    with pytest.raises(ValueError, match=r"target must be class indices \[B\]"):
        TSERLoss()(z, z_a, torch.tensor([[0]]))
    with pytest.raises(ValueError, match=r"student_logits must be \[T, B, K\] or \[B, K\]"):
        KDLoss()(z[0, 0], z_a, y)
    with pytest.raises(ValueError, match="alpha"):
        TSERLoss(alpha=1.5)
    with pytest.raises(ValueError, match="weights must be >= 0"):
        BRDLoss(kd_weight=-1.0)
    with pytest.raises(ValueError, match="shapes differ"):
        FeatureAlignmentLoss()({"p": (torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, 2))})
