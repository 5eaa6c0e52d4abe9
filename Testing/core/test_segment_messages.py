"""``scdl segment``'s warning when no organ was found names the real cause.

A thin DICOM slab (3 slices of 1 mm) is far shorter than the model's window: the warning says so, with the
scan's extent and the window's (from the card), instead of asking whether the scan covers the abdomen. A scan
that covers a whole window on every axis gets the abdomen sentence. The segmentation itself is replaced by an
empty label map (the message is what is tested, not whether random weights find an organ).
"""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from dicom_series import write_ct_series
from scdl.cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def finds_nothing(monkeypatch):
    """``segment_image`` returns an empty label map on the input grid."""
    import scdl.inference.predictor as predictor

    def empty(image, package, **kwargs):
        labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
        labels.CopyInformation(image)
        return predictor.SegmentationResult(labels=labels, table=package.labels, timings={"infer": 0.0})

    monkeypatch.setattr(predictor, "segment_image", empty)


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: no organ")]


def test_thin_dicom_slab_is_named_as_the_cause(repo_root, tiny_model, tmp_path, capsys, finds_nothing):
    ct = sitk.ReadImage(str(repo_root / "Resources" / "Sample" / "sample_ct.nii.gz"))[100:420, 100:400, 8:11]
    ct.SetSpacing(ct.GetSpacing()[:2] + (1.0,))                  # 3 slices of 1 mm: a 3 mm slab
    write_ct_series(ct, tmp_path / "slab")
    assert main(["segment", str(tmp_path / "slab"), "-o", str(tmp_path / "out.nii.gz"), "--model", str(tiny_model),
                 "--progress", "none"]) == 0
    (line,) = _warnings(capsys)
    # 320 x 300 voxels of 0.977 mm in-plane: wider than the 192 mm window; 3 mm head-foot against 32 x 6 mm
    assert "field of view 312 x 293 x 3 mm" in line
    assert "The scan is thinner than the context the model needs: head-foot 3 mm, where the model's window " \
           "covers 192 mm (32 voxels of 6 mm, from the model card)" in line
    assert "left-right" not in line and "front-back" not in line
    assert "covers the abdomen" not in line


def test_a_scan_covering_the_window_gets_the_abdomen_sentence(tiny_model, tmp_path, capsys, finds_nothing):
    image = sitk.Image(50, 50, 50, sitk.sitkInt16) - 1000          # 200 mm cube of air at 4 mm
    image.SetSpacing((4.0, 4.0, 4.0))
    image[10:40, 10:40, 10:40] = 40
    sitk.WriteImage(image, str(tmp_path / "cube.nii.gz"))
    assert main(["segment", str(tmp_path / "cube.nii.gz"), "-o", str(tmp_path / "out.nii.gz"),
                 "--model", str(tiny_model), "--progress", "none"]) == 0
    (line,) = _warnings(capsys)
    assert "field of view 200 x 200 x 200 mm" in line and "check that the scan covers the abdomen" in line
    assert "thinner" not in line


def test_context_shortfall_in_the_models_axes():
    """An axial-first scan and the same scan stored sagittal-first: the short axis is head-foot both times."""
    from scdl.inference.runner import context_shortfall

    card = {"preprocessing": {"mode": "spacing", "spacing_mm": [3, 3, 3], "orientation": "LPS",
                              "patch_size": [64, 64, 32]}}
    axial = sitk.Image(200, 200, 4, sitk.sitkInt16)
    axial.SetSpacing((1.0, 1.0, 2.0))
    assert context_shortfall(axial, card) == [("head-foot", 8.0, 96.0, 32, 3.0)]
    sagittal = sitk.Image(4, 200, 200, sitk.sitkInt16)         # first array axis along head-foot
    sagittal.SetSpacing((2.0, 1.0, 1.0))
    sagittal.SetDirection((0, 0, 1, 0, 1, 0, 1, 0, 0))
    assert context_shortfall(sagittal, card) == [("head-foot", 8.0, 96.0, 32, 3.0)]
    fixed = {"preprocessing": {"mode": "fixed_size", "size": [160, 160, 80], "patch_size": [96, 96, 96]}}
    assert context_shortfall(axial, fixed) == []
