"""Step 1 of the release recipe: the cohort manifest (patient A's z-crops, anatomy maps, phantoms) and the
validation CTs synthesised once from the held-out anatomy maps."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

from scdl.release.commands import fail, log, run_scdl, scdl_command
from scdl.release.recipe import recipe_path
from scdl.training.cohort import MANIFEST_NAME, write_manifest

#: ``--smoke``: each synthesised validation CT is cut to at most this many voxels (x, y, z) around its labels, so
#: the pipeline check synthesises and validates the recipe's cases (same count, seeds, phases, cuts) on a
#: fraction of the volume: one sliding window each (the full CTs took most of the smoke run).
SMOKE_VALIDATION_VOXELS = (64, 64, 32)


def z_crops(image_path: Path, label_path: Path, out: Path, fraction: float) -> list[tuple[Path, Path]]:
    """Two overlapping sub-volumes (inferior, superior ``fraction`` of the slices) of a CT and its label map.

    Geometry is kept (each crop has its own origin); the label map must share the CT's grid.
    """
    import SimpleITK as sitk

    from scdl.io.atomic import atomic_path
    from scdl.io.geometry import same_grid

    image = sitk.ReadImage(str(image_path))
    label = sitk.ReadImage(str(label_path))
    if not same_grid(image, label):
        raise fail(f"{label_path}: not on the grid of {image_path}.")
    nx, ny, nz = image.GetSize()
    depth = max(16, int(round(nz * fraction)))
    pairs = []
    for name, z0 in (("inferior", 0), ("superior", nz - depth)):
        paths = []
        for src, kind in ((image, "image"), (label, "label")):
            target = out / f"{kind}s" / f"{name}.nii.gz"
            with atomic_path(target) as tmp:
                sitk.WriteImage(sitk.RegionOfInterest(src, [nx, ny, depth], [0, 0, z0]), str(tmp), True)
            paths.append(target)
        pairs.append((paths[0], paths[1]))
    return pairs


def build_cohort(cohort: dict[str, Any], data: Path, out: Path, smoke: bool) -> tuple[Path, dict[str, Any]]:
    """Write ``out/manifest.csv`` (absolute paths) and return it with a description of every row."""
    import csv

    rows: list[dict[str, str]] = []
    described: dict[str, Any] = {"labeled": [], "phantoms": None}
    for index, case in enumerate(cohort["labeled"]):
        image, label = data / case["image"], data / case["label"]
        for path in (image, label):
            if not path.exists():
                raise fail(f"{path}: training data missing (give the shared data folder with --data).")
        crop = case.get("z_crops") or {}
        if crop.get("fraction"):
            pairs = z_crops(image, label, out / f"labeled_{index}", float(crop["fraction"]))
        else:
            pairs = [(image, label)]
        for img, lab in pairs:
            rows.append({"image": str(img), "label": str(lab), "split": "train", "labels": case["labels"]})
        described["labeled"].append({**case, "cases_in_manifest": [str(p[0]) for p in pairs]})
    described["anatomy"] = []
    for case in cohort.get("anatomy", []):          # label maps without image: synthesised per sample
        label = data / case["label"]
        if not label.exists():
            raise fail(f"{label}: training data missing (give the shared data folder with --data).")
        rows.append({"image": "", "label": str(label), "split": "train", "labels": case["labels"]})
        described["anatomy"].append(case)
    described["validation_synth"] = synth_validation(cohort, data, out / "val_synth", rows,
                                                     SMOKE_VALIDATION_VOXELS if smoke else None)
    described["validation_real"] = []
    for case in cohort.get("validation_real", []):      # real CT that validates (never trains): patient B
        image, label = recipe_path(case["image"], data), recipe_path(case["label"], data)
        for path in (image, label):
            if not path.exists():
                raise fail(f"{path}: validation data missing.")
        rows.append({"image": str(image), "label": str(label), "split": "val", "labels": case["labels"]})
        described["validation_real"].append({**case, "image": str(image), "label": str(label)})
    ph = dict(cohort["phantoms"])
    if smoke:
        ph.update(cases=ph.get("labeled", 0) + ph.get("val", 0) + 3)     # 3 unlabeled, the recipe's validation
    phantom_dir = out / "phantoms"
    if phantom_dir.exists():
        shutil.rmtree(phantom_dir)
    cmd = scdl_command("phantom", "--out", str(phantom_dir), "--cases", str(ph["cases"]), "--seed", str(ph["seed"]),
                       "--labeled", str(ph.get("labeled", 0)), "--val", str(ph.get("val", 1)), "--test", "0",
                       "--spacing", str(ph["spacing_mm"]), "--progress", "none")
    log("generating phantoms: " + " ".join(cmd[2:]))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    with (phantom_dir / MANIFEST_NAME).open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            rows.append({"image": str(phantom_dir / row["image"]),
                         "label": str(phantom_dir / row["label"]) if row["label"] else "",
                         "split": row["split"], "labels": row["labels"] if row["label"] else ""})
    described["phantoms"] = ph
    held = {str((data / c[k]).resolve()) for c in cohort["held_out"] for k in ("image", "label")}
    held |= {str(recipe_path(c[k], data).resolve()) for c in cohort.get("validation_real", [])
             for k in ("image", "label")}
    for row in (r for r in rows if r["split"] == "train"):
        for key in ("image", "label"):
            if row[key] and str(Path(row[key]).resolve()) in held:
                raise fail(f"{row[key]}: held-out data in the training manifest.")
    manifest = write_manifest(out / MANIFEST_NAME, rows)
    counts = {"labeled": sum(1 for r in rows if r["label"] and r["split"] == "train"),
              "unlabeled": sum(1 for r in rows if not r["label"]),
              "val": sum(1 for r in rows if r["split"] == "val")}
    described["manifest_counts"] = counts
    log(f"cohort: {counts['labeled']} labeled (patient A crops + anatomy), {counts['unlabeled']} unlabeled "
        f"phantoms, {counts['val']} validation case(s) -> {manifest}")
    return manifest, described


def keep_slices(image: Path, label: Path, z_keep: list[float]) -> None:
    """Crop a synthesised validation CT and its label map (same grid) to the slices in the fraction range
    ``z_keep`` = [low, high) of the z axis, in place: a short scan, or one that ends inside organs."""
    import SimpleITK as sitk

    for path in (image, label):
        img = sitk.ReadImage(str(path))
        nx, ny, nz = img.GetSize()
        z0 = int(round(float(z_keep[0]) * nz))
        z1 = max(z0 + 1, int(round(float(z_keep[1]) * nz)))
        _write_region(path, img, [nx, ny, z1 - z0], [0, 0, z0])


def _write_region(path: Path, img: Any, extent: Sequence[int], start: Sequence[int]) -> None:
    """Replace ``path`` (atomically) by the region ``start``/``extent`` (voxels x, y, z) of the SimpleITK ``img``."""
    import SimpleITK as sitk

    from scdl.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        sitk.WriteImage(sitk.RegionOfInterest(img, list(extent), list(start)), str(tmp), True)


def _labels_box(label: Any, size: Sequence[float]) -> tuple[list[int], list[int]]:
    """(start, extent) in voxels (x, y, z) of a box of at most ``size`` voxels of the SimpleITK image ``label``,
    centred on the bounding box of its labels (on the grid's centre when there are none), inside the grid."""
    import numpy as np
    import SimpleITK as sitk

    found = np.nonzero(sitk.GetArrayFromImage(label))                 # (z, y, x) index arrays
    start, extent = [], []
    for axis, n in enumerate(label.GetSize()):
        width = max(1, min(int(round(size[axis])), n))
        idx = found[2 - axis]
        centre = (int(idx.min()) + int(idx.max())) // 2 if idx.size else n // 2
        start.append(min(max(centre - width // 2, 0), n - width))
        extent.append(width)
    return start, extent


def crop_around_labels(image: Path, label: Path, size: Sequence[int]) -> None:
    """Cut a CT and its label map (same grid) in place to at most ``size`` voxels (x, y, z) around the labels
    (:func:`_labels_box`); geometry kept."""
    import SimpleITK as sitk

    lab = sitk.ReadImage(str(label))
    start, extent = _labels_box(lab, size)
    for path, img in ((image, sitk.ReadImage(str(image))), (label, lab)):
        _write_region(path, img, extent, start)


def smoke_source(label: Path, out: Path, size_mm: Sequence[float]) -> Path:
    """``--smoke``: a copy of an anatomy's label map file cut to a box of ``size_mm`` (x, y, z) around its labels
    (``scdl synth`` then works on a fraction of the volume); a mask folder is returned as it is."""
    import SimpleITK as sitk

    from scdl.io.atomic import atomic_path

    target = out / f"smoke_source_{label.name}"
    if not label.is_file():
        return label
    if not target.is_file():
        lab = sitk.ReadImage(str(label))
        start, extent = _labels_box(lab, [mm / sp for mm, sp in zip(size_mm, lab.GetSpacing())])
        with atomic_path(target) as tmp:
            sitk.WriteImage(sitk.RegionOfInterest(lab, extent, start), str(tmp), True)
    return target


def synth_validation(cohort: dict[str, Any], data: Path, out: Path, rows: list[dict[str, str]],
                     crop: Sequence[int] | None = None) -> list[dict]:
    """Synthesise the recipe's validation CTs (``validation_synth``) once and add them to ``rows`` as ``val``.

    Each case is ``scdl synth`` of an anatomy's label map with its own seed and phase (``--augment``: elastic
    deformation), written with its label map on the CT's grid. The trainer seeds each training synthesis with
    the sequence (run seed, step, stream, sample), never with a single integer as here, so no validation
    image is a training image. ``crop`` (x, y, z voxels; ``--smoke``: :data:`SMOKE_VALIDATION_VOXELS`): each case
    is synthesised from its label map cut to a box a quarter larger (:func:`smoke_source`), then cut to ``crop``
    voxels around its labels (:func:`crop_around_labels`).
    """
    spec = cohort.get("validation_synth") or {}
    anatomies = {c["patient"]: c for c in [*cohort.get("anatomy", []), *cohort.get("validation_anatomy", [])]}
    made = []
    for index, case in enumerate(spec.get("cases", [])):
        source = anatomies.get(case["anatomy"])
        if source is None:
            raise fail(f"recipe: validation_synth case {index} names {case['anatomy']!r}, not an anatomy case.")
        name = f"val_{index}_{case['anatomy'].rsplit('/', 1)[-1]}_{case['phase']}"
        image, label = out / f"{name}.nii.gz", out / f"{name}_labels.nii.gz"
        out.mkdir(parents=True, exist_ok=True)
        anatomy = data / source["label"]
        if crop:
            anatomy = smoke_source(anatomy, out, [1.25 * v * float(spec.get("spacing_mm", 3.0)) for v in crop])
        cmd = scdl_command("synth", str(anatomy), "--labels", source["labels"], "-o", str(image),
                           "--label-out", str(label), "--seed", str(case["seed"]), "--phase", case["phase"],
                           "--spacing", str(spec.get("spacing_mm", 3.0)),
                           *(["--augment"] if spec.get("augment") else []))
        run_scdl(cmd, stdout=subprocess.DEVNULL)
        if case.get("z_keep"):
            keep_slices(image, label, case["z_keep"])
        if crop:
            crop_around_labels(image, label, crop)
        rows.append({"image": str(image), "label": str(label), "split": "val", "labels": source["labels"]})
        made.append({**case, "image": str(image), "label": str(label)})
    if made:
        cut = f" (smoke: cut to {'x'.join(str(v) for v in crop)} voxels around the labels)" if crop else ""
        log(f"validation: {len(made)} CT(s) synthesised from the anatomy maps{cut} -> {out}")
    return made
