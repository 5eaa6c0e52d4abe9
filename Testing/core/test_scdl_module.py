"""SCDL module: the authors' reference numbers (released mode) and the properties of each piece."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from scdl.errors import ScdlError
from scdl.method import (
    SCDLConfig, SCDLHead, class_proportions, class_tokens, e2p_loss, p2e_loss, pool_tokens, sac_loss,
    sample_proxies, soft_assignments, symmetric_kl,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def ref(reference_file):
    return torch.load(reference_file, weights_only=True)["scdl"]


def released_head(ref, **overrides) -> SCDLHead:
    cfg = ref["config"]
    assert (cfg["x_dim"], cfg["z_dim"], cfg["sample_num"], cfg["num_classes"]) == (16, 256, 50, 4)
    settings = dict(embed_dim=cfg["z_dim"], num_samples=cfg["sample_num"], tau=cfg["tau"],
                    e2p_weight=cfg["dist_weight"], p2e_axis=cfg["p2e_axis"])
    config = SCDLConfig(**{**settings, **overrides})
    head = SCDLHead(cfg["x_dim"], cfg["num_classes"], config)
    head.load_state_dict(ref["state"], strict=True)
    return head.eval()  # dropout off, as the reference


def val(t) -> float:
    """A scalar tensor's value (detached first)."""
    return t.detach().item() if torch.is_tensor(t) else float(t)


def rel(a, b) -> float:
    return abs(a.item() - b.item()) / abs(b.item())


# -- reference (authors' implementation, released mode) ----------------------------------------------
def test_reference_labeled_call(ref):
    head = released_head(ref)
    out = head(ref["x"], ref["y_dist"], eps=ref["eps"], x_cls=ref["x_cls"], y_cls=ref["y_cls"])
    assert rel(out["proxy"], ref["labeled"]["proxy_loss"]) <= 1e-5
    assert rel(out["sac"], ref["labeled"]["sac"]) <= 1e-5
    # Released mode: P_p2e is P_e2p, so KL is exactly 0 here (the reference's -6e-8 is its rounding).
    assert out["kl"].item() == 0.0 and abs(val(ref["labeled"]["kl"])) < 1e-6
    p_e2p = head.assign(head.embed(ref["x"])).p_e2p
    assert val((p_e2p - ref["labeled"]["p_e2p"]).norm() / ref["labeled"]["p_e2p"].norm()) <= 1e-5


def test_reference_unlabeled_call_uses_normalised_joint_assignment(ref):
    head = released_head(ref)
    out = head(ref["x"], None, eps=ref["eps"])
    assert rel(out["proxy"], ref["unlabeled"]["proxy_loss"]) <= 1e-5
    assert out["kl"].item() == 0.0 and abs(val(ref["unlabeled"]["kl"])) < 1e-6
    assert "sac" not in out  # no labels, no class tokens
    p_e2p = head.assign(head.embed(ref["x"])).p_e2p
    assert val((p_e2p - ref["unlabeled"]["p_e2p"]).norm() / ref["unlabeled"]["p_e2p"].norm()) <= 1e-5
    # What "sharpened" means, found from the numbers: w = P² / Σ_c P² (bi normalised over classes).
    # Neither the raw product P² nor P itself reproduces the reference.
    with torch.no_grad():
        p = p_e2p
        for w, matches in [((p * p) / (p * p).sum(-1, keepdim=True), True), (p * p, False), (p, False)]:
            value = head(ref["x"], w, eps=ref["eps"], x_cls=ref["x_cls"][:0], y_cls=ref["y_cls"][:0])["proxy"]
            assert (rel(value, ref["unlabeled"]["proxy_loss"]) <= 1e-5) is matches


def test_reference_state_names_and_frozen_sigma_emb(ref):
    head = released_head(ref)
    assert set(head.state_dict()) == set(ref["state"])
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert trainable == set(ref["state"]) - {"sigma_emb"}


