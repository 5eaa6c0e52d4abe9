"""Corrupt cache entries (issue 15): the training preprocessing cache (``scdl/training/cache.py``) and the model
cache (``scdl/models/cache.py``).

A damaged preprocessing entry (a truncated or foreign ``.npy``, a ``meta.json`` that does not parse, an array of
another shape) is found by its headers and file sizes, reported with ONE warning naming the file and made again.
A damaged cached model is one error line naming the file and the command that replaces the copy; never a
traceback.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from scdl.cli.main import main
from scdl.progress import Progress
from scdl.training.cache import check_entry, npy_problem
from scdl.training.cohort import load_manifest
from scdl.training.config import resolve_config
from scdl.training.sample_cohort import make_crop_cohort
from scdl.training.trainer import Trainer

TINY = ["patch_size=[32,32,32]", "preprocessing.spacing_mm=[6,6,6]", "data.num_workers=0", "threads=1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, patient_a_ct, patient_a_seg) -> Path:
    return make_crop_cohort(patient_a_ct, patient_a_seg, tmp_path_factory.mktemp("cache_cohort"))


def _prepare(manifest: Path, cache: Path, run: Path) -> tuple[dict, list[str]]:
    err = io.StringIO()
    cfg = resolve_config("cpu", values={"framework": "cps-scdl", "iterations": 2},
                         overrides=[*TINY, f'data.cache_dir="{cache}"'])
    trainer = Trainer(cfg, load_manifest(manifest), run, device="cpu", progress=Progress("none", err=err))
    trainer.prepare()
    return trainer.prepared, [line for line in err.getvalue().splitlines() if line]


def _arrays(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p) for p in sorted(folder.glob("*.npy"))}


def test_npy_problem_names_what_is_wrong(tmp_path: Path) -> None:
    good = tmp_path / "a.npy"
    np.save(good, np.arange(1000, dtype=np.float32).reshape(10, 10, 10))
    assert npy_problem(good, (10, 10, 10)) is None
    assert "shape (10, 10, 10)" in npy_problem(good, (10, 10, 11))
    data = good.read_bytes()
    cut = tmp_path / "cut.npy"
    cut.write_bytes(data[: len(data) // 2])
    assert "bytes where its header promises" in npy_problem(cut)
    longer = tmp_path / "longer.npy"
    longer.write_bytes(data + b"\0" * 8)
    assert "bytes where its header promises" in npy_problem(longer)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x93NUMPY garbage" + bytes(range(256)))
    assert "not a NumPy array file" in npy_problem(garbage)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    assert "not a NumPy array file" in npy_problem(empty)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "Python objects" in npy_problem(objects)
    assert "is missing" in npy_problem(tmp_path / "none.npy")


def test_damaged_preprocessing_entries_are_made_again_with_one_warning(manifest: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    prepared, warnings = _prepare(manifest, cache, tmp_path / "run1")
    assert not [w for w in warnings if "damaged" in w]
    entries = {row: case.folder for row, case in prepared.items()}
    labeled = [row for row, case in prepared.items() if case.labeled]
    unlabeled = [row for row, case in prepared.items() if not case.labeled]
    assert len(labeled) >= 3 and unlabeled
    before = {row: _arrays(folder) for row, folder in entries.items()}
    # what a full disk, a crash of the machine or a stray copy leaves
    damage = {
        labeled[0]: ("image.npy", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
        labeled[1]: ("label.npy", lambda p: p.write_bytes(b"garbage, not an array" * 10)),
        labeled[2]: ("meta.json", lambda p: p.write_text("{ truncated", encoding="utf-8")),
        unlabeled[0]: ("image.npy", lambda p: np.save(p, np.zeros((3, 3, 3), np.float32))),
    }
    for row, (name, spoil) in damage.items():
        spoil(entries[row] / name)
    prepared, warnings = _prepare(manifest, cache, tmp_path / "run2")
    damaged_lines = [w for w in warnings if "cache entry of this case is damaged" in w]
    assert len(damaged_lines) == len(damage), warnings
    for row, (name, _spoil) in damage.items():
        (line,) = [w for w in damaged_lines if str(entries[row] / name) in w]
        assert line.startswith("warning: ") and f"[{row}]" in line and "Traceback" not in line
        assert "preprocessed again" in line
    assert not [w for w in warnings if "Traceback" in w]
    for row, case in prepared.items():               # the same entries, made again: complete and equal
        assert case.folder == entries[row] and check_entry(case.folder, case.meta) is None
        after = _arrays(case.folder)
        assert after.keys() == before[row].keys()
        assert all(np.array_equal(after[k], before[row][k]) for k in after)
    assert not [p for p in cache.rglob("*") if ".partial-" in p.name or ".old-" in p.name]
    _prepared, warnings = _prepare(manifest, cache, tmp_path / "run3")
    assert not [w for w in warnings if "damaged" in w]               # repaired once, quiet afterwards


def test_check_only_reports_a_damaged_entry(manifest: Path, tmp_path: Path, capsys) -> None:
    cache = tmp_path / "cache"
    prepared, _ = _prepare(manifest, cache, tmp_path / "run1")
    row, case = next((r, c) for r, c in prepared.items() if c.labeled)
    (case.folder / "locations.npy").write_bytes(b"")
    code = main(["train", "--cohort", str(manifest), "--check-only", "--preset", "cpu", "--framework", "cps-scdl",
                 "--cache-dir", str(cache), "--progress", "none", *[a for s in TINY for a in ("--set", s)]])
    out, err = capsys.readouterr()
    text = out + err
    assert code == 0, text
    assert "Traceback" not in text
    lines = [line for line in text.splitlines() if "cache entry of this case is damaged" in line]
    assert len(lines) == 1 and str(case.folder / "locations.npy") in lines[0], text
    assert "the next training run makes the entry again" in lines[0]


# -- the model cache ------------------------------------------------------------------------------------
@pytest.fixture()
def cached_model(tiny_model: Path, tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("SCDL_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SCDL_HOME", str(tmp_path / "home"))
    assert main(["models", "import", str(tiny_model)]) == 0
    folder = tmp_path / "models" / tiny_model.name
    assert (folder / "manifest.json").is_file()
    return folder


def _cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:1000])


@pytest.mark.parametrize("name, spoil", [
    ("weights.safetensors", _cut),
    ("weights.safetensors", lambda p: p.write_bytes(b"\0" * p.stat().st_size)),
    ("weights.safetensors", lambda p: p.unlink()),
    ("card.json", lambda p: p.write_text("{ not json", encoding="utf-8")),
    ("labels.csv", lambda p: p.write_bytes(b"\xff\xfe garbage")),
    ("manifest.json", lambda p: p.write_text("garbage{", encoding="utf-8")),
    ("manifest.json", lambda p: p.unlink()),
], ids=["weights-truncated", "weights-zeroed", "weights-missing", "card-garbage", "labels-garbage",
        "manifest-garbage", "manifest-missing"])
def test_a_damaged_cached_model_is_one_line_with_the_command_that_replaces_it(
        name, spoil, cached_model: Path, tiny_model: Path, patient_a_ct: Path, tmp_path: Path, capsys) -> None:
    spoil(cached_model / name)
    capsys.readouterr()
    target = tmp_path / "seg.nii.gz"
    code = main(["segment", str(patient_a_ct), "-o", str(target), "--model", cached_model.name, "--device", "cpu",
                 "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert str(cached_model / name) in lines[0]
    assert "scdl models import PACKAGE --force" in lines[0] and f"delete {cached_model}" in lines[0]
    assert not target.exists()
    # the fix works: the import replaces the damaged copy, the model segments again
    assert main(["models", "import", str(tiny_model), "--force"]) == 0
    assert main(["models", "verify", cached_model.name]) == 0
    capsys.readouterr()


def test_models_list_names_a_damaged_cached_model(cached_model: Path, capsys) -> None:
    (cached_model / "manifest.json").write_text("garbage{", encoding="utf-8")
    capsys.readouterr()
    assert main(["models", "list"]) == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert any(cached_model.name in line and "invalid" in line for line in out.splitlines()), out
    assert [line for line in err.splitlines() if str(cached_model / "manifest.json") in line]


def test_a_catalog_model_damaged_in_the_cache_is_downloaded_again(tmp_path: Path, monkeypatch) -> None:
    from scdl.errors import ScdlError
    from scdl.models.catalog import load_catalog
    from scdl.models.package import ModelPackage

    monkeypatch.setenv("SCDL_MODELS_DIR", str(tmp_path / "models"))
    model_id = next(e["id"] for e in load_catalog()["models"] if e["kind"] == "checkpoints")
    folder = tmp_path / "models" / model_id
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("garbage{", encoding="utf-8")
    with pytest.raises(ScdlError) as info:
        ModelPackage.load(model_id)
    assert str(folder / "manifest.json") in str(info.value)
    assert f"scdl models download {model_id} --force" in str(info.value)
    shutil.rmtree(folder)
