"""Scene <-> files for the child processes: volume nodes out, segmentations and uncertainty maps back in.

Only calls that exist both in the Slicer application and in the slicer-core wheel are used
(storage nodes, ``slicer.modules.<name>.logic()``, subject hierarchy), so the same code runs in Slicer
and in the tests. No Qt here.

Geometry: the input volume is written with its own IJK->RAS (a parent transform is not hardened: the
result is placed under the same transform instead), the child copies the input grid onto its output,
and the segmentation's reference geometry is set from the input volume (DICOM SEG export needs it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import slicer

try:
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover - outside Slicer and the test harness
    def _(text: str) -> str:
        return text

#: Segmentation category/type context and anatomic context of SCDL's label tables.
DEFAULT_TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
DEFAULT_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"

#: Colour map of the uncertainty overlay and its opacity over the CT.
#: (Inferno comes from Slicer's colour files; Iron is built in and used where the file is missing.)
UNCERTAINTY_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileInferno.txt"
UNCERTAINTY_FALLBACK_COLOR_NODE_ID = "vtkMRMLColorTableNodeIron"
UNCERTAINTY_OPACITY = 0.4
#: Voxels below this share of the maximum uncertainty are drawn transparent (certain regions stay clean).
UNCERTAINTY_HIDE_BELOW = 0.05

#: HU plausibility of a CT: air around -1000, soft tissue 0..100, bone > 300 (see :func:`ct_plausibility`).
CT_MIN_HU_BELOW = -500.0
CT_MAX_HU_ABOVE = 100.0


class SceneError(Exception):
    """A problem with the scene content the user can fix (wrong node type, unreadable result ...)."""


# -- volume -> file --------------------------------------------------------------------------------
def write_volume(volume_node, path: os.PathLike | str) -> Path:
    """Write a scalar volume to ``path`` (NRRD/NIfTI by extension) with a storage node that is NOT added
    to the scene, so the user's node keeps its own file name and modified state."""
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        kind = volume_node.GetClassName() if volume_node is not None else "nothing"
        raise SceneError(_("The input must be a scalar (CT) volume, not {kind}. Select a CT volume as input.").format(kind=kind))
    if volume_node.GetImageData() is None:
        raise SceneError(_("The volume '{name}' has no voxels. Load the CT again.").format(name=volume_node.GetName()))
    path = Path(path)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(0)  # a temporary file read once: speed over size
    if not storage.WriteData(volume_node) or not path.is_file():
        raise SceneError(_("Could not write the volume '{name}' to {path}. Check free disk space.").format(
            name=volume_node.GetName(), path=path))
    return path


def ct_plausibility(volume_node) -> Optional[str]:
    """A warning if the volume's intensities do not look like CT in Hounsfield units, else None.

    A CT of the body has air (about -1000 HU) and soft tissue (0..100 HU): the minimum must be below
    ``CT_MIN_HU_BELOW`` and the maximum above ``CT_MAX_HU_ABOVE``. MR, PET or 8-bit images fail this.
    """
    image = volume_node.GetImageData() if volume_node is not None else None
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        return None
    if image.GetNumberOfScalarComponents() != 1:
        return _("The volume '{name}' has {n} components per voxel; a CT has one.").format(
            name=volume_node.GetName(), n=image.GetNumberOfScalarComponents())
    low, high = image.GetScalarRange()
    if low < CT_MIN_HU_BELOW and high > CT_MAX_HU_ABOVE:
        return None
    return _(
        "The volume '{name}' does not look like a CT in Hounsfield units (intensities {low:g}..{high:g}; "
        "a CT has air near -1000 and soft tissue 0..100). The model was trained on CT: check the input."
    ).format(name=volume_node.GetName(), low=low, high=high)


# -- results -> scene -------------------------------------------------------------------------------
@dataclass
class LabelInfo:
    """What the Logic needs of one label-table entry (decoupled from ``scdl.labels``)."""

    value: int
    name: str
    color: tuple[float, float, float]  # 0..1
    terminology: Optional[str] = None  # Slicer TerminologyEntry string


@dataclass
class LoadReport:
    """What :func:`apply_label_table` found and fixed."""

    segment_names: list[str] = field(default_factory=list)
    colors_set: list[str] = field(default_factory=list)
    terminology_set: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    organs: list[str] = field(default_factory=list)  # every label of the table, in table order (found or not)


