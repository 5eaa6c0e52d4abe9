"""Fault cases of issue 25 ("Trust, round two"): wrong voxels, lost inputs, mixed runs, corrupt checkpoints,
hangs, implausible geometry and tracebacks on user errors. Each case ends in ONE line ``error: FILE: what.
Fix: how`` (exit 2) or in correct output, and nothing the user had is overwritten or mixed. docs/faults.md lists
them. Every file is made here (tmp_path, the tiny_model fixture, a phantom cohort); nothing is read from
outside the repository.

Cases that could hang when they regress (a FIFO, a blocking read) run the real command in a child process with a
timeout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from inprocess import run_scdl
from scdl.errors import ScdlError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHAPE = (30, 40, 40)              # (z, y, x)


# -- helpers -------------------------------------------------------------------------------------------
def _ct(path: Path, spacing=(2.0, 2.0, 3.0), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    arr = rng.normal(40, 30, SHAPE).astype(np.int16)
    arr[:, :4] = -1000                                           # air: a CT in HU
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path), str(path).endswith(".gz"))
    return path


def _label_map(path: Path, box: tuple, value: int = 1) -> Path:
    arr = np.zeros(SHAPE, np.uint8)
    arr[box] = value
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path), str(path).endswith(".gz"))
    return path


def _one_error(err: str, target=None) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    if target is not None:
        assert str(target) in lines[0], lines[0]
    return lines[0]


def _child_env(tmp_path: Path) -> dict:
    return {**os.environ, "SCDL_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(HERE.parent), os.environ.get("PYTHONPATH")]))}


def _scdl_child(args: list[str], tmp_path: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m scdl ARGS`` in a child process (a hang fails the test instead of blocking the suite)."""
    try:
        return subprocess.run([sys.executable, "-m", "scdl", *args], cwd=tmp_path, env=_child_env(tmp_path),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"scdl {' '.join(args)} hung ({timeout} s)") from err


# -- 1: the file named is the file read ------------------------------------------------------------------
def test_a_nifti_sibling_is_never_read_instead(tmp_path: Path, capsys) -> None:
    """``ct.nii`` beside ``ct.nii.gz``: ITK's NIfTI reader read the sibling (evaluate said Dice 0.000 for two
    identical maps). The file named is the file read, for both extensions."""
    from scdl.io.image import read_image

    box = (slice(5, 15), slice(10, 20), slice(10, 30))
    pred, truth = _label_map(tmp_path / "pred.nii.gz", box), _label_map(tmp_path / "gt.nii.gz", box)
    _label_map(tmp_path / "pred.nii", (slice(0, 4), slice(0, 4), slice(0, 4)))       # other voxels beside them
    _label_map(tmp_path / "gt.nii", (slice(20, 28), slice(30, 38), slice(0, 8)))
    scores = tmp_path / "scores.json"
    assert run_scdl(["evaluate", str(pred), str(truth), "--json", str(scores)]) == 0, capsys.readouterr().err
    assert json.loads(scores.read_text(encoding="utf-8"))["mean"]["dice"] == pytest.approx(1.0)
    for path in (pred, truth):
        arr = sitk.GetArrayFromImage(read_image(path))
        assert arr.sum() == 10 * 10 * 20 and arr[box].all()
    small = sitk.GetArrayFromImage(read_image(tmp_path / "pred.nii"))           # and the .nii is itself too
    assert small.sum() == 4 * 4 * 4
    assert not [p for p in Path(os.environ.get("TMPDIR", "/tmp")).glob("scdl-read-*") if p.stat().st_uid == os.getuid()
                and time.time() - p.stat().st_mtime < 60]                         # the private alias is removed


# -- 2: inputs are never outputs ------------------------------------------------------------------------
def test_synth_refuses_to_overwrite_its_label_map(tmp_path: Path, capsys) -> None:
    label = _label_map(tmp_path / "map.nii.gz", (slice(5, 15), slice(10, 20), slice(10, 30)))
    before = label.read_bytes()
    link = tmp_path / "other_name.nii.gz"
    os.link(label, link)                                         # the same file under another name
    for target in (label, link):
        code = run_scdl(["synth", str(label), "--labels", "synapse", "-o", str(target)])
        line = _one_error(capsys.readouterr().err, target)
        assert code == 2 and "would overwrite the label map MAP" in line
    assert label.read_bytes() == before


def test_segment_refuses_to_overwrite_its_ct_by_the_same_check(tmp_path: Path, tiny_model: Path, capsys) -> None:
    ct = _ct(tmp_path / "ct.nii.gz")
    before = ct.read_bytes()
    for args in (["-o", str(ct)], ["-o", str(tmp_path / "seg.nii.gz"), "--uncertainty", str(tmp_path / "seg.nii.gz")]):
        code = run_scdl(["segment", str(ct), *args, "--model", str(tiny_model), "--progress", "none"])
        line = _one_error(capsys.readouterr().err)
        assert code == 2 and ("would overwrite the input CT" in line or "have the same path" in line), line
    assert ct.read_bytes() == before and not (tmp_path / "seg.nii.gz").exists()


