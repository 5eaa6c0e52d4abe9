"""The benchmark's anatomy cohort: synthetic CTs drawn from real label maps, split by anatomy.

``scdl bench ssl --cohort anatomy``. Four real anatomies (TotalSegmentator v2 label maps under the shared data
folder, ``../shared/data``; licences in its README):

- ``A``: patient A of the TotalSegmentator fixtures (abdomen + pelvis, 3 mm, label map on its real CT's grid);
- ``s0001``, ``s0004``, ``s0006``: the TotalSegmentator dataset subjects (label maps only, 1.5 mm; s0006 read from
  its mask folder).

Patient B (the bundled demo sample) is never used: it is held out for the default model (``HELD_OUT``).

The split is by ANATOMY: the training anatomies (default s0004, s0006: s0004 is the only one with an oesophagus)
give the labeled and the unlabeled cases, the test anatomies (default A, s0001) the test cases; no anatomy is on
both sides (:func:`check_split`). Every case is one synthesis (:func:`scdl.synth.volume.synthesize_image`) of its
anatomy with its own seed: the phase drawn from native / arterial / portal, an elastic deformation of the anatomy
before synthesis, in-plane voxels of ``spacing_mm`` and a slice spacing drawn in [1, 1.5] x ``spacing_mm``
(slice thickness of the synthesis = 1 to 1.25 x the slice spacing). Its label map is mapped onto the Synapse table
by structure name (:func:`scdl.labels.mapping.map_label_array`); unlabeled cases are written without it. When A is
a test anatomy, A's real CT (with its own label map) is the first test case.

Labeled, unlabeled and test cases are different draws (different seeds); the anatomies are taken in turn. The
whole cohort is a function of the cohort seed and the split (same seed, same files).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from scdl.errors import ScdlError
from scdl.progress import ProgressReporter

#: Version of the anatomy cohort's recipe (part of the cohort key: a change gives a new cohort folder).
GENERATOR = "anatomy-1"
SOURCE_TABLE = "totalsegmentator_v2"
TARGET_TABLE = "synapse"
PROVENANCE_NAME = "anatomy_cohort.json"


@dataclass(frozen=True)
class Anatomy:
    """One real anatomy: a label map (relative to the shared data folder) and, when it exists, its real CT."""

    name: str
    label: str
    patient: str
    description: str
    ct: str = ""


ANATOMIES: dict[str, Anatomy] = {a.name: a for a in (
    Anatomy("A", "totalsegmentator_fixtures/example_seg_fast_force_split.nii.gz", "totalsegmentator-fixtures/patient-A",
            "abdomen + pelvis, 3 mm, real CT; all Synapse organs but the oesophagus (silver labels)",
            ct="totalsegmentator_fixtures/example_ct.nii.gz"),
    Anatomy("s0001", "totalsegmentator_dataset/s0001_seg.nii.gz", "totalsegmentator-dataset/s0001",
            "abdomen, 1.5 mm, oblique; no gallbladder, no oesophagus; no image"),
    Anatomy("s0004", "totalsegmentator_dataset/s0004_seg.nii.gz", "totalsegmentator-dataset/s0004",
            "chest-abdomen-pelvis, 1.5 mm, oblique; all 13 Synapse organs; no image"),
    Anatomy("s0006", "totalsegmentator_dataset/s0006_masks", "totalsegmentator-dataset/s0006",
            "abdomen, 1.5 mm, mask folder; no oesophagus; no image"),
)}
#: Patient B: the demo sample, held out of every training and benchmark (never read here).
HELD_OUT: tuple[str, ...] = ("totalsegmentator_fixtures/example_ct_dicom", "totalsegmentator_fixtures/example_seg_dicom.nii.gz")
PHASES: tuple[str, ...] = ("native", "arterial", "portal")
ROLES: tuple[str, ...] = ("labeled", "unlabeled", "test")


def default_data_dir() -> Path:
    """``$SCDL_SHARED/data``, else ``shared/data`` beside the checkout (``<repo>/../shared/data``)."""
    env = os.environ.get("SCDL_SHARED")
    if env:
        return Path(env) / "data"
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def check_split(train: Sequence[str], test: Sequence[str]) -> None:
    """Refuse unknown anatomies, an empty side, repeats, or an anatomy on both sides."""
    for side, names in (("training", train), ("test", test)):
        if not names:
            raise ScdlError(f"benchmark setting anatomies: no {side} anatomy.",
                            fix=f"name one or more of {', '.join(ANATOMIES)}.")
        unknown = [n for n in names if n not in ANATOMIES]
        if unknown:
            raise ScdlError(f"benchmark setting anatomies: {', '.join(unknown)} unknown.",
                            fix=f"use {', '.join(ANATOMIES)} (patient B is held out).")
        if len(set(names)) != len(names):
            raise ScdlError(f"benchmark setting anatomies: a {side} anatomy is repeated ({', '.join(names)}).",
                            fix="name each anatomy once.")
    both = sorted(set(train) & set(test))
    if both:
        raise ScdlError(f"benchmark setting anatomies: {', '.join(both)} both a training and a test anatomy.",
                        fix="split by anatomy: every anatomy on one side only.")


def _case_seed(cohort_seed: int, role: str, index: int) -> int:
    return int(np.random.SeedSequence([int(cohort_seed), ROLES.index(role), int(index), 0xA7A7]).generate_state(1)[0])


def plan_cases(settings: Any) -> list[dict[str, Any]]:
    """The cases of the cohort (no file is read): name, role, anatomy, seed, phase, slice spacing, real or not.

    Anatomies are taken in turn within each role; with A among the test anatomies, test case 0 is A's real CT.
    """
    train, test = tuple(settings.train_anatomies), tuple(settings.test_anatomies)
    check_split(train, test)
    rows: list[dict[str, Any]] = []
    counts = {"labeled": settings.labeled, "unlabeled": settings.unlabeled, "test": settings.test}
    for role in ROLES:
        pool = test if role == "test" else train
        real_first = role == "test" and any(ANATOMIES[a].ct for a in pool)
        real = [a for a in pool if ANATOMIES[a].ct]
        # after the real CT(s), the synthetic draws start with the anatomies that have no real CT
        draws = sorted(pool, key=lambda a: bool(ANATOMIES[a].ct)) if real_first else list(pool)
        for index in range(counts[role]):
            seed = _case_seed(settings.cohort_seed, role, index)
            rng = np.random.default_rng(seed)
            if real_first and index < len(real):
                rows.append({"name": f"{role}_{index:03d}_{real[index]}_real", "role": role, "anatomy": real[index],
                             "real": True, "seed": None, "phase": "", "slice_spacing_mm": None})
                continue
            k = index - (len(real) if real_first else 0)
            anatomy = draws[k % len(draws)]
            phase = PHASES[int(rng.integers(len(PHASES)))]
            z = float(np.round(settings.spacing_mm * rng.uniform(1.0, 1.5) * 4.0) / 4.0)   # 0.25 mm steps
            rows.append({"name": f"{role}_{index:03d}_{anatomy}", "role": role, "anatomy": anatomy, "real": False,
                         "seed": seed, "phase": phase, "slice_spacing_mm": z})
    return rows


def _read_anatomy(data: Path, anatomy: Anatomy):
    import SimpleITK as sitk

    from scdl.io.image import read_label_map

    for held in HELD_OUT:
        if Path(anatomy.label) == Path(held) or (anatomy.ct and Path(anatomy.ct) == Path(held)):
            raise ScdlError("patient B is held out (the demo sample).", data / held, "use another anatomy.")
    path = data / anatomy.label
    if not path.exists():
        raise ScdlError("anatomy label map missing.", path,
                        "give the shared data folder with --data (it holds totalsegmentator_dataset/).")
    label = read_label_map(path, table=SOURCE_TABLE)
    ct = sitk.ReadImage(str(data / anatomy.ct)) if anatomy.ct else None
    return label, ct


def _to_synapse(label, source, target):
    import SimpleITK as sitk

    from scdl.labels.mapping import map_label_array

    mapped, _unknown = map_label_array(sitk.GetArrayViewFromImage(label), source, target)
    out = sitk.GetImageFromArray(mapped.astype(np.uint8))
    out.CopyInformation(label)
    return out


def write_anatomy_cohort(folder: Path, settings: Any, progress: Optional[ProgressReporter] = None) -> dict[str, Any]:
    """Generate the anatomy cohort of ``settings`` into ``folder`` (atomically); return its provenance.

    Writes ``images/``, ``labels/`` (labeled + test), ``manifest.csv`` (columns image, label, split, labels,
    reference, anatomy) and ``anatomy_cohort.json`` (split, every case's draw, generation time).
    """
    import SimpleITK as sitk

    from scdl.labels.table import LabelTable
    from scdl.synth.volume import synthesize_image
    from scdl.training.cohort import MANIFEST_NAME, manifest_text

    start, cpu_start = time.monotonic(), time.process_time()
    data = Path(settings.data_dir).expanduser() if settings.data_dir else default_data_dir()
    plan = plan_cases(settings)
    source, target = LabelTable.load(SOURCE_TABLE), LabelTable.load(TARGET_TABLE)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".tmp-", dir=folder.parent))
    loaded: dict[str, Any] = {}
    rows, cases = [], []
    phase = progress.phase("anatomy cohort", len(plan)) if progress is not None and progress.mode != "none" else None
    try:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for case in plan:
            t0 = time.monotonic()
            anatomy = ANATOMIES[case["anatomy"]]
            if anatomy.name not in loaded:
                loaded[anatomy.name] = _read_anatomy(data, anatomy)
            label_ts, real_ct = loaded[anatomy.name]
            info: dict[str, Any] = dict(case)
            if case["real"]:
                ct, lab = real_ct, label_ts
            else:
                z = case["slice_spacing_mm"]
                spacing = (settings.spacing_mm, settings.spacing_mm, z)
                config = {"slice_mm": [z, 1.25 * z]}
                ct, lab, subject = synthesize_image(label_ts, source, case["seed"], phase=case["phase"],
                                                    spacing=spacing, config=config, augment=True, body_ct=real_ct)
                info.update(slice_thickness_mm=round(subject.slice_mm, 3), noise_hu=round(subject.noise_hu, 2))
            syn = _to_synapse(lab, source, target)
            image_rel = f"images/{case['name']}.nii.gz"
            label_rel = f"labels/{case['name']}.nii.gz"
            sitk.WriteImage(ct, str(tmp / image_rel), True)
            labeled = case["role"] != "unlabeled"
            if labeled:
                sitk.WriteImage(syn, str(tmp / label_rel), True)
            counts = np.bincount(sitk.GetArrayViewFromImage(syn).ravel(), minlength=int(target.num_classes))
            voxel_ml = float(np.prod(syn.GetSpacing())) / 1000.0
            info.update(size=list(ct.GetSize()), spacing_mm=[round(s, 3) for s in ct.GetSpacing()],
                        seconds=round(time.monotonic() - t0, 2),
                        volumes_ml={e.name: round(float(counts[e.value]) * voxel_ml, 2)
                                    for e in target.entries if int(e.value) != 0})
            cases.append(info)
            rows.append({"image": image_rel, "label": label_rel if case["role"] == "labeled" else "",
                         "split": "test" if case["role"] == "test" else "train", "labels": TARGET_TABLE,
                         "reference": label_rel if labeled else "", "anatomy": anatomy.name})
            if phase is not None:
                phase.advance()
        provenance = {
            "generator": GENERATOR, "cohort_seed": settings.cohort_seed, "spacing_mm": settings.spacing_mm,
            "split_by": "anatomy",
            "train_anatomies": list(settings.train_anatomies), "test_anatomies": list(settings.test_anatomies),
            "anatomies": {n: {"patient": ANATOMIES[n].patient, "label": ANATOMIES[n].label, "ct": ANATOMIES[n].ct,
                              "description": ANATOMIES[n].description}
                          for n in list(settings.train_anatomies) + list(settings.test_anatomies)},
            "held_out": {"patient B": list(HELD_OUT), "why": "the demo sample; never used"},
            "label_table": TARGET_TABLE, "mapped_from": SOURCE_TABLE,
            "counts": {"labeled": settings.labeled, "unlabeled": settings.unlabeled, "test": settings.test},
            "generation": {"wall_s": round(time.monotonic() - start, 2),
                           "cpu_s": round(time.process_time() - cpu_start, 2)},
            "cases": cases,
        }
        (tmp / PROVENANCE_NAME).write_text(json.dumps(provenance, indent=1) + "\n", encoding="utf-8")
        (tmp / MANIFEST_NAME).write_text(
            manifest_text(rows, ("image", "label", "split", "labels", "reference", "anatomy")), encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if phase is not None:
            phase.close()
    return provenance


def read_provenance(folder: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads((Path(folder) / PROVENANCE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