def label_infos_from_table(table) -> list[LabelInfo]:
    """``scdl.labels.table.LabelTable`` -> :class:`LabelInfo` list."""
    return [LabelInfo(e.value, e.name, tuple(c / 255.0 for c in e.color), e.terminology_string()) for e in table.entries]


def load_segmentation(path: os.PathLike | str, name: str, reference_volume=None, target_node=None):
    """Load a ``.seg.nrrd`` written by the child into the scene and return the segmentation node.

    With ``target_node`` the loaded segments replace that node's segments (the user picked an existing
    segmentation as output); otherwise a new node named ``name`` is returned. The node does not keep the
    temporary file as its storage (saving the scene writes a new file).
    """
    path = Path(path)
    if not path.is_file():
        raise SceneError(_("The segmentation file {path} was not written.").format(path=path))
    logic = slicer.modules.segmentations.logic()
    loaded = logic.LoadSegmentationFromFile(str(path), True, name)
    if loaded is None:
        raise SceneError(_("Slicer could not read the segmentation {path}.").format(path=path))
    _forget_storage(loaded)
    node = loaded
    if target_node is not None and target_node is not loaded:
        target_node.GetSegmentation().DeepCopy(loaded.GetSegmentation())
        remove_node(loaded)
        node = target_node
    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
        transform_id = reference_volume.GetTransformNodeID()
        node.SetAndObserveTransformNodeID(transform_id)
    return node


def _forget_storage(node) -> None:
    storage = node.GetStorageNode()
    if storage is not None:
        node.SetAndObserveStorageNodeID(None)
        slicer.mrmlScene.RemoveNode(storage)


def segment_id_for(segmentation, label: LabelInfo) -> Optional[str]:
    """Segment ID of a label: by name first (IDs are arbitrary), then by label value."""
    segment_id = segmentation.GetSegmentIdBySegmentName(label.name)
    if segment_id:
        return segment_id
    for index in range(segmentation.GetNumberOfSegments()):
        if segmentation.GetNthSegment(index).GetLabelValue() == label.value:
            return segmentation.GetNthSegmentID(index)
    return None


def terminology_codes(entry: Optional[str]) -> tuple:
    """The coded parts of a TerminologyEntry string: (category, type, modifier, region, region modifier),
    each ``(scheme, value)`` or None; context names and code meanings are ignored."""
    if not entry:
        return (None,) * 5
    fields = entry.split("~")
    fields += [""] * (7 - len(fields))
    codes = []
    for index in (1, 2, 3, 5, 6):
        parts = fields[index].split("^")
        codes.append((parts[0], parts[1]) if len(parts) >= 2 and parts[0] and parts[1] else None)
    return tuple(codes)


def apply_label_table(segmentation_node, labels: Iterable[LabelInfo], color_tolerance: float = 0.5 / 255) -> LoadReport:
    """Give each segment the name, colour and terminology of its label-table entry where they differ.

    The child writes them into the ``.seg.nrrd`` already; this is the check (and the repair for files
    written by older tools). Labels without a segment (organs the model did not find: the file holds only
    found organs, see docs/io.md) are reported in ``missing``; no segment is added for them.
    """
    report = LoadReport()
    segmentation = segmentation_node.GetSegmentation()
    for label in labels:
        report.organs.append(label.name)
        segment_id = segment_id_for(segmentation, label)
        if segment_id is None:
            report.missing.append(label.name)
            continue
        segment = segmentation.GetSegment(segment_id)
        if segment.GetName() != label.name:
            segment.SetName(label.name)
        if max(abs(a - b) for a, b in zip(segment.GetColor(), label.color)) > color_tolerance:
            segment.SetColor(*label.color)
            report.colors_set.append(label.name)
        if label.terminology:
            current = segment.GetTerminology()
            if terminology_codes(current) != terminology_codes(label.terminology) or not current.split("~")[0]:
                segment.SetTerminology(label.terminology)
                report.terminology_set.append(label.name)
        report.segment_names.append(label.name)
    return report


