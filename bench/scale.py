"""Robustness to patient size (a script, not a test): every validation case read as a smaller or larger body.

    python bench/scale.py --cases runs/m4i/cohort/manifest.csv --model Resources/Models/scdl-abdominal-ct \
        [--model OTHER ...] [--scale 0.7 0.8 0.9 1 1.1 1.25] [--json out.json]

For every ``val`` row of a cohort manifest (``bench/train_default_model.py`` writes one under ``<out>/cohort``)
the CT and its label map (resampled onto the CT's grid) are given an in-plane voxel size ``s`` x their own,
the voxels unchanged: the same anatomy as a body ``s`` times as wide (0.7: a small adult's organs; patient B
read at 0.7 is what a model trained on smaller bodies expects). The CT is segmented with the model card's
settings (post-processing, test-time statistics) and scored against the label map on that grid with
``scdl.metrics`` (Dice per organ). Printed per model: the mean over the cases of the headline mean (organs the
reference contains) per scale, each case, and the per-organ mean per scale. A model robust to patient size
has a flat row; model 4.4.1 loses up to 0.3 on single organs between 0.8 and 1.25 (docs/default_model.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from postprocess import bench_parser, publish, score_labels, val_case, val_rows  # bench/postprocess.py: the val rows and scoring

DEFAULT_SCALES: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0, 1.1, 1.25)


def rescaled(image: Any, scale: float) -> Any:
    """A copy of a SimpleITK image with in-plane spacing x ``scale`` (voxels, origin, direction kept)."""
    out = image.__class__(image)
    sx, sy, sz = image.GetSpacing()
    out.SetSpacing((sx * scale, sy * scale, sz))
    return out


def score_model(model: Path, rows: list[dict[str, str]], scales: list[float]) -> dict[str, Any]:
    """Per scale: {"cases": {case: headline mean}, "organs": {organ: [dice per case that has it]}}."""
    import SimpleITK as sitk

    from scdl.inference.predictor import segment_image
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(model, verify=True)
    out: dict[str, Any] = {f"{s:g}": {"cases": {}, "organs": {}} for s in scales}
    for row in rows:
        case, image, gt, gt_table = val_case(row, pkg)
        for s in scales:
            labels = segment_image(rescaled(image, s), pkg, device="cpu", confidence=False).labels
            spacing = tuple(float(v) for v in labels.GetSpacing())[::-1]
            mean = score_labels(out[f"{s:g}"], case, sitk.GetArrayFromImage(labels), gt, spacing, pkg, gt_table)
            print(f"  {model.name} {case} x{s:g}: {mean:.4f}", file=sys.stderr, flush=True)
    return out


def report(results: dict[str, Any]) -> str:
    lines = []
    for model, res in results.items():
        scales = list(res)
        cases = list(res[scales[0]]["cases"])
        organs = list(res[scales[0]]["organs"])
        lines.append(f"\n{model}")
        lines.append("| in-plane scale | mean | " + " | ".join(cases) + " |")
        lines.append("|---|---:|" + "---:|" * len(cases))
        for s in scales:
            vals = [res[s]["cases"][c] for c in cases]
            lines.append(f"| {s} | {np.mean(vals):.4f} | " + " | ".join(f"{x:.3f}" for x in vals) + " |")
        lines.append("\n| organ | " + " | ".join(f"x{s}" for s in scales) + " | range |")
        lines.append("|---|" + "---:|" * (len(scales) + 1))
        for o in organs:
            means = [float(np.mean(res[s]["organs"].get(o, [np.nan]))) for s in scales]
            lines.append(f"| {o} | " + " | ".join(f"{m:.3f}" for m in means)
                         + f" | {np.nanmax(means) - np.nanmin(means):.3f} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--scale", nargs="+", type=float, default=list(DEFAULT_SCALES),
                        help=f"in-plane voxel-size factors (default {' '.join(f'{s:g}' for s in DEFAULT_SCALES)})")
    args = parser.parse_args(argv)
    if any(not 0.25 <= s <= 4.0 for s in args.scale):
        raise SystemExit("error: --scale: use factors between 0.25 and 4, e.g. --scale 0.8 1 1.25.")
    rows = val_rows(args.cases)
    results = {str(m): score_model(m, rows, args.scale) for m in args.model}
    return publish(results, report(results), args.json)


if __name__ == "__main__":
    sys.exit(main())
