"""Test-time batch-norm statistics (``scdl.inference.adapt``, ``inference.bn_adapt``, ``scdl segment --bn-adapt``).

The statistics a batch-norm layer stores are replaced by ``(1 - w) * stored + w * the CT's own``, taken on the
windows of the prediction in batches of ``ADAPT_BATCH``; the networks given are never modified.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from scdl.errors import ScdlError
from scdl.inference.adapt import ADAPT_BATCH, adapt_batch_norm, batch_norm_layers
from scdl.inference.config import InferenceSettings
from scdl.models.card import validate_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(norm: str = "batch") -> nn.Module:
    """1x1x1 convolution with known weights (2, 3 per channel, no bias) -> norm -> dropout -> 1x1x1 convolution."""
    conv = nn.Conv3d(1, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, 3.0]).view(2, 1, 1, 1, 1))
    norm_layer = nn.BatchNorm3d(2) if norm == "batch" else nn.InstanceNorm3d(2)
    net = nn.Sequential(conv, norm_layer, nn.Dropout3d(0.5), nn.Conv3d(2, 3, 1))
    if norm == "batch":
        with torch.no_grad():
            norm_layer.running_mean.copy_(torch.tensor([0.5, -0.5]))
            norm_layer.running_var.copy_(torch.tensor([4.0, 0.25]))
    return net.eval()


def _volume(shape=(8, 8, 8), seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(1.5, 0.7, size=shape).astype(np.float32))


def test_weight_one_gives_the_volumes_statistics_and_leaves_the_input_networks_alone():
    """One window (the volume is the window): the batch is that window ADAPT_BATCH times, so the mean is the
    channel's mean over the window and the variance the unbiased one over ADAPT_BATCH copies of it."""
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    vol = _volume()
    (adapted,) = adapt_batch_norm([net], vol, (8, 8, 8), 1.0)
    bn = adapted[1]
    x = vol.double()
    n = ADAPT_BATCH * x.numel()
    for c, w in enumerate((2.0, 3.0)):
        assert float(bn.running_mean[c]) == pytest.approx(w * float(x.mean()), rel=1e-5)
        assert float(bn.running_var[c]) == pytest.approx(w * w * float(x.var(unbiased=False)) * n / (n - 1), rel=1e-4)
    for key, value in net.state_dict().items():           # the caller's network is untouched
        assert torch.equal(value, before[key]), key
    assert not any(m.training for m in adapted.modules())  # eval mode again, dropout included
    assert bn.momentum == net[1].momentum


def test_weight_mixes_stored_and_measured_statistics():
    net = _net()
    vol = _volume(seed=1)
    (full,) = adapt_batch_norm([net], vol, (8, 8, 8), 1.0)
    (half,) = adapt_batch_norm([net], vol, (8, 8, 8), 0.5)
    (none,) = adapt_batch_norm([net], vol, (8, 8, 8), 0.0)
    stored = net[1]
    assert torch.allclose(half[1].running_mean, 0.5 * stored.running_mean + 0.5 * full[1].running_mean)
    assert torch.allclose(half[1].running_var, 0.5 * stored.running_var + 0.5 * full[1].running_var)
    assert torch.equal(none[1].running_mean, stored.running_mean)
    assert torch.equal(none[1].running_var, stored.running_var)


def test_adapted_statistics_undo_an_intensity_shift():
    """A CT brighter and of more contrast than the training data (x -> 3 x + 2): with the stored statistics the
    normalised features are far from zero mean and unit variance; adapted on that CT they are back to it."""
    net = _net()
    train_like = _volume((16, 16, 16), seed=2)
    (fitted,) = adapt_batch_norm([net], train_like, (8, 8, 8), 1.0, overlap=0.0)   # "training" statistics
    shifted = 3.0 * _volume((16, 16, 16), seed=3) + 2.0
    (adapted,) = adapt_batch_norm([fitted], shifted, (8, 8, 8), 1.0, overlap=0.0)

    def normalised(model):
        with torch.no_grad():
            return model[1](model[0](shifted[None, None]))[0]

    stale, fresh = normalised(fitted), normalised(adapted)
    assert float(stale.mean()) > 2.0 and float(stale.std()) > 2.5
    assert abs(float(fresh.mean())) < 0.05 and abs(float(fresh.std()) - 1.0) < 0.05


