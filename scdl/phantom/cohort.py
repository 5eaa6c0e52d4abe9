"""Write a phantom cohort: images, label maps, a training manifest and a provenance file.

Layout of ``DIR`` (written into a temporary sibling folder and renamed at the end, so an interrupted run
leaves nothing behind)::

    DIR/images/case_000.nii.gz      int16 HU
    DIR/labels/case_000.nii.gz      uint8 Synapse labels (written for EVERY case, also the unlabeled ones)
    DIR/manifest.csv                image,label,split,labels,reference
    DIR/phantom.json                generator settings, seed and per-case subject parameters

Cases are assigned in order: the first ``labeled`` are labeled training cases, then the unlabeled training
cases (``label`` empty), then ``val`` validation cases and ``test`` test cases (both with labels). The column
``reference`` always holds the case's label map, so the unlabeled cases can be evaluated too; the trainer
ignores it. ``labels`` names the bundled label table ``synapse``.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scdl import __version__
from scdl.errors import ScdlError
from scdl.io.atomic import atomic_dir
from scdl.progress import ProgressReporter
from scdl.phantom.anatomy import SYNAPSE_ORGANS
from scdl.phantom.config import PhantomConfig
from scdl.phantom.generator import generate_case
from scdl.training.cohort import MANIFEST_NAME

MANIFEST_COLUMNS = ("image", "label", "split", "labels", "reference")
LABEL_TABLE = "synapse"
PROVENANCE = "phantom.json"


@dataclass(frozen=True)
class Split:
    """How many cases go where: ``labeled`` + unlabeled (the rest) + ``val`` + ``test`` = ``cases``."""

    cases: int
    labeled: int
    val: int
    test: int

    @property
    def unlabeled(self) -> int:
        return self.cases - self.labeled - self.val - self.test

    def of(self, index: int) -> tuple[str, bool]:
        """(split, labeled in the manifest) of case ``index``."""
        if index < self.labeled:
            return "train", True
        if index < self.labeled + self.unlabeled:
            return "train", False
        if index < self.labeled + self.unlabeled + self.val:
            return "val", True
        return "test", True


def default_split(cases: int, labeled: Optional[int] = None, val: Optional[int] = None,
                  test: Optional[int] = None) -> Split:
    """Defaults: 1 in 10 cases for validation (at least 1 from 3 cases on), no test cases, and 20 % of the
    training cases labeled (at least 1); raise :class:`ScdlError` for impossible numbers."""
    if cases < 1:
        raise ScdlError(f"--cases must be at least 1, not {cases}.", fix="ask for one case or more.")
    val = (max(1, cases // 10) if cases >= 3 else 0) if val is None else val
    test = 0 if test is None else test
    if val < 0 or test < 0:
        raise ScdlError("--val and --test must not be negative.", fix="use 0 or more.")
    train = cases - val - test
    labeled = max(1, round(0.2 * train)) if labeled is None else labeled
    if labeled < 0 or train < 1 or labeled > train:
        raise ScdlError(f"{cases} cases cannot hold {labeled} labeled training + {val} validation + {test} test cases.",
                        fix="raise --cases or lower --labeled/--val/--test.")
    return Split(cases, labeled, val, test)


def case_name(index: int) -> str:
    return f"case_{index:03d}"


def _write_case(config: PhantomConfig, seed: int, index: int, folder: str) -> dict[str, Any]:
    """Generate and write one case into ``folder``; return its summary (runs in a worker process too)."""
    from scdl.io.writers import write_image, write_label_map

    case = generate_case(config, seed, index)
    image, label = case.to_sitk()
    name = case_name(index)
    write_image(image, Path(folder) / "images" / f"{name}.nii.gz")
    write_label_map(label, Path(folder) / "labels" / f"{name}.nii.gz")
    voxel_ml = float(np.prod(case.spacing)) / 1000.0
    counts = np.bincount(case.label.ravel(), minlength=len(SYNAPSE_ORGANS) + 1)
    return {
        "case": name,
        "orientation": case.subject["orientation"],
        "volumes_ml": {SYNAPSE_ORGANS[v]: round(float(counts[v]) * voxel_ml, 2) for v in SYNAPSE_ORGANS},
        "hu": {SYNAPSE_ORGANS[v]: round(case.hu[v][0], 1) for v in SYNAPSE_ORGANS},
        "subject": {k: v for k, v in case.subject.items() if k not in ("organs", "hu_offsets")},
    }


def manifest_text(split: Split) -> str:
    """The manifest CSV of a cohort laid out by :func:`write_cohort` (scdl.training.cohort writes it)."""
    from scdl.training.cohort import manifest_text as cohort_manifest_text

    rows = []
    for index in range(split.cases):
        name = case_name(index)
        which, labeled = split.of(index)
        label = f"labels/{name}.nii.gz"
        rows.append({"image": f"images/{name}.nii.gz", "label": label if labeled else "", "split": which,
                     "labels": LABEL_TABLE, "reference": label})
    return cohort_manifest_text(rows, MANIFEST_COLUMNS)


def _check_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ScdlError("exists and is not a folder.", out, "choose a new folder for the cohort.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ScdlError("the output folder is not empty.", out, "choose a new folder, or pass --overwrite to "
                                                                    "replace a cohort written before by scdl phantom.")
        if not (out / PROVENANCE).is_file():
            raise ScdlError(f"the folder is not a phantom cohort (no {PROVENANCE}); refusing to replace it.", out,
                            "choose a new or empty folder.")


def write_cohort(out: os.PathLike | str, config: PhantomConfig, split: Split, seed: int = 0, *,
                 workers: int = 1, overwrite: bool = False, progress: Optional[ProgressReporter] = None) -> Path:
    """Generate ``split.cases`` phantoms into ``out`` atomically; return the manifest path.

    Args:
        out: cohort folder (created; an existing non-empty one only with ``overwrite`` and if it is a cohort).
        config: generator settings.
        split: labeled / unlabeled / val / test counts (see :func:`default_split`).
        seed: cohort seed; case i depends only on (seed, i) and the config.
        workers: processes generating cases in parallel (the output does not depend on it).
        progress: optional :class:`scdl.progress.Progress` (phase ``phantom``; cancellation is honoured).
    """
    out = Path(out).expanduser()
    config.validate()
    if workers < 1:
        raise ScdlError(f"--workers must be at least 1, not {workers}.", fix="use --workers 1 or more.")
    _check_target(out, overwrite)
    summaries: dict[int, dict[str, Any]] = {}
    with atomic_dir(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        phase = progress.phase("phantom", split.cases) if progress is not None else None
        try:
            if workers == 1:
                for index in range(split.cases):
                    if progress is not None:
                        progress.check_cancelled()
                    summaries[index] = _write_case(config, seed, index, str(tmp))
                    if phase is not None:
                        phase.advance()
            else:
                with ProcessPoolExecutor(max_workers=min(workers, split.cases)) as pool:
                    pending = {pool.submit(_write_case, config, seed, i, str(tmp)): i for i in range(split.cases)}
                    try:
                        while pending:
                            done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                            if progress is not None:
                                progress.check_cancelled()
                            for future in done:
                                summaries[pending.pop(future)] = future.result()
                                if phase is not None:
                                    phase.advance()
                    except BaseException:
                        pool.shutdown(wait=True, cancel_futures=True)
                        raise
        finally:
            if phase is not None:
                phase.close()
        provenance = {
            "generator": f"scdl {__version__} phantom",
            "seed": seed,
            "split": {"cases": split.cases, "labeled": split.labeled, "unlabeled": split.unlabeled,
                      "val": split.val, "test": split.test},
            "label_table": LABEL_TABLE,
            "labels": {str(v): n for v, n in SYNAPSE_ORGANS.items()},
            "config": config.to_dict(),
            "cases": [summaries[i] for i in range(split.cases)],
        }
        (tmp / PROVENANCE).write_text(json.dumps(provenance, indent=1), encoding="utf-8")
        (tmp / MANIFEST_NAME).write_text(manifest_text(split), encoding="utf-8")
    return out / MANIFEST_NAME
