"""Whole label maps -> synthetic CT images (SimpleITK), the engine behind ``scdl synth``.

    >>> ct, labels, subject = synthesize_image(read_label_map("s0006_seg.nii.gz"), "totalsegmentator_v2", seed=3)

The CT has the label map's grid (origin, spacing, direction: oblique maps stay oblique), or a grid of the
same extent and direction with ``spacing`` mm voxels (labels resampled nearest neighbour first).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import SimpleITK as sitk

from scdl.labels.protocol import LabelTableLike
from scdl.labels.table import LabelTable
from scdl.synth.engine import SYNTH_DEFAULTS, Subject, synthesize
from scdl.synth.layout import body_from_image, make_layout
from scdl.synth.spatial import elastic
from scdl.synth.tissues import tissue_lut


def resample_labels_to_spacing(label: sitk.Image, spacing: Union[float, Sequence[float]]) -> sitk.Image:
    """The label map on a grid of the same origin, direction and extent with ``spacing`` mm voxels (nearest)."""
    spacing = [float(spacing)] * 3 if np.isscalar(spacing) else [float(s) for s in spacing]
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(label.GetSize(), label.GetSpacing(), spacing)]
    # voxel centres: keep the outer corner where it was (first voxel centre moves by half the size change)
    direction = np.asarray(label.GetDirection()).reshape(3, 3)
    corner = np.asarray(label.GetOrigin()) - direction @ (0.5 * np.asarray(label.GetSpacing()))
    origin = corner + direction @ (0.5 * np.asarray(spacing))
    return sitk.Resample(label, size, sitk.Transform(), sitk.sitkNearestNeighbor, [float(o) for o in origin],
                         spacing, label.GetDirection(), 0, label.GetPixelID())


def synthesize_image(label: sitk.Image, table: "LabelTableLike | str", seed: int, *, phase: Optional[str] = None,
                     spacing: Optional[Union[float, Sequence[float]]] = None,
                     config: Optional[Mapping[str, Any]] = None, augment: bool = False,
                     body_ct: Optional[sitk.Image] = None) -> tuple[sitk.Image, sitk.Image, Subject]:
    """(CT int16 HU, label map on the CT's grid, drawn subject) from a label map.

    Args:
        label: integer label map (values of ``table``).
        table: its LabelTable or a bundled table name; structures are assigned tissues by name.
        seed: the synthesis seed (same seed, same output).
        phase: native | arterial | portal | random (default: the config's, ``random``).
        spacing: voxel size of the output in mm (default: the label map's grid).
        augment: elastic deformation of the anatomy before synthesis (config ``elastic_mm``).
        body_ct: a real CT on the label map's grid whose body outline (HU > -500) replaces the estimate.
    """
    table = table if isinstance(table, LabelTableLike) else LabelTable.load(table)
    c = {**SYNTH_DEFAULTS, **dict(config or {})}
    if spacing is not None:
        label = resample_labels_to_spacing(label, spacing)
        if body_ct is not None:
            body_ct = sitk.Resample(body_ct, label, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(label).astype(np.int32)
    arr[arr >= table.num_classes] = 0
    spacing_zyx = tuple(float(s) for s in label.GetSpacing()[::-1])
    body = body_from_image(sitk.GetArrayViewFromImage(body_ct)) if body_ct is not None else None
    layout = make_layout(arr, spacing_zyx, body=body)
    rng = np.random.default_rng([int(seed), 0x5E17])
    structures, depth, lab = layout.structures, layout.depth, arr
    if augment:
        structures, depth, lab = elastic([structures, depth, lab], spacing_zyx, rng, float(c["elastic_mm"]),
                                         float(c["elastic_scale_mm"]))
    hu, subject = synthesize(structures, depth, tissue_lut(table), spacing_zyx, rng, c, phase)
    ct = sitk.GetImageFromArray(np.rint(hu).astype(np.int16))
    ct.CopyInformation(label)
    out_label = sitk.GetImageFromArray(np.asarray(lab, dtype=np.uint8 if table.num_classes <= 256 else np.uint16))
    out_label.CopyInformation(label)
    return ct, out_label, subject
