"""Host losses: the authors' reference numbers, hand-computed values on tiny tensors, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scdl.losses import GACELoss, GADiceLoss, cps_loss, cps_weight, ga_ce_loss, ga_dice_loss, supervised_loss


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


@pytest.fixture(scope="module")
def ref_ga(reference_file):
    return torch.load(reference_file, weights_only=True)["ga"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return abs(float(a) - float(b)) / abs(float(b))


# -- reference (authors' implementation) --------------------------------------------------------------
def test_reference_target_has_an_absent_class(ref_ga):
    assert set(ref_ga["target"].unique().tolist()) == {0, 1, 2}  # class 3 of 4 absent


def test_ga_dice_matches_reference(ref_ga):
    assert rel(ga_dice_loss(torch.softmax(ref_ga["logits"], 1), ref_ga["target"]), ref_ga["gadice"]) <= 1e-5
    assert rel(GADiceLoss()(ref_ga["logits"], ref_ga["target"]), ref_ga["gadice"]) <= 1e-5


@pytest.mark.parametrize("k, key", [(10, "gace_k10"), (100, "gace_k100")])
def test_ga_ce_matches_reference(ref_ga, k, key):
    assert rel(ga_ce_loss(ref_ga["logits"], ref_ga["target"], k=k, gamma=0.5), ref_ga[key]) <= 1e-5
    assert rel(GACELoss(k=k)(ref_ga["logits"], ref_ga["target"]), ref_ga[key]) <= 1e-5


def test_supervised_loss_is_gace10_plus_gadice_of_reference(ref_ga):
    value = supervised_loss(ref_ga["logits"], ref_ga["target"])
    assert rel(value, ref_ga["gace_k10"] + ref_ga["gadice"]) <= 1e-5


# -- hand-computed values -----------------------------------------------------------------------------
def _tiny_probs(dtype=torch.float64):
    probs = torch.tensor([[[0.8, 0.6, 0.1, 0.2],      # class 0
                           [0.1, 0.3, 0.7, 0.6],      # class 1
                           [0.1, 0.1, 0.2, 0.2]]],    # class 2: absent from the target
                         dtype=dtype)
    target = torch.tensor([[0, 0, 1, 1]])
    return probs, target


def test_ga_dice_hand_computed():
    probs, target = _tiny_probs()
    # class 0: Σpy = 1.4, Σp² = 1.05, Σy² = 2; class 1: Σpy = 1.3, Σp² = 0.95; class 2 absent: Σp²/N = 0.10/4.
    expected = ((1 - 2.8 / 3.05) + (1 - 2.6 / 2.95) + 0.10 / 4) / 3
    value = ga_dice_loss(probs, target)
    assert value.dtype == torch.float64
    assert float(value) == pytest.approx(expected, rel=1e-9)  # ε = 1e-10 shifts it by ~3e-11


def test_ga_dice_absent_class_gradient_is_p_over_n():
    probs, target = _tiny_probs()
    probs.requires_grad_(True)
    ga_dice_loss(probs, target).backward()
    # d/dp [stopgrad(p/N)·p] = p/N, and the mean over 3 classes divides by 3 (not 2p/N: the factor is stopped).
    assert torch.allclose(probs.grad[0, 2], probs.detach()[0, 2] / (4 * 3), rtol=1e-12)


def test_ga_ce_uniform_logits_hand_computed():
    logits = torch.zeros(1, 2, 8, dtype=torch.float64)       # CE = ln 2 everywhere
    target = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 1]])        # n_0 = 6, n_1 = 2, K = 8
    expected = math.log(2) * (6 / (6 ** 0.5 * 8 ** 0.5) + 2 / (2 ** 0.5 * 8 ** 0.5))
    assert float(ga_ce_loss(logits, target, k=100, gamma=0.5)) == pytest.approx(expected, rel=1e-9)  # n_i + 1e-10


def test_ga_ce_keeps_top_k_percent_hand_computed():
    margins = [4.0, 3.0, -2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    logits = torch.zeros(1, 2, 10, dtype=torch.float64)
    logits[0, 1] = torch.tensor(margins, dtype=torch.float64)
    target = torch.tensor([[0, 0, 1, 0, 0, 0, 0, 0, 0, 0]])
    # CE of class 0 with logits (0, m) is softplus(m); of class 1 softplus(-m). 10·30% = 3 kept voxels:
    # softplus(4), softplus(3) (class 0, n_0 = 2) and softplus(2) (class 1, n_1 = 1); K = 3.
    expected = (softplus(4) + softplus(3)) / (2 ** 0.5 * 3 ** 0.5) + softplus(2) / (1 * 3 ** 0.5)
    assert float(ga_ce_loss(logits, target, k=30, gamma=0.5)) == pytest.approx(expected, rel=1e-9)


def test_ga_ce_gamma_one_is_plain_mean_cross_entropy(ref_ga):
    value = ga_ce_loss(ref_ga["logits"].double(), ref_ga["target"], k=100, gamma=1.0)
    assert float(value) == pytest.approx(float(F.cross_entropy(ref_ga["logits"].double(), ref_ga["target"])), rel=1e-12)


def test_cps_loss_hand_computed_and_symmetric():
    a = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)  # voxel v: logits (class0, class1)
    b = torch.tensor([[[0.0, 0.0], [1.0, 3.0]]], dtype=torch.float64)
    # argmax A = [0, 1], argmax B = [1, 1]
    # GACE(A, [1, 1]) = (softplus(2) + softplus(-1)) / (2^0.5 · 2^0.5)
    # GACE(B, [0, 1]) = softplus(1) / 2^0.5 + softplus(-3) / 2^0.5
    expected = (softplus(2) + softplus(-1)) / 2 + (softplus(1) + softplus(-3)) / 2 ** 0.5
    assert float(cps_loss(a, b)) == pytest.approx(expected, rel=1e-9)
    assert float(cps_loss(b, a)) == pytest.approx(expected, rel=1e-9)


def test_cps_ramp_values():
    assert cps_weight(0.0) == pytest.approx(0.1 * math.exp(-5), rel=1e-12)   # 6.74e-4
    assert cps_weight(0.5) == pytest.approx(0.1 * math.exp(-1.25), rel=1e-12)
    assert cps_weight(1.0) == 0.1
    assert cps_weight(1.7) == 0.1 and cps_weight(-1.0) == cps_weight(0.0)   # t clipped to [0, 1]


def test_bad_targets_are_refused():
    logits = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="do not match"):
        ga_ce_loss(logits, torch.zeros(1, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        ga_dice_loss(logits.softmax(1), torch.full((1, 4, 4), 3))
    with pytest.raises(ValueError, match="integer"):
        ga_ce_loss(logits, torch.zeros(1, 4, 4))


# -- one optimisation step lowers each loss -------------------------------------------------------------
@pytest.mark.parametrize("name", ["gadice", "gace_k10", "gace_k100", "supervised"])
def test_one_step_lowers_the_loss(ref_ga, name):
    fns = {
        "gadice": lambda l, t: ga_dice_loss(l.softmax(1), t),
        "gace_k10": lambda l, t: ga_ce_loss(l, t, k=10),
        "gace_k100": lambda l, t: ga_ce_loss(l, t, k=100),
        "supervised": supervised_loss,
    }
    logits = ref_ga["logits"].clone().requires_grad_(True)
    opt = torch.optim.SGD([logits], lr=1.0)
    before = fns[name](logits, ref_ga["target"])
    opt.zero_grad()
    before.backward()
    opt.step()
    after = fns[name](logits, ref_ga["target"])
    assert after.item() < before.item()


def test_one_step_lowers_the_cps_loss(ref_ga):
    a = ref_ga["logits"].clone().requires_grad_(True)
    b = ref_ga["logits"].flip(1).clone().requires_grad_(True)
    opt = torch.optim.SGD([a, b], lr=0.5)
    before = cps_loss(a, b)
    opt.zero_grad()
    before.backward()
    opt.step()
    assert cps_loss(a, b).item() < before.item()
