"""``scdl segment`` on the command line: JSON progress, preview, CUDA fallback, cancellation of a real child
process, and user errors (exit 2, one ``error:`` line naming the file, nothing written)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from scdl.cli.main import main


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_progress_preview_uncertainty_and_cuda_fallback(patient_a_ct, tiny_model, tmp_path, capsys,
                                                             monkeypatch):
    import scdl.inference.device as device_mod

    monkeypatch.setattr(device_mod, "_cuda_available", lambda: False)  # behave as on a machine without a GPU
    out, png, unc = tmp_path / "a.nii.gz", tmp_path / "a.png", tmp_path / "u.nrrd"
    code = main(["segment", str(patient_a_ct), "-o", str(out), "--model", str(tiny_model), "--device", "cuda",
                 "--progress", "json", "--preview", str(png), "--uncertainty", str(unc)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = _json_lines(captured.out)  # every stdout line is one JSON object
    phases = [line["phase"] for line in lines if "phase" in line]
    order = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert order == ["read", "preprocess", "infer", "postprocess", "write", "done"]
    infer = [line for line in lines if line.get("phase") == "infer"]
    assert infer[-1]["done"] == infer[-1]["total"] == 27 and all("eta_s" in line for line in infer)
    assert lines[-1]["phase"] == "done" and lines[-1]["output"] == str(out) and lines[-1]["device"] == "cpu"
    warnings = [line["text"] for line in lines if line.get("event") == "warning"]
    assert any("no CUDA GPU" in w for w in warnings)
    confidence = [line for line in lines if line.get("event") == "confidence"]
    assert len(confidence) == 1 and "liver" in confidence[0]["organs"]
    ct = sitk.ReadImage(str(patient_a_ct))
    for path in (out, unc):
        img = sitk.ReadImage(str(path))
        assert img.GetSize() == ct.GetSize() and np.allclose(img.GetOrigin(), ct.GetOrigin(), atol=1e-4)
    with Image.open(png) as picture:
        assert picture.format == "PNG" and picture.size[0] > 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.nii.gz", "a.png", "u.nrrd"]


def test_sigterm_cancels_a_real_child_and_leaves_no_output(patient_a_ct, tiny_model, tmp_path):
    out = tmp_path / "cancelled.seg.nrrd"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # overlap 0.9: hundreds of windows, so the child is certainly still inferring when the signal arrives
    cmd = [sys.executable, "-m", "scdl", "segment", str(patient_a_ct), "-o", str(out), "--model", str(tiny_model),
           "--device", "cpu", "--progress", "json", "--overlap", "0.9", "--uncertainty", str(tmp_path / "u.nii.gz")]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        seen = None
        for line in child.stdout:
            event = json.loads(line)
            if event.get("phase") == "infer" and event["done"] >= 1:
                seen = event
                break
            assert time.monotonic() < deadline, "the child never reached the infer phase"
        assert seen is not None and seen["total"] > 100
        child.send_signal(signal.SIGTERM)
        rest, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert "cancelled" in err
    assert all(json.loads(line).get("phase") != "done" for line in rest.splitlines() if line.strip())
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def _error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_unreadable_file(tiny_model, tmp_path, capsys):
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"this is not a NIfTI file")
    out = tmp_path / "out.nii.gz"
    assert main(["segment", str(bad), "-o", str(out), "--model", str(tiny_model), "--progress", "none"]) == 2
    assert str(bad) in _error_line(capsys)
    assert not out.exists()


def test_two_dimensional_image(tiny_model, tmp_path, capsys):
    flat = tmp_path / "slice.nrrd"
    sitk.WriteImage(sitk.Image([64, 64], sitk.sitkInt16), str(flat))
    out = tmp_path / "out.nii.gz"
    assert main(["segment", str(flat), "-o", str(out), "--model", str(tiny_model), "--progress", "none"]) == 2
    assert str(flat) in _error_line(capsys)
    assert not out.exists()


def test_folder_without_dicom(tiny_model, tmp_path, capsys):
    folder = tmp_path / "not_dicom"
    folder.mkdir()
    (folder / "notes.txt").write_text("no images here")
    out = tmp_path / "out.nii.gz"
    assert main(["segment", str(folder), "-o", str(out), "--model", str(tiny_model), "--progress", "none"]) == 2
    assert str(folder) in _error_line(capsys)
    assert not out.exists()


def test_wrong_model_checksum(patient_a_ct, tiny_model, tmp_path, capsys):
    tampered = tmp_path / "tampered-model"
    shutil.copytree(tiny_model, tampered)
    weights = tampered / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern changed in the last weight
    weights.write_bytes(bytes(data))
    out = tmp_path / "out.nii.gz"
    assert main(["segment", str(patient_a_ct), "-o", str(out), "--model", str(tampered), "--progress", "none"]) == 2
    line = _error_line(capsys)
    assert "weights.safetensors" in line
    assert not out.exists()


def test_unsupported_output_extension_fails_before_any_work(patient_a_ct, tiny_model, tmp_path, capsys):
    out = tmp_path / "labels.png"
    assert main(["segment", str(patient_a_ct), "-o", str(out), "--model", str(tiny_model)]) == 2
    line = _error_line(capsys)
    assert str(out) in line and ".seg.nrrd" in line
    assert list(tmp_path.iterdir()) == []


def test_no_model_installed_says_how_to_get_one(patient_a_ct, tmp_path, capsys, monkeypatch):
    import scdl.models.catalog as catalog

    monkeypatch.setattr(catalog, "installed_path", lambda model_id: None)
    out = tmp_path / "out.nii.gz"
    assert main(["segment", str(patient_a_ct), "-o", str(out)]) == 2
    line = _error_line(capsys)
    assert "--model" in line and "scdl models" in line
    assert not out.exists()


def test_card_warnings_once_per_machine_and_after_input_errors(tiny_model, patient_a_ct, tmp_path, monkeypatch,
                                                              capsys) -> None:
    """The model card's notes in full at a model's first use, one line afterwards, in full with --verbose;
    an input error comes first (no card text before it)."""
    monkeypatch.setenv("SCDL_HOME", str(tmp_path / "home"))
    args = ["segment", str(patient_a_ct), "--model", str(tiny_model), "--device", "cpu", "--progress", "none"]
    assert main(["segment", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "x.nii.gz"),
                 *args[2:]]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith("error:") and "random weights" not in err
    assert main([*args, "-o", str(tmp_path / "a.nii.gz")]) == 0
    first = capsys.readouterr().err
    assert "model tiny-test-model: random weights: for tests only" in first
    assert main([*args, "-o", str(tmp_path / "b.nii.gz")]) == 0
    second = capsys.readouterr().err
    assert "random weights" not in second and "1 card warning" in second and "scdl models info" in second
    assert main([*args, "-o", str(tmp_path / "c.nii.gz"), "--verbose"]) == 0
    assert "random weights: for tests only" in capsys.readouterr().err


def test_no_organ_found_is_a_console_warning(tmp_path, monkeypatch, capsys) -> None:
    """A 4 cm cube of fat (no abdomen in view): the default model finds nothing and says so. (Cubes of water or
    soft tissue are not empty for every model: of 64,000 voxels 4.3.0 calls 54 of a 40 HU cube aorta, 4.5.0 27 of
    a 0 HU cube, unenhanced blood's HU and a water-filled lumen's.)"""
    monkeypatch.setenv("SCDL_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    arr = (-100 + rng.normal(0, 20, (40, 40, 40))).astype(np.int16)
    arr[:, :, :4] = -1000                                        # some air: it looks like CT
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((1.0, 1.0, 1.0))
    ct = tmp_path / "cube.nii.gz"
    sitk.WriteImage(image, str(ct), True)
    assert main(["segment", str(ct), "-o", str(tmp_path / "seg.nii.gz"), "--device", "cpu", "--progress", "none"]) == 0
    err = capsys.readouterr().err
    assert "no organ was found" in err and "40 x 40 x 40 mm" in err
    assert int(sitk.GetArrayViewFromImage(sitk.ReadImage(str(tmp_path / "seg.nii.gz"))).max()) == 0
