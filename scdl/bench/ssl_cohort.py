"""The benchmark's phantom cohort: generated once per cohort key, reused by every configuration and seed."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from scdl.bench.ssl_settings import SSLBenchSettings
from scdl.errors import ScdlError
from scdl.progress import ProgressReporter
from scdl.training.cohort import MANIFEST_NAME

SPEC_NAME = "bench_cohort.json"


@dataclass(frozen=True)
class HeldOutCase:
    """One test case: the CT and its reference label map (absolute paths)."""

    name: str
    image: Path
    reference: Path


@dataclass(frozen=True)
class BenchCohort:
    """A generated cohort: its folder, its manifest and its test cases."""

    folder: Path
    manifest: Path
    test_cases: tuple[HeldOutCase, ...]


def cohort_folder(out: Path, settings: SSLBenchSettings) -> Path:
    return Path(out) / f"cohort-{settings.cohort_key()}"


def ensure_cohort(out: Path, settings: SSLBenchSettings, progress: Optional[ProgressReporter] = None) -> BenchCohort:
    """Generate the cohort of ``settings`` under ``out`` (``cohort-<key>/``) unless it is there already.

    The split is ``labeled`` labeled + ``unlabeled`` unlabeled training cases, no validation case and
    ``test`` test cases (``scdl phantom --labeled K --val 0 --test T``), LPS layout, default generator settings
    at ``spacing_mm``. The folder appears atomically (``write_cohort``), so an existing one is complete.
    """
    from scdl.phantom.cohort import Split, write_cohort
    from scdl.phantom.config import PhantomConfig

    folder = cohort_folder(out, settings)
    manifest = folder / MANIFEST_NAME
    spec_file = folder / SPEC_NAME
    if settings.cohort == "anatomy":            # synthetic CTs from real label maps, split by anatomy
        if not (manifest.is_file() and spec_file.is_file()):
            from scdl.bench.ssl_anatomy import write_anatomy_cohort
            from scdl.io.atomic import atomic_write_text

            write_anatomy_cohort(folder, settings, progress)
            atomic_write_text(spec_file, json.dumps(settings.cohort_spec(), indent=1, sort_keys=True) + "\n")
        return BenchCohort(folder, manifest, read_test_cases(manifest))
    if not (manifest.is_file() and spec_file.is_file()):
        config = PhantomConfig.from_dict({"spacing": [settings.spacing_mm] * 3})
        cases = settings.labeled + settings.unlabeled + settings.test
        split = Split(cases=cases, labeled=settings.labeled, val=0, test=settings.test)
        write_cohort(folder, config, split, settings.cohort_seed, overwrite=True, progress=progress)
        from scdl.io.atomic import atomic_write_text

        atomic_write_text(spec_file, json.dumps(settings.cohort_spec(), indent=1, sort_keys=True) + "\n")
    return BenchCohort(folder, manifest, read_test_cases(manifest))


def read_test_cases(manifest: Path) -> tuple[HeldOutCase, ...]:
    """The ``split=test`` rows of a phantom manifest, with their ``reference`` label maps."""
    base = manifest.resolve().parent
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if (r.get("split") or "").strip() == "test"]
    cases = []
    for row in rows:
        ref = (row.get("reference") or row.get("label") or "").strip()
        if not ref:
            raise ScdlError("a test case has no reference label map.", manifest,
                            "regenerate the cohort (delete the folder).")
        image = base / row["image"].strip()
        cases.append(HeldOutCase(image.name.split(".")[0], image, base / ref))
    if not cases:
        raise ScdlError("the cohort has no test case.", manifest, "use --test 1 or more.")
    return tuple(cases)


def class_volumes_ml(cases: tuple[HeldOutCase, ...], classes: dict[int, str]) -> dict[str, float]:
    """Mean volume (mL) of every class over the reference label maps of ``cases``.

    Args:
        classes: label value -> name (foreground only).
    Returns:
        name -> mean volume in mL (0.0 for a class no reference holds).
    """
    import SimpleITK as sitk

    totals = np.zeros(max(classes) + 1, dtype=np.float64)
    for case in cases:
        img = sitk.ReadImage(str(case.reference))
        arr = sitk.GetArrayViewFromImage(img)
        counts = np.bincount(arr.reshape(-1).astype(np.int64), minlength=len(totals))[: len(totals)]
        totals += counts * float(np.prod(img.GetSpacing())) / 1000.0
    return {name: float(totals[value] / len(cases)) for value, name in sorted(classes.items())}

