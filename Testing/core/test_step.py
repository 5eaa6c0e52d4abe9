"""The composable training step: one code path for supervised, CPS, CPS+SCDL (and Mean Teacher)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from scdl.errors import ScdlError
from scdl.losses import cps_weight, supervised_loss
from scdl.method import SCDLHead, class_proportions, pool_tokens
from scdl.networks import VNet
from scdl.training.step import FRAMEWORKS, SCDLConfig, StepConfig, TrainingStep


pytestmark = pytest.mark.usefixtures("one_torch_thread")


ARCH = {"name": "vnet", "in_channels": 1, "n_classes": 4, "n_filters": 4, "norm": "batch"}


def val(t) -> float:
    return t.detach().item()


@pytest.fixture(scope="module")
def ct_batch(patient_a_ct, patient_a_seg):
    """Four 32³ patches of patient A's real CT (window [-125, 275] -> [0, 1]) and a 4-class label map
    (0 background, 1-3 the three most frequent organs of the crop)."""
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(patient_a_ct))).astype(np.float32)
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(patient_a_seg)))
    z0, y0, x0 = [(s - 64) // 2 for s in ct.shape]
    ct = np.clip((ct[z0:z0 + 64, y0:y0 + 64, x0:x0 + 32] + 125.0) / 400.0, 0.0, 1.0)
    seg = seg[z0:z0 + 64, y0:y0 + 64, x0:x0 + 32]
    organs = [v for v in np.argsort(np.bincount(seg.ravel()))[::-1] if v != 0][:3]
    labels = np.zeros(seg.shape, np.int64)
    for i, v in enumerate(organs, start=1):
        labels[seg == v] = i
    x = torch.from_numpy(ct).reshape(2, 32, 2, 32, 32).permute(0, 2, 1, 3, 4).reshape(4, 1, 32, 32, 32)
    y = torch.from_numpy(labels).reshape(2, 32, 2, 32, 32).permute(0, 2, 1, 3, 4).reshape(4, 32, 32, 32)
    assert len(torch.unique(y[:2])) == 4  # every class occurs in the labeled half
    return x[:2].contiguous(), y[:2].contiguous(), x[2:].contiguous()


def make(framework: str, seed: int = 0, **kwargs) -> TrainingStep:
    torch.manual_seed(seed)
    return TrainingStep.build(ARCH, framework, **kwargs)


@pytest.mark.parametrize("framework, keys", [
    ("supervised", {"total", "sup", "sup_0"}),
    ("cps", {"total", "sup", "sup_0", "sup_1", "cps", "w_cps"}),
    ("cps-scdl", {"total", "sup", "sup_0", "sup_1", "cps", "w_cps", "scdl", "proxy", "p2e", "e2p", "kl", "sac"}),
    ("mean-teacher", {"total", "sup", "sup_0", "consistency", "w_consistency"}),
    ("mean-teacher-scdl", {"total", "sup", "sup_0", "consistency", "w_consistency",
                           "scdl", "proxy", "p2e", "e2p", "kl", "sac"}),
])
def test_terms_of_each_framework(ct_batch, framework, keys):
    xl, yl, xu = ct_batch
    step = make(framework)
    assert len(step.networks) == FRAMEWORKS[framework][2]
    terms = step(xl, yl, xu, progress=0.3)
    assert set(terms) == keys
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())


def test_total_is_the_weighted_sum(ct_batch):
    xl, yl, xu = ct_batch
    t = 0.4
    terms = make("cps-scdl")(xl, yl, xu, progress=t)
    assert val(terms["w_cps"]) == pytest.approx(cps_weight(t))
    scdl = 0.1 * (0.3 * terms["proxy"] + 0.1 * terms["sac"] + 0.02 * terms["kl"])
    assert val(terms["scdl"]) == pytest.approx(val(scdl), rel=1e-6)
    assert val(terms["sup"]) == pytest.approx(val(terms["sup_0"] + terms["sup_1"]), rel=1e-6)
    expected = terms["sup"] + cps_weight(t) * terms["cps"] + terms["scdl"]
    assert val(terms["total"]) == pytest.approx(val(expected), rel=1e-6)


def test_baselines_share_the_code_path(ct_batch):
    xl, yl, _ = ct_batch
    cps = make("cps-scdl")
    sup = TrainingStep([copy.deepcopy(cps.networks[0])], "supervised")
    a, b = cps(xl, yl, None), sup(xl, yl, None)
    # Network A's supervised term is the same computation in both frameworks.
    assert val(a["sup_0"]) == pytest.approx(val(b["sup_0"]), rel=1e-6)
    assert val(b["sup_0"]) == pytest.approx(val(supervised_loss(sup.networks[0](xl), yl)), rel=1e-6)


def test_unlabeled_batch_of_size_zero(ct_batch):
    xl, yl, xu = ct_batch
    step = make("cps-scdl").eval()
    eps = torch.randn(4, 50, 256)
    none = step(xl, yl, None, progress=0.5, eps=eps)
    empty = step(xl, yl, xu[:0], progress=0.5, eps=eps)
    assert set(none) == set(empty)
    for key in none:
        assert val(none[key]) == pytest.approx(val(empty[key]), rel=1e-6)


def test_scdl_sees_network_a_tokens_and_label_proportions(ct_batch):
    xl, yl, xu = ct_batch
    step = make("cps-scdl").eval()   # eval: dropout off, BN running statistics -> deterministic
    eps = torch.randn(4, 50, 256)
    terms = step(xl, yl, xu, eps=eps)
    x = torch.cat([xl, xu])
    _, x9 = step.networks[0](x, return_features=True)
    grid = (4, 4, 4)   # 32 // 8
    ref = step.scdl(pool_tokens(x9, grid), class_proportions(yl, 4, grid), eps=eps)
    for key in ("proxy", "kl", "sac"):
        assert val(terms[key]) == pytest.approx(val(ref[key]), rel=1e-6)


def test_ablation_flags(ct_batch):
    xl, yl, xu = ct_batch
    released = make("cps-scdl", scdl={"p2e_axis": "classes"})(xl, yl, xu)
    assert released["kl"].item() == 0.0
    cdba = make("cps-scdl", scdl=SCDLConfig(use_sac=False, use_kl=False))(xl, yl, xu)
    assert {"proxy", "p2e", "e2p"} <= set(cdba) and not {"sac", "kl"} & set(cdba)
    no_kl = make("cps-scdl", scdl={"use_kl": False})(xl, yl, xu)
    assert "sac" in no_kl and "kl" not in no_kl


def test_trainable_parameters_and_state_dict_round_trip(ct_batch):
    xl, yl, xu = ct_batch
    step = make("cps-scdl")
    params = list(step.trainable_parameters())
    expected = sum(p.numel() for n in step.networks for p in n.parameters()) + sum(
        p.numel() for name, p in step.scdl.named_parameters() if name != "sigma_emb")
    assert sum(p.numel() for p in params) == expected
    assert all(p is not step.scdl.sigma_emb for p in params)
    copy_step = make("cps-scdl", seed=1)
    copy_step.load_state_dict(step.state_dict())
    step.eval(), copy_step.eval()
    eps = torch.randn(4, 50, 256)
    a, b = step(xl, yl, xu, eps=eps), copy_step(xl, yl, xu, eps=eps)
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = step.network_state_dicts()
    for sd in plain:
        VNet(1, 4, 4).load_state_dict(sd, strict=True)   # the authors' key layout, ready for a model package


def test_mean_teacher_ema(ct_batch):
    xl, yl, xu = ct_batch
    step = make("mean-teacher")
    assert all(not p.requires_grad for p in step.teacher.parameters())
    assert not any(p is q for p in step.trainable_parameters() for q in step.teacher.parameters())
    opt = torch.optim.SGD(step.trainable_parameters(), lr=0.1)
    terms = step(xl, yl, xu, progress=1.0)
    w0 = step.networks[0].block_one.conv[0].weight.detach().clone()
    # First update: α = min(1 - 1/1, 0.99) = 0 -> teacher = student.
    assert torch.equal(step.teacher.block_one.conv[0].weight, w0)
    opt.zero_grad()
    terms["total"].backward()
    opt.step()
    w1 = step.networks[0].block_one.conv[0].weight.detach().clone()
    step(xl, yl, xu, progress=1.0)
    # Second update: α = min(1 - 1/2, 0.99) = 0.5.
    assert torch.allclose(step.teacher.block_one.conv[0].weight, 0.5 * w0 + 0.5 * w1, atol=1e-7)
    with torch.no_grad():
        step.eval()(xl, yl, xu)     # evaluation does not move the teacher
    assert int(step.ema_updates) == 2


@pytest.mark.parametrize("framework", ["supervised", "cps", "cps-scdl"])
def test_one_sgd_step_lowers_the_total_on_real_ct(ct_batch, framework):
    xl, yl, xu = ct_batch
    step = make(framework)
    opt = torch.optim.SGD(step.trainable_parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    eps = torch.randn(4, 50, 256)
    torch.manual_seed(5)
    before = step(xl, yl, xu, progress=0.5, eps=eps)
    opt.zero_grad()
    before["total"].backward()
    opt.step()
    torch.manual_seed(5)   # same dropout masks
    after = step(xl, yl, xu, progress=0.5, eps=eps)
    assert after["total"].item() < before["total"].item()


def test_user_errors():
    with pytest.raises(ScdlError, match="unknown training framework"):
        TrainingStep.build(ARCH, "fixmatch")
    with pytest.raises(ScdlError, match="two networks"):
        TrainingStep([VNet(1, 4, 4)], "cps")
    with pytest.raises(ScdlError, match="unknown step settings"):
        StepConfig.from_dict({"cps_lambda": 1.0})
    with pytest.raises(ScdlError, match="cps_k"):
        StepConfig(cps_k=0)
    assert StepConfig.from_dict({"cps_weight": 0.2}).cps_weight == 0.2
    step = TrainingStep.build(ARCH, "supervised")
    with pytest.raises(ValueError, match="at least one labeled patch"):
        step(torch.zeros(0, 1, 32, 32, 32), torch.zeros(0, 32, 32, 32, dtype=torch.long))


def test_scdl_head_width_follows_the_network():
    step = make("cps-scdl")
    assert isinstance(step.scdl, SCDLHead) and step.scdl.in_dim == 4 and step.scdl.n_classes == 4
