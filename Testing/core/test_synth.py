"""CT synthesis from label maps (scdl.synth), label-map readers for the TotalSegmentator dataset, anatomy cases."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.labels.table import LabelTable
from scdl.synth.engine import SYNTH_DEFAULTS, draw_subject, synthesize, tissue_map
from scdl.synth.layout import OUTSIDE, make_layout
from scdl.synth.tissues import HU, Tissue, tissue_for_name, tissue_lut
from scdl.synth.volume import synthesize_image


def _toy_map() -> tuple[np.ndarray, tuple[float, float, float]]:
    """A 40x64x64 map at 2 mm: liver block (5), left kidney ball (3), aorta rod (52) in TotalSegmentator ids."""
    lab = np.zeros((40, 64, 64), np.uint8)
    lab[8:32, 10:40, 8:36] = 5
    z, y, x = np.indices(lab.shape)
    lab[((z - 20) ** 2 + (y - 40) ** 2 + (x - 48) ** 2) < 64] = 3
    lab[:, 16:26, 42:52] = 52
    return lab, (2.0, 2.0, 2.0)


def test_tissue_names_of_every_bundled_table():
    assert tissue_for_name("portal_vein_and_splenic_vein") == Tissue.PORTAL
    assert tissue_for_name("kidney_cyst_left") == Tissue.KIDNEY_CYST
    assert tissue_for_name("right kidney") == Tissue.KIDNEY
    assert tissue_for_name("gallbladder") == Tissue.GALLBLADDER
    assert tissue_for_name("urinary bladder") == Tissue.BLADDER
    assert tissue_for_name("spinal_cord") == Tissue.SPINAL_CORD
    assert tissue_for_name("vertebrae_L3") == Tissue.BONE
    assert tissue_for_name("something unknown") == Tissue.SOFT
    for name in ("synapse", "amos", "totalsegmentator_v2"):
        lut = tissue_lut(LabelTable.load(name))
        assert lut[0] == Tissue.BODY and all(0 <= t < len(Tissue) for t in lut)


def test_synthesis_is_deterministic_and_varies_with_the_seed():
    lab, spacing = _toy_map()
    layout = make_layout(lab, spacing)
    lut = tissue_lut(LabelTable.load("totalsegmentator_v2"))
    a, sa = synthesize(layout.structures, layout.depth, lut, spacing, np.random.default_rng(7))
    b, _ = synthesize(layout.structures, layout.depth, lut, spacing, np.random.default_rng(7))
    c, sc = synthesize(layout.structures, layout.depth, lut, spacing, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 5.0                       # another subject, not a copy
    assert a.dtype == np.float32 and a.shape == lab.shape


@pytest.mark.parametrize("phase", ["native", "arterial", "portal"])
def test_organ_hu_within_the_documented_ranges(phase):
    lab, spacing = _toy_map()
    layout = make_layout(lab, spacing)
    lut = tissue_lut(LabelTable.load("totalsegmentator_v2"))
    for seed in range(3):
        hu, subject = synthesize(layout.structures, layout.depth, lut, spacing, np.random.default_rng(seed),
                                 phase=phase)
        assert subject.phase == phase
        for value, tissue in ((5, Tissue.LIVER), (52, Tissue.ARTERY)):
            inner = (lab == value) & (layout.depth >= 4)          # away from partial-volume borders
            lo, hi = HU[tissue].mean_range(phase)
            pad = (hi - lo) * SYNTH_DEFAULTS["mean_jitter"] + 12.0     # jitter + noise/bias on the mean
            assert lo - pad <= float(hu[inner].mean()) <= hi + pad, (tissue, phase, hu[inner].mean())
    air = layout.structures == OUTSIDE
    assert float(np.median(hu[air])) < -900


def test_arterial_kidney_cortex_brighter_than_medulla():
    lab, spacing = _toy_map()
    layout = make_layout(lab, spacing)
    lut = tissue_lut(LabelTable.load("totalsegmentator_v2"))
    subject = draw_subject(np.random.default_rng(0), phase="arterial")
    tissue = tissue_map(layout.structures, layout.depth, lut, subject)
    assert (tissue == Tissue.KIDNEY_CORTEX).any() and (tissue == Tissue.KIDNEY_MEDULLA).any()
    assert subject.means[Tissue.KIDNEY_CORTEX] > subject.means[Tissue.KIDNEY_MEDULLA] + 30
    body = layout.structures == 0
    assert (tissue[body] == Tissue.FAT).any() and (tissue[body] == Tissue.MUSCLE).any()


def test_non_orthonormal_nifti_reads_with_nibabel(ts_dataset: Path):
    from scdl.io.image import read_label_map

    refused = ts_dataset / "s0001_refused_by_itk" / "aorta.nii.gz"
    with pytest.raises(RuntimeError, match="orthonormal"):
        sitk.ReadImage(str(refused))
    aorta = read_label_map(refused)
    liver = read_label_map(ts_dataset / "s0001_refused_by_itk" / "liver.nii.gz")   # ITK reads this one
    assert aorta.GetSize() == liver.GetSize()
    assert np.allclose(aorta.GetOrigin(), liver.GetOrigin(), atol=1e-3)
    assert np.allclose(aorta.GetDirection(), liver.GetDirection(), atol=1e-4)
    assert int(sitk.GetArrayViewFromImage(aorta).sum()) > 1000


def test_totalsegmentator_mask_folder_equals_the_merged_map(ts_dataset: Path):
    from scdl.io.image import read_label_map

    folder = read_label_map(ts_dataset / "s0006_masks")
    merged = read_label_map(ts_dataset / "s0006_seg.nii.gz")
    assert np.array_equal(sitk.GetArrayViewFromImage(folder), sitk.GetArrayViewFromImage(merged))
    assert np.allclose(folder.GetOrigin(), merged.GetOrigin()) and np.allclose(folder.GetDirection(),
                                                                                 merged.GetDirection())


def test_output_geometry_of_an_oblique_map(ts_dataset: Path):
    from scdl.io.image import read_label_map

    label = read_label_map(ts_dataset / "s0001_seg.nii.gz")
    assert not np.allclose(np.abs(label.GetDirection()), np.eye(3).ravel(), atol=1e-3)     # oblique
    ct, lab, _ = synthesize_image(label, "totalsegmentator_v2", seed=1, spacing=6.0)
    assert ct.GetDirection() == lab.GetDirection() and np.allclose(ct.GetDirection(), label.GetDirection())
    assert np.allclose(ct.GetSpacing(), 6.0)
    # the same physical extent (within one output voxel)
    ext = lambda im: np.asarray(im.GetSize()) * np.asarray(im.GetSpacing())  # noqa: E731
    assert np.all(np.abs(ext(ct) - ext(label)) <= 6.0)
    native, _, _ = synthesize_image(sitk.Cast(label[::4, ::4, ::4], sitk.sitkUInt8), "totalsegmentator_v2", seed=1)
    assert native.GetSize() == label[::4, ::4, ::4].GetSize()
    assert native.GetOrigin() == label[::4, ::4, ::4].GetOrigin()


def test_synth_cli(tmp_path: Path, ts_dataset: Path):
    out = tmp_path / "ct.nii.gz"
    cmd = [sys.executable, "-m", "scdl", "synth", str(ts_dataset / "s0006_seg.nii.gz"), "-o", str(out), "--seed",
           "3", "--phase", "portal", "--spacing", "4", "--label-out", str(tmp_path / "lab.nii.gz"),
           "--preview", str(tmp_path / "p.png")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["phase"] == "portal"
    ct = sitk.ReadImage(str(out))
    lab = sitk.ReadImage(str(tmp_path / "lab.nii.gz"))
    assert ct.GetSize() == lab.GetSize() and (tmp_path / "p.png").stat().st_size > 1000
    arr, labs = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(lab)
    liver = float(arr[labs == 5].mean())
    assert 70 < liver < 150                                  # portal-venous liver
    bad = subprocess.run([sys.executable, "-m", "scdl", "synth", str(tmp_path / "nope.nii.gz"), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "nope.nii.gz" in bad.stderr


def test_anatomy_only_cohort_trains_end_to_end(tmp_path: Path, ts_dataset: Path, ts_dir: Path):
    """Two label-only cases (one a mask folder) + unlabeled phantoms: a tiny CPS+SCDL run produces a model."""
    ph = tmp_path / "ph"
    subprocess.run([sys.executable, "-m", "scdl", "phantom", "--out", str(ph), "--cases", "2", "--labeled", "0",
                    "--val", "0", "--seed", "0", "--spacing", "6", "--progress", "none"], check=True,
                   capture_output=True, timeout=300)
    manifest = tmp_path / "m.csv"
    rows = [{"image": "", "label": str(ts_dataset / "s0006_masks"), "split": "train", "labels": "totalsegmentator_v2"},
            {"image": "", "label": str(ts_dataset / "s0001_seg.nii.gz"), "split": "train",
             "labels": "totalsegmentator_v2"},
            {"image": str(ph / "images" / "case_000.nii.gz"), "label": "", "split": "train", "labels": ""},
            {"image": str(ph / "images" / "case_001.nii.gz"), "label": "", "split": "train", "labels": ""}]
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "scdl", "train", "--cohort", str(manifest), "--out", str(run), "--preset", "cpu",
           "--iterations", "3", "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--progress", "json",
           "--set", "validation.every=-1", "--set", "preprocessing.spacing_mm=[8,8,8]",
           "--set", "patch_size=[32,32,32]", "--set", "threads=1"]       # two threads spin-wait on a busy CPU
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((run / "cohort_report.json").read_text(encoding="utf-8")) if (run / "cohort_report.json").exists() else None
    assert (run / "model" / "card.json").exists()
    if report is not None:
        assert report["summary"]["anatomy"] == 2
    # the cached anatomy entries hold a layout; a sampled patch differs each time (fresh synthesis)
    from scdl.training.cache import CachedCase
    from scdl.training.sampling import sample_patch

    entries = [CachedCase(p.parent) for p in (tmp_path / "cache").rglob("structures.npy")]
    assert len(entries) == 2 and all(e.anatomy for e in entries)
    case = entries[0]
    p1 = sample_patch(case, (32, 32, 32), np.random.default_rng(1), 1.0)
    p2 = sample_patch(case, (32, 32, 32), np.random.default_rng(1), 1.0)
    p3 = sample_patch(case, (32, 32, 32), np.random.default_rng(2), 1.0)
    assert np.array_equal(p1[0], p2[0]) and np.array_equal(p1[1], p2[1])
    assert not np.array_equal(p1[0], p3[0])
    assert p1[0].shape == (32, 32, 32) and 0.0 <= p1[0].min() and p1[0].max() <= 1.0


def test_anatomy_rows_in_manifests_and_folders(tmp_path: Path, ts_dataset: Path):
    from scdl.training.cohort import load_folders, load_manifest

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,label,split,labels\n,{ts_dataset / 's0001_seg.nii.gz'},train,totalsegmentator_v2\n")
    cohort = load_manifest(manifest)
    assert not cohort.problems and cohort.cases[0].anatomy and cohort.cases[0].labeled
    assert cohort.summary()["anatomy"] == 1
    folder = tmp_path / "anat"
    folder.mkdir()
    (folder / "a.nii.gz").symlink_to(ts_dataset / "s0001_seg.nii.gz")
    (folder / "s0006").symlink_to(ts_dataset / "s0006_masks", target_is_directory=True)
    cohort = load_folders(anatomy=folder)
    assert [c.name for c in cohort.cases] == ["a", "s0006"] and all(c.anatomy for c in cohort.cases)
    assert load_folders(anatomy=ts_dataset / "s0006_masks").cases[0].label == ts_dataset / "s0006_masks"
