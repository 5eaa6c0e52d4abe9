"""Evaluating a predicted label map against a ground truth: grids, label matching, report table/CSV/JSON.

Label matching:
- no tables: by value; classes are the non-zero values present in either map, named "label N".
- ``labels`` (the prediction's table): by value, names from the table; every class of the table is reported
  (absent ones as "absent").
- ``labels`` and ``gt_labels`` (different numberings, e.g. Synapse prediction vs TotalSegmentator ground
  truth): the ground truth is renumbered into the prediction's values BY NAME
  (``scdl.labels.mapping.map_label_array``); ground-truth structures the prediction's table does not name are
  left out (a warning lists them).
- ``gt_labels`` only: by value, names from the ground truth's table.

Grids: both maps must share size, spacing, origin and direction; otherwise, with ``resample=True``, the
ground truth is resampled onto the prediction's grid with nearest neighbour. Distances are in mm, on the
prediction's (native) grid.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from scdl.errors import ScdlError
from scdl.io.atomic import atomic_write_text
from scdl.metrics.scores import ClassScore, class_scores, in_reference, summary

COLUMNS = ("value", "name", "dice", "hd95_mm", "asd_mm", "pred_voxels", "gt_voxels", "status")


@dataclass
class Evaluation:
    """Per-class scores of one prediction, and their means (see :func:`scdl.metrics.scores.summary`)."""

    scores: list[ClassScore]
    summary: dict[str, Any]
    pred_path: str = ""
    gt_path: str = ""
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per class with the keys of :data:`COLUMNS` (floats unrounded; NaN/inf kept)."""
        return [{"value": s.value, "name": s.name, "dice": s.dice, "hd95_mm": s.hd95, "asd_mm": s.asd,
                 "pred_voxels": s.pred_voxels, "gt_voxels": s.gt_voxels, "status": s.status} for s in self.scores]


def _load_table(spec: Optional[str]):
    if not spec:
        return None
    from scdl.labels.table import LabelTable

    return LabelTable.load(spec)


def _names(table) -> dict[int, str]:
    return {int(e.value): str(e.name) for e in table.entries if int(e.value) != 0}


def _as_labels(image, path: str) -> np.ndarray:
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(image)
    if not np.issubdtype(arr.dtype, np.integer):
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            raise ScdlError("the label map holds non-integer values.", path, "give an integer label map.")
        arr = rounded.astype(np.int32)
    if arr.size and arr.min() < 0:
        raise ScdlError("the label map holds negative values.", path, "give a label map with values >= 0.")
    return arr


def evaluate_arrays(pred: np.ndarray, gt: np.ndarray, spacing_dhw: Sequence[float], pred_table=None,
                    gt_table=None, percentile: float = 95.0, warn: Optional[Callable[[str], None]] = None,
                    gt_source: str = "ground truth") -> tuple[list[ClassScore], list[str]]:
    """Match labels (see the module docstring) and score. Arrays (D, H, W); spacing in the same axis order."""
    notes: list[str] = []
    if pred_table is not None and gt_table is not None:
        from scdl.labels.mapping import map_label_array

        gt, unknown = map_label_array(gt, gt_table, pred_table)
        if unknown:
            names = _names(gt_table)
            listed = ", ".join(names.get(int(v), f"label {v}") for v in unknown)
            notes.append(f"{gt_source}: structures not in the prediction's label table were left out: {listed}")
    if pred_table is not None:
        classes = _names(pred_table)
    elif gt_table is not None:
        classes = _names(gt_table)
    else:
        classes = {}
    present = set(np.unique(pred).tolist()) | set(np.unique(gt).tolist())
    extra = sorted(int(v) for v in present if v != 0 and int(v) not in classes)
    if extra and classes:
        notes.append("values without a name in the label table were scored as 'label N': "
                     + ", ".join(str(v) for v in extra))
    for value in extra:
        classes[value] = f"label {value}"
    for note in notes:
        if warn:
            warn(note)
    return class_scores(pred, gt, spacing_dhw, classes, percentile), notes


def evaluate_files(pred_path: str | os.PathLike, gt_path: str | os.PathLike, labels: Optional[str] = None,
                   gt_labels: Optional[str] = None, resample: bool = False, percentile: float = 95.0,
                   warn: Optional[Callable[[str], None]] = None) -> Evaluation:
    """Score the label map ``pred_path`` against ``gt_path`` (any format scdl reads: NIfTI, NRRD, .seg.nrrd...).

    Raises:
        ScdlError: unreadable files, grids that differ without ``resample``, bad label tables.
    """
    from scdl.io.geometry import describe_grid, same_grid
    from scdl.io.image import read_label_map

    pred_path, gt_path = os.fspath(pred_path), os.fspath(gt_path)
    pred_table = _load_table(labels)
    gt_table = _load_table(gt_labels)
    pred_img = read_label_map(pred_path)
    gt_img = read_label_map(gt_path)
    if not same_grid(pred_img, gt_img):
        if not resample:
            raise ScdlError(
                f"the ground truth is not on the prediction's grid (prediction: {describe_grid(pred_img)}; "
                f"ground truth: {describe_grid(gt_img)}).",
                gt_path,
                "add --resample to resample the ground truth onto the prediction's grid (nearest neighbour).",
            )
        gt_img = read_label_map(gt_path, reference=pred_img, resample=True)
    spacing_xyz = tuple(float(s) for s in pred_img.GetSpacing())
    pred = _as_labels(pred_img, pred_path)
    gt = _as_labels(gt_img, gt_path)
    del pred_img, gt_img
    scores, notes = evaluate_arrays(pred, gt, spacing_xyz[::-1], pred_table, gt_table, percentile, warn,
                                    gt_source=gt_path)
    return Evaluation(scores=scores, summary=summary(scores), pred_path=pred_path, gt_path=gt_path,
                      spacing_mm=spacing_xyz, notes=notes)


