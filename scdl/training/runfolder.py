"""The run folder of ``scdl train --out RUN_DIR``: the one place that names its files and says what state it is in.

Layout (written by :class:`scdl.training.trainer.Trainer`)::

    RUN_DIR/config.json          the resolved settings (what --resume reloads)
    RUN_DIR/labels.csv           the classes the model learns
    RUN_DIR/cohort_report.json   the cohort check (problems, cases, annotated classes, validation source)
    RUN_DIR/checkpoint.pt        the latest checkpoint (exact resume)
    RUN_DIR/best.pt              the networks of the best validation
    RUN_DIR/log.csv              one row per logged iteration
    RUN_DIR/validation.csv       one row per validation
    RUN_DIR/curves.png           training curves
    RUN_DIR/model/               the model package of a finished run (model/card.json)
    RUN_DIR/cohort/manifest.csv  the cohort that SCDL Train exported from the scene (when it started the run)
    RUN_DIR/train.log            stderr of a child ``scdl train`` (SSL benchmark), beside
    RUN_DIR/bench_train_config.json  the ``--config`` file it gave that child

States: **empty** (no checkpoint), **resumable** (config.json + checkpoint.pt, no model yet: a stopped run),
**finished** (model/card.json written). ``scdl train --out`` refuses a folder that holds a checkpoint.

Recipe folders (``Resources/Models/recipes/<id>/``, read by ``bench/train_default_model.py``) hold
:data:`RECIPE_CONFIG` (an ``scdl train --config`` file) and :data:`RECIPE_COHORT` (data and split).
The file names are a contract with the SCDL Train module and with users' scripts: extend, never rename.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scdl.errors import ScdlError

CONFIG = "config.json"
LABELS = "labels.csv"
COHORT_REPORT = "cohort_report.json"
CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
LOG = "log.csv"
VALIDATION = "validation.csv"
CURVES = "curves.png"
MODEL = "model"
MODEL_CARD = "card.json"          # = scdl.models.card.CARD_FILE, inside MODEL

SCENE_COHORT = "cohort"          # folder of the cohort exported from the Slicer scene
CHILD_LOG = "train.log"           # stderr of a child scdl train (scdl.bench.ssl_train)
CHILD_CONFIG = "bench_train_config.json"   # the --config file given to that child

#: The files worth handing over or showing after a run (relative to RUN_DIR; the package's card last).
RESULT_FILES = (CURVES, LOG, VALIDATION, CONFIG, COHORT_REPORT, f"{MODEL}/{MODEL_CARD}")

RECIPE_CONFIG = "config.json"
RECIPE_COHORT = "cohort.json"


def recipe_files(folder: os.PathLike | str) -> tuple[Path, Path]:
    """(config, cohort) file paths of a recipe folder."""
    return Path(folder) / RECIPE_CONFIG, Path(folder) / RECIPE_COHORT


@dataclass(frozen=True)
class RunFolder:
    """Paths and state of one run folder (nothing is read or written on construction)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- files ---------------------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def labels(self) -> Path:
        return self.path / LABELS

    @property
    def cohort_report(self) -> Path:
        return self.path / COHORT_REPORT

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def best(self) -> Path:
        return self.path / BEST

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def validation(self) -> Path:
        return self.path / VALIDATION

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL

    @property
    def model_card(self) -> Path:
        return self.path / MODEL / MODEL_CARD

    @property
    def scene_cohort_dir(self) -> Path:
        return self.path / SCENE_COHORT

    @property
    def scene_cohort_manifest(self) -> Path:
        from scdl.training.cohort import MANIFEST_NAME

        return self.path / SCENE_COHORT / MANIFEST_NAME

    @property
    def child_log(self) -> Path:
        return self.path / CHILD_LOG

    @property
    def child_config(self) -> Path:
        return self.path / CHILD_CONFIG

    def result_files(self) -> list[Path]:
        """:data:`RESULT_FILES` that exist, as paths."""
        return [self.path / name for name in RESULT_FILES if (self.path / name).is_file()]

    # -- state ---------------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """A run was started here (a checkpoint exists): ``scdl train --out`` refuses the folder."""
        return self.checkpoint.exists()

    def is_finished(self) -> bool:
        """The run ended with a model package."""
        return self.model_card.is_file()

    def can_resume(self) -> bool:
        """A stopped run that ``scdl train --resume`` continues: config and checkpoint, no model yet."""
        return self.config.is_file() and self.checkpoint.is_file() and not self.is_finished()

    def load_config(self) -> dict[str, Any]:
        """The resolved config of the run (for ``--resume``); one clear error when it is missing or damaged."""
        if not self.config.is_file():
            raise ScdlError(f"this folder holds no training run ({CONFIG} is missing).", self.path,
                            "give the RUN_DIR of an earlier scdl train (the --out folder).")
        try:
            config = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ScdlError(f"the run's {CONFIG} cannot be read ({err}).", self.config,
                            "restore the file or start a new run.") from None
        return config


def can_resume(run_dir: os.PathLike | str) -> bool:
    """:meth:`RunFolder.can_resume` of ``run_dir``."""
    return RunFolder(run_dir).can_resume()


def load_run_config(run_dir: os.PathLike | str) -> dict[str, Any]:
    """:meth:`RunFolder.load_config` of ``run_dir``."""
    return RunFolder(run_dir).load_config()
