"""The run folder (issue 14): ``scdl.training.runfolder`` is the one place that names the files of a run and
says whether a folder can be resumed; the trainer, the CLI and the benchmarks go through it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from scdl.errors import ScdlError
from scdl.training import runfolder
from scdl.training.runfolder import RunFolder, can_resume, load_run_config

REPO = Path(__file__).resolve().parents[2]
#: File names of a run folder that only runfolder.py may spell (labels.csv and card.json are also the model
#: package's, owned by scdl/models/card.py).
NAMES = {runfolder.CONFIG, runfolder.COHORT_REPORT, runfolder.CHECKPOINT, runfolder.BEST, runfolder.LOG,
         runfolder.VALIDATION, runfolder.CURVES, runfolder.CHILD_LOG, runfolder.CHILD_CONFIG,
         runfolder.RECIPE_COHORT}
OWNERS = {REPO / "scdl" / "training" / "runfolder.py"}
#: Benchmarks another session is editing now (issue 14 round: left for later).
NOT_YET = {REPO / "bench" / n for n in ("step.py", "inference.py", "train.py")}


def test_names_are_the_documented_ones() -> None:
    assert (runfolder.CONFIG, runfolder.LABELS, runfolder.COHORT_REPORT, runfolder.CHECKPOINT, runfolder.BEST,
            runfolder.LOG, runfolder.VALIDATION, runfolder.CURVES, runfolder.MODEL) == (
        "config.json", "labels.csv", "cohort_report.json", "checkpoint.pt", "best.pt", "log.csv",
        "validation.csv", "curves.png", "model")
    from scdl.models.card import CARD_FILE
    from scdl.training import checkpoint, runlog, trainer

    assert runfolder.MODEL_CARD == CARD_FILE
    assert (checkpoint.CHECKPOINT_NAME, checkpoint.BEST_NAME) == (runfolder.CHECKPOINT, runfolder.BEST)
    assert (runlog.LOG_NAME, runlog.VAL_NAME, runlog.CURVES_NAME) == (runfolder.LOG, runfolder.VALIDATION,
                                                                       runfolder.CURVES)
    assert trainer.CONFIG_NAME == runfolder.CONFIG and trainer.load_run_config is load_run_config


def test_states(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    assert folder.path == tmp_path / "run" and RunFolder(str(tmp_path / "run")) == folder
    assert not folder.holds_run() and not folder.can_resume() and not folder.is_finished()
    folder.path.mkdir()
    folder.checkpoint.write_bytes(b"x")
    assert folder.holds_run() and not folder.can_resume()          # a checkpoint without config.json
    folder.config.write_text("{}")
    assert folder.can_resume() and can_resume(folder.path) and folder.result_files() == [folder.config]
    folder.model_dir.mkdir()
    folder.model_card.write_text("{}")
    assert folder.is_finished() and not folder.can_resume()
    assert folder.result_files()[-1] == folder.model_card
    assert folder.scene_cohort_manifest == folder.path / "cohort" / "manifest.csv"


def test_load_config(tmp_path: Path) -> None:
    with pytest.raises(ScdlError, match="config.json is missing"):
        load_run_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ScdlError, match="cannot be read"):
        RunFolder(tmp_path).load_config()
    (tmp_path / "config.json").write_text('{"framework": "cps"}')
    assert load_run_config(tmp_path) == {"framework": "cps"}


def test_recipe_files(tmp_path: Path) -> None:
    assert runfolder.recipe_files(tmp_path) == (tmp_path / "config.json", tmp_path / "cohort.json")


def _spelled(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{path.relative_to(REPO)}:{n.lineno}: {n.value!r}" for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in NAMES]


def test_no_other_core_or_bench_file_spells_the_names() -> None:
    files = [p for p in [*(REPO / "scdl").rglob("*.py"), *(REPO / "bench").glob("*.py")] if p not in OWNERS | NOT_YET]
    found = [hit for p in files for hit in _spelled(p)]
    assert found == []

