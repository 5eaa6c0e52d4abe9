"""``scdl evaluate --preview`` (issue 15): the overlay with the ground truth as contours, written like every other
output (temporary sibling, read back, renamed), its folder probed before the scores are computed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.cli.main import main
from scdl.io.verify import verify_file
from test_faults import _fill, _one_error_line, _tmpfs


def _write(arr: np.ndarray, like: sitk.Image, path: Path) -> Path:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(like)
    sitk.WriteImage(img, str(path), True)
    return path


@pytest.fixture()
def synapse_pair(patient_a_seg: Path, tmp_path: Path):
    """A Synapse-numbered prediction (patient A's labels, the liver moved by 3 voxels, the spleen left out)
    and the TotalSegmentator ground truth."""
    from scdl.labels.mapping import map_label_array
    from scdl.labels.table import LabelTable

    gt_img = sitk.ReadImage(str(patient_a_seg))
    pred, _ = map_label_array(sitk.GetArrayFromImage(gt_img), LabelTable.load("totalsegmentator_v2"),
                              LabelTable.load("synapse"))
    pred = np.asarray(pred, np.uint8)
    liver = 6                                        # Synapse: 1 spleen, 6 liver
    moved = np.where(pred == liver, 0, pred)
    moved[:, :, 3:][pred[:, :, :-3] == liver] = liver
    moved[pred == 1] = 0                             # spleen (Synapse 1): missed
    return _write(moved, gt_img, tmp_path / "pred.nii.gz"), patient_a_seg


def _capture_overlay(monkeypatch) -> dict:
    import scdl.viz.overlay as overlay

    seen: dict = {}
    original = overlay.render_overlay

    def spy(ct, labels, path, legend=None, **kwargs):
        seen.update(ct=sitk.GetArrayFromImage(ct), labels=sitk.GetArrayFromImage(labels), legend=legend,
                    reference=sitk.GetArrayFromImage(kwargs["reference"]), title=kwargs.get("title"))
        return original(ct, labels, path, legend, **kwargs)

    monkeypatch.setattr(overlay, "render_overlay", spy)
    return seen


def test_preview_draws_the_ground_truth_as_contours(synapse_pair, patient_a_ct: Path, tmp_path: Path, capsys,
                                                    monkeypatch) -> None:
    pred, truth = synapse_pair
    seen = _capture_overlay(monkeypatch)
    target = tmp_path / "compare.png"
    target.write_bytes(b"old picture")
    code = main(["evaluate", str(pred), str(truth), "--labels", "synapse", "--gt-labels", "totalsegmentator_v2",
                 "--preview", str(target), "--ct", str(patient_a_ct)])
    out, err = capsys.readouterr()
    assert code == 0, err
    verify_file(target)                                   # a complete PNG replaced the old bytes
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    # the reference is the ground truth in the prediction's (Synapse) numbering: the spleen is there, as contour
    assert 1 in np.unique(seen["reference"]) and 1 not in np.unique(seen["labels"])
    assert seen["reference"].shape == seen["labels"].shape == seen["ct"].shape
    assert seen["ct"].max() > 200                        # drawn on the CT, not on black
    assert "lines" in seen["title"]
    from matplotlib.image import imread

    picture = imread(target)
    assert picture.shape[0] > 200 and picture.shape[1] > 800


def test_preview_without_a_ct_is_drawn_on_black(synapse_pair, tmp_path: Path, capsys, monkeypatch) -> None:
    pred, truth = synapse_pair
    seen = _capture_overlay(monkeypatch)
    target = tmp_path / "out" / "compare.png"
    assert main(["evaluate", str(pred), str(truth), "--preview", str(target)]) == 0, capsys.readouterr().err
    verify_file(target)
    assert seen["ct"].max() == -1000.0 and seen["legend"] is None      # no table: values shown as "label N"


@pytest.mark.parametrize("argv, words", [
    (["--ct", "ct.nii.gz"], "--ct is the background of --preview"),
    (["--preview", "compare.jpg"], "cannot write the preview in this format"),
    (["--preview", "compare.png", "--ct", "missing_ct.nii.gz"], "the CT for the preview does not exist"),
])
def test_preview_arguments_fail_before_the_scores(argv, words, synapse_pair, tmp_path: Path, capsys,
                                                  monkeypatch) -> None:
    import scdl.metrics.evaluate as evaluate

    monkeypatch.setattr(evaluate, "evaluate_files", lambda *a, **k: pytest.fail("scored before the check"))
    monkeypatch.chdir(tmp_path)
    pred, truth = synapse_pair
    assert main(["evaluate", str(pred), str(truth), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


def test_preview_ct_on_another_grid_needs_resample(synapse_pair, patient_a_ct: Path, tmp_path: Path,
                                                   capsys) -> None:
    pred, truth = synapse_pair
    ct = sitk.ReadImage(str(patient_a_ct))
    other = tmp_path / "ct_cropped.nii.gz"
    sitk.WriteImage(sitk.RegionOfInterest(ct, [100, 90, 100], [5, 5, 5]), str(other))
    target = tmp_path / "compare.png"
    assert main(["evaluate", str(pred), str(truth), "--preview", str(target), "--ct", str(other)]) == 2
    line = _one_error_line(capsys.readouterr().err, other)
    assert "--resample" in line and not target.exists()
    assert main(["evaluate", str(pred), str(truth), "--preview", str(target), "--ct", str(other),
                 "--resample"]) == 0
    verify_file(target)


def test_preview_into_a_read_only_folder_fails_before_the_scores(synapse_pair, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    import scdl.metrics.evaluate as evaluate

    monkeypatch.setattr(evaluate, "evaluate_files", lambda *a, **k: pytest.fail("scored before the check"))
    pred, truth = synapse_pair
    with _tmpfs(tmp_path, 64, read_only=True) as folder:
        target = folder / "compare.png"
        assert main(["evaluate", str(pred), str(truth), "--preview", str(target)]) == 2
        assert "cannot write here" in _one_error_line(capsys.readouterr().err, target)


def test_preview_on_a_full_disk_replaces_nothing(synapse_pair, tmp_path: Path, capsys) -> None:
    pred, truth = synapse_pair
    with _tmpfs(tmp_path, 256) as disk:
        target = disk / "compare.png"
        target.write_bytes(b"the previous picture")
        _fill(disk, 8 * 1024)                    # room for the probe, not for the picture
        code = main(["evaluate", str(pred), str(truth), "--preview", str(target)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert "disk" in _one_error_line(err, target)
        assert target.read_bytes() == b"the previous picture"
        assert not [p for p in disk.iterdir() if ".partial-" in p.name]