def add_empty_segments(segmentation_node, labels: Iterable[LabelInfo]) -> list[str]:
    """Add an empty segment (name, colour, terminology of the label) for each label that has no segment yet,
    e.g. to paint an organ the model missed in the Segment Editor; returns the names added.

    Never done automatically: an empty segment states "annotated, absent in this CT" (SCDLTrain's scene cohort
    takes it so, and DICOM SEG export asks whether to skip it), which "not found" does not.
    """
    segmentation = segmentation_node.GetSegmentation()
    added = []
    for label in labels:
        if segment_id_for(segmentation, label) is not None:
            continue
        segment_id = segmentation.AddEmptySegment("", label.name, list(label.color))
        if label.terminology:
            segmentation.GetSegment(segment_id).SetTerminology(label.terminology)
        added.append(label.name)
    return added


def place_in_subject_hierarchy(node, reference_node) -> None:
    """Put ``node`` under the same parent (study) as ``reference_node`` in the subject hierarchy."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(slicer.mrmlScene)
    if sh is None or reference_node is None:
        return
    reference_item = sh.GetItemByDataNode(reference_node)
    parent = sh.GetItemParent(reference_item) if reference_item else sh.GetSceneItemID()
    item = sh.GetItemByDataNode(node)
    if not item:
        # In the application a Qt plugin adds an item for every new node; without it (tests, batch
        # scripts) the item is created here.
        sh.CreateItem(parent, node)
    elif parent != sh.GetItemParent(item):
        sh.SetItemParent(item, parent)


def show_segmentation(segmentation_node, background_volume=None) -> None:
    """Show the segmentation in the slice views (fill + outline) and in 3D (closed surfaces)."""
    segmentation_node.CreateDefaultDisplayNodes()
    display = segmentation_node.GetDisplayNode()
    display.SetVisibility(True)
    display.SetVisibility2D(True)
    display.SetVisibility3D(True)
    segmentation_node.CreateClosedSurfaceRepresentation()
    if background_volume is not None:
        slicer.util.setSliceViewerLayers(background=background_volume)


def load_uncertainty(path: os.PathLike | str, name: str, reference_volume=None):
    """Load the child's uncertainty map as a colour-mapped foreground overlay; returns the volume node."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(_("The uncertainty map {path} was not written.").format(path=path))
    node = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), name, 0)
    if node is None:
        raise SceneError(_("Slicer could not read the uncertainty map {path}.").format(path=path))
    _forget_storage(node)
    if reference_volume is not None:
        node.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
    display = node.GetDisplayNode()
    if display is not None:
        color_id = UNCERTAINTY_COLOR_NODE_ID if slicer.mrmlScene.GetNodeByID(UNCERTAINTY_COLOR_NODE_ID) else UNCERTAINTY_FALLBACK_COLOR_NODE_ID
        display.SetAndObserveColorNodeID(color_id)
        array = slicer.util.arrayFromVolume(node)
        high = float(np.max(array)) if array.size else 1.0
        high = high if high > 0 else 1.0
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(0.0, high)
        display.SetThreshold(UNCERTAINTY_HIDE_BELOW * high, high)
        display.ApplyThresholdOn()
    slicer.util.setSliceViewerLayers(foreground=node, foregroundOpacity=UNCERTAINTY_OPACITY)
    return node


def remove_node(node) -> None:
    """Remove a node and its display and storage nodes from the scene (if it is in the scene)."""
    if node is None or node.GetScene() is None:
        return
    scene = node.GetScene()
    helpers = []
    if node.IsA("vtkMRMLDisplayableNode"):
        helpers += [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
    if node.IsA("vtkMRMLStorableNode"):
        helpers += [node.GetNthStorageNode(i) for i in range(node.GetNumberOfStorageNodes())]
    scene.RemoveNode(node)
    for helper in helpers:
        if helper is not None and helper.GetScene() is not None:
            scene.RemoveNode(helper)


def scene_volumes() -> list:
    """All scalar volumes of the scene that can be segmented (label maps excluded)."""
    volumes = []
    for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if not node.IsA("vtkMRMLLabelMapVolumeNode") and node.GetImageData() is not None:
            volumes.append(node)
    return volumes


def safe_file_stem(name: str) -> str:
    """A node name usable as a file name (``/ : * ? " < > |`` and spaces become ``_``)."""
    cleaned = "".join("_" if ch in '/\\:*?"<>| ' else ch for ch in name).strip("._")
    return cleaned or "volume"

