"""The sliding window's size (``inference.window_size``, ``scdl segment --window-size``, ``validation.window_size``).

A window wider than the training patch gives each voxel more of the body around it (the networks are fully
convolutional); the test-time batch-norm statistics stay on windows of the training patch, the size whose
statistics the networks stored. Measured on the default model's validation: docs/inference.md "Window size".
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from scdl.errors import ScdlError
from scdl.inference.config import CPU_LARGE_WINDOW_BATCH, InferenceSettings
from scdl.models.card import validate_card

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_setting_in_the_card_the_settings_the_command_and_the_release_flags(tiny_model):
    import argparse

    from scdl.cli import segment
    from scdl.models.cardtext import card_text
    from scdl.release.scoring import inference_flags

    assert InferenceSettings().window_size is None
    assert InferenceSettings().prediction_window((32, 64, 64)) == (32, 64, 64)       # None: the training patch
    card = {"inference": {"window_size": [96, 80, 32]}}
    settings = InferenceSettings.from_card(card)
    assert settings.window_size == (96, 80, 32)
    assert settings.prediction_window((32, 64, 64)) == (32, 80, 96)                 # (x, y, z) -> (D, H, W)
    assert InferenceSettings.from_card(card, window_size=(64, 64, 32)).window_size == (64, 64, 32)
    for bad in ([90, 96, 32], [96, 96], [96, 96, 0], [96.0, 96, 32], [True, 96, 32], "96"):
        with pytest.raises(ScdlError, match="window_size"):
            InferenceSettings.from_card({"inference": {"window_size": bad}})
    package_card = json.loads((tiny_model / "card.json").read_text(encoding="utf-8"))
    validate_card(dict(package_card, inference={**package_card["inference"], "window_size": [64, 64, 32]}))
    validate_card(dict(package_card, inference={**package_card["inference"], "window_size": None}))
    with pytest.raises(ScdlError, match="window_size"):
        validate_card(dict(package_card, inference={**package_card["inference"], "window_size": [60, 64, 32]}))
    text = card_text(dict(package_card, inference={**package_card["inference"], "window_size": [96, 96, 32]}))
    assert "sliding window 96 x 96 x 32 voxels" in text
    parser = argparse.ArgumentParser()
    segment.register(parser.add_subparsers())
    assert parser.parse_args(["segment", "ct.nii.gz", "-o", "x.nii.gz", "--window-size", "96", "96", "32"]
                             ).window_size == [96, 96, 32]
    assert parser.parse_args(["segment", "ct.nii.gz", "-o", "x.nii.gz"]).window_size is None
    assert inference_flags({"largest_component_organs": [], "window_size": [96, 96, 32]}) == [
        "--largest-component-organs", "none", "--window-size", "96", "96", "32"]


def test_cpu_runs_large_windows_two_per_forward():
    """One window per forward is a slow path of the CPU convolutions (measured: 323 vs 132 ms for one or two
    96x96x32 windows of the default model): windows above 64³ voxels go two at a time on the CPU."""
    settings = InferenceSettings()
    assert settings.window_config((32, 64, 64), "cpu").sw_batch_size == 4
    assert settings.window_config((32, 96, 96), "cpu").sw_batch_size == CPU_LARGE_WINDOW_BATCH == 2
    assert settings.window_config((32, 96, 96), "cuda").sw_batch_size == 4
    assert InferenceSettings(sw_batch_size=1).window_config((32, 96, 96), "cpu").sw_batch_size == 1


def test_segment_image_predicts_on_the_window_and_adapts_on_the_patch(tiny_model, patient_b_ct, monkeypatch):
    """Patient B (a crop) with the tiny model (32³ patch, 6 mm): a 64 x 64 x 32 window is what the sliding window
    runs, the test-time statistics are taken on 32³ windows, the labels change and stay on the CT's grid."""
    import SimpleITK as sitk

    import scdl.inference.adapt as adapt
    import scdl.inference.sliding_window as sliding
    from scdl.inference.predictor import load_package, segment_image
    from scdl.io.image import read_ct

    seen: dict[str, list] = {"predict": [], "adapt": []}
    real_predict, real_adapt = sliding.predict_volume, adapt.adapt_batch_norm

    def predict(volume, nets, config, *args, **kwargs):
        seen["predict"].append(tuple(config.roi_size))
        return real_predict(volume, nets, config, *args, **kwargs)

    def adapt_spy(nets, volume, roi, *args, **kwargs):
        seen["adapt"].append(tuple(roi))
        return real_adapt(nets, volume, roi, *args, **kwargs)

    monkeypatch.setattr(sliding, "predict_volume", predict)
    monkeypatch.setattr(adapt, "adapt_batch_norm", adapt_spy)
    ct = read_ct(patient_b_ct)[96:416, 96:416, :]
    pkg = load_package(tiny_model)
    patch = segment_image(ct, pkg, device="cpu", confidence=False, bn_adapt=0.5)
    wide = segment_image(ct, pkg, device="cpu", confidence=False, bn_adapt=0.5, window_size=(64, 64, 32))
    assert seen["predict"] == [(32, 32, 32), (32, 64, 64)]
    assert seen["adapt"] == [(32, 32, 32), (32, 32, 32)]
    a, b = sitk.GetArrayFromImage(patch.labels), sitk.GetArrayFromImage(wide.labels)
    assert a.shape == b.shape == sitk.GetArrayFromImage(ct).shape and not np.array_equal(a, b)