# -- output -------------------------------------------------------------------------------------------
def _fmt(value: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def format_labelled_table(evaluation: Evaluation) -> str:
    """The demo's table: the organs the ground truth contains, their status, ONE mean (the headline Dice over
    them, :func:`scdl.metrics.scores.summary`), then the organs it lacks (and which of those the prediction
    marked anyway)."""
    labelled = [s for s in evaluation.scores if in_reference(s)]
    lacking = [s for s in evaluation.scores if not in_reference(s)]
    width = max([len(s.name) for s in labelled] + [len("mean over these organs")])
    head = f"{'organ':<{width}}  {'Dice':>6}  {'HD95 mm':>8}  {'ASD mm':>7}  status"
    lines = [head, "-" * len(head)]
    for s in labelled:
        status = s.status.replace("_", " ")
        lines.append(f"{s.name:<{width}}  {_fmt(s.dice, 3):>6}  {_fmt(s.hd95, 1):>8}  {_fmt(s.asd, 1):>7}  {status}")
    lines.append("-" * len(head))
    if labelled:
        mean = evaluation.summary["dice"]
        lines.append(f"{'mean over these organs':<{width}}  {mean:>6.3f}   ({len(labelled)} organs)")
    if lacking:
        marked = [s.name for s in lacking if s.status == "false_positive"]
        lines.append(f"not in the reference labels (not scored): {', '.join(s.name for s in lacking)}")
        if marked:
            lines.append(f"  the model marked voxels of: {', '.join(marked)} (false positives)")
    return "\n".join(lines)


def format_table(evaluation: Evaluation, show_absent: bool = False) -> str:
    """A plain-text table: one line per class (absent classes summarised), then the headline mean (over the
    classes the ground truth contains) and, when the prediction marked classes the ground truth lacks, the
    mean over all classes under its own name."""
    rows = [s for s in evaluation.scores if show_absent or s.status != "absent"]
    width = max([len(s.name) for s in rows] + [5])
    head = f"{'value':>5}  {'class':<{width}}  {'Dice':>6}  {'HD95 mm':>8}  {'ASD mm':>7}  {'pred vox':>9}  {'GT vox':>9}  status"
    lines = [head, "-" * len(head)]
    for s in rows:
        lines.append(f"{s.value:>5}  {s.name:<{width}}  {_fmt(s.dice, 4):>6}  {_fmt(s.hd95, 2):>8}  "
                     f"{_fmt(s.asd, 2):>7}  {s.pred_voxels:>9}  {s.gt_voxels:>9}  {s.status}")
    absent = sum(1 for s in evaluation.scores if s.status == "absent")
    m = evaluation.summary
    lines.append("-" * len(head))
    lines.append(f"{'':>5}  {'mean':<{width}}  {_fmt(m['dice'], 4):>6}  {_fmt(m['hd95'], 2):>8}  "
                 f"{_fmt(m['asd'], 2):>7}  over the {m['classes_in_reference']} class(es) the ground truth contains")
    if m["classes_scored"] != m["classes_in_reference"]:
        lines.append(f"(mean Dice over all {m['classes_scored']} classes in either map, false positives counting 0: "
                     f"{_fmt(m['dice_all_classes'], 4)})")
    if absent and not show_absent:
        lines.append(f"({absent} class(es) absent from both maps: not scored)")
    return "\n".join(lines)


def to_csv_text(evaluation: Evaluation) -> str:
    """CSV with the columns of :data:`COLUMNS` (NaN as ``nan``, infinity as ``inf``) and a final ``mean`` row:
    the headline means (Dice over the classes the ground truth contains, as in the table and the JSON)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in evaluation.rows():
        writer.writerow([r["value"], r["name"], _fmt(r["dice"], 6), _fmt(r["hd95_mm"], 4), _fmt(r["asd_mm"], 4),
                         r["pred_voxels"], r["gt_voxels"], r["status"]])
    m = evaluation.summary
    writer.writerow(["", "mean", _fmt(m["dice"], 6), _fmt(m["hd95"], 4), _fmt(m["asd"], 4), "", "", ""])
    return buf.getvalue()


def _json_number(value: Optional[float]) -> Optional[float]:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def to_json_dict(evaluation: Evaluation) -> dict[str, Any]:
    """JSON-ready dict; NaN and inf become null (``status`` tells which). ``mean.dice`` is the headline (over the
    ``classes_in_reference``), ``mean.dice_all_classes`` the mean over the ``classes_scored`` of either map."""
    classes = []
    for r in evaluation.rows():
        classes.append({**r, "dice": _json_number(r["dice"]), "hd95_mm": _json_number(r["hd95_mm"]),
                        "asd_mm": _json_number(r["asd_mm"])})
    m = evaluation.summary
    return {
        "prediction": evaluation.pred_path,
        "ground_truth": evaluation.gt_path,
        "spacing_mm": list(evaluation.spacing_mm),
        "classes": classes,
        "mean": {"dice": _json_number(m["dice"]), "classes_in_reference": m["classes_in_reference"],
                 "hd95_mm": _json_number(m["hd95"]), "asd_mm": _json_number(m["asd"]),
                 "dice_all_classes": _json_number(m["dice_all_classes"]), "classes_scored": m["classes_scored"]},
        "notes": list(evaluation.notes),
    }


def write_csv(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    atomic_write_text(path, to_csv_text(evaluation))
    return Path(path)


def write_json(evaluation: Evaluation, path: str | os.PathLike) -> Path:
    atomic_write_text(path, json.dumps(to_json_dict(evaluation), indent=2) + "\n")
    return Path(path)