def test_windows_of_the_prediction_are_the_sample():
    """Batches: the prediction's windows (padding included) in batches of ADAPT_BATCH, the last one filled up;
    ``on_batch`` sees every batch of every network."""
    from scdl.inference.sliding_window import window_starts

    seen = []
    vol = _volume((5, 20, 12))          # padded to 8 along z, like predict_volume
    adapt_batch_norm([_net(), _net()], vol, (8, 8, 8), 1.0, overlap=0.5, on_batch=lambda d, t: seen.append((d, t)))
    n_windows = len(window_starts((8, 20, 12), (8, 8, 8), 0.5))
    batches = -(-n_windows // ADAPT_BATCH)
    assert seen == [(i + 1, 2 * batches) for i in range(2 * batches)]


def test_windows_of_air_and_padding_are_left_out():
    """A tiling of a volume whose body fills the first 8 of 16 slices: the windows of air (share 0) are left out,
    a window half in the body (share 0.5 of the fullest's 1.0) is kept at min_body 0.5, dropped at 0.6."""
    from scdl.inference.adapt import body_windows

    vol = torch.zeros((16, 8, 8))
    vol[:8] = 0.5
    assert body_windows(vol, (4, 8, 8), 0.0, 0.5) == [(0, 0, 0), (4, 0, 0)]
    assert body_windows(vol, (8, 8, 8), 0.5, 0.5) == [(0, 0, 0), (4, 0, 0)]
    assert body_windows(vol, (8, 8, 8), 0.5, 0.6) == [(0, 0, 0)]
    assert len(body_windows(vol, (4, 8, 8), 0.0, 0.0)) == 4
    assert len(body_windows(torch.zeros((8, 8, 8)), (4, 8, 8), 0.0)) == 2       # no body at all: every window


def test_networks_without_batch_norm_and_bad_weights():
    net = _net("instance")
    assert batch_norm_layers(net) == []
    (same,) = adapt_batch_norm([net], _volume(), (8, 8, 8), 1.0)
    for (k, a), b in zip(net.state_dict().items(), same.state_dict().values()):
        assert torch.equal(a, b), k
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            adapt_batch_norm([_net()], _volume(), (8, 8, 8), bad)


def test_setting_in_the_card_the_settings_and_the_command(tiny_model):
    import argparse

    from scdl.cli import segment
    from scdl.release.scoring import inference_flags

    assert InferenceSettings().bn_adapt == 0.0
    assert InferenceSettings.from_card({"inference": {"bn_adapt": 1}}).bn_adapt == 1.0
    assert InferenceSettings.from_card({"inference": {"bn_adapt": 1.0}}, bn_adapt=0.25).bn_adapt == 0.25
    for bad in (2.0, -1, True, "half"):
        with pytest.raises(ScdlError, match="bn_adapt"):
            InferenceSettings.from_card({"inference": {"bn_adapt": bad}})
    card = json.loads((tiny_model / "card.json").read_text(encoding="utf-8"))
    validate_card(dict(card, inference={**card["inference"], "bn_adapt": 0.5}))
    card["inference"]["bn_adapt"] = 1.5
    with pytest.raises(ScdlError, match="bn_adapt"):
        validate_card(card)
    parser = argparse.ArgumentParser()
    segment.register(parser.add_subparsers())
    assert parser.parse_args(["segment", "ct.nii.gz", "-o", "x.nii.gz", "--bn-adapt", "0.5"]).bn_adapt == 0.5
    assert parser.parse_args(["segment", "ct.nii.gz", "-o", "x.nii.gz"]).bn_adapt is None
    assert inference_flags({"largest_component_organs": [], "bn_adapt": 1}) == [
        "--largest-component-organs", "none", "--bn-adapt", "1.0"]


def test_segment_image_adapts_copies_and_reports_the_phase(tiny_model, patient_b_ct):
    """On real CT (patient B, a crop): with bn_adapt the labels change, the networks passed in keep their
    statistics, and the progress shows an ``adapt`` phase; without it there is none."""
    import SimpleITK as sitk

    from scdl.inference.predictor import load_package, segment_image
    from scdl.io.image import read_ct
    from scdl.progress import Progress

    class Phases(Progress):
        def __init__(self):
            super().__init__("none")
            self.names = []

        def phase(self, name, total=1):
            self.names.append(name)
            return super().phase(name, total)

    ct = read_ct(patient_b_ct)[96:416, 96:416, :]
    pkg = load_package(tiny_model)
    nets = [n.eval() for n in pkg.build_networks(device="cpu")]
    stored = [m.running_mean.clone() for m in batch_norm_layers(nets[0])]
    plain, adapted = Phases(), Phases()
    a = segment_image(ct, pkg, device="cpu", networks=nets, confidence=False, progress=plain)
    b = segment_image(ct, pkg, device="cpu", networks=nets, confidence=False, progress=adapted, bn_adapt=1.0)
    assert "adapt" not in plain.names
    assert adapted.names.index("adapt") < adapted.names.index("infer")
    assert all(torch.equal(m.running_mean, s) for m, s in zip(batch_norm_layers(nets[0]), stored))
    la, lb = sitk.GetArrayFromImage(a.labels), sitk.GetArrayFromImage(b.labels)
    assert la.shape == lb.shape and not np.array_equal(la, lb)


def test_segment_command_refuses_a_weight_outside_zero_one(tmp_path, capsys):
    from scdl.cli.main import main

    rc = main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "x.nii.gz"), "--bn-adapt", "1.5"])
    err = capsys.readouterr().err
    assert rc != 0 and "--bn-adapt must be between 0 and 1" in err and err.count("\n") <= 2


