"""Zoomed axial slices of one organ: the prediction's and the reference's outlines on the CT (docs pictures).

    python docs/organ_contours.py Resources/Sample/sample_ct.nii.gz PRED.nii.gz \
        Resources/Sample/sample_labels.nii.gz --organ pancreas --labels synapse --slices 0 3 6 --out out.png

PRED and the reference are label maps in the numbering of ``--labels`` on the CT's grid (``scdl segment``'s output
and the sample's labels are). The view is cropped to the organ in either map, with a margin.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ct", type=Path)
    ap.add_argument("prediction", type=Path)
    ap.add_argument("reference", type=Path)
    ap.add_argument("--organ", required=True, help="organ name in the label table")
    ap.add_argument("--labels", default="synapse", help="label table of both maps (default synapse)")
    ap.add_argument("--slices", type=int, nargs="+", required=True,
                    help="axial slice indices, 0 = the lowest (feet side) once the CT is oriented LPS")
    ap.add_argument("--margin-mm", type=float, default=40.0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import SimpleITK as sitk

    from scdl.labels.table import LabelTable

    from scdl.errors import ScdlError

    try:
        value = LabelTable.load(args.labels).by_name(args.organ).value
    except KeyError as error:
        ap.error(error.args[0])
    except ScdlError as error:
        ap.error(str(error))
    missing = [str(p) for p in (args.ct, args.prediction, args.reference) if not p.is_file()]
    if missing:
        ap.error(f"no such file: {', '.join(missing)}")
    ct = sitk.ReadImage(str(args.ct))
    arrays = [sitk.GetArrayFromImage(sitk.DICOMOrient(ct, "LPS"))]     # rows anterior->posterior, columns R->L
    for path in (args.prediction, args.reference):
        image = sitk.ReadImage(str(path))
        same = (image.GetSize() == ct.GetSize() and np.allclose(image.GetSpacing(), ct.GetSpacing(), atol=1e-4)
                and np.allclose(image.GetOrigin(), ct.GetOrigin(), atol=1e-3)
                and np.allclose(image.GetDirection(), ct.GetDirection(), atol=1e-4))
        if not same:
            ap.error(f"{path} is not on the grid of {args.ct}: resample it onto the CT first")
        arrays.append(sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS")) == value)
    hu, pred, ref = arrays
    either = pred | ref
    if not either.any():
        ap.error(f"neither map contains {args.organ}")
    bad = [z for z in args.slices if not 0 <= z < hu.shape[0]]
    if bad:
        ap.error(f"--slices {bad}: the CT has {hu.shape[0]} axial slices (0 = the lowest, feet side)")
    sx, sy = sitk.DICOMOrient(ct, "LPS").GetSpacing()[:2]
    ys, xs = np.nonzero(either.any(axis=0))
    my, mx = int(args.margin_mm / sy), int(args.margin_mm / sx)
    y0, y1 = max(ys.min() - my, 0), min(ys.max() + my, hu.shape[1] - 1)
    x0, x1 = max(xs.min() - mx, 0), min(xs.max() + mx, hu.shape[2] - 1)
    fig, axes = plt.subplots(1, len(args.slices), figsize=(4.2 * len(args.slices), 4.6), squeeze=False)
    for ax, z in zip(axes[0], args.slices):
        ax.imshow(np.clip(hu[z, y0:y1 + 1, x0:x1 + 1], -160, 240), cmap="gray", aspect=sy / sx)
        for mask, colour in ((ref, "lime"), (pred, "red")):
            if mask[z].any():
                ax.contour(mask[z, y0:y1 + 1, x0:x1 + 1], [0.5], colors=colour, linewidths=1.2)
        ax.set_title(f"slice {z}: reference {int(ref[z].sum())} voxels, prediction {int(pred[z].sum())}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{args.organ}: prediction (red) and reference (green)", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