def test_evaluate_refuses_outputs_that_are_inputs(tmp_path: Path, capsys) -> None:
    from scdl.labels.table import LabelTable

    pred = _label_map(tmp_path / "pred.nii.gz", (slice(5, 15), slice(10, 20), slice(10, 30)))
    table = tmp_path / "labels.csv"
    table.write_text(LabelTable.load("synapse").to_csv_text(), encoding="utf-8")
    saved = {p: p.read_bytes() for p in (pred, table)}
    for extra, target, words in ((["--labels", str(table), "--csv", str(table)], table, "--labels table"),
                                 (["--json", str(pred)], pred, "prediction PRED"),
                                 (["--csv", str(tmp_path / "s.x"), "--json", str(tmp_path / "s.x")], tmp_path / "s.x",
                                  "same path")):
        code = run_scdl(["evaluate", str(pred), str(pred), *extra])
        out, err = capsys.readouterr()
        assert code == 2 and words in _one_error(err, target) and "Dice" not in out      # before any scoring
    assert all(p.read_bytes() == data for p, data in saved.items())


# -- 3, 4, 5, 9: run folders, locks, checkpoints, resume -----------------------------------------------
TINY = ["--preset", "cpu", "--device", "cpu", "--progress", "none", "--set", "patch_size=[32,32,32]",
        "--set", "preprocessing.spacing_mm=[6,6,6]", "--set", "data.num_workers=0", "--set", "threads=1",
        "--set", "network.n_filters=2", "--set", "log_every=1", "--set", "validation.every=2",
        "--set", "checkpoint_every=2", "--set", "validation.sw_batch_size=4"]


@pytest.fixture(scope="module")
def phantom_cohort(tmp_path_factory) -> Path:
    """3 synthetic cases (1 labeled, 1 unlabeled, 1 validation) of 40 x 40 x 24 voxels at 6 mm."""
    out = tmp_path_factory.mktemp("round2_cohort") / "cohort"
    assert run_scdl(["phantom", "--out", str(out), "--cases", "3", "--seed", "1", "--size", "40,40,24",
                     "--spacing", "6", "--progress", "none"]) == 0
    return out / "manifest.csv"


@pytest.fixture(scope="module")
def stopped_run(phantom_cohort: Path, tmp_path_factory) -> Path:
    """A run of 4 iterations with checkpoints at 2 (kept as checkpoint.prev.pt) and 4, its model removed: a run
    that ``--resume`` continues (to 6 iterations with --iterations 6, or packages again)."""
    base = tmp_path_factory.mktemp("round2_run")
    run = base / "run"
    assert run_scdl(["train", "--cohort", str(phantom_cohort), "--out", str(run), "--iterations", "4",
                     "--cache-dir", str(base / "cache"), *TINY]) == 0
    shutil.rmtree(run / "model")
    assert {"checkpoint.pt", "checkpoint.pt.sha256", "checkpoint.prev.pt", "checkpoint.prev.pt.sha256", "best.pt",
            "best.pt.sha256", ".scdl-train.lock"} <= {p.name for p in run.iterdir()}
    return run


def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text(encoding="utf-8"))
    return copy if config else copy


def test_train_refuses_a_users_folder(tmp_path: Path, capsys) -> None:
    """`--out` on a folder with the user's files (labels.csv, config.json, model/): refused, nothing touched."""
    folder = tmp_path / "mine"
    (folder / "model").mkdir(parents=True)
    files = {folder / "labels.csv": b"my labels", folder / "config.json": b"{}", folder / "model" / "notes.txt": b"x"}
    for path, data in files.items():
        path.write_bytes(data)
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("image,label\nmissing.nii.gz,\n", encoding="utf-8")
    code = run_scdl(["train", "--cohort", str(manifest), "--out", str(folder), "--preset", "cpu", "--device", "cpu",
                     "--progress", "none"])
    line = _one_error(capsys.readouterr().err, folder)
    assert code == 2 and "not a run folder" in line and "missing.nii.gz" not in line    # before the cohort
    assert all(p.read_bytes() == data for p, data in files.items())
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "labels.csv", "model"]
    # SCDL Train's exported scene cohort (and hidden files) may be there before a run
    scene = tmp_path / "scene_run"
    (scene / "cohort").mkdir(parents=True)
    (scene / ".DS_Store").write_bytes(b"")
    from scdl.training.runfolder import RunFolder

    RunFolder(scene).check_new_run()


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path: Path, capsys) -> None:
    """Two `scdl train` into one --out: the second refuses in one line while the first holds the lock; a lock
    left by a killed process (kill -9) blocks nothing."""
    from scdl.training.runfolder import RunFolder

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom scdl.training.runfolder import RunFolder\n"
                               f"lock = RunFolder({str(run)!r}).lock()\nprint('locked', flush=True)\ntime.sleep(120)"],
                              env=_child_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        manifest = tmp_path / "cohort.csv"
        manifest.write_text("image,label\nmissing.nii.gz,\n", encoding="utf-8")
        code = run_scdl(["train", "--cohort", str(manifest), "--out", str(run), "--preset", "cpu", "--device", "cpu",
                         "--progress", "none"])
        line = _one_error(capsys.readouterr().err, run)
        assert code == 2 and f"process {holder.pid}" in line and "writing this run folder" in line
        with pytest.raises(ScdlError, match="another scdl train"):
            RunFolder(run).lock()
    finally:
        holder.kill()
        holder.wait()
    lock = RunFolder(run).lock()                  # the dead holder's lock is gone with it
    assert lock.held
    with pytest.raises(ScdlError):                # and one process cannot take it twice either
        RunFolder(run).lock()
    lock.release()


