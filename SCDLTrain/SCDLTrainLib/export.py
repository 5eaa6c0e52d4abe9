"""Export the scene cohort to files the core trainer reads: volumes, label maps and ``manifest.csv``.

Layout of the export folder (written into a temporary sibling and renamed when complete, so a failed or
cancelled export leaves nothing half-written)::

    images/<case>.nrrd      the CT volume with its own IJK->RAS (a parent transform is not hardened)
    labels/<case>.nrrd      its segments as ONE label map on the volume's grid, in the model's numbering
    manifest.csv            image,label,split,labels,annotated,name,volume_id  (labels empty: the model's
                            numbering; annotated: the model classes this case's segments map to, ';'-separated,
                            empty when it has every class; name and volume_id say which scene volume a row
                            came from)

A labeled volume whose segmentation holds only some of the model's classes (a liver study: one "Liver"
segment) annotates only those: the other classes are unknown in it, not background (scdl.losses.partial).
A mapped segment that is empty still counts as annotated (drawn and found absent).

Segments are exported onto the volume's grid by Slicer's own ``ExportSegmentsToLabelmapNode`` (nearest
neighbour; transforms between segmentation and volume are applied), then relabelled from segment order to
the model's class values. Where segments overlap, the segment listed later wins (a warning says so).

Geometry checks (per case): a segmentation that lies entirely outside its volume is an error
(``outside_volume``); a mapped segment that keeps less than :data:`MIN_INSIDE_FRACTION` of its volume (mm³)
on the volume's grid is a warning (``partly_outside``). No Qt here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import slicer
import vtk

from SCDLSlicerLib import sceneio
from SCDLTrainLib.scenecohort import CaseProblem, SceneCase

#: Columns of the exported manifest (``name``, ``volume_id``: which scene volume a row came from).
MANIFEST_COLUMNS = ("image", "label", "split", "labels", "annotated", "name", "volume_id")
#: A mapped segment that keeps less than this share of its volume on the CT's grid is reported.
MIN_INSIDE_FRACTION = 0.5
#: Segments smaller than this many voxels are not checked for the share (resampling noise).
MIN_CHECKED_VOXELS = 8


@dataclass
class ExportedCase:
    """One row of the exported manifest."""

    name: str
    split: str
    image: Path
    label: Optional[Path]
    row: str                                            # how the core names the row: "manifest.csv:<line>"
    voxels: dict[int, int] = field(default_factory=dict)  # class value -> voxel count on the CT grid
    annotated: list[int] = field(default_factory=list)    # model classes its segments map to


@dataclass
class ExportResult:
    """What :func:`export_scene_cohort` wrote and found."""

    folder: Path
    manifest: Path
    cases: list[ExportedCase] = field(default_factory=list)
    problems: list[CaseProblem] = field(default_factory=list)

    def case_for_row(self, row: str) -> Optional[str]:
        """The case name of a manifest row tag (``manifest.csv:3``), None when unknown."""
        return next((c.name for c in self.cases if c.row == row), None)

    def counts(self) -> dict[str, int]:
        labeled = [c for c in self.cases if c.label is not None]
        return {"labeled": sum(1 for c in labeled if c.split == "train"),
                "unlabeled": sum(1 for c in self.cases if c.label is None and c.split == "train"),
                "val": sum(1 for c in labeled if c.split == "val")}


def _unique_stem(name: str, taken: set[str]) -> str:
    stem = sceneio.safe_file_stem(name)
    candidate, index = stem, 2
    while candidate.lower() in taken:
        candidate = f"{stem}_{index}"
        index += 1
    taken.add(candidate.lower())
    return candidate


def _remove_temporary(node) -> None:
    """Remove a temporary labelmap node with the display, colour and storage nodes Slicer made for it."""
    if node is None or node.GetScene() is None:
        return
    display = node.GetDisplayNode()
    color = display.GetColorNode() if display is not None else None
    sceneio.remove_node(node)
    if color is not None and color.GetScene() is not None and color.GetAttribute("Category") != "Default":
        if not color.GetSingletonTag():
            slicer.mrmlScene.RemoveNode(color)


def _own_volume_mm3(segmentation_node, segment_id: str) -> tuple[int, float]:
    """(voxels, mm³) of a segment in its own geometry (before any resampling)."""
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(segmentation_node, segment_id, image)
    scalars = image.GetPointData().GetScalars() if image.GetPointData() is not None else None
    if scalars is None:
        return 0, 0.0
    # segments may share one labelmap (each with its own label value): count this segment's value only
    value = segmentation_node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    count = int(np.count_nonzero(numpy_support.vtk_to_numpy(scalars) == value))
    return count, count * float(np.prod(image.GetSpacing()))


def _bounds_overlap(a, b) -> bool:
    return all(a[2 * i] <= b[2 * i + 1] and b[2 * i] <= a[2 * i + 1] for i in range(3))


def case_label_array(case: SceneCase, value_of_key: dict[str, int]) -> tuple[Optional[np.ndarray], list[CaseProblem]]:
    """The case's mapped segments as one label array (KJI, uint8/uint16) on its volume's grid, and the
    geometry problems found. Returns ``(None, problems)`` when no segment maps to a model class."""
    from SCDLTrainLib.segmentmap import segment_key

    volume = case.volume
    problems: list[CaseProblem] = []
    shape = slicer.util.arrayFromVolume(volume).shape
    merged: Optional[np.ndarray] = None
    overlap_voxels = 0
    volume_bounds = [0.0] * 6
    volume.GetRASBounds(volume_bounds)
    voxel_mm3 = float(np.prod(volume.GetSpacing()))
    logic = slicer.modules.segmentations.logic()
    for node in case.segmentations():
        segmentation = node.GetSegmentation()
        ids, values = vtk.vtkStringArray(), []
        for index in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(index)
            value = value_of_key.get(segment_key(segment.GetName()))
            if value:
                ids.InsertNextValue(segmentation.GetNthSegmentID(index))
                values.append(int(value))
        if not values:
            continue
        seg_bounds = [0.0] * 6
        node.GetRASBounds(seg_bounds)
        if not _bounds_overlap(seg_bounds, volume_bounds):
            problems.append(CaseProblem(
                "error", "outside_volume", f"the segmentation '{node.GetName()}' lies entirely outside the volume "
                "(different position or patient).", case.name,
                "use the segmentation made on this volume, or fix the volume's or segmentation's transform."))
            continue
        exported = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__scdltrain_export__")
        try:
            if not logic.ExportSegmentsToLabelmapNode(node, ids, exported, volume):
                raise RuntimeError(f"Slicer could not export the segments of '{node.GetName()}'.")
            order = slicer.util.arrayFromVolume(exported)
        finally:
            _remove_temporary(exported)
        if order.shape != shape:
            raise RuntimeError(f"the exported label map of '{node.GetName()}' has shape {order.shape}, "
                               f"its volume {shape}.")
        lut = np.zeros(len(values) + 1, dtype=np.uint16)
        lut[1:] = values
        mapped = lut[np.clip(order, 0, len(values)).astype(np.int64)]
        if merged is None:
            merged = mapped
        else:
            both = (merged > 0) & (mapped > 0) & (merged != mapped)
            overlap_voxels += int(np.count_nonzero(both))
            merged = np.where(mapped > 0, mapped, merged)
        for index in range(ids.GetNumberOfValues()):
            segment_id = ids.GetValue(index)
            own_voxels, own_mm3 = _own_volume_mm3(node, segment_id)
            inside_mm3 = float(np.count_nonzero(order == index + 1)) * voxel_mm3
            if own_voxels >= MIN_CHECKED_VOXELS and inside_mm3 < MIN_INSIDE_FRACTION * own_mm3:
                name = segmentation.GetSegment(segment_id).GetName()
                problems.append(CaseProblem(
                    "warning", "partly_outside", f"segment '{name}' keeps {inside_mm3:.0f} of its {own_mm3:.0f} mm³ "
                    "on the volume's grid (it lies partly outside the volume, or is much finer than the grid).",
                    case.name, "check that the segmentation belongs to this volume."))
    if overlap_voxels:
        problems.append(CaseProblem(
            "warning", "overlapping_segments", f"{overlap_voxels} voxel(s) belong to segments of different classes; "
            "the segmentation listed last wins.", case.name, "remove the overlap in the Segment Editor."))
    if merged is None:
        return None, problems
    dtype = np.uint8 if int(merged.max(initial=0)) <= 255 else np.uint16
    return merged.astype(dtype), problems


def write_label_array(array: np.ndarray, volume, path: os.PathLike | str) -> Path:
    """Write a KJI label array with ``volume``'s geometry as a (compressed) label map file."""
    path = Path(path)
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__scdltrain_labels__")
    try:
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        node.SetIJKToRASMatrix(matrix)
        slicer.util.updateVolumeFromArray(node, array)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(path))
        storage.SetUseCompression(1)
        if not storage.WriteData(node) or not path.is_file():
            raise OSError(f"could not write the label map {path}")
    finally:
        _remove_temporary(node)
    return path


