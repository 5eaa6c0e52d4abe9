"""Cohort manifests and the pre-training check: every bad cohort reported at once, each with its file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import SimpleITK as sitk

from scdl.cli.main import main
from scdl.errors import ScdlError
from scdl.labels.table import LabelTable
from scdl.training.checks import check_cohort
from scdl.training.cohort import load_folders, load_manifest
from scdl.training.sample_cohort import make_crop_cohort


@pytest.fixture(scope="module")
def crops(tmp_path_factory, patient_a_ct, patient_a_seg) -> Path:
    """Five crops of patient A (2 labeled, 2 unlabeled, 1 validation; TotalSegmentator label ids)."""
    out = tmp_path_factory.mktemp("crops")
    make_crop_cohort(patient_a_ct, patient_a_seg, out)
    return out


@pytest.fixture(scope="module")
def synapse() -> LabelTable:
    return LabelTable.load("synapse")


def _write_manifest(folder: Path, rows: list[dict], name: str = "cohort.csv") -> Path:
    lines = ["image,label,split,labels"] + [
        f"{r['image']},{r.get('label', '')},{r.get('split', 'train')},{r.get('labels', '')}" for r in rows]
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_manifest_paths_relative_and_splits(crops: Path, tmp_path: Path) -> None:
    sub = tmp_path / "elsewhere"
    sub.mkdir()
    rows = [{"image": str(crops / "images/lab_a.nii.gz"), "label": str(crops / "labels/lab_a.nii.gz")},
            {"image": "../x/unl.nii.gz"},
            {"image": "v.nii.gz", "label": "v_seg.nii.gz", "split": "VAL", "labels": "totalsegmentator_v2"},
            {"image": "t.nii.gz", "split": "test"},
            {"image": "b.nii.gz", "split": "holdout"},
            {"image": "", "label": "anatomy.nii.gz"},        # a label map without image: an anatomy case
            {"image": ""}]
    cohort = load_manifest(_write_manifest(sub, rows))
    assert [c.split for c in cohort.cases] == ["train", "train", "val", "test", "train"]
    assert cohort.cases[4].anatomy and cohort.cases[4].image is None and cohort.cases[4].name == "anatomy"
    assert cohort.cases[1].image == sub / "../x/unl.nii.gz" and not cohort.cases[1].labeled
    assert cohort.cases[2].label == sub / "v_seg.nii.gz" and cohort.cases[2].labels == "totalsegmentator_v2"
    assert cohort.summary() == {"labeled": 2, "anatomy": 1, "unlabeled": 1, "val": 1, "test": 1}
    codes = {(p.code, p.case) for p in cohort.problems}
    assert codes == {("bad_split", "cohort.csv:6"), ("no_image", "cohort.csv:8")}

    js = sub / "cohort.json"
    js.write_text(json.dumps({"cases": [{"image": "a.nii.gz", "label": "a_seg.nii.gz", "split": "val"}]}))
    jcohort = load_manifest(js)
    assert jcohort.val[0].label == sub / "a_seg.nii.gz"
    with pytest.raises(ScdlError, match="no 'image' column"):
        bad = sub / "bad.csv"
        bad.write_text("ct,seg\na,b\n")
        load_manifest(bad)


def test_folders(crops: Path, tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    (lab / "images").mkdir(parents=True)
    (lab / "labels").mkdir()
    shutil.copy(crops / "images/lab_a.nii.gz", lab / "images/case1_0000.nii.gz")   # nnU-Net channel suffix
    shutil.copy(crops / "labels/lab_a.nii.gz", lab / "labels/case1.nii.gz")
    shutil.copy(crops / "images/lab_b.nii.gz", lab / "images/case2.nii.gz")         # no label map
    cohort = load_folders(labeled=lab, unlabeled=crops / "images", labels="totalsegmentator_v2")
    assert [c.name for c in cohort.labeled_train] == ["case1_0000"]
    assert cohort.labeled_train[0].labels == "totalsegmentator_v2"
    assert len(cohort.unlabeled_train) == 5
    assert [(p.code, Path(p.path).name) for p in cohort.problems] == [("missing_label", "case2.nii.gz")]


def test_good_cohort_maps_totalsegmentator_to_synapse(crops: Path, synapse: LabelTable) -> None:
    cohort = load_manifest(crops / "cohort.csv")
    report, prepared = check_cohort(cohort, synapse, framework="cps-scdl")
    assert report.ok and prepared == {}
    # patient A holds every Synapse organ but the oesophagus (data README): the check says so
    assert [p.code for p in report.problems] == ["class_without_labels"]
    assert "esophagus" in report.problems[0].message
    lab_a = next(c for c in report.cases if c["name"] == "lab_a")
    liver, spleen = synapse.by_name("liver").value, synapse.by_name("spleen").value
    assert liver in lab_a["present"] and spleen in lab_a["present"]


def test_every_bad_cohort_reported_at_once(crops: Path, synapse: LabelTable, tmp_path: Path,
                                           patient_b_ct: Path, patient_b_seg: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    # unreadable: a truncated NIfTI
    data = (crops / "images/lab_a.nii.gz").read_bytes()
    (bad / "truncated.nii.gz").write_bytes(data[: len(data) // 3])
    # empty label map on the CT's grid
    ct = sitk.ReadImage(str(crops / "images/lab_b.nii.gz"))
    empty = sitk.Image(ct.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ct)
    sitk.WriteImage(empty, str(bad / "empty.nii.gz"))
    rows = [
        {"image": str(bad / "truncated.nii.gz"), "label": str(crops / "labels/lab_a.nii.gz"),
         "labels": "totalsegmentator_v2"},                                                            # 2 unreadable
        {"image": str(patient_b_ct), "label": str(patient_b_seg), "labels": "totalsegmentator_v2"},  # 3 geometry
        {"image": str(crops / "images/lab_a.nii.gz"), "label": str(crops / "labels/lab_a.nii.gz")},     # 4 TS ids, no table
        {"image": str(crops / "images/lab_b.nii.gz"), "label": str(bad / "empty.nii.gz")},              # 5 empty
        {"image": str(crops / "images/lab_b.nii.gz")},                                                  # 6 same CT unlabeled
        {"image": str(bad / "missing.nii.gz")},                                                         # 7 missing
    ]
    cohort = load_manifest(_write_manifest(bad, rows))
    report, _ = check_cohort(cohort, synapse, framework="cps", labeled_batch=2, unlabeled_batch=3)
    found = {(p.code, p.case): p for p in report.problems}
    assert found[("unreadable", "cohort.csv:2")].path.endswith("truncated.nii.gz")
    geometry = found[("geometry_mismatch", "cohort.csv:3")]
    assert geometry.path == str(patient_b_seg) and "resample" in geometry.fix
    unknown = found[("unknown_labels", "cohort.csv:4")]
    assert unknown.path.endswith("lab_a.nii.gz") and "label table synapse: 18, 19," in unknown.message
    assert "labels" in unknown.fix
    assert found[("empty_label", "cohort.csv:5")].path.endswith("empty.nii.gz")
    assert found[("labeled_and_unlabeled", "cohort.csv:5")].path.endswith("lab_b.nii.gz")
    assert found[("labeled_and_unlabeled", "cohort.csv:6")].path.endswith("lab_b.nii.gz")
    assert found[("missing", "cohort.csv:7")].path.endswith("missing.nii.gz")
    # fewer unlabeled cases than patches per step: patches repeat cases (a warning, not an error)
    few = [p for p in report.problems if p.code == "few_cases"]
    assert len(few) == 1 and few[0].severity == "warning"
    assert "2 unlabeled" in few[0].message and "3 unlabeled patches" in few[0].message
    assert not [p for p in report.problems if p.code == "too_few_cases"]
    no_val = found[("no_validation", "")]
    assert no_val.severity == "warning" and "labeled training cases instead" in no_val.message
    assert report.validation_source == "train-labeled"
    assert len(report.errors) == 7
    with pytest.raises(ScdlError) as err:
        report.raise_if_errors(cohort.source)
    text = str(err.value)
    assert "7 problems" in text and text.count("\n  error:") == 7 and "truncated.nii.gz" in text


def test_resample_labels_turns_mismatch_into_warning(patient_b_ct: Path, patient_b_seg: Path,
                                                     synapse: LabelTable, tmp_path: Path) -> None:
    cohort = load_manifest(_write_manifest(tmp_path, [
        {"image": str(patient_b_ct), "label": str(patient_b_seg), "labels": "totalsegmentator_v2"}]))
    report, _ = check_cohort(cohort, synapse, framework="supervised", labeled_batch=1, resample_labels=True)
    assert report.ok, [p.line() for p in report.errors]
    assert "resampled_label" in {p.code for p in report.warnings}
    case = report.cases[0]
    assert {synapse.by_name(n).value for n in ("liver", "spleen", "aorta")} <= set(case["present"])


def test_check_only_cli_json(crops: Path, tmp_path: Path, capsys) -> None:
    manifest = _write_manifest(tmp_path, [
        {"image": str(crops / "images/lab_a.nii.gz"), "label": str(crops / "labels/lab_a.nii.gz")},
        {"image": str(tmp_path / "nope.nii.gz")}])
    code = main(["train", "--cohort", str(manifest), "--out", str(tmp_path / "run"), "--check-only",
                 "--progress", "json", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert code == 2
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    problems = [e for e in lines if e.get("event") == "problem"]
    codes = {(p["code"], p["case"]) for p in problems}
    assert ("unknown_labels", "cohort.csv:2") in codes and ("missing", "cohort.csv:3") in codes
    assert all({"severity", "code", "message", "path", "case", "fix"} <= set(p) for p in problems)
    assert ("few_cases", "") in codes            # 1 labeled case for 2 patches per step: a warning now
    assert lines[-1]["phase"] == "done" and lines[-1]["ok"] is False and lines[-1]["errors"] == 2
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
