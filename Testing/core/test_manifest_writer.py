"""One manifest writer (issue 14): ``scdl.training.cohort.write_manifest`` beside ``load_manifest``; the phantom
cohort, the crop cohort and the benchmarks write their manifests through it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scdl.training.cohort import MANIFEST_COLUMNS, MANIFEST_NAME, load_manifest, manifest_text, write_manifest

REPO = Path(__file__).resolve().parents[2]
NOT_YET = {REPO / "bench" / n for n in ("step.py", "inference.py", "train.py")}


def test_round_trip(tmp_path: Path) -> None:
    rows = [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz", "split": "train", "labels": "synapse",
             "annotated": ["liver", "spleen"], "name": "case a"},
            {"image": "images/b.nii.gz", "label": None, "split": "val"},
            {"image": "", "label": "labels/c.nii.gz", "split": "train", "labels": "totalsegmentator_v2"}]
    path = write_manifest(tmp_path / MANIFEST_NAME, rows)
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "image,label,split,labels,annotated,name"
    assert text.splitlines()[1] == "images/a.nii.gz,labels/a.nii.gz,train,synapse,liver; spleen,case a"
    assert text.splitlines()[2] == "images/b.nii.gz,,val,,,"
    cohort = load_manifest(path)
    a, b, c = cohort.cases
    assert a.image == tmp_path / "images/a.nii.gz" and a.annotated == ["liver", "spleen"] and a.labels == "synapse"
    assert b.label is None and b.split == "val" and c.image is None and c.label == tmp_path / "labels/c.nii.gz"
    assert a.extra.get("name") == "case a"


def test_columns(tmp_path: Path) -> None:
    assert MANIFEST_COLUMNS == ("image", "label", "split", "labels", "annotated")
    assert manifest_text([{"image": "x.nrrd"}]) == "image,label,split,labels\nx.nrrd,,,\n"
    assert manifest_text([{"image": "x.nrrd", "reference": "r"}], ("image", "label", "split", "labels", "reference")) \
        == "image,label,split,labels,reference\nx.nrrd,,,,r\n"
    with pytest.raises(ValueError, match="row 2: neither an image nor a label"):
        manifest_text([{"split": "train"}])
    with pytest.raises(ValueError, match="split 'dev'"):
        manifest_text([{"image": "x", "split": "dev"}])
    with pytest.raises(ValueError, match=r"columns \['extra'\]"):
        manifest_text([{"image": "x", "extra": 1}], ("image",))


def test_phantom_manifest_text_is_unchanged() -> None:
    from scdl.phantom.cohort import Split, manifest_text as phantom_text

    text = phantom_text(Split(cases=3, labeled=1, val=1, test=0))
    lines = text.splitlines()
    assert lines[0] == "image,label,split,labels,reference" and len(lines) == 4
    assert all(re.fullmatch(r"images/\S+\.nii\.gz,(labels/\S+\.nii\.gz)?,(train|val|test),synapse,labels/\S+", line)
               for line in lines[1:]), lines


def test_no_other_manifest_writer() -> None:
    owner = REPO / "scdl" / "training" / "cohort.py"
    pattern = re.compile(r"fieldnames=\[\"image\"|writerow\(MANIFEST_COLUMNS\)|writerow\(\[\"image\"")
    files = [p for p in [*(REPO / "scdl").rglob("*.py"), *(REPO / "bench").glob("*.py")]
             if p != owner and p not in NOT_YET]
    assert [str(p.relative_to(REPO)) for p in files if pattern.search(p.read_text(encoding="utf-8"))] == []