def case_annotated(case: SceneCase, value_of_key: dict[str, int]) -> list[int]:
    """The model classes a case annotates: the values its segments map to (sorted, foreground)."""
    from SCDLTrainLib.segmentmap import segment_key

    return sorted({int(v) for name, _t, _n, _s in case.segments()
                   if (v := value_of_key.get(segment_key(name)))})


def annotated_column(values: list[int], class_names: Optional[dict[int, str]]) -> str:
    """The manifest's ``annotated`` text: class names joined by ';', empty when every class is annotated
    (``class_names`` None: the values themselves, always written)."""
    if class_names is None:
        return ";".join(str(v) for v in values)
    if set(values) >= {v for v in class_names if v}:
        return ""
    return ";".join(class_names[v] for v in values if v in class_names)


def export_scene_cohort(cases: list[SceneCase], value_of_key: dict[str, int], folder: os.PathLike | str,
                        class_names: Optional[dict[int, str]] = None) -> ExportResult:
    """Write the cases (not the excluded ones) into ``folder`` (replaced as a whole when complete).

    Args:
        cases: from :func:`SCDLTrainLib.scenecohort.scene_cases`.
        value_of_key: ``{segment key: model class value}`` (see ``segmentmap.value_map``).
        folder: the export folder (e.g. ``RUN_DIR/cohort``).
        class_names: ``{value: name}`` of the model's foreground classes, for the ``annotated`` column.
    """
    from scdl.io.atomic import atomic_dir
    from scdl.training.cohort import MANIFEST_NAME, manifest_text

    folder = Path(folder)
    result = ExportResult(folder=folder, manifest=folder / MANIFEST_NAME)
    rows = []
    taken: set[str] = set()
    with atomic_dir(folder) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for case in cases:
            if case.split == "exclude":
                continue
            stem = _unique_stem(case.name, taken)
            image = sceneio.write_volume(case.volume, tmp / "images" / f"{stem}.nrrd")
            label_path = None
            voxels: dict[int, int] = {}
            annotated, annotated_values = "", []
            if case.labeled:
                array, problems = case_label_array(case, value_of_key)
                result.problems.extend(problems)
                if array is None:
                    continue            # reported by mapping_problems (no_model_class) or outside_volume
                label_path = write_label_array(array, case.volume, tmp / "labels" / f"{stem}.nrrd")
                values, counts = np.unique(array, return_counts=True)
                voxels = {int(v): int(n) for v, n in zip(values, counts) if v != 0}
                annotated_values = case_annotated(case, value_of_key)
                annotated = annotated_column(annotated_values, class_names)
            row_tag = f"{MANIFEST_NAME}:{len(rows) + 2}"
            rows.append({"image": f"images/{image.name}", "label": f"labels/{label_path.name}" if label_path else "",
                         "split": case.split, "labels": "", "annotated": annotated, "name": case.name,
                         "volume_id": case.volume_id})
            result.cases.append(ExportedCase(case.name, case.split, folder / "images" / image.name,
                                             folder / "labels" / label_path.name if label_path else None, row_tag, voxels,
                                             annotated_values))
        # the core's one manifest writer (scdl.training.cohort), with the columns of this export
        (tmp / MANIFEST_NAME).write_text(manifest_text(rows, MANIFEST_COLUMNS), encoding="utf-8")
    return result
