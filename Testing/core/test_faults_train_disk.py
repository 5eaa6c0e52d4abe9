"""A disk that fills up between two checkpoints of ``scdl train`` (issue 15): one line naming the checkpoint, the
previous checkpoint intact and resumable, no unfinished temporary file. The run folder is a small tmpfs (needs
root and mount rights; skipped with the reason otherwise)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from inprocess import run_scdl
from scdl.progress import Progress
from scdl.training import checkpoint as ckpt
from scdl.training.sample_cohort import make_crop_cohort
from test_faults import _fill, _tmpfs

TINY = ["patch_size=[32,32,32]", "preprocessing.spacing_mm=[6,6,6]", "data.num_workers=0", "threads=1",
        "log_every=1", "network.n_filters=2", "checkpoint_every=2", "validation.every=-1"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, patient_a_ct, patient_a_seg) -> Path:
    return make_crop_cohort(patient_a_ct, patient_a_seg, tmp_path_factory.mktemp("disk_cohort"))



@pytest.mark.parametrize("leave, fails", [(0, "log.csv"), (32 * 1024, "checkpoint.pt")],
                         ids=["nothing-left", "room-for-the-log-only"])
def test_a_full_disk_between_checkpoints(leave: int, fails: str, manifest: Path, tmp_path: Path, capsys,
                                         monkeypatch) -> None:
    """The disk fills up after the checkpoint of iteration 2; the next one (iteration 4) cannot be written:
    log.csv (written first) or checkpoint.pt fails, with one line that says the checkpoint of iteration 2 is
    kept and how to continue. After space was freed, ``--resume`` finishes the run."""
    with _tmpfs(tmp_path, 16 * 1024) as disk:
        run = disk / "run"
        saved: list[int] = []
        original = Progress.emit

        def emit_then_fill(self, record):
            original(self, record)
            if record.kind == "checkpoint":       # checkpoint and log.csv written; then the disk fills up
                saved.append(int(record.iteration))
                if len(saved) == 1:
                    _fill(disk, leave)

        monkeypatch.setattr(Progress, "emit", emit_then_fill)
        code = run_scdl(["train", "--cohort", str(manifest), "--out", str(run), "--preset", "cpu", "--framework",
                      "supervised", "--iterations", "8", "--device", "cpu", "--progress", "none",
                      "--cache-dir", str(tmp_path / "cache"), *[a for s in TINY for a in ("--set", s)]])
        out, err = capsys.readouterr()
        assert code == 2, err[-3000:]
        assert "Traceback" not in err
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, err[-3000:]
        line = errors[0]
        assert line.startswith(f"error: {run / fails}: ") and ".partial-" not in line, line
        assert "disk is full" in line and f"scdl train --resume {run}" in line, line
        assert "the checkpoint of iteration 2 (checkpoint.pt) is kept" in line, line
        assert saved == [2]
        assert not [p.name for p in run.iterdir() if ".partial-" in p.name]
        assert ckpt.load_checkpoint(run / "checkpoint.pt")["iteration"] == 2        # the previous one, intact
        (disk / "filler.bin").unlink()
        monkeypatch.setattr(Progress, "emit", original)
        assert run_scdl(["train", "--resume", str(run), "--progress", "none"]) == 0, capsys.readouterr().err[-3000:]
        assert ckpt.load_checkpoint(run / "checkpoint.pt")["iteration"] == 8
        assert (run / "model" / "card.json").is_file()
        with (run / "log.csv").open() as handle:                 # no row missing, none twice
            assert [int(r["iteration"]) for r in csv.DictReader(handle)] == list(range(1, 9))
        assert not [p.name for p in run.iterdir() if ".partial-" in p.name]