def test_a_damaged_checkpoint_is_refused_and_the_previous_one_continues(stopped_run: Path, tmp_path: Path,
                                                                        capsys) -> None:
    """One flipped bit in checkpoint.pt: --resume refuses it (zip CRC) and names checkpoint.prev.pt; a file
    replaced as a whole (valid zip, other bytes) fails the SHA-256; --previous-checkpoint continues."""
    run = _copy_run(stopped_run, tmp_path)
    data = bytearray((run / "checkpoint.pt").read_bytes())
    data[len(data) // 2] ^= 0x04
    (run / "checkpoint.pt").write_bytes(bytes(data))
    log_before = (run / "log.csv").read_text(encoding="utf-8")
    code = run_scdl(["train", "--resume", str(run), "--iterations", "6", "--progress", "none"])
    line = _one_error(capsys.readouterr().err, run / "checkpoint.pt")
    assert code == 2 and "fails its CRC" in line and "checkpoint.prev.pt (iteration 2) is intact" in line
    assert "--previous-checkpoint" in line and (run / "log.csv").read_text(encoding="utf-8") == log_before
    # a valid archive with other content (the best networks' file renamed over it): the SHA-256 catches it
    shutil.copyfile(run / "best.pt", run / "checkpoint.pt")
    code = run_scdl(["train", "--resume", str(run), "--progress", "none"])
    assert code == 2 and "SHA-256 differs" in _one_error(capsys.readouterr().err, run / "checkpoint.pt")
    # continue from the previous checkpoint: iterations 3..6 again, none doubled
    code = run_scdl(["train", "--resume", str(run), "--iterations", "6", "--previous-checkpoint", "--progress", "none"])
    assert code == 0, capsys.readouterr().err
    rows = [line.split(",")[0] for line in (run / "log.csv").read_text(encoding="utf-8").splitlines()[1:]]
    assert rows == ["1", "2", "3", "4", "5", "6"] and (run / "model" / "card.json").is_file()


def test_resume_refuses_changed_settings(stopped_run: Path, tmp_path: Path, capsys) -> None:
    """--resume used to drop --set/--framework silently and end in a traceback after config.json was edited to
    another width: each is one line now, before any iteration."""
    run = _copy_run(stopped_run, tmp_path)
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    edited = dict(config, network={**config["network"], "n_filters": 4})
    (run / "config.json").write_text(json.dumps(edited), encoding="utf-8")
    code = run_scdl(["train", "--resume", str(run), "--progress", "none"])
    line = _one_error(capsys.readouterr().err, run / "config.json")
    assert code == 2 and "network.n_filters 2 -> 4" in line
    (run / "config.json").write_text(json.dumps(config), encoding="utf-8")
    for extra, words in ((["--set", "optimizer.lr=0.5"], "optimizer.lr 0.01 -> 0.5"),
                         (["--framework", "supervised"], "framework"),
                         (["--seed", "7"], "seed"),
                         (["--preset", "paper"], "--preset cannot change a resumed run")):
        code = run_scdl(["train", "--resume", str(run), *extra, "--progress", "none"])
        assert code == 2 and words in _one_error(capsys.readouterr().err), extra
    assert json.loads((run / "config.json").read_text(encoding="utf-8")) == config
    assert not (run / "model").exists()


def test_resume_applies_the_settings_it_may_change(stopped_run: Path, tmp_path: Path, capsys) -> None:
    run = _copy_run(stopped_run, tmp_path)
    code = run_scdl(["train", "--resume", str(run), "--iterations", "5", "--set", "validation.every=5",
                     "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "resumed with validation.every 2 -> 5" in err
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["validation"]["every"] == 5    # what ran is on disk


def test_a_full_disk_while_packaging_names_the_resume(stopped_run: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import scdl.models.package as package

    run = _copy_run(stopped_run, tmp_path)

    def full(*args, **kwargs):
        raise ScdlError("the disk is full; nothing was written.", run / "model", "free disk space.")

    monkeypatch.setattr(package, "save_package", full)
    code = run_scdl(["train", "--resume", str(run), "--progress", "none"])
    line = _one_error(capsys.readouterr().err, run / "model")
    assert code == 2 and f"scdl train --resume {run}" in line and "checkpoint of iteration 4 is complete" in line
    monkeypatch.undo()
    assert run_scdl(["train", "--resume", str(run), "--progress", "none"]) == 0     # and so it does
    assert (run / "model" / "card.json").is_file()


# -- 6: hangs ------------------------------------------------------------------------------------------
def test_a_fifo_is_refused_before_it_is_opened(tmp_path: Path, tiny_model: Path) -> None:
    """A FIFO as the CT, inside a DICOM folder, as a cohort image with --check-only, and /dev/zero: one line each,
    at once (opening a FIFO without a writer blocks forever)."""
    fifo = tmp_path / "ct.nii.gz"
    os.mkfifo(fifo)
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    os.mkfifo(dicom / "IM0001")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text(f"image,label\n{fifo},\n", encoding="utf-8")
    cases = [(["segment", str(fifo), "-o", str(tmp_path / "a.nii.gz"), "--model", str(tiny_model)], fifo, "named pipe"),
             (["segment", str(dicom), "-o", str(tmp_path / "b.nii.gz"), "--model", str(tiny_model)], dicom / "IM0001",
              "inside the folder"),
             (["segment", "/dev/zero", "-o", str(tmp_path / "c.nii.gz"), "--model", str(tiny_model)], "/dev/zero",
              "character device"),
             (["evaluate", str(fifo), str(fifo)], fifo, "named pipe")]
    for args, target, words in cases:
        done = _scdl_child([*args, "--progress", "none"] if args[0] == "segment" else args, tmp_path, timeout=300)
        assert done.returncode == 2 and words in _one_error(done.stderr, target), done.stderr[-2000:]
    done = _scdl_child(["train", "--cohort", str(manifest), "--out", str(tmp_path / "run"), "--check-only",
                        "--preset", "cpu", "--device", "cpu", "--cache-dir", str(tmp_path / "cache")], tmp_path)
    assert done.returncode == 2 and "named pipe" in done.stdout and str(fifo) in done.stdout, done.stdout + done.stderr


def test_segment_stops_on_sigterm_and_sigint_while_a_read_blocks(tmp_path: Path, tiny_model: Path) -> None:
    """A read that blocks (a hung share; here the open of a FIFO without writer): SIGTERM / SIGINT end the command
    at once (exit 130, one line), instead of being retried away by Python until SIGKILL."""
    fifo = tmp_path / "hung"
    os.mkfifo(fifo)
    ct = _ct(tmp_path / "ct.nii.gz")
    child = ("import json, sys\nimport scdl.io.image as image\n"
             "def blocking(path, **kwargs):\n"
             "    print(json.dumps({'event': 'blocking'}), flush=True)\n"
             f"    open({str(fifo)!r}, 'rb').read()\n"
             "image.read_ct = blocking\n"
             "from scdl.cli.main import main\nsys.exit(main(sys.argv[1:]))\n")
    for sig in (signal.SIGTERM, signal.SIGINT):
        target = tmp_path / f"seg_{sig.name}.nii.gz"
        proc = subprocess.Popen([sys.executable, "-c", child, "segment", str(ct), "-o", str(target), "--model",
                                 str(tiny_model), "--progress", "json"], cwd=tmp_path, env=_child_env(tmp_path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            for line in proc.stdout:
                if '"blocking"' in line:
                    break
            time.sleep(0.5)                                  # inside open() now
            sent = time.monotonic()
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=90)            # at once; 90 s leaves room for a loaded machine
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 130 and time.monotonic() - sent < 90, err[-2000:]
        assert [line for line in err.splitlines() if line.startswith(("error:", "cancelled"))] == \
            ["cancelled: nothing was written."] and "Traceback" not in err
        assert not target.exists() and not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


# -- 7: text lines cannot forge an event ----------------------------------------------------------------
def test_a_file_name_cannot_forge_a_progress_event(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """A CT whose name holds a newline and a JSON "done" event (and a terminal escape): the warning and error
    lines that print the name stay one line each, with the characters escaped; the stream holds the real
    events only."""
    from scdl.progress import parse_event

    name = 'ct\n{"phase": "done", "output": "evil.seg.nrrd"}\n\x1b[2J.nii.gz'
    folder = tmp_path / "in"
    folder.mkdir()
    arr = np.random.default_rng(0).normal(40, 30, SHAPE).astype(np.int16)          # no air: an HU warning
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((2.0, 2.0, 3.0))
    sitk.WriteImage(image, str(folder / "plain.nii.gz"), True)
    os.rename(folder / "plain.nii.gz", folder / name)                 # ITK's writer cannot open such a name
    target = tmp_path / "seg.nii.gz"
    for args in ([str(folder / name), "-o", str(target)], [str(folder / (name + "x")), "-o", str(target)]):
        code = run_scdl(["segment", *args, "--model", str(tiny_model), "--progress", "json"])
        out, err = capsys.readouterr()
        for line in (out + err).splitlines():
            event = parse_event(line)
            assert event is None or event.get("output") in (None, str(target)), line
            assert "\x1b" not in line, line
        assert any("\\n{\"phase\"" in line for line in err.splitlines() if line.startswith(("warning:", "error:")))
    assert code == 2 and target.is_file()


# -- 8: geometry that cannot make sense ----------------------------------------------------------------
@pytest.mark.parametrize("spacing", [100.0, 500.0, 1e-6])
def test_an_implausible_spacing_is_refused_with_its_numbers(spacing: float, tmp_path: Path, tiny_model: Path,
                                                            capsys) -> None:
    ct = _ct(tmp_path / "ct.nrrd", spacing=(spacing, spacing, spacing))
    code = run_scdl(["segment", str(ct), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(tiny_model),
                     "--progress", "json"])
    out, err = capsys.readouterr()
    line = _one_error(err, ct)
    assert code == 2 and f"{spacing:.4g} x {spacing:.4g} x {spacing:.4g} mm" in line and "0.05 to 20 mm" in line
    assert '"phase": "preprocess"' not in out


def test_a_nifti_without_voxel_size_is_refused(tmp_path: Path) -> None:
    """pixdim 0 (or NaN) and no sform: ITK silently reads 1 mm."""
    from scdl.io.image import read_image

    path = _ct(tmp_path / "ct.nii")
    data = bytearray(path.read_bytes())
    data[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)             # pixdim[1..3]
    data[252:256] = struct.pack("<2h", 0, 0)                    # qform_code, sform_code
    path.write_bytes(bytes(data))
    assert sitk.ReadImage(str(path)).GetSpacing() == (1.0, 1.0, 1.0)          # what ITK makes of it
    with pytest.raises(ScdlError, match="has no voxel size"):
        read_image(path)


def test_a_model_grid_beyond_the_machine_is_refused_before_the_work(tmp_path: Path, capsys) -> None:
    """A model card with a 0.05 mm voxel: a 80 x 80 x 90 mm CT becomes billions of voxels; refused with the numbers
    (grid, windows, memory) before the preprocessing, instead of an allocation traceback."""
    from model_factory import make_tiny_package

    model = make_tiny_package(tmp_path / "fine-model", spacing=(0.05, 0.05, 0.05), model_id="fine-model")
    ct = _ct(tmp_path / "ct.nii.gz")
    code = run_scdl(["segment", str(ct), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(model),
                     "--progress", "json"])
    out, err = capsys.readouterr()
    line = _one_error(err, ct)
    assert code == 2 and "0.05 x 0.05 x 0.05 mm grid" in line and "windows" in line and "nothing was started" in line
    assert '"phase": "preprocess"' not in out and not (tmp_path / "seg.nii.gz").exists()
    from scdl.processing.budget import check_model_grid, plan_size
    from scdl.models.package import ModelPackage

    plan = plan_size(sitk.ReadImage(str(ct)), ModelPackage.load(model).card["preprocessing"])
    with pytest.raises(ScdlError, match="more than this machine's 1.0 GiB"):
        check_model_grid(plan, ct, memory=1 << 30, max_windows=10**12)


def test_a_training_case_beyond_the_machine_is_a_problem_of_that_case(phantom_cohort: Path, tmp_path: Path,
                                                                      capsys) -> None:
    """--set preprocessing.spacing_mm=[0.05,...]: each case's model grid needs hundreds of GiB; one cohort error
    per case with the numbers, nothing trained (was an allocation failure)."""
    run = tmp_path / "run"
    code = run_scdl(["train", "--cohort", str(phantom_cohort), "--out", str(run), "--iterations", "2",
                     "--cache-dir", str(tmp_path / "cache"), *TINY, "--set", "preprocessing.spacing_mm=[0.05,0.05,0.05]"])
    err = capsys.readouterr().err
    assert code == 2 and "nothing was trained" in _one_error(err), err[-2000:]
    assert "0.05 x 0.05 x 0.05 mm grid" in err and "more than this machine's" in err
    assert not (run / "config.json").exists()


# -- 9: tracebacks on user errors ----------------------------------------------------------------------
def test_a_symlink_loop_is_one_line(tmp_path: Path, tiny_model: Path, capsys) -> None:
    (tmp_path / "a.nii.gz").symlink_to(tmp_path / "b.nii.gz")
    (tmp_path / "b.nii.gz").symlink_to(tmp_path / "a.nii.gz")
    loop = tmp_path / "a.nii.gz"
    for args in (["segment", str(loop), "-o", str(tmp_path / "seg.nii.gz"), "--model", str(tiny_model),
                  "--progress", "none"], ["evaluate", str(loop), str(loop)],
                 ["synth", str(loop), "--labels", "synapse", "-o", str(tmp_path / "ct.nii.gz")]):
        code = run_scdl(args)
        assert code == 2 and "symbolic link that loops" in _one_error(capsys.readouterr().err, loop), args


# -- the unclear cases -----------------------------------------------------------------------------------
def test_a_pickle_refusal_never_quotes_unsafe_advice(tmp_path: Path, capsys) -> None:
    """A crafted pickle is refused without PyTorch's advice to load it with weights_only=False (and it never runs)."""
    import torch

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "scdl-train-checkpoint", "x": Payload()}, evil)
    from scdl.models.statedict import load_state_dict_file
    from scdl.training.checkpoint import load_checkpoint

    for load in (load_checkpoint, load_state_dict_file):
        with pytest.raises(ScdlError) as info:
            load(evil)
        assert "weights_only" not in str(info.value) and "GLOBAL" in str(info.value)
    code = run_scdl(["models", "import", str(evil), "--id", "evil", "--labels", "synapse"])
    err = capsys.readouterr().err
    assert code == 2 and "weights_only" not in err and not marker.exists()


def test_a_model_with_nan_weights_says_so(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """Instead of "no organ was found" on every scan."""
    import torch
    from safetensors.torch import load as load_st, save as save_st

    from scdl.models.package import package_files, write_files
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(tiny_model)
    files = package_files(pkg.card, pkg.state_dicts(), pkg.labels)
    tensors = load_st(files[pkg.card["weights"]])
    for key, value in tensors.items():
        if value.is_floating_point():
            tensors[key] = torch.full_like(value, float("nan"))
    files[pkg.card["weights"]] = save_st(tensors, metadata={"format": "pt"})
    broken = write_files(tmp_path / "nan-model", files)
    code = run_scdl(["segment", str(_ct(tmp_path / "ct.nii.gz")), "-o", str(tmp_path / "seg.nii.gz"), "--model",
                     str(broken), "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and "NaN or infinite" in _one_error(err) and "no organ" not in err


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_a_detached_header_reads_only_beside_itself(suffix: str, tmp_path: Path, monkeypatch) -> None:
    from scdl.io.image import read_image

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.raw").write_bytes(bytes(range(256)) * 4)          # 1024 bytes = 16 x 8 x 8 uint8
    header = tmp_path / "scan" / f"ct{suffix}"
    header.parent.mkdir()
    if suffix == ".nhdr":
        header.write_text(f"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 16 8 8\nencoding: raw\n"
                          f"data file: {outside / 'secret.raw'}\n\n", encoding="ascii")
    else:
        header.write_text("ObjectType = Image\nNDims = 3\nDimSize = 16 8 8\nElementType = MET_UCHAR\n"
                          "ElementDataFile = ../outside/secret.raw\n", encoding="ascii")
    with pytest.raises(ScdlError, match="outside the header's own folder") as info:
        read_image(header)
    assert str(header) in str(info.value) and "SCDL_ALLOW_EXTERNAL_DATA=1" in str(info.value)
    monkeypatch.setenv("SCDL_ALLOW_EXTERNAL_DATA", "1")                    # the user's explicit permission
    assert read_image(header).GetSize() == (16, 8, 8)


def test_an_overlong_output_name_fails_before_the_inference(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """247 characters fit the file system, its temporary name (+18) does not: said before any work."""
    ct = _ct(tmp_path / "ct.nii.gz")
    target = tmp_path / ("a" * 240 + ".nii.gz")
    code = run_scdl(["segment", str(ct), "-o", str(target), "--model", str(tiny_model), "--progress", "json"])
    out, err = capsys.readouterr()
    line = _one_error(err, target)
    assert code == 2 and "too long" in line and "at most 237 bytes" in line and '"phase": "read"' not in out


# -- 20 more cases (an attacker and a careless user; docs/faults.md, "Round two: 20 more cases") ----------
def test_x01_an_output_link_is_replaced_never_followed(tmp_path: Path, tiny_model: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    link = tmp_path / "seg.nii.gz"
    link.symlink_to(precious)
    assert run_scdl(["segment", str(_ct(tmp_path / "ct.nii.gz")), "-o", str(link), "--model", str(tiny_model),
                     "--progress", "none"]) == 0
    assert precious.read_text(encoding="utf-8") == "mine" and not link.is_symlink()


def test_x02_an_output_that_is_a_fifo_or_folder_is_refused(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """`-o /dev/null` as root would have replaced the device by a file (the write renames onto the target)."""
    fifo = tmp_path / "seg.nii.gz"
    os.mkfifo(fifo)
    folder = tmp_path / "scores.json"
    folder.mkdir()
    ct = _ct(tmp_path / "ct.nii.gz")
    label = _label_map(tmp_path / "l.nii.gz", (slice(5, 15), slice(10, 20), slice(10, 30)))
    for args, target, words in ((["segment", str(ct), "-o", str(fifo), "--model", str(tiny_model)], fifo,
                                 "named pipe"),
                                (["evaluate", str(label), str(label), "--json", str(folder)], folder, "is a folder")):
        code = run_scdl(args)
        assert code == 2 and words in _one_error(capsys.readouterr().err, target)
    assert fifo.exists() and not fifo.is_file() and folder.is_dir()


def test_x03_to_x05_a_fifo_as_manifest_label_table_or_config(tmp_path: Path) -> None:
    """The --config FIFO hung; the manifest and label table FIFOs were reported as a folder / a missing file."""
    for name in ("cohort.csv", "labels.csv", "config.json"):
        os.mkfifo(tmp_path / name)
    manifest = tmp_path / "ok.csv"
    manifest.write_text("image,label\n", encoding="utf-8")
    label = _label_map(tmp_path / "l.nii.gz", (slice(5, 15), slice(10, 20), slice(10, 30)))
    for args, name in ((["train", "--cohort", "cohort.csv", "--out", "r", "--check-only"], "cohort.csv"),
                       (["evaluate", str(label), str(label), "--labels", "labels.csv"], "labels.csv"),
                       (["train", "--cohort", "ok.csv", "--out", "r", "--check-only", "--config", "config.json"],
                        "config.json")):
        done = _scdl_child(args, tmp_path, timeout=300)
        assert done.returncode == 2 and "named pipe" in _one_error(done.stderr, name), done.stderr[-2000:]


def test_x06_package_files_that_are_links_to_devices(tmp_path: Path, tiny_model: Path, capsys) -> None:
    package = tmp_path / "pkg"
    shutil.copytree(tiny_model, package)
    (package / "weights.safetensors").unlink()
    (package / "weights.safetensors").symlink_to("/dev/zero")
    code = run_scdl(["segment", str(_ct(tmp_path / "ct.nii.gz")), "-o", str(tmp_path / "s.nii.gz"), "--model",
                     str(package), "--progress", "none"])
    assert code == 2 and "weights.safetensors" in _one_error(capsys.readouterr().err)


def test_x07_a_crafted_package_with_a_deeply_nested_card(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """card.json of 100,000 nested arrays, with a manifest that matches it: a RecursionError traceback before."""
    import hashlib

    package = tmp_path / "pkg"
    shutil.copytree(tiny_model, package)
    card = ("[" * 100_000 + "]" * 100_000).encode()
    (package / "card.json").write_bytes(card)
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    manifest["files"]["card.json"] = {"sha256": hashlib.sha256(card).hexdigest(), "size": len(card)}
    (package / "manifest.json").write_text(json.dumps(manifest))
    code = run_scdl(["segment", str(_ct(tmp_path / "ct.nii.gz")), "-o", str(tmp_path / "s.nii.gz"), "--model",
                     str(package), "--progress", "none"])
    assert code == 2 and "not valid JSON" in _one_error(capsys.readouterr().err, package / "card.json")


def test_x08_a_label_value_of_four_billion(tmp_path: Path, capsys) -> None:
    """One voxel of value 4e9 made evaluate allocate a table of 4e9 classes ("out of memory ... smaller batch")."""
    arr = np.zeros(SHAPE, np.uint32)
    arr[5:10, 5:10, 5:10] = 4_000_000_000
    path = tmp_path / "huge.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path), True)
    code = run_scdl(["evaluate", str(path), str(path)])
    assert code == 2 and "label values up to 4000000000" in _one_error(capsys.readouterr().err, path)


def test_x09_to_x11_headers_that_lie(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """A plain NIfTI named .nii.gz; a NRRD header promising 10^15 voxels; a gzipped NIfTI header promising 30000^3:
    one line each, no allocation."""
    plain = _ct(tmp_path / "plain.nii")
    fake_gz = tmp_path / "fake.nii.gz"
    fake_gz.write_bytes(plain.read_bytes())
    big = tmp_path / "big.nrrd"
    big.write_bytes(b"NRRD0004\ntype: int16\ndimension: 3\nsizes: 100000 100000 100000\nencoding: raw\n\n"
                    + os.urandom(1000))
    header = bytearray(plain.read_bytes())
    header[42:48] = struct.pack("<3h", 30000, 30000, 30000)
    import gzip

    huge = tmp_path / "huge.nii.gz"
    huge.write_bytes(gzip.compress(bytes(header)))
    for path, words in ((fake_gz, "cannot be read as NIfTI"), (big, "cannot be read as .nrrd"), (huge, "truncated")):
        code = run_scdl(["segment", str(path), "-o", str(tmp_path / "s.nii.gz"), "--model", str(tiny_model),
                         "--progress", "none"])
        assert code == 2 and words in _one_error(capsys.readouterr().err, path), path


def test_x12_a_manifest_path_with_a_forged_event(tmp_path: Path, capsys) -> None:
    manifest = tmp_path / "cohort.csv"
    manifest.write_text('image,label\n"ct\n{""phase"": ""done"", ""output"": ""x""}.nii.gz",\n', encoding="utf-8")
    run_scdl(["train", "--cohort", str(manifest), "--out", str(tmp_path / "r"), "--check-only", "--preset", "cpu",
              "--device", "cpu", "--progress", "none"])
    out, err = capsys.readouterr()
    assert not [line for line in (out + err).splitlines() if line.startswith("{")]
    assert any('ct\\n{"phase"' in line for line in out.splitlines() if line.startswith("error:"))


def test_x13_x14_run_folder_mistakes(tmp_path: Path, capsys) -> None:
    """--out naming a file ("could not write the file (Not a directory)" before); --resume of a run whose
    config.json is garbage."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    manifest = tmp_path / "cohort.csv"
    manifest.write_text("image,label\n", encoding="utf-8")
    code = run_scdl(["train", "--cohort", str(manifest), "--out", str(afile), "--preset", "cpu", "--progress", "none"])
    assert code == 2 and "is a file, not a folder" in _one_error(capsys.readouterr().err, afile)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[" * 100_000)
    (run / "checkpoint.pt").write_bytes(b"x")
    code = run_scdl(["train", "--resume", str(run), "--progress", "none"])
    assert code == 2 and "cannot be read" in _one_error(capsys.readouterr().err, run / "config.json")


def test_x15_a_dicom_folder_of_link_loops(tmp_path: Path, tiny_model: Path, capsys) -> None:
    folder = tmp_path / "dicom"
    folder.mkdir()
    (folder / "a").symlink_to(folder / "b")
    (folder / "b").symlink_to(folder / "a")
    code = run_scdl(["segment", str(folder), "-o", str(tmp_path / "s.nii.gz"), "--model", str(tiny_model),
                     "--progress", "none"])
    assert code == 2 and "no readable DICOM" in _one_error(capsys.readouterr().err, folder)


def test_x16_x17_names_that_escape_and_overwrite_that_deletes(tmp_path: Path, tiny_model: Path, capsys,
                                                              monkeypatch) -> None:
    """`models import --id ../../evil` stays in the cache; `phantom --overwrite` on a user's folder is refused."""
    import torch

    from scdl.models.package import ModelPackage

    monkeypatch.setenv("SCDL_HOME", str(tmp_path / "home"))
    torch.save(ModelPackage.load(tiny_model).state_dicts()[0], tmp_path / "net.pth")
    code = run_scdl(["models", "import", str(tmp_path / "net.pth"), "--id", "../../evil", "--labels", "synapse",
                     "--spacing", "6", "6", "6"])
    assert code == 2 and "not a valid model id" in _one_error(capsys.readouterr().err)
    assert not (tmp_path / "evil").exists()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.txt").write_text("years of work")
    code = run_scdl(["phantom", "--out", str(docs), "--cases", "2", "--size", "20,20,12", "--spacing", "6",
                     "--overwrite", "--progress", "none"])
    assert code == 2 and "not a phantom cohort" in _one_error(capsys.readouterr().err, docs)
    assert (docs / "thesis.txt").read_text(encoding="utf-8") == "years of work"


def test_x18_a_second_benchmark_does_not_delete_a_live_run(tmp_path: Path, monkeypatch) -> None:
    """Two `scdl bench ssl` into one --out: the second deleted the first one's run folder while it trained."""
    import scdl.bench.ssl_benchmark as bench
    from scdl.training.runfolder import RunFolder

    run = tmp_path / "runs" / "cps-seed0-abc"
    run.mkdir(parents=True)
    (run / "log.csv").write_text("iteration\n1\n")
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom scdl.training.runfolder import RunFolder\n"
                               f"lock = RunFolder({str(run)!r}).lock()\nprint('locked', flush=True)\ntime.sleep(120)"],
                              env=_child_env(tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"

        class Settings:
            def run_key(self, configuration):
                return "abc"

        monkeypatch.setattr(bench, "run_folder", lambda *args: run)
        with pytest.raises(ScdlError, match="another scdl train"):
            bench.run_one(tmp_path, Settings(), object(), 0, None, [], None)
        assert (run / "log.csv").is_file()
    finally:
        holder.kill()
        holder.wait()
    RunFolder(run).check_unlocked()


def test_x19_no_private_temporary_folder(tmp_path: Path, monkeypatch) -> None:
    """Where no private folder can be made (a full or read-only TMPDIR), a NIfTI is read directly unless a sibling
    would be read instead: then one line."""
    import tempfile

    from scdl.io.image import read_image

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    box = (slice(5, 15), slice(10, 20), slice(10, 30))
    path = _label_map(tmp_path / "m.nii.gz", box)
    monkeypatch.setattr(tempfile, "mkdtemp", full)
    assert sitk.GetArrayFromImage(read_image(path))[box].all()
    _label_map(tmp_path / "m.nii", (slice(0, 2), slice(0, 2), slice(0, 2)))
    with pytest.raises(ScdlError, match="cannot be read safely"):
        read_image(path)


def test_x20_an_uncertainty_map_onto_a_hard_link_of_the_ct(tmp_path: Path, tiny_model: Path, capsys) -> None:
    ct = _ct(tmp_path / "ct.nii.gz")
    os.link(ct, tmp_path / "u.nii.gz")
    before = ct.read_bytes()
    code = run_scdl(["segment", str(ct), "-o", str(tmp_path / "s.nii.gz"), "--uncertainty", str(tmp_path / "u.nii.gz"),
                     "--model", str(tiny_model), "--progress", "none"])
    assert code == 2 and "would overwrite the input CT" in _one_error(capsys.readouterr().err)
    assert ct.read_bytes() == before


def test_lock_of_a_dead_run_held_by_its_orphan_is_taken_over(tmp_path):
    """kill -9 of a run: its data-loader worker (a forked child holding the same lock) may outlive it; the lock
    names the dead run's PID, so the next run takes the folder over instead of refusing it."""
    import json as _json
    import subprocess as _sp
    import sys as _sys

    from scdl.training.runfolder import RunLock

    lock = tmp_path / "run" / ".scdl-train.lock"
    lock.parent.mkdir()
    holder = _sp.Popen([_sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, b'{\"pid\": 999999999, \"host\": \"' + os.uname().nodename.encode() + b'\"}')\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=_sp.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with RunLock(lock) as taken:
            assert taken.held
            assert _json.loads(lock.read_text(encoding="utf-8"))["pid"] == os.getpid()
    finally:
        holder.kill()
        holder.wait()
