"""The sliding window's size and overlap chosen on validation cases (a script, not a test): run once, read the table.

    python bench/window.py --cases runs/m4i/cohort/manifest.csv --model Resources/Models/scdl-abdominal-ct \
        [--variant X,Y,Z:OVERLAP ...] [--json out.json]

For every ``val`` row of a cohort manifest (image, label map, its label table; ``bench/train_default_model.py``
writes one under ``<out>/cohort``), the CT is segmented once per variant with the model card's other settings
(post-processing, test-time batch-norm statistics, which are always taken on windows of the training patch) and
a sliding window of ``X x Y x Z`` voxels of the model grid at ``OVERLAP`` (``segment_image(window_size=...,
overlap=...)``), then scored against the reference with ``scdl.metrics`` (Dice per organ on the native grid).
``patch:OVERLAP`` is the training patch (the window of every model before 4.5.1).

Why: the networks are fully convolutional; a window wider than the training patch gives each voxel more of the
body around it. The default model's 64 x 64 x 32 patch at 3 mm is 192 mm wide, half of a large abdomen.

Printed: per variant the mean over the cases of the headline mean (organs the reference contains), each case,
the seconds of the segmentations (all cases), the per-organ mean Dice, and the organs that lose more than 0.01
against the first variant. The card's ``inference.window_size`` and ``inference.overlap`` are chosen from this
table (docs/inference.md "Window size").
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from postprocess import score_labels, val_case, variant_main, variant_report  # bench/postprocess.py: the val rows and scoring

DEFAULT_VARIANTS: tuple[str, ...] = ("patch:0.5", "patch:0.25", "80,80,32:0.5", "96,96,32:0.5", "96,96,32:0.25",
                                     "112,112,32:0.5", "128,128,32:0.5", "96,96,48:0.5")


def parse_variant(text: str) -> tuple[Optional[tuple[int, int, int]], float]:
    """``X,Y,Z:OVERLAP`` or ``patch:OVERLAP`` -> (window (x, y, z) or None for the patch, overlap)."""
    from scdl.models.card import is_window_size

    try:
        size, overlap_text = text.split(":")
        overlap = float(overlap_text)
        window = None if size == "patch" else tuple(int(v) for v in size.split(","))
    except ValueError:
        raise SystemExit(f"error: --variant {text!r}: use X,Y,Z:OVERLAP or patch:OVERLAP, e.g. 96,96,32:0.5.") from None
    if window is not None and not is_window_size(list(window)):
        raise SystemExit(f"error: --variant {text!r}: the window must be three multiples of 16.")
    if not 0.0 <= overlap < 1.0:
        raise SystemExit(f"error: --variant {text!r}: OVERLAP in [0, 1).")
    return window, overlap


def score_model(model: Path, rows: list[dict[str, str]], variants: list[str]) -> dict[str, Any]:
    """Per variant: {"cases": {case: headline mean}, "organs": {organ: [dice per case]}, "seconds": float}."""
    import SimpleITK as sitk

    from scdl.inference.predictor import segment_image
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(model, verify=True)
    patch = tuple(int(v) for v in pkg.card["preprocessing"]["patch_size"])
    out: dict[str, Any] = {v: {"cases": {}, "organs": {}, "seconds": 0.0} for v in variants}
    for row in rows:
        case, image, gt, gt_table = val_case(row, pkg)
        for variant in variants:
            window, overlap = parse_variant(variant)
            t0 = time.perf_counter()
            labels = segment_image(image, pkg, device="cpu", confidence=False, window_size=window or patch,
                                   overlap=overlap).labels
            out[variant]["seconds"] += time.perf_counter() - t0
            spacing = tuple(float(s) for s in labels.GetSpacing())[::-1]
            mean = score_labels(out[variant], case, sitk.GetArrayFromImage(labels), gt, spacing, pkg, gt_table)
            print(f"  {model.name} {case} {variant}: {mean:.4f}", file=sys.stderr, flush=True)
    return out


def report(results: dict[str, Any]) -> str:
    return variant_report(results, "window X,Y,Z:OVERLAP", ("seconds (all cases)", lambda e: f"{e['seconds']:.0f}"))


def main(argv: Optional[list[str]] = None) -> int:
    return variant_main(__doc__, argv, DEFAULT_VARIANTS, "X,Y,Z:OVERLAP", parse_variant, score_model, report)


if __name__ == "__main__":
    sys.exit(main())
