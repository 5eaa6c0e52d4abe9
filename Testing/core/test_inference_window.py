"""Sliding-window prediction: equality with MONAI, border coverage, small volumes, determinism, ensembles,
uncertainty values, cancellation, the streaming memory bound, and the device choice."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from scdl.errors import Cancelled, ScdlError
from scdl.inference.device import resolve_device
from scdl.inference.sliding_window import WindowConfig, predict_volume, window_starts
from scdl.inference.uncertainty import member_uncertainty, organ_confidence


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Identity2(nn.Module):
    """Logits (x, -x): the blended channel 0 must reproduce the input exactly wherever windows land."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.batch_sizes: list[int] = []

    def forward(self, x):
        self.calls += 1
        self.batch_sizes.append(int(x.shape[0]))
        return torch.cat([x, -x], dim=1)


class ConstantLogits(nn.Module):
    def __init__(self, values):
        super().__init__()
        self.values = torch.tensor(values, dtype=torch.float32)

    def forward(self, x):
        b, _, d, h, w = x.shape
        return self.values.view(1, -1, 1, 1, 1).expand(b, -1, d, h, w).clone()


def _conv_net(seed: int, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.Tanh(), nn.Conv3d(6, classes, 3, padding=1)).eval()


def test_matches_monai_sliding_window_inference():
    from monai.inferers import sliding_window_inference

    nets = [_conv_net(1), _conv_net(2)]
    vol = torch.randn(70, 50, 45, generator=torch.Generator().manual_seed(0))
    cfg = WindowConfig(roi_size=(32, 32, 32), overlap=0.5, sw_batch_size=3)  # batches straddle z-rows
    out = predict_volume(vol, nets, cfg, keep_logits=True)
    with torch.no_grad():
        ref = sliding_window_inference(vol[None, None], (32, 32, 32), 3, lambda x: (nets[0](x) + nets[1](x)) / 2,
                                       overlap=0.5, mode="gaussian", sigma_scale=0.125)[0]
    assert out.n_windows == 4 * 3 * 2  # z starts 0, 16, 32, 38; y 0, 16, 18; x 0, 13
    assert torch.allclose(out.logits, ref, atol=1e-5, rtol=0)
    assert torch.equal(out.labels.long(), ref.argmax(0))


def test_window_starts_cover_the_borders():
    starts = window_starts((70, 50, 45), (32, 32, 32), 0.5)
    zs = sorted({s[0] for s in starts})
    assert zs == [0, 16, 32, 38]  # interval int(32 * 0.5) = 16, the last window pushed back to end at 70
    assert sorted({s[1] for s in starts}) == [0, 16, 18]
    assert sorted({s[2] for s in starts}) == [0, 13]
    covered = np.zeros((70, 50, 45), bool)
    for z, y, x in starts:
        covered[z:z + 32, y:y + 32, x:x + 32] = True
    assert covered.all()


@pytest.mark.parametrize("shape", [(70, 50, 45), (33, 64, 31), (100, 40, 60)])
def test_blending_reproduces_an_identity_network_everywhere(shape):
    vol = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    net = Identity2()
    out = predict_volume(vol, [net], WindowConfig(roi_size=(32, 32, 32), overlap=0.5, sw_batch_size=2),
                         keep_logits=True, max_prob=True)
    assert out.logits.shape == (2,) + shape
    assert torch.allclose(out.logits[0], vol, atol=1e-5)
    assert torch.equal(out.labels, (vol < 0).to(torch.uint8))
    expected_max = torch.sigmoid(2 * vol.abs())  # softmax of (x, -x)
    assert torch.allclose(out.max_prob, expected_max, atol=1e-5)


def test_volume_smaller_than_a_window_is_padded_and_cropped():
    vol = torch.randn(20, 33, 17, generator=torch.Generator().manual_seed(4))
    net = Identity2()
    out = predict_volume(vol, [net], WindowConfig(roi_size=(32, 32, 32), overlap=0.25, pad_value=0.0),
                         keep_logits=True)
    assert out.labels.shape == (20, 33, 17)
    assert out.extras["padding"] == [(6, 6), (0, 0), (7, 8)]
    assert out.n_windows == 2  # y: 33 > 32 needs two windows; z and x fit in one after padding
    assert torch.allclose(out.logits[0], vol, atol=1e-5)


