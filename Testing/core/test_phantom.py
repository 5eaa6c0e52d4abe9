"""Phantom cohort generator: determinism, anatomy, intensities, geometry and the `scdl phantom` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from scdl.cli.main import main
from scdl.errors import Cancelled, ScdlError
from scdl.phantom import anatomy
from scdl.phantom.cohort import default_split, write_cohort
from scdl.phantom.config import PhantomConfig
from scdl.phantom.generator import generate_case
from scdl.phantom.hu_table import MEASURED_A, MEASURED_B
from scdl.progress import Progress

LIVER, SPLEEN, R_KIDNEY, L_KIDNEY, STOMACH, AORTA, IVC = 6, 1, 2, 3, 7, 8, 9
SMALL = {"spacing": (5.0, 5.0, 5.0)}          # 64 x 64 x 40 voxels: fast


@pytest.fixture(scope="module")
def default_cases():
    """Four subjects at the default 2.5 mm grid (128 x 128 x 80)."""
    config = PhantomConfig()
    return [generate_case(config, 0, i) for i in range(4)]


def test_same_seed_gives_identical_arrays_and_other_seed_differs():
    config = PhantomConfig.from_dict(SMALL)
    a, b = generate_case(config, 11, 2), generate_case(config, 11, 2)
    assert a.image.tobytes() == b.image.tobytes()
    assert a.label.tobytes() == b.label.tobytes()
    c = generate_case(config, 12, 2)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.label, c.label)
    d = generate_case(config, 11, 3)                    # another subject of the same cohort
    assert (a.label != d.label).mean() > 0.01


def test_all_thirteen_organs_and_size_ratio_at_least_100(default_cases):
    for case in default_cases:
        counts = np.bincount(case.label.ravel(), minlength=14)
        present = set(np.flatnonzero(counts[1:]) + 1)
        assert present == set(range(1, 14)), f"missing organs: {set(range(1, 14)) - present}"
        organ_counts = counts[1:]
        assert organ_counts.argmax() + 1 == LIVER
        assert organ_counts.max() / organ_counts.min() >= 100
        # the smallest organ is an adrenal gland (12/13), as in real CT
        assert organ_counts.argmin() + 1 in (12, 13, 5)


def test_shape_variability_between_subjects(default_cases):
    liver_volumes = [int((c.label == LIVER).sum()) for c in default_cases]
    assert np.std(liver_volumes) / np.mean(liver_volumes) > 0.03
    centroids = [ndimage.center_of_mass(c.label == R_KIDNEY) for c in default_cases]
    assert np.ptp(np.array(centroids), axis=0).max() > 2.0       # kidneys move by > 2 voxels (5 mm)


def _interior_mean_std(case, code: int) -> tuple[float, float, int]:
    """Mean/std of the image over voxels of ``code`` whose 26-neighbourhood is the same code (blur-free)."""
    mask = ndimage.binary_erosion(case.codes == code, structure=np.ones((3, 3, 3), bool))
    values = case.image[mask].astype(np.float64)
    return float(values.mean()), float(values.std()), int(mask.sum())


@pytest.mark.parametrize("weight, table", [(0.0, MEASURED_A), (1.0, MEASURED_B)])
def test_organ_hu_match_the_measured_table(weight, table):
    """Without bias and per-subject offsets, organ interiors have the measured mean and std."""
    config = PhantomConfig.from_dict({"contrast_range": (weight, weight), "hu_offset_sd": 0.0, "bias_sd": 0.0})
    case = generate_case(config, 3, 0)
    checked = 0
    for code, name in anatomy.SYNAPSE_ORGANS.items():
        if name not in table:
            continue
        mean_cfg, std_cfg = table[name]
        assert case.hu[code] == pytest.approx((mean_cfg, std_cfg))
        mean, std, n = _interior_mean_std(case, code)
        if n < 100:
            continue
        # correlated noise: about 1 independent sample per 4 voxels; +0.5 HU for the rounding to integers
        tol = 4.0 * std_cfg / np.sqrt(n / 4.0) + 0.5
        assert abs(mean - mean_cfg) <= tol, f"{name}: {mean:.1f} vs {mean_cfg} (n={n}, tol {tol:.1f})"
        assert std == pytest.approx(std_cfg, rel=0.15, abs=1.0), name
        checked += 1
    assert checked >= 6


def test_default_subject_hu_within_variability_of_the_table(default_cases):
    config = PhantomConfig()
    for case in default_cases:
        w = case.subject["contrast_weight"]
        for code in (LIVER, SPLEEN, AORTA):
            name = anatomy.SYNAPSE_ORGANS[code]
            entry = config.hu_table[name]
            expected = (1 - w) * entry["plain"][0] + w * entry["contrast"][0]
            mean, _, n = _interior_mean_std(case, code)
            assert n > 100
            # 4 sd of the subject offset (5 HU) + 4 sd of the smooth bias field (8 HU)
            assert abs(mean - expected) < 4 * 5.0 + 4 * 8.0, (name, mean, expected)
        fat = _interior_mean_std(case, anatomy.FAT)[0]
        assert fat < -50 and _interior_mean_std(case, LIVER)[0] > 20


def test_stomach_gas_is_anterior_and_still_labelled_stomach(default_cases):
    for case in default_cases:
        gas = case.codes == anatomy.STOMACH_GAS
        soft = case.codes == STOMACH
        assert gas.any() and soft.any()
        assert (case.label[gas] == STOMACH).all()
        # LPS arrays: row index grows posteriorly, so gas rows are smaller (anterior) on average
        assert np.nonzero(gas)[1].mean() < np.nonzero(soft)[1].mean()
        assert case.image[gas].mean() < -700


def _physical_centroid(label: sitk.Image, value: int) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(label)
    return np.array(stats.GetCentroid(value))


@pytest.mark.parametrize("direction", ["LPS", "RAS"])
def test_geometry_and_anatomical_sides(direction):
    config = PhantomConfig.from_dict({**SMALL, "direction": direction})
    case = generate_case(config, 5, 1)
    image, label = case.to_sitk()
    assert image.GetSpacing() == (5.0, 5.0, 5.0) and image.GetSize() == (64, 64, 40)
    expected_dir = (1, 0, 0, 0, 1, 0, 0, 0, 1) if direction == "LPS" else (-1, 0, 0, 0, -1, 0, 0, 0, 1)
    assert image.GetDirection() == pytest.approx(expected_dir)
    assert label.GetOrigin() == image.GetOrigin() and label.GetDirection() == image.GetDirection()
    # the grid is centred on the patient origin: centre voxel at (0, 0, 0) mm +- half a voxel
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    assert np.allclose(centre, 0.0, atol=1e-6)
    liver, spleen = _physical_centroid(label, LIVER), _physical_centroid(label, SPLEEN)
    assert liver[0] < -20 < 20 < spleen[0]                           # liver on the patient's right (LPS x < 0)
    assert spleen[1] > liver[1]                                       # spleen posterior to the liver
    assert _physical_centroid(label, R_KIDNEY)[0] < 0 < _physical_centroid(label, L_KIDNEY)[0]
    assert _physical_centroid(label, R_KIDNEY)[1] > 20               # kidneys posterior
    assert _physical_centroid(label, IVC)[0] < _physical_centroid(label, AORTA)[0]


def test_mixed_direction_same_anatomy_in_physical_space():
    lps = generate_case(PhantomConfig.from_dict({**SMALL, "direction": "LPS"}), 9, 1)
    mixed = generate_case(PhantomConfig.from_dict({**SMALL, "direction": "mixed"}), 9, 1)
    assert mixed.subject["orientation"] == "RAS"
    assert np.array_equal(lps.label, mixed.label[:, ::-1, ::-1])
    assert np.array_equal(lps.image, mixed.image[:, ::-1, ::-1])


def test_synapse_names_match_the_bundled_label_table():
    from scdl.labels.table import LabelTable

    table = LabelTable.load("synapse")
    names = {e.value: e.name for e in table.entries}
    assert names == {v: n.replace("_", " ") for v, n in anatomy.SYNAPSE_ORGANS.items()}


def test_config_round_trip_and_errors(tmp_path):
    config = PhantomConfig.from_dict({"bias_sd": 0.0, "hu_table": {"liver": {"plain": [60, 10], "contrast": [100, 10]}}})
    assert config.hu_table["liver"]["plain"] == [60, 10] and config.hu_table["spleen"]["plain"] == [34.9, 12.3]
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(config.to_dict()))
    assert PhantomConfig.load(path) == config
    path.write_text(json.dumps({"bias_sdd": 1}))
    with pytest.raises(ScdlError, match="bias_sdd") as err:
        PhantomConfig.load(path)
    assert str(path) in str(err.value)
    with pytest.raises(ScdlError, match="direction"):
        PhantomConfig.from_dict({"direction": "up"})
    with pytest.raises(ScdlError, match="cannot hold"):
        default_split(4, labeled=3, val=1, test=1)
    assert default_split(30) == default_split(30, labeled=5, val=3, test=0)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_cohort_manifest_and_files(tmp_path, capsys):
    out = tmp_path / "cohort"
    argv = ["phantom", "--out", str(out), "--cases", "5", "--seed", "4", "--labeled", "2", "--val", "1",
            "--test", "1", "--spacing", "5", "--direction", "mixed", "--progress", "none"]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out / "manifest.csv")
    rows = _rows(out / "manifest.csv")
    assert list(rows[0]) == ["image", "label", "split", "labels", "reference"]
    assert [(r["split"], bool(r["label"])) for r in rows] == [
        ("train", True), ("train", True), ("train", False), ("val", True), ("test", True)]
    for i, row in enumerate(rows):
        assert row["image"] == f"images/case_{i:03d}.nii.gz" and row["labels"] == "synapse"
        assert row["reference"] == f"labels/case_{i:03d}.nii.gz"
        image = sitk.ReadImage(str(out / row["image"]))
        label = sitk.ReadImage(str(out / row["reference"]))
        assert image.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
        assert image.GetSize() == label.GetSize() == (64, 64, 40)
        assert image.GetDirection()[0] == (1.0 if i % 2 == 0 else -1.0)
        # the written arrays are the generated ones
        case = generate_case(PhantomConfig.from_dict({**SMALL, "direction": "mixed"}), 4, i)
        assert np.array_equal(sitk.GetArrayFromImage(label), case.label)
    provenance = json.loads((out / "phantom.json").read_text(encoding="utf-8"))
    assert provenance["seed"] == 4 and len(provenance["cases"]) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]          # no temporary leftovers

    # the trainer reads this manifest format
    from scdl.training.cohort import load_manifest

    assert load_manifest(out / "manifest.csv").summary() == {"labeled": 2, "anatomy": 0, "unlabeled": 1, "val": 1, "test": 1}

    # a second run does not overwrite silently; --overwrite replaces an earlier cohort
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(argv[:3] + ["--cases", "2", "--spacing", "5", "--overwrite", "--progress", "none"]) == 0
    assert len(_rows(out / "manifest.csv")) == 2


def test_refuses_to_replace_a_folder_that_is_not_a_cohort(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["phantom", "--out", str(out), "--cases", "1", "--spacing", "5", "--overwrite",
                 "--progress", "none"]) == 2
    assert "not a phantom cohort" in capsys.readouterr().err
    assert (out / "notes.txt").read_text(encoding="utf-8") == "keep me"


def test_cancelled_run_leaves_nothing(tmp_path):
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] > 2            # cancel after the first case

    out = tmp_path / "cohort"
    with pytest.raises(Cancelled):
        write_cohort(out, PhantomConfig.from_dict(SMALL), default_split(4), 0,
                     progress=Progress("none", cancel=cancel))
    assert list(tmp_path.iterdir()) == []


def test_json_progress_lines(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["phantom", "--out", str(out), "--cases", "2", "--spacing", "5", "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert lines[-1]["phase"] == "done" and lines[-1]["output"] == str(out / "manifest.csv")
    assert any(line.get("phase") == "phantom" and line.get("done") == 2 for line in lines)


def test_parallel_workers_write_the_same_arrays(tmp_path):
    config = PhantomConfig.from_dict(SMALL)
    manifest = write_cohort(tmp_path / "par", config, default_split(3), 8, workers=2)
    for i in range(3):
        written = sitk.GetArrayFromImage(sitk.ReadImage(str(manifest.parent / "images" / f"case_{i:03d}.nii.gz")))
        assert np.array_equal(written, generate_case(config, 8, i).image)