# -- hand-computed pieces -------------------------------------------------------------------------------
def test_p2e_and_e2p_hand_computed():
    sim = torch.tensor([[[0.5, -0.2]]], dtype=torch.float64)  # one token, two classes
    w = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    # E+ - E- = (2w - 1)·ā = (0.5, 0.2)
    assert val(p2e_loss(sim, w)) == pytest.approx((math.exp(-0.5) + math.exp(-0.2)) / 2, rel=1e-12)
    assert val(e2p_loss(sim, w)) == pytest.approx(1.0 - 0.5, rel=1e-12)


def test_p2e_e2p_are_means_over_the_samples(ref):
    # The head uses mean_s <z, u_s> = <z, mean_s u_s>; the spec's form with the full (B, L, C, S) tensor agrees.
    head = released_head(ref).double()
    x, y, eps = ref["x"].double(), ref["y_dist"].double(), ref["eps"].double()
    out = head(x, y, eps=eps)
    z = head.embed(x)
    u = sample_proxies(head.proxies, 50, eps)
    a = torch.einsum("bld,csd->blcs", z, u)
    w = y.unsqueeze(-1)
    e_pos, e_neg = (a * w).mean(-1), (a * (1 - w)).mean(-1)
    assert out["p2e"].dtype == torch.float64
    assert val(out["p2e"]) == pytest.approx(val(torch.exp(-(e_pos - e_neg)).mean()), rel=1e-12)
    assert val(out["e2p"]) == pytest.approx(val((w * (1 - a)).mean(-1).sum(-1).mean()), rel=1e-12)


def test_symmetric_kl_hand_computed():
    p = torch.tensor([[[0.5, 0.5]]], dtype=torch.float64)
    q = torch.tensor([[[0.25, 0.75]]], dtype=torch.float64)
    expected = 0.25 * math.log(0.5 / 0.25) + (-0.25) * math.log(0.5 / 0.75)
    assert val(symmetric_kl(p, q)) == pytest.approx(expected, rel=1e-12)
    two = torch.cat([p, p]), torch.cat([q, q])          # divided by the batch size: same value for 2 patches
    assert val(symmetric_kl(*two)) == pytest.approx(expected, rel=1e-12)
    assert val(symmetric_kl(*two, reduction="tokens")) == pytest.approx(expected, rel=1e-12)  # L = 1


def test_soft_assignments_hand_computed():
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)   # 2 tokens
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)    # 2 classes
    a = math.exp(2) / (math.exp(2) + 1)                                # softmax((1, 0) / 0.5)
    asg = soft_assignments(z, mu, tau=0.5, tau_p2e=0.5, p2e_axis="tokens")
    assert torch.allclose(asg.p_e2p[0, 0], torch.tensor([a, 1 - a], dtype=torch.float64))
    assert torch.allclose(asg.p_p2e.sum(dim=1), torch.ones(1, 2, dtype=torch.float64))  # over tokens
    assert torch.allclose(asg.bi[0, 0], torch.tensor([a * a, (1 - a) ** 2], dtype=torch.float64) / (a * a + (1 - a) ** 2))
    released = soft_assignments(z, mu, tau=0.5, tau_p2e=0.5, p2e_axis="classes")
    assert torch.equal(released.p_p2e, released.p_e2p)


def test_kl_exactly_zero_in_released_mode_and_positive_with_token_axis(ref):
    x = ref["x"]
    released = released_head(ref)(x, ref["y_dist"], eps=ref["eps"])
    assert released["kl"].item() == 0.0
    tokens = released_head(ref, p2e_axis="tokens")
    assert tokens.config.p2e_axis == "tokens"
    assert val(tokens(x, ref["y_dist"], eps=ref["eps"])["kl"]) > 1.0


def test_sac_hand_computed_with_absent_class():
    z_cls = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]], dtype=torch.float64)
    y_cls = torch.tensor([0, 0, 1])
    mu_hat = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=torch.float64)  # class 2 absent
    # anchor_0 = normalise((1, 1) / 2) -> cos with (1, 0) = 1/√2; anchor_1 = (1, 0) -> cos with (0, 1) = 0.
    expected = ((1 - 1 / math.sqrt(2)) + (1 - 0)) / 2
    assert val(sac_loss(z_cls, y_cls, mu_hat)) == pytest.approx(expected, rel=1e-12)


