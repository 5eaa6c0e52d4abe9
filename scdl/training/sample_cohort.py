"""A tiny cohort cut out of ONE labeled CT, for smoke runs, tests and the training benchmark.

Overlapping sub-volumes of the CT (each written with its own origin, so geometry stays true) become separate
cases: some labeled, some unlabeled, one for validation. They are views of one patient, so the result says
nothing about how a model generalises; it exercises the whole pipeline (reading, label mapping by name,
preprocessing cache, sampling, training, validation, packaging) on real CT intensities and anatomy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

#: Default cases: (name, split, labeled, start fraction along x, y, z of the free range).
DEFAULT_LAYOUT: tuple[tuple[str, str, bool, tuple[float, float, float]], ...] = (
    ("lab_a", "train", True, (0.0, 0.0, 0.0)),
    ("lab_b", "train", True, (1.0, 1.0, 1.0)),
    ("unl_a", "train", False, (1.0, 0.0, 0.5)),
    ("unl_b", "train", False, (0.0, 1.0, 0.5)),
    ("val_a", "val", True, (0.5, 0.5, 0.5)),
)


def make_crop_cohort(ct: os.PathLike | str, seg: os.PathLike | str, out_dir: os.PathLike | str,
                     crop_fraction: float = 0.8, labels: Optional[str] = "totalsegmentator_v2",
                     layout: Sequence = DEFAULT_LAYOUT, manifest_name: str = "cohort.csv") -> Path:
    """Write crops of ``ct``/``seg`` as NIfTI cases plus a CSV manifest; return the manifest path.

    Args:
        ct, seg: a CT and its label map on the same grid (e.g. patient A and its TotalSegmentator map).
        crop_fraction: size of each crop relative to the CT, per axis.
        labels: the label table of ``seg`` written into the manifest's ``labels`` column.
        layout: ``(name, split, labeled, (fx, fy, fz))`` per case; f = position of the crop in [0, 1].
    """
    import SimpleITK as sitk

    from scdl.io.atomic import atomic_path
    from scdl.training.cohort import write_manifest

    out_dir = Path(out_dir)
    image = sitk.ReadImage(str(ct))
    label = sitk.ReadImage(str(seg))
    size = image.GetSize()
    crop = [max(16, int(round(s * crop_fraction))) for s in size]
    rows = []
    for name, split, labeled, fractions in layout:
        start = [int(round(f * (s - c))) for f, s, c in zip(fractions, size, crop)]
        for src, folder in ((image, "images"), (label, "labels")):
            if folder == "labels" and not labeled:
                continue
            part = sitk.RegionOfInterest(src, crop, start)
            target = out_dir / folder / f"{name}.nii.gz"
            with atomic_path(target) as tmp:
                sitk.WriteImage(part, str(tmp), True)
        rows.append({"image": f"images/{name}.nii.gz", "label": f"labels/{name}.nii.gz" if labeled else "",
                     "split": split, "labels": labels if labeled and labels else ""})
    return write_manifest(out_dir / manifest_name, rows)
