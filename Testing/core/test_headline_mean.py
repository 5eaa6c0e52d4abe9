"""One headline mean Dice everywhere: the mean over the organs the REFERENCE contains.

``scdl demo``'s console line, its ``dice.csv`` ``mean`` row, its ``--progress json`` ``mean_dice`` and
``scdl evaluate`` (table, CSV, JSON) on the same prediction all report the same number
(``scdl.metrics.scores.summary``); the mean that also counts organs only the prediction marked is reported
only as ``mean_dice_all_classes`` / ``dice_all_classes``.

The prediction is known by construction: the bundled sample's own labels (patient B, 8 organs) with the liver
cut to 10 of its 20 slices, the spleen relabelled as stomach, and a block of left kidney (an organ B's labels
do not have: a false positive).
"""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.cli.demo import NIFTI, SCORES, load_sample_info
from scdl.cli.main import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def demo_with_known_prediction(repo_root, tmp_path, monkeypatch):
    from model_factory import make_tiny_package

    import scdl.inference.predictor as predictor
    from scdl.models.package import ModelPackage, save_package

    resources = tmp_path / "Resources"
    resources.mkdir()
    for name in ("Labels", "Sample"):
        shutil.copytree(repo_root / "Resources" / name, resources / name)
    shutil.copy(repo_root / "Resources" / "Catalog.json", resources / "Catalog.json")
    pkg = ModelPackage.load(make_tiny_package(tmp_path / "tiny", spacing=(12.0, 12.0, 12.0)))
    card = json.loads(json.dumps(pkg.card))
    card["id"] = "scdl-abdominal-ct"
    save_package(resources / "Models" / "scdl-abdominal-ct", card, pkg.state_dicts(), pkg.labels)
    monkeypatch.setenv("SCDL_RESOURCES", str(resources))

    sample = load_sample_info(resources / "Sample")
    truth = sitk.ReadImage(str(sample["labels_path"]))
    gt = sitk.GetArrayFromImage(truth)
    pred = gt.copy()
    pred[:10][pred[:10] == 6] = 0              # liver (6) only in slices 10..19
    pred[pred == 1] = 7                        # spleen (1) predicted as stomach (7)
    pred[0:4, 0:20, 0:20] = 3                  # left kidney (3): not in B's labels, a false positive
    assert not (gt == 3).any()
    image = sitk.GetImageFromArray(pred)
    image.CopyInformation(truth)

    def fake_segment(ct, package, **kwargs):
        return predictor.SegmentationResult(labels=image, table=package.labels, timings={"infer": 0.0})

    monkeypatch.setattr(predictor, "segment_image", fake_segment)
    liver_all, liver_kept = int((gt == 6).sum()), int((gt[10:] == 6).sum())
    spleen, stomach = int((gt == 1).sum()), int((gt == 7).sum())
    organs = [2 * liver_kept / (liver_kept + liver_all), 2 * stomach / (2 * stomach + spleen), 0.0,   # spleen missed
              1.0, 1.0, 1.0, 1.0, 1.0]                              # aorta, IVC, veins, pancreas, right adrenal
    return sample, float(np.mean(organs)), float(np.mean(organs + [0.0]))


def test_demo_and_evaluate_report_one_headline_mean(demo_with_known_prediction, tmp_path, capsys):
    sample, headline, all_classes = demo_with_known_prediction
    assert headline != pytest.approx(all_classes)             # the two means differ here: which one is which matters

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--progress", "none"]) == 0
    printed = capsys.readouterr().out
    assert f"mean over these organs     {headline:.3f}   (8 organs)" in printed
    assert printed.count("mean over") == 1 and f"{all_classes:.3f}" not in printed
    with (out / SCORES).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["name"] == "mean" and float(rows[-1]["dice"]) == pytest.approx(headline, abs=1e-6)
    assert [r["name"] for r in rows].count("mean") == 1

    assert main(["demo", "--out", str(tmp_path / "json"), "--progress", "json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    done = events[-1]
    dice = next(e for e in events if e.get("event") == "dice")
    assert done["mean_dice"] == pytest.approx(headline) and dice["mean"]["dice"] == pytest.approx(headline)
    assert done["mean_dice_all_classes"] == pytest.approx(all_classes)
    assert dice["mean"]["dice_all_classes"] == pytest.approx(all_classes)
    assert dice["mean"]["classes_in_reference"] == 8 and dice["mean"]["classes_scored"] == 9

    report, table = tmp_path / "scores.json", tmp_path / "scores.csv"
    assert main(["evaluate", str(out / NIFTI), str(sample["labels_path"]), "--labels", "synapse",
                 "--json", str(report), "--csv", str(table)]) == 0
    printed = capsys.readouterr().out
    mean_line = next(line for line in printed.splitlines() if line.split()[:1] == ["mean"])
    assert float(mean_line.split()[1]) == pytest.approx(headline, abs=1e-4)
    assert "over the 8 class(es) the ground truth contains" in mean_line
    assert f"mean Dice over all 9 classes in either map, false positives counting 0: {all_classes:.4f}" in printed
    mean = json.loads(report.read_text(encoding="utf-8"))["mean"]
    assert mean["dice"] == pytest.approx(headline) and mean["dice_all_classes"] == pytest.approx(all_classes)
    with table.open(newline="") as handle:
        assert float(list(csv.DictReader(handle))[-1]["dice"]) == pytest.approx(headline, abs=1e-6)
