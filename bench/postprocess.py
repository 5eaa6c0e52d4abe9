"""Inference post-processing chosen on validation cases (a script, not a test): run once, read the table.

    python bench/postprocess.py --cases runs/m4a/cohort/manifest.csv --model Resources/Models/scdl-abdominal-ct \
        [--model OTHER ...] [--json out.json]

For every model and every ``val`` row of a cohort manifest (image, label map, its label table), the CT is
segmented ONCE per resampling (``segment_image`` without post-processing, whatever the card says); then each variant is applied to the label map on
the CT's grid and scored against the reference with ``scdl.metrics`` (Dice per organ on the native grid):

- ``none``: the network's argmax as it is;
- ``largest_large``: the largest connected component of the large, one-piece organs only (liver, spleen,
  kidneys, stomach, aorta: :data:`LARGE_ORGANS`);
- ``largest_all``: the largest connected component of every organ (the card's ``keep_largest_component``);
- ``logits``: a second pass with ``label_resampling="logits"`` (the logits resampled linearly onto the CT grid,
  argmax there, instead of the argmax on the model grid resampled nearest-neighbour);
- ``logits_largest_large``: ``logits``, then the largest component of the large organs.

Printed: per variant the mean over the cases of the headline mean (organs the reference contains) and the
per-organ mean Dice, and per variant the organs that lose more than 0.01 against ``none``. The model card's
``inference.largest_component_organs`` and ``inference.label_resampling`` are chosen from this table
(docs/inference.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

#: The one-piece large organs of the Synapse table (issue 27: +0.9 Dice points on real CT, no organ worse).
LARGE_ORGANS: tuple[str, ...] = ("liver", "spleen", "right kidney", "left kidney", "stomach", "aorta")
VARIANTS: tuple[str, ...] = ("none", "largest_large", "largest_all", "logits", "logits_largest_large")


def _variant(nearest: np.ndarray, logits: np.ndarray, name: str, values: list[int]) -> np.ndarray:
    from scdl.processing.postprocess import keep_largest_component

    labels = logits if name.startswith("logits") else nearest
    if name in ("none", "logits"):
        return labels
    return keep_largest_component(labels, None if name == "largest_all" else values)


def val_rows(manifest: Path) -> list[dict[str, str]]:
    """The ``val`` rows with a label map of a cohort manifest: the cases this script (and ``bench/bn_adapt.py``)
    scores."""
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val" and r["label"]]
    if not rows:
        raise SystemExit(f"error: {manifest}: no val rows with a label map.")
    return rows


def record_scores(entry: dict[str, Any], case: str, scores: list[Any]) -> None:
    """``entry["cases"][case]``: the headline mean (organs the reference contains); each such organ's Dice appended
    to ``entry["organs"]``."""
    from scdl.metrics.scores import summary

    entry["cases"][case] = summary(scores)["dice"]
    for s in scores:
        if s.gt_voxels > 0:
            entry["organs"].setdefault(s.name, []).append(float(s.dice))


def score_labels(entry: dict[str, Any], case: str, pred: np.ndarray, gt: np.ndarray, spacing_zyx: tuple,
                 pkg: Any, gt_table: Any) -> float:
    """Score a predicted label array against ``gt`` (same grid) with ``scdl.metrics``, record it in ``entry``
    (:func:`record_scores`) and return the case's headline mean."""
    from scdl.metrics.evaluate import evaluate_arrays

    scores, _ = evaluate_arrays(pred, gt, spacing_zyx, pkg.labels, gt_table)
    record_scores(entry, case, scores)
    return entry["cases"][case]


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """The options every validation-row benchmark takes: ``--cases``, ``--model`` (repeatable), ``--json``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0], epilog=doc.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", required=True, type=Path, help="cohort manifest.csv (its val rows are scored)")
    parser.add_argument("--model", action="append", required=True, type=Path, help="model package (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="write the raw numbers here")
    return parser


def publish(results: dict[str, Any], table: str, json_path: Optional[Path]) -> int:
    """Print the table; write the raw numbers to ``json_path`` (atomically) when given."""
    print(table)
    if json_path:
        from scdl.io.atomic import atomic_write_text

        atomic_write_text(json_path, json.dumps(results, indent=2) + "\n")
    return 0


def val_case(row: dict[str, str], pkg: Any) -> tuple[str, Any, np.ndarray, Any]:
    """A ``val`` row read for scoring: (case name, the CT, its label map as an array on the CT's grid, the label
    table of the label map: the row's ``labels`` or the model's)."""
    import SimpleITK as sitk

    from scdl.io.image import read_ct, read_label_map
    from scdl.labels.table import LabelTable

    image = read_ct(row["image"])
    gt = sitk.GetArrayFromImage(read_label_map(row["label"], reference=image, resample=True))
    gt_table = LabelTable.load(row["labels"]) if row.get("labels") else pkg.labels
    return Path(row["image"]).name.split(".")[0], image, gt, gt_table


def variant_main(doc: str, argv: Optional[list[str]], defaults: tuple[str, ...], metavar: str, parse: Any,
                 score: Any, report: Any) -> int:
    """``main`` of a benchmark of ``--variant`` strings (``bench/bn_adapt.py``, ``bench/window.py``): the options
    of :func:`bench_parser` plus ``--variant`` (repeatable, the first is the reference), every variant checked
    with ``parse`` before any work, ``score(model, rows, variants)`` per model, ``report(results)`` published."""
    parser = bench_parser(doc)
    parser.add_argument("--variant", action="append", default=None, metavar=metavar,
                        help=f"repeatable; the first is the reference (default {' '.join(defaults)})")
    args = parser.parse_args(argv)
    variants = args.variant or list(defaults)
    for v in variants:
        parse(v)
    rows = val_rows(args.cases)
    results = {str(m): score(m, rows, variants) for m in args.model}
    return publish(results, report(results), args.json)


def variant_report(results: dict[str, Any], header: str, extra: tuple[str, Any]) -> str:
    """Per model: a table of the variants (the first is the reference) with the mean over the cases, each case and
    one more column (``extra``: its header and a function of the variant's entry -> text), a table of the per-organ
    means, and per variant the organs that lose more than 0.01 against the first (``bench/bn_adapt.py``,
    ``bench/window.py``)."""
    lines = []
    extra_header, extra_cell = extra
    for model, res in results.items():
        variants = list(res)
        first = variants[0]
        cases = list(res[first]["cases"])
        organs = list(res[first]["organs"])
        lines.append(f"\n{model}")
        lines.append(f"| {header} | mean | " + " | ".join(cases) + f" | {extra_header} |")
        lines.append("|---|---:|" + "---:|" * (len(cases) + 1))
        for v in variants:
            vals = [res[v]["cases"][c] for c in cases]
            lines.append(f"| {v} | {np.mean(vals):.4f} | " + " | ".join(f"{x:.3f}" for x in vals)
                         + f" | {extra_cell(res[v])} |")
        lines.append("\n| organ | " + " | ".join(variants) + " |")
        lines.append("|---|" + "---:|" * len(variants))
        for o in organs:
            lines.append(f"| {o} | " + " | ".join(f"{np.mean(res[v]['organs'][o]):.3f}" for v in variants) + " |")
        for v in variants[1:]:
            worse = [f"{o} {np.mean(res[v]['organs'][o]) - np.mean(res[first]['organs'][o]):+.3f}" for o in organs
                     if np.mean(res[v]["organs"][o]) < np.mean(res[first]["organs"][o]) - 0.01]
            lines.append(f"{v}: organs worse by > 0.01 than {first}: {', '.join(worse) or 'none'}")
    return "\n".join(lines)


def score_model(model: Path, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Per variant: {"cases": {case: headline mean}, "organs": {organ: [dice per case that has it]}}."""
    import SimpleITK as sitk

    from scdl.inference.predictor import segment_image
    from scdl.io.image import read_ct, read_label_map
    from scdl.labels.names import normalize_name
    from scdl.labels.table import LabelTable
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(model, verify=True)
    names = {normalize_name(e.name): int(e.value) for e in pkg.labels.entries}
    large = [names[normalize_name(n)] for n in LARGE_ORGANS if normalize_name(n) in names]
    out: dict[str, Any] = {v: {"cases": {}, "organs": {}} for v in VARIANTS}
    for row in rows:
        case = Path(row["image"]).name.split(".")[0]
        image = read_ct(row["image"])
        result = segment_image(image, pkg, device="cpu", keep_largest=False, largest_component_organs=(),
                               confidence=False, label_resampling="nearest")
        pred = sitk.GetArrayFromImage(result.labels)
        pred_logits = sitk.GetArrayFromImage(segment_image(image, pkg, device="cpu", keep_largest=False,
                                                           largest_component_organs=(), confidence=False,
                                                           label_resampling="logits").labels)
        gt = sitk.GetArrayFromImage(read_label_map(row["label"], reference=result.labels, resample=True))
        gt_table = LabelTable.load(row["labels"]) if row.get("labels") else pkg.labels
        spacing = tuple(float(s) for s in result.labels.GetSpacing())[::-1]
        for variant in VARIANTS:
            score_labels(out[variant], case, _variant(pred, pred_logits, variant, large), gt, spacing, pkg, gt_table)
        print(f"  {model.name} {case}: " + ", ".join(f"{v} {out[v]['cases'][case]:.4f}" for v in VARIANTS),
              file=sys.stderr, flush=True)
    return out


def report(results: dict[str, Any]) -> str:
    lines = []
    for model, res in results.items():
        lines.append(f"\n{model}")
        organs = list(res["none"]["organs"])
        lines.append("| variant | mean over cases | " + " | ".join(organs) + " |")
        lines.append("|---|---:|" + "---:|" * len(organs))
        for variant in VARIANTS:
            cases = [v for v in res[variant]["cases"].values() if v is not None]
            per = [float(np.mean(res[variant]["organs"][o])) for o in organs]
            lines.append(f"| {variant} | {np.mean(cases):.4f} | " + " | ".join(f"{d:.3f}" for d in per) + " |")
        for variant in VARIANTS[1:]:
            worse = [f"{o} {np.mean(res[variant]['organs'][o]) - np.mean(res['none']['organs'][o]):+.3f}"
                     for o in organs
                     if np.mean(res[variant]["organs"][o]) < np.mean(res["none"]["organs"][o]) - 0.01]
            lines.append(f"{variant}: organs worse by > 0.01: {', '.join(worse) or 'none'}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    rows = val_rows(args.cases)
    results = {str(m): score_model(m, rows) for m in args.model}
    return publish(results, report(results), args.json)


if __name__ == "__main__":
    sys.exit(main())