def test_sample_proxies_mean_and_sigma():
    theta = torch.tensor([[3.0, 4.0, 0.0, math.log(math.e - 1)]], dtype=torch.float64)  # μ = (3, 4), σ = (ln 2, 1)
    eps = torch.tensor([[[0.0, 0.0], [1.0, -1.0]]], dtype=torch.float64)
    u = sample_proxies(theta, 2, eps)
    assert torch.allclose(u[0, 0], torch.tensor([0.6, 0.8], dtype=torch.float64))
    sample = torch.tensor([3.0 + math.log(2), 4.0 - 1.0], dtype=torch.float64)
    assert torch.allclose(u[0, 1], sample / sample.norm())
    with pytest.raises(ValueError, match=r"\(C, S, D\)"):
        sample_proxies(theta, 3, eps)


# -- tokens and class proportions ----------------------------------------------------------------------
def test_pool_tokens_order_and_average():
    feat = torch.arange(4 * 4 * 4, dtype=torch.float64).reshape(1, 1, 4, 4, 4)
    tokens = pool_tokens(feat, (2, 2, 2))
    assert tokens.shape == (1, 8, 1)
    # token l = (i·2 + j)·2 + k averages block (i, j, k): block (0, 0, 1) holds x = 2, 3 of rows 0, 1, 4, 5
    block = feat[0, 0, 0:2, 0:2, 2:4]
    assert val(tokens[0, 1, 0]) == pytest.approx(val(block.mean()))


@pytest.fixture(scope="module")
def seg_crop(patient_a_seg):
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(patient_a_seg)))  # (z, y, x)
    z0, y0, x0 = [(s - 48) // 2 for s in arr.shape]
    crop = arr[z0:z0 + 48, y0:y0 + 48, x0:x0 + 48]
    values, compact = np.unique(crop, return_inverse=True)
    return torch.from_numpy(compact.reshape(crop.shape).astype(np.int64))[None], len(values)


def test_class_proportions_of_real_labels(seg_crop):
    labels, n_classes = seg_crop
    assert n_classes > 5  # several organs in the central crop of patient A
    y_dist = class_proportions(labels, n_classes, (6, 6, 6), dtype=torch.float64)
    assert y_dist.shape == (1, 216, n_classes)
    assert torch.allclose(y_dist.sum(-1), torch.ones(1, 216, dtype=torch.float64))
    # Each token covers 8³ = 512 voxels: token masses times 512 are the exact voxel counts per class.
    counts = torch.bincount(labels.flatten(), minlength=n_classes).double()
    assert torch.allclose(y_dist.sum(1)[0] * 512, counts)
    # Non-divisible grids (adaptive pooling, overlapping windows) still give proportions summing to 1.
    assert torch.allclose(class_proportions(labels, n_classes, (5, 7, 5), torch.float64).sum(-1),
                          torch.ones(1, 175, dtype=torch.float64))
    # Classes absent from the patch get 0 everywhere.
    padded = class_proportions(labels, n_classes + 2, (6, 6, 6), dtype=torch.float64)
    assert val(padded[..., n_classes:].abs().sum()) == 0.0


def test_class_tokens_hand_computed():
    x = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]]], dtype=torch.float64)      # 1 patch, 3 tokens
    y = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)
    x_cls, y_cls = class_tokens(x, y)
    assert y_cls.tolist() == [0, 1]                                                  # class 2 absent: skipped
    assert torch.allclose(x_cls[0], (1.0 * x[0, 0] + 0.5 * x[0, 1]) / 1.5)
    assert torch.allclose(x_cls[1], (0.5 * x[0, 1] + 1.0 * x[0, 2]) / 1.5)


# -- gradients ------------------------------------------------------------------------------------------
def test_sac_gradient_reaches_only_the_proxy_means(ref):
    head = released_head(ref, use_cdba=False, use_kl=False)
    x = ref["x"].clone().requires_grad_(True)
    out = head(x, ref["y_dist"], eps=ref["eps"])
    assert set(out) == {"sac", "total"}
    out["sac"].backward()
    assert x.grad is None
    assert all(p.grad is None for p in head.encoder.parameters())
    grad = head.proxies.grad
    assert val(grad[:, :256].abs().sum()) > 0 and val(grad[:, 256:].abs().sum()) == 0.0  # μ only, not σ


