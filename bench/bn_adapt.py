"""Test-time batch-norm statistics chosen on validation cases (a script, not a test): run once, read the table.

    python bench/bn_adapt.py --cases runs/m4g/cohort/manifest.csv --model Resources/Models/scdl-abdominal-ct \
        [--variant W:MIN_BODY:OVERLAP ...] [--json out.json]

For every ``val`` row of a cohort manifest (image, label map, its label table; ``bench/train_default_model.py``
writes one under ``<out>/cohort``), the CT is segmented once per variant with the model card's post-processing
and scored against the reference with ``scdl.metrics`` (Dice per organ on the native grid). A variant
``W:MIN_BODY:OVERLAP`` adapts the networks' batch-norm statistics (:func:`scdl.inference.adapt.adapt_batch_norm`)
with weight ``W`` on the windows at ``OVERLAP`` whose share of body voxels is at least ``MIN_BODY`` x the fullest
window's (``OVERLAP`` -1: the prediction's own overlap), then predicts with the adapted copies. ``0:0:0`` is the
model as trained; the defaults of ``scdl.inference.adapt`` are ``W:0.5:0``.

Printed: per variant the mean over the cases of the headline mean (organs the reference contains), each case, the
per-organ mean Dice, the organs that lose more than 0.01 against the first variant, and the seconds the
adaptation took. The card's ``inference.bn_adapt`` and :mod:`scdl.inference.adapt`'s constants are chosen from
this table (docs/inference.md).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from postprocess import score_labels, variant_main, variant_report  # bench/postprocess.py: the val rows and scoring

DEFAULT_VARIANTS: tuple[str, ...] = ("0:0:0", "0.5:0.5:0", "1:0.5:0", "0.5:0:0", "0.5:0.5:-1", "0.3:0.5:0", "0.7:0.5:0")


def parse_variant(text: str) -> tuple[float, float, float]:
    try:
        weight, min_body, overlap = (float(v) for v in text.split(":"))
    except ValueError:
        raise SystemExit(f"error: --variant {text!r}: use W:MIN_BODY:OVERLAP, e.g. 1:0.5:-1.") from None
    if not (0.0 <= weight <= 1.0 and 0.0 <= min_body <= 1.0 and (overlap == -1 or 0.0 <= overlap < 1.0)):
        raise SystemExit(f"error: --variant {text!r}: W and MIN_BODY in [0, 1], OVERLAP in [0, 1) or -1.")
    return weight, min_body, overlap


def score_model(model: Path, rows: list[dict[str, str]], variants: list[str]) -> dict[str, Any]:
    """Per variant: {"cases": {case: headline mean}, "organs": {organ: [dice per case]}, "adapt_s": [...]}."""
    import SimpleITK as sitk
    import torch

    from scdl.inference.adapt import adapt_batch_norm
    from scdl.inference.config import InferenceSettings
    from scdl.inference.predictor import segment_image
    from scdl.io.image import read_ct, read_label_map
    from scdl.labels.table import LabelTable
    from scdl.models.package import ModelPackage
    from scdl.processing.pipeline import Preprocessor

    pkg = ModelPackage.load(model, verify=True)
    settings = InferenceSettings.from_card(pkg.card)
    base = [net.eval() for net in pkg.build_networks(device="cpu")]
    out: dict[str, Any] = {v: {"cases": {}, "organs": {}, "adapt_s": []} for v in variants}
    for row in rows:
        case = Path(row["image"]).name.split(".")[0]
        image = read_ct(row["image"])
        pre = Preprocessor(pkg.card["preprocessing"])
        arr, _ = pre.forward(image)
        gt = None
        for variant in variants:
            weight, min_body, overlap = parse_variant(variant)
            t0 = time.perf_counter()
            nets = adapt_batch_norm(base, torch.from_numpy(arr), pre.patch_size, weight, "cpu",
                                    overlap=settings.overlap if overlap < 0 else overlap, min_body=min_body)
            out[variant]["adapt_s"].append(time.perf_counter() - t0)
            labels = segment_image(image, pkg, device="cpu", confidence=False, networks=nets, bn_adapt=0.0).labels
            if gt is None:
                gt = sitk.GetArrayFromImage(read_label_map(row["label"], reference=labels, resample=True))
            gt_table = LabelTable.load(row["labels"]) if row.get("labels") else pkg.labels
            spacing = tuple(float(s) for s in labels.GetSpacing())[::-1]
            mean = score_labels(out[variant], case, sitk.GetArrayFromImage(labels), gt, spacing, pkg, gt_table)
            print(f"  {model.name} {case} {variant}: {mean:.4f}", file=sys.stderr, flush=True)
    return out


def report(results: dict[str, Any]) -> str:
    return variant_report(results, "variant W:MIN_BODY:OVERLAP", ("adapt s (mean)", lambda e: f"{np.mean(e['adapt_s']):.1f}"))


def main(argv: Optional[list[str]] = None) -> int:
    return variant_main(__doc__, argv, DEFAULT_VARIANTS, "W:MIN_BODY:OVERLAP", parse_variant, score_model, report)


if __name__ == "__main__":
    sys.exit(main())
