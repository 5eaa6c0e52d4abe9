"""The training cohort as found in the scene: every CT volume, labeled when a segmentation refers to it.

A segmentation belongs to a volume when its reference geometry node is that volume (what the Segment
Editor and SCDLSegment set: ``vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()``).
Several segmentations of one volume are merged. Segmentations that SCDLTrain's own review produced
(attribute :data:`PREDICTION_ATTRIBUTE`) are never taken as labels.

Each volume has a role, stored as the node attribute :data:`ROLE_ATTRIBUTE` (saved with the scene):
``auto`` (default: labeled volumes are split between training and validation by ``val_fraction``),
``train``, ``val`` or ``exclude``. No Qt here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

import slicer

from SCDLSlicerLib import sceneio

ROLE_ATTRIBUTE = "SCDLTrain.Role"
PREDICTION_ATTRIBUTE = "SCDLTrain.Prediction"
ROLES = ("auto", "train", "val", "exclude")
#: Seed of the automatic training / validation split (the same scene always gives the same split).
SPLIT_SEED = 1337


@dataclass
class SceneCase:
    """One volume of the scene cohort.

    Attributes:
        volume_id: MRML ID of the CT volume.
        name: the volume's name (how the panel names the case).
        segmentation_ids: MRML IDs of the segmentations that refer to it (empty: unlabeled).
        role: what the user asked for (``auto``, ``train``, ``val``, ``exclude``).
        split: what the cohort uses: ``train``, ``val`` or ``exclude``.
    """

    volume_id: str
    name: str
    segmentation_ids: list[str] = field(default_factory=list)
    role: str = "auto"
    split: str = "train"

    @property
    def labeled(self) -> bool:
        return bool(self.segmentation_ids)

    @property
    def volume(self):
        return slicer.mrmlScene.GetNodeByID(self.volume_id)

    def segmentations(self) -> list:
        return [n for n in (slicer.mrmlScene.GetNodeByID(i) for i in self.segmentation_ids) if n is not None]

    def segments(self) -> list[tuple[str, Optional[str], str, str]]:
        """``(segment name, terminology, segmentation ID, segment ID)`` of every segment of the case."""
        out = []
        for node in self.segmentations():
            segmentation = node.GetSegmentation()
            for index in range(segmentation.GetNumberOfSegments()):
                segment = segmentation.GetNthSegment(index)
                out.append((segment.GetName(), segment.GetTerminology() or None, node.GetID(),
                            segmentation.GetNthSegmentID(index)))
        return out


def get_role(volume) -> str:
    role = volume.GetAttribute(ROLE_ATTRIBUTE) or "auto"
    return role if role in ROLES else "auto"


def set_role(volume, role: str) -> None:
    """Store the user's role for a volume (``auto`` removes the attribute)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    volume.SetAttribute(ROLE_ATTRIBUTE, None if role == "auto" else role)


def segmentations_by_volume() -> dict[str, list[str]]:
    """``{volume ID: [segmentation IDs]}`` from the segmentations' reference geometry nodes."""
    found: dict[str, list[str]] = {}
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    scene = slicer.mrmlScene
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLSegmentationNode")
        if node.GetAttribute(PREDICTION_ATTRIBUTE):
            continue
        reference = node.GetNodeReferenceID(role)
        if reference and node.GetSegmentation().GetNumberOfSegments() > 0:
            found.setdefault(reference, []).append(node.GetID())
    return found


def scene_cases(val_fraction: float = 0.2, seed: int = SPLIT_SEED) -> list[SceneCase]:
    """Every CT volume of the scene as a case, with its segmentations and its resolved split.

    The automatic split sends ``round(val_fraction * n)`` of the ``n`` labeled ``auto`` cases to validation
    (picked by a seeded shuffle of their names), keeping at least one labeled ``auto`` case for training.
    """
    by_volume = segmentations_by_volume()
    cases = [SceneCase(v.GetID(), v.GetName(), list(by_volume.get(v.GetID(), [])), get_role(v))
             for v in sceneio.scene_volumes()]
    auto_labeled = sorted((c for c in cases if c.role == "auto" and c.labeled), key=lambda c: (c.name, c.volume_id))
    n_val = int(round(max(0.0, min(1.0, float(val_fraction))) * len(auto_labeled)))
    n_val = max(0, min(n_val, len(auto_labeled) - 1))
    chosen = {c.volume_id for c in random.Random(seed).sample(auto_labeled, n_val)} if n_val else set()
    for case in cases:
        if case.role == "exclude":
            case.split = "exclude"
        elif case.role == "val" or case.volume_id in chosen:
            case.split = "val"
        else:
            case.split = "train"
    return cases


@dataclass
class CaseProblem:
    """A problem the panel shows for one case (same fields as the core's ``CohortProblem``)."""

    severity: str
    code: str
    message: str
    case: str
    fix: str = ""
    path: str = ""

    def to_dict(self) -> dict:
        return {"severity": self.severity, "code": self.code, "message": self.message, "case": self.case,
                "fix": self.fix, "path": self.path}


def mapping_problems(cases: list[SceneCase], matches) -> list[CaseProblem]:
    """Per-case problems of the segment -> class mapping and of the roles.

    - ``unknown_segments`` (warning): segments whose name and terminology match no model class: they are
      not trained (background) until the user maps them in the table.
    - ``no_model_class`` (error): a labeled case none of whose segments is a model class.
    - ``val_without_labels`` (error): a case marked for validation that has no segmentation.
    """
    from SCDLTrainLib.segmentmap import segment_key

    by_key = {m.key: m for m in matches}
    problems: list[CaseProblem] = []
    for case in cases:
        if case.split == "exclude":
            continue
        if not case.labeled:
            if case.role == "val":
                problems.append(CaseProblem(
                    "error", "val_without_labels", "marked for validation but no segmentation refers to it.",
                    case.name, "segment it (Segment Editor) or set its role to 'train' (unlabeled) or 'auto'."))
            continue
        names = [s[0] for s in case.segments()]
        unknown = sorted({n for n in names if by_key.get(segment_key(n)) is None or by_key[segment_key(n)].value is None})
        if unknown:
            problems.append(CaseProblem(
                "warning", "unknown_segments",
                f"{len(unknown)} segment(s) match no class of the model and are not trained: {', '.join(unknown)}.",
                case.name, "type the model class of each in the segment mapping table (or 'background')."))
        if not any(by_key.get(segment_key(n)) is not None and by_key[segment_key(n)].trained for n in names):
            problems.append(CaseProblem(
                "error", "no_model_class", "none of its segments is a class of the model.", case.name,
                "map its segments to model classes in the table, or set the case's role to 'exclude'."))
    return problems