def test_unlabeled_weights_carry_no_gradient(ref):
    head = released_head(ref, p2e_axis="tokens", use_sac=False, use_kl=False)
    x1 = ref["x"].double().clone().requires_grad_(True)
    head = head.double()
    unlabeled = head(x1, None, eps=ref["eps"].double())["proxy"]
    unlabeled.backward()
    # The same loss with bi given as constant labels: equal value and equal gradient only if w is detached.
    x2 = ref["x"].double().clone().requires_grad_(True)
    with torch.no_grad():
        bi = head.assign(head.embed(x2)).bi
    labeled = head(x2, bi, eps=ref["eps"].double())["proxy"]
    labeled.backward()
    assert val(unlabeled) == pytest.approx(val(labeled), rel=1e-12)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-10, atol=1e-14)


def test_mixed_batch_weights_first_patches_by_labels(ref):
    head = released_head(ref, p2e_axis="tokens", use_sac=False, use_kl=False)
    mixed = head(ref["x"], ref["y_dist"][:1], eps=ref["eps"])   # patch 0 labeled, patch 1 unlabeled
    with torch.no_grad():
        bi = head.assign(head.embed(ref["x"])).bi
    both = head(ref["x"], torch.cat([ref["y_dist"][:1], bi[1:]]), eps=ref["eps"])
    assert val(mixed["proxy"]) == pytest.approx(val(both["proxy"]), rel=1e-6)


@pytest.mark.parametrize("term", ["p2e", "e2p", "kl", "sac"])
def test_one_step_lowers_each_term(ref, term):
    head = released_head(ref, p2e_axis="tokens")
    # Measured gradient norms here: p2e 0.09, e2p 0.18, sac 0.50, kl 23 (a sum over tokens): KL needs a small step.
    lr = 1e-3 if term == "kl" else 0.05
    opt = torch.optim.SGD([p for p in head.parameters() if p.requires_grad], lr=lr)
    before = head(ref["x"], ref["y_dist"], eps=ref["eps"])[term]
    opt.zero_grad()
    before.backward()
    opt.step()
    after = head(ref["x"], ref["y_dist"], eps=ref["eps"])[term]
    assert after.item() < before.item()


# -- configuration --------------------------------------------------------------------------------------
def test_weighted_total_and_ablations(ref):
    full = released_head(ref, p2e_axis="tokens")(ref["x"], ref["y_dist"], eps=ref["eps"])
    expected = 0.1 * (0.3 * full["proxy"] + 0.1 * full["sac"] + 0.02 * full["kl"])
    assert val(full["total"]) == pytest.approx(val(expected), rel=1e-6)
    cdba_only = released_head(ref, p2e_axis="tokens", use_sac=False, use_kl=False)(ref["x"], ref["y_dist"], eps=ref["eps"])
    assert set(cdba_only) == {"p2e", "e2p", "proxy", "total"}
    assert val(cdba_only["total"]) == pytest.approx(0.1 * 0.3 * val(full["proxy"]), rel=1e-6)


def test_config_errors_name_the_setting():
    with pytest.raises(ScdlError, match="p2e_axis"):
        SCDLConfig(p2e_axis="proxies")
    with pytest.raises(ScdlError, match="unknown SCDL settings"):
        SCDLConfig.from_dict({"lambda": 0.2})
    assert SCDLConfig.from_dict({"lam": 0.2}).lam == 0.2
    assert SCDLConfig().grid_for((96, 96, 96)) == (12, 12, 12)
    assert SCDLConfig(token_grid=(4, 4, 4)).grid_for((96, 96, 96)) == (4, 4, 4)


def test_losses_run_in_float32_under_autocast(ref):
    head = released_head(ref, p2e_axis="tokens")
    full = head(ref["x"], ref["y_dist"], eps=ref["eps"])
    with torch.autocast("cpu", dtype=torch.bfloat16):     # the MLP runs in bfloat16, the sums do not
        mixed = head(ref["x"], ref["y_dist"], eps=ref["eps"])
    for key in ("p2e", "e2p", "kl", "sac", "total"):
        assert mixed[key].dtype == torch.float32
        assert val(mixed[key]) == pytest.approx(val(full[key]), rel=2e-2)