def test_a_volume_that_fits_one_window_takes_one_forward():
    net = Identity2()
    out = predict_volume(torch.zeros(32, 32, 32), [net], WindowConfig(roi_size=(32, 32, 32), sw_batch_size=4))
    assert out.n_windows == 1 and net.calls == 1


def test_several_windows_per_forward():
    net = Identity2()
    out = predict_volume(torch.zeros(70, 50, 45), [net], WindowConfig(roi_size=(32, 32, 32), sw_batch_size=5))
    assert net.batch_sizes == [5, 5, 5, 5, 4] and out.n_windows == 24


def test_deterministic_with_a_real_vnet():
    from scdl.networks.vnet import VNet

    torch.manual_seed(0)
    net = VNet(1, 3, n_filters=2).eval()
    vol = torch.rand(40, 36, 34, generator=torch.Generator().manual_seed(5))
    cfg = WindowConfig(roi_size=(32, 32, 32), overlap=0.5)
    a = predict_volume(vol, [net], cfg, keep_logits=True, uncertainty=True)
    b = predict_volume(vol, [net], cfg, keep_logits=True, uncertainty=True)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.uncertainty, b.uncertainty)


def test_ensemble_equals_the_mean_of_its_members():
    nets = [_conv_net(7), _conv_net(8)]
    vol = torch.randn(50, 40, 36, generator=torch.Generator().manual_seed(6))
    cfg = WindowConfig(roi_size=(32, 32, 32), overlap=0.5)
    both = predict_volume(vol, nets, cfg, keep_logits=True)
    first = predict_volume(vol, nets[:1], cfg, keep_logits=True)
    second = predict_volume(vol, nets[1:], cfg, keep_logits=True)
    mean = (first.logits + second.logits) / 2
    assert torch.allclose(both.logits, mean, atol=1e-5)
    assert torch.equal(both.labels.long(), mean.argmax(0))
    assert not torch.equal(first.labels, second.labels)  # the members really differ


def test_uncertainty_hand_values():
    # one network, logits (ln 3, 0): p = (0.75, 0.25); entropy / ln 2 = 0.811278
    single = predict_volume(torch.zeros(32, 32, 32), [ConstantLogits([math.log(3.0), 0.0])],
                            WindowConfig(roi_size=(32, 32, 32)), uncertainty=True, max_prob=True)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25)) / math.log(2)
    assert torch.allclose(single.uncertainty, torch.full((32, 32, 32), h), atol=1e-6)
    assert torch.allclose(single.max_prob, torch.full((32, 32, 32), 0.75), atol=1e-6)
    # two identical members agree: disagreement 0; two opposite confident members: close to 1
    agree = member_uncertainty([torch.tensor([[2.0, 0.0]]).view(1, 2, 1, 1, 1)] * 2)
    assert float(agree.max()) == pytest.approx(0.0, abs=1e-7)
    apart = member_uncertainty([torch.tensor([20.0, 0.0]).view(1, 2, 1, 1, 1),
                                torch.tensor([0.0, 20.0]).view(1, 2, 1, 1, 1)])
    assert float(apart) == pytest.approx(1.0, abs=1e-6)
    # generalised Jensen-Shannon of p=(0.75, 0.25) and q=(0.25, 0.75): H(0.5, 0.5) - H(0.75, 0.25), / ln 2
    js = member_uncertainty([torch.tensor([math.log(3.0), 0.0]).view(1, 2, 1, 1, 1),
                             torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1, 1)])
    assert float(js) == pytest.approx(1.0 - h, abs=1e-6)


