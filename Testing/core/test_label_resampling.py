"""``label_resampling``: the argmax taken on the CT grid after resampling the logits linearly (issue 27, item 3).

The networks answer on the model grid (3 mm for the default model); a finer CT gets its labels either by
nearest neighbour from the model grid's argmax ("nearest", the staircase of 3 mm blocks) or by resampling each
class's logits linearly onto the CT grid and taking the argmax there ("logits").
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.inference.config import InferenceSettings, LabelResampling
from scdl.models.card import validate_card
from scdl.processing.pipeline import Preprocessor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CFG = {"mode": "spacing", "spacing_mm": [3.0, 3.0, 3.0], "orientation": "LPS", "patch_size": [16, 16, 16],
       "window": [-125.0, 275.0], "scale": [0.0, 1.0]}


def _ct(size=(60, 60, 60), spacing=(1.0, 1.0, 1.0)):
    img = sitk.Image(list(size), sitk.sitkFloat32)
    img.SetSpacing(spacing)
    img.SetOrigin((-30.0, -30.0, -30.0))
    return img


def _sphere_logits(pre: Preprocessor, ctx, radius_mm: float) -> np.ndarray:
    """Two-class logits on the (padded) model grid: class 1 = inside a sphere of ``radius_mm`` at the origin,
    its logit the signed distance to the surface (a smooth field whose linear interpolation is nearly exact)."""
    grid = ctx.padded_grid
    d, h, w = ctx.shape
    idx = np.stack(np.meshgrid(np.arange(w), np.arange(h), np.arange(d), indexing="ij"), -1).reshape(-1, 3)
    pts = np.array([grid.index_to_physical(list(map(int, i))) for i in idx]).reshape(w, h, d, 3).transpose(2, 1, 0, 3)
    dist = radius_mm - np.linalg.norm(pts, axis=-1)
    return np.stack([np.zeros_like(dist), dist]).astype(np.float32)


def _truth(img, radius_mm: float) -> np.ndarray:
    size = img.GetSize()
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in size[::-1]], indexing="ij")
    pts = [img.GetOrigin()[k] + img.GetSpacing()[k] * (xx, yy, zz)[k] for k in range(3)]
    return (np.sqrt(pts[0] ** 2 + pts[1] ** 2 + pts[2] ** 2) < radius_mm).astype(np.uint8)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_logits_follow_a_sphere_closer_than_the_nearest_labels():
    """On a 1 mm CT and a 3 mm model grid, the argmax of the linearly resampled logits traces a 12 mm sphere
    better than the nearest-neighbour 3 mm blocks: measured here 0.99 vs 0.93 Dice against the true sphere."""
    ct = _ct()
    pre = Preprocessor(CFG)
    _, ctx = pre.forward(ct)
    assert ctx.resampled
    logits = _sphere_logits(pre, ctx, 12.0)
    truth = _truth(ct, 12.0)
    via_logits = sitk.GetArrayFromImage(pre.inverse_argmax(logits, ctx))
    nearest = sitk.GetArrayFromImage(pre.inverse_labels(np.argmax(logits, axis=0), ctx))
    assert via_logits.shape == truth.shape == nearest.shape
    d_logits, d_nearest = _dice(via_logits == 1, truth == 1), _dice(nearest == 1, truth == 1)
    assert d_logits > 0.97, d_logits
    assert d_logits > d_nearest + 0.03, (d_logits, d_nearest)


def test_logits_equal_nearest_when_the_model_grid_is_the_ct_grid():
    """No resampling (a 3 mm CT): both ways give the same labels, with the same pixel type."""
    ct = _ct(size=(20, 20, 20), spacing=(3.0, 3.0, 3.0))
    pre = Preprocessor(CFG)
    _, ctx = pre.forward(ct)
    assert not ctx.resampled
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5,) + tuple(ctx.shape)).astype(np.float32)
    a = pre.inverse_argmax(logits, ctx)
    b = pre.inverse_labels(np.argmax(logits, axis=0), ctx)
    assert a.GetPixelID() == b.GetPixelID()
    assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert a.GetSpacing() == ct.GetSpacing() and a.GetOrigin() == ct.GetOrigin()


def test_output_keeps_the_ct_grid_and_the_smallest_pixel_type():
    ct = _ct(size=(31, 29, 17), spacing=(0.8, 0.9, 2.5))
    pre = Preprocessor(CFG)
    _, ctx = pre.forward(ct)
    logits = np.random.default_rng(1).normal(size=(14,) + tuple(ctx.shape)).astype(np.float32)
    out = pre.inverse_argmax(logits, ctx)
    assert out.GetSize() == ct.GetSize() and out.GetSpacing() == ct.GetSpacing()
    assert out.GetPixelID() == sitk.sitkUInt8
    assert 0 <= sitk.GetArrayViewFromImage(out).max() <= 13
    with pytest.raises(ValueError, match="C, D, H, W"):
        pre.inverse_argmax(logits[0], ctx)


def test_setting_is_validated_in_the_settings_and_the_card(tiny_model):
    import json

    assert InferenceSettings().label_resampling == LabelResampling.NEAREST
    assert InferenceSettings.from_card({"inference": {"label_resampling": "logits"}}).label_resampling == "logits"
    assert InferenceSettings.from_card({"inference": {}}, label_resampling="logits").label_resampling == "logits"
    with pytest.raises(ScdlError, match="label_resampling"):
        InferenceSettings.from_card({"inference": {"label_resampling": "cubic"}})
    card = json.loads((tiny_model / "card.json").read_text(encoding="utf-8"))
    validate_card(dict(card, inference={**card["inference"], "label_resampling": "logits"}))
    card["inference"]["label_resampling"] = "cubic"
    with pytest.raises(ScdlError, match="label_resampling"):
        validate_card(card)


def test_segment_cli_offers_the_choice():
    import argparse

    from scdl.cli import segment

    parser = argparse.ArgumentParser()
    segment.register(parser.add_subparsers())
    args = parser.parse_args(["segment", "ct.nii.gz", "-o", "x.nii.gz", "--label-resampling", "logits"])
    assert args.label_resampling == "logits"
    assert parser.parse_args(["segment", "ct.nii.gz", "-o", "x.nii.gz"]).label_resampling is None
    with pytest.raises(SystemExit):
        parser.parse_args(["segment", "ct.nii.gz", "-o", "x.nii.gz", "--label-resampling", "cubic"])


def test_segment_image_with_logits_on_patient_b(tiny_model, patient_b_ct):
    from scdl.io.image import read_ct

    """End to end on real CT (patient B, 0.98 x 0.98 x 2 mm): the CT's grid, and the two ways agree on most
    voxels (they differ only near borders)."""
    from scdl.inference.predictor import segment_image

    ct = read_ct(patient_b_ct)[96:416, 96:416, :]       # the body's middle: half the work, still real CT
    a = segment_image(ct, tiny_model, device="cpu", label_resampling="nearest", confidence=False)
    b = segment_image(ct, tiny_model, device="cpu", label_resampling="logits", confidence=False)
    assert b.labels.GetSize() == ct.GetSize() and b.labels.GetSpacing() == ct.GetSpacing()
    la, lb = sitk.GetArrayFromImage(a.labels), sitk.GetArrayFromImage(b.labels)
    assert 0.5 < float((la == lb).mean()) < 1.0


def test_card_post_processing_can_be_switched_off_per_call(tiny_model):
    """``largest_component_organs=()`` (what ``segment_image`` passes on) overrides a card that names organs
    (bench/postprocess.py compares against no post-processing whatever the card says)."""
    import json

    card = json.loads((tiny_model / "card.json").read_text(encoding="utf-8"))
    card["inference"]["largest_component_organs"] = ["liver"]
    assert InferenceSettings.from_card(card).largest_component_organs == ("liver",)
    assert InferenceSettings.from_card(card, largest_component_organs=()).largest_component_organs == ()


def test_largest_component_organs_flag_and_the_release_flags():
    """``scdl segment --largest-component-organs`` (names, or 'none'), and the release scoring that applies a
    recipe's card post-processing to a run's model, so held-out numbers and the demo are the shipped package's."""
    import argparse

    from scdl.cli import segment
    from scdl.release.scoring import inference_flags

    parser = argparse.ArgumentParser()
    segment.register(parser.add_subparsers())
    args = parser.parse_args(["segment", "ct.nii.gz", "-o", "x.nii.gz", "--largest-component-organs",
                              "liver, right kidney"])
    assert segment.organ_list(args.largest_component_organs) == ("liver", "right kidney")
    assert segment.organ_list("none") == () and segment.organ_list("") == () and segment.organ_list(None) is None
    assert inference_flags(None) == []
    assert inference_flags({"largest_component_organs": ["liver", "aorta"], "label_resampling": "nearest"}) == [
        "--largest-component-organs", "liver,aorta", "--label-resampling", "nearest"]
    assert inference_flags({"keep_largest_component": True}) == ["--largest-component-organs", "none",
                                                                  "--keep-largest"]
