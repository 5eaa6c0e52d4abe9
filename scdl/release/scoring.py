"""Step 4 of the release recipe and its ship decision: ``scdl segment`` + ``scdl evaluate`` of a package (held-out
patients, the validation rows of the manifest), card-ready numbers, and whether a new build may replace the
installed model."""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from scdl.models.card import LABELS_FILE
from scdl.release.commands import log, run_scdl, scdl_command


def inference_flags(inference: Optional[Mapping[str, Any]]) -> list[str]:
    """``scdl segment`` flags that apply a recipe's card ``inference`` post-processing to a run's model (whose own
    card has the trainer's defaults), so that the numbers are those of the package that ships."""
    if not inference:
        return []
    flags = ["--largest-component-organs", ",".join(inference.get("largest_component_organs") or []) or "none"]
    if inference.get("keep_largest_component"):
        flags.append("--keep-largest")
    if inference.get("label_resampling"):
        flags += ["--label-resampling", str(inference["label_resampling"])]
    if inference.get("bn_adapt") is not None:
        flags += ["--bn-adapt", str(float(inference["bn_adapt"]))]
    if inference.get("overlap") is not None:
        flags += ["--overlap", str(float(inference["overlap"]))]
    if inference.get("window_size"):
        flags += ["--window-size", *(str(int(v)) for v in inference["window_size"])]
    return flags


def segment_and_score(package: Path, image: Path | str, label: Path | str, gt_labels: str, out: Path, name: str,
                      device: str, inference: Optional[Mapping[str, Any]] = None) -> tuple[dict[str, Any], str, float]:
    """``scdl segment`` ``image`` with ``package`` into ``out/name.nii.gz``, then ``scdl evaluate`` it against
    ``label`` (table ``gt_labels``, matched by name; ``--resample``) into ``out/name.json``. ``inference``: a card
    ``inference`` section to apply instead of the package's own (:func:`inference_flags`).

    Returns (the JSON report, the printed table, seconds of the segmentation).
    """
    out.mkdir(parents=True, exist_ok=True)
    pred, report = out / f"{name}.nii.gz", out / f"{name}.json"
    t0 = time.monotonic()
    run_scdl(scdl_command("segment", str(image), "-o", str(pred), "--model", str(package), "--device", device,
                          "--progress", "none", *inference_flags(inference)), stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - t0
    table = run_scdl(scdl_command("evaluate", str(pred), str(label), "--labels", str(Path(package) / LABELS_FILE),
                                  "--gt-labels", gt_labels, "--resample", "--json", str(report)),
                     capture_output=True, text=True).stdout
    return json.loads(report.read_text(encoding="utf-8")), table, seconds


def held_out_metrics(package: Path, cohort: dict[str, Any], data: Path, out: Path, device: str) -> dict[str, Any]:
    """``scdl segment`` + ``scdl evaluate`` of every held-out patient; per-organ scores from the JSON report. The
    recipe's card post-processing (``cohort["inference"]``) is applied: the numbers of the package that ships."""
    results = {}
    for case in cohort["held_out"]:
        name = case["patient"].rsplit("/", 1)[-1]
        scores, table, seconds = segment_and_score(package, data / case["image"], data / case["label"],
                                                   case["labels"], out, name, device, cohort.get("inference"))
        log(f"held-out {case['patient']}:\n{table}")
        results[case["patient"]] = summarise_scores(scores, seconds)
    return results


def validation_scores(package: Path, manifest: Path, out: Path, device: str,
                      inference: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """:func:`segment_and_score` of a package on the ``val`` rows of a cohort manifest, on each case's own grid:
    ``{"cases": {name: mean Dice over its labelled organs}, "mean": mean over the cases}``.

    This is how a new build and the installed model are compared before installing (same cases, same code).
    ``inference``: the card post-processing to apply (the new build: its recipe's; the installed model: None, its own).
    """
    import csv

    with Path(manifest).open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val" and r["label"]]
    cases: dict[str, float] = {}
    for row in rows:
        name = Path(row["image"]).name.split(".")[0]
        scores, _, _ = segment_and_score(package, row["image"], row["label"],
                                         row["labels"] or str(Path(package) / LABELS_FILE), out, name, device,
                                         inference)
        cases[name] = summarise_scores(scores)["mean_dice_labelled_organs"]
    mean = round(sum(cases.values()) / len(cases), 4) if cases else None
    return {"cases": cases, "mean": mean}


def ship_refusal(compared: dict[str, Any]) -> Optional[str]:
    """Why a new build must not replace the installed model, or None: it scores lower on the validation cases
    (``{"new": validation_scores, "installed": validation_scores}``; a tie installs the new build)."""
    new, old = compared["new"]["mean"], compared["installed"]["mean"]
    if new is None:
        return "the new build has no validation score"
    if old is not None and new < old:
        return f"worse than the installed model on the validation cases (mean Dice {new:.3f} < {old:.3f})"
    return None


def summarise_scores(report: dict[str, Any], seconds: Optional[float] = None) -> dict[str, Any]:
    """Card-ready numbers from a ``scdl evaluate --json`` report.

    ``mean_dice_labelled_organs``: mean Dice over the organs the ground truth contains (the headline number,
    ``scdl evaluate``'s ``mean.dice``); ``mean_dice``: over the organs in either map, false positives counting 0
    (``mean.dice_all_classes``; a report from before that key was added has this number as ``mean.dice``).
    """
    organs = {c["name"]: {"dice": _round(c["dice"]), "hd95_mm": _round(c["hd95_mm"]), "asd_mm": _round(c["asd_mm"]),
                          "status": c["status"]}
              for c in report["classes"] if c["status"] != "absent"}
    labelled = [c["dice"] for c in report["classes"] if c["gt_voxels"] > 0]
    false_pos = [c["name"] for c in report["classes"] if c["status"] == "false_positive"]
    out = {"mean_dice_labelled_organs": _round(sum(labelled) / len(labelled)) if labelled else None,
           "mean_dice": _round(report["mean"].get("dice_all_classes", report["mean"]["dice"])),
           "mean_hd95_mm": _round(report["mean"]["hd95_mm"]),
           "organs": organs, "organs_labelled": len(labelled), "false_positive_organs": false_pos,
           "grid": "the CT's native grid", "spacing_mm": [round(s, 4) for s in report["spacing_mm"]]}
    if seconds is not None:
        out["segment_seconds"] = round(seconds, 1)
    return out


def _round(value: Optional[float], digits: int = 4) -> Optional[float]:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def labels_identical(a: Path, b: Path, manifest: Path, out: Path, device: str) -> dict[str, Any]:
    """Segment the ``val`` cases of ``manifest`` with packages ``a`` and ``b``; per case the number of voxels whose
    label differs (``scdl segment``, the shipped inference path). ``{"identical": bool, "differing_voxels": {...}}``."""
    import csv

    import numpy as np
    import SimpleITK as sitk

    with Path(manifest).open(newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val"]
    out.mkdir(parents=True, exist_ok=True)
    diffs = {}
    for row in rows:
        name = Path(row["image"]).name.split(".")[0]
        maps = []
        for tag, pkg in (("a", a), ("b", b)):
            pred = out / f"{name}_{tag}.nii.gz"
            run_scdl(scdl_command("segment", row["image"], "-o", str(pred), "--model", str(pkg), "--device",
                                  device, "--progress", "none"), stdout=subprocess.DEVNULL)
            maps.append(sitk.GetArrayFromImage(sitk.ReadImage(str(pred))))
        diffs[name] = int(np.count_nonzero(maps[0] != maps[1]))
    return {"identical": not any(diffs.values()), "differing_voxels": diffs}