def test_cancel_between_window_batches():
    net = Identity2()
    seen = []

    def on_batch(done, total):
        seen.append(done)
        if done >= 2:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        predict_volume(torch.zeros(70, 50, 45), [net], WindowConfig(roi_size=(32, 32, 32)), on_batch=on_batch)
    assert seen == [0, 1, 2] and net.calls == 2


def test_streaming_keeps_only_a_slab_of_planes():
    vol = torch.zeros(200, 40, 40)
    out = predict_volume(vol, [Identity2()], WindowConfig(roi_size=(32, 32, 32), overlap=0.5))
    # window depth 32 + one scan interval (16): never the whole 200-plane volume
    assert out.extras["max_slab_depth"] <= 48
    assert out.labels.shape == (200, 40, 40)


def test_organ_confidence_hand_values():
    labels = np.array([0, 1, 1, 2, 2, 2], dtype=np.uint8)
    prob = np.array([0.9, 0.5, 0.7, 1.0, 0.4, 0.7], dtype=np.float32)
    conf = organ_confidence(labels, prob, {1: "liver", 2: "spleen", 3: "aorta"})
    assert conf == {"liver": pytest.approx(0.6), "spleen": pytest.approx(0.7), "aorta": None}


def test_device_choice(monkeypatch):
    import scdl.inference.device as device_mod

    assert resolve_device("cpu").type == "cpu"
    warnings = []
    monkeypatch.setattr(device_mod, "_cuda_available", lambda: False)
    assert resolve_device("cuda:1", warn=warnings.append).type == "cpu"
    assert "no CUDA GPU" in warnings[0]
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ScdlError, match="unknown device"):
        resolve_device("gpu")


def test_cuda_out_of_memory_falls_back_to_the_cpu():
    from scdl.inference.device import with_cpu_fallback

    tried, warnings = [], []

    def work(dev):
        tried.append(dev.type)
        if dev.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return "done on " + dev.type

    assert with_cpu_fallback(work, torch.device("cuda", 0), warnings.append) == "done on cpu"
    assert tried == ["cuda", "cpu"] and "ran out of memory" in warnings[0] and "--device cpu" in warnings[0]

    def broken(dev):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        with_cpu_fallback(broken, torch.device("cuda", 0), warnings.append)
    assert len(warnings) == 1


@pytest.mark.parametrize("image, roi, overlap", [((70, 50, 45), (32, 32, 32), 0.5), ((96, 97, 200), (96, 96, 96), 0.25),
                                                 ((40, 33, 16), (16, 32, 16), 0.9), ((33, 64, 50), (32, 48, 16), 0.0)])
def test_window_grid_and_weights_equal_monai(image, roi, overlap):
    from monai.data.utils import compute_importance_map, dense_patch_slices

    from scdl.inference.sliding_window import importance_map, scan_interval

    ref = [tuple(s.start for s in w) for w in dense_patch_slices(image, roi, scan_interval(image, roi, overlap))]
    assert window_starts(image, roi, overlap) == ref
    for mode in ("gaussian", "constant"):
        expected = compute_importance_map(roi, mode=mode, sigma_scale=0.125, device="cpu", dtype=torch.float32)
        assert torch.equal(importance_map(roi, mode, 0.125, torch.device("cpu")), expected)


def test_default_windows_per_forward_by_device_and_window_size():
    from scdl.errors import ScdlError
    from scdl.inference.config import InferenceSettings

    settings = InferenceSettings.from_card({"inference": {"overlap": 0.5}})
    assert settings.window_config((32, 64, 64), "cpu").sw_batch_size == 4      # the default model's window
    assert settings.window_config((64, 64, 64), "cpu").sw_batch_size == 4
    assert settings.window_config((96, 96, 96), "cpu").sw_batch_size == 2      # 1 per forward is a slow path
    assert settings.window_config((96, 96, 96), "cuda").sw_batch_size == 4
    assert InferenceSettings.from_card({}, sw_batch_size=1).window_config((96, 96, 96), "cpu").sw_batch_size == 1
    with pytest.raises(ScdlError, match="sw_batch_size"):
        InferenceSettings.from_card({}, sw_batch_size=-1)