def test_validation_adapts_each_case_and_a_fine_tune_inherits_the_cards_weight():
    """``validation.bn_adapt``: a network whose stored statistics are far off (mean 5 for inputs in [0, 1]) finds
    nothing of a bright cube as trained and the whole cube with the case's own statistics; the networks keep
    their statistics. A fine-tune validates with its init model's card value unless the user sets one."""
    from scdl.training.config import resolve_config
    from scdl.training.validation import validate

    class _Net(nn.Module):          # class 1 where the normalised input is above 0
        def __init__(self):
            super().__init__()
            self.bn = nn.BatchNorm3d(1)
            with torch.no_grad():
                self.bn.running_mean.fill_(5.0)

        def forward(self, x):
            h = self.bn(x)
            return torch.cat([-h, h], dim=1)

    class _Cached:
        def __init__(self, image, label):
            self.image, self.label = image, label

    image = np.zeros((16, 16, 16), np.float32)
    image[2:14, 2:14, 2:14] = 0.05        # soft tissue around a bright organ: the windows' mean is 0.07
    image[5:11, 5:11, 5:11] = 1.0
    label = (image == 1.0).astype(np.int64)
    net = _Net().eval()
    plain = validate([net], [_Cached(image, label)], (8, 8, 8), 2, torch.device("cpu"), amp=False)
    adapted = validate([net], [_Cached(image, label)], (8, 8, 8), 2, torch.device("cpu"), amp=False, bn_adapt=1.0)
    assert plain["dice"][0] == 0.0 and adapted["dice"][0] == pytest.approx(1.0)
    assert float(net.bn.running_mean) == 5.0 and not net.training
    card = {"id": "parent", "inference": {"bn_adapt": 0.5}}
    assert resolve_config("cpu")["validation"]["bn_adapt"] == 0.0
    assert resolve_config("cpu", init=card)["validation"]["bn_adapt"] == 0.5
    assert resolve_config("cpu", init=card, overrides=["validation.bn_adapt=0"])["validation"]["bn_adapt"] == 0
    with pytest.raises(ScdlError, match="validation.bn_adapt"):
        resolve_config("cpu", overrides=["validation.bn_adapt=2"])