def test_plan_counts_the_windows_of_the_window(patient_b_ct):
    """The machine check before a run counts the windows it will run: fewer for a wider window."""
    from scdl.io.image import read_ct
    from scdl.processing.budget import plan_size

    pre = {"mode": "spacing", "spacing_mm": [3.0, 3.0, 3.0], "orientation": "LPS", "interpolation": "linear",
           "patch_size": [64, 64, 32], "window": [-125.0, 275.0], "scale": [0.0, 1.0]}
    ct = read_ct(patient_b_ct)
    patch = plan_size(ct, pre, 0.5)
    wide = plan_size(ct, pre, 0.5, window=(32, 128, 128))
    assert patch.windows == 25 and wide.windows == 4   # 167 x 167 x 32 voxels: 5 x 5 x 1 against 2 x 2 x 1 and wide.bytes == patch.bytes


def test_segment_command_refuses_a_window_that_is_not_multiples_of_16(tmp_path, capsys):
    from scdl.cli.main import main

    rc = main(["segment", str(tmp_path / "ct.nii.gz"), "-o", str(tmp_path / "x.nii.gz"), "--window-size", "90", "96",
               "32"])
    err = capsys.readouterr().err
    assert rc != 0 and "--window-size must be three positive multiples of 16" in err and err.count("\n") <= 2


def test_validation_predicts_on_the_window_and_a_fine_tune_inherits_the_cards_window(monkeypatch):
    """``validation.window_size``: the trainer's validation runs the window the card will segment with, its
    test-time statistics on the patch; a fine-tune takes its init model's card value unless the user sets one."""
    import scdl.inference.adapt as adapt
    import scdl.training.validation as validation
    from scdl.training.config import resolve_config
    from scdl.training.settings import TrainConfig

    seen: dict[str, list] = {"predict": [], "adapt": []}
    real_predict, real_adapt = validation.predict_volume, adapt.adapt_batch_norm
    monkeypatch.setattr(validation, "predict_volume",
                        lambda volume, nets, config, *a, **k: seen["predict"].append(tuple(config.roi_size))
                        or real_predict(volume, nets, config, *a, **k))
    monkeypatch.setattr(adapt, "adapt_batch_norm",
                        lambda nets, volume, roi, *a, **k: seen["adapt"].append(tuple(roi))
                        or real_adapt(nets, volume, roi, *a, **k))

    class _Cached:
        def __init__(self, image, label):
            self.image, self.label = image, label

    net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2)).eval()
    image = np.random.default_rng(0).random((16, 32, 32)).astype(np.float32)
    case = _Cached(image, (image > 0.5).astype(np.int64))
    scores = validation.validate([net], [case], (16, 16, 16), 2, torch.device("cpu"), amp=False, bn_adapt=0.5,
                                 window_size=(16, 32, 32))
    assert seen == {"predict": [(16, 32, 32)], "adapt": [(16, 16, 16)]} and np.isfinite(scores["mean_dice"])
    card = {"id": "parent", "inference": {"window_size": [96, 96, 32]}}
    assert resolve_config("cpu")["validation"]["window_size"] is None
    inherited = resolve_config("cpu", init=card)
    assert inherited["validation"]["window_size"] == [96, 96, 32]
    assert TrainConfig.from_dict(inherited).validation.window_size == (96, 96, 32)
    mine = resolve_config("cpu", init=card, overrides=["validation.window_size=[64,64,32]"])
    assert mine["validation"]["window_size"] == [64, 64, 32]
    with pytest.raises(ScdlError, match="validation.window_size"):
        resolve_config("cpu", overrides=["validation.window_size=[50,50,50]"])


def test_a_trained_models_card_segments_with_the_window_its_checkpoints_were_chosen_with():
    from scdl.training.finetune import inherited_inference

    assert inherited_inference({"validation": {"window_size": None}}, ["liver"]) is None      # the defaults
    assert inherited_inference({"validation": {"window_size": [96, 96, 32]}}, ["liver"]) == {"window_size": [96, 96, 32]}
    init = {"init": {"inference": {"bn_adapt": 0.5, "window_size": [96, 96, 32],
                                   "largest_component_organs": ["liver", "spleen"]}}}
    assert inherited_inference({**init, "validation": {"window_size": [64, 64, 32]}}, ["liver"]) == {
        "bn_adapt": 0.5, "window_size": [64, 64, 32], "largest_component_organs": ["liver"]}
