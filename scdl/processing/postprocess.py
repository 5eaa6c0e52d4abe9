"""Post-processing of label maps: keep the largest connected component of each organ."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np


def keep_largest_component(labels: np.ndarray, values: Optional[Iterable[int]] = None,
                           fully_connected: bool = True) -> np.ndarray:
    """Keep only the largest connected component of each label value; other voxels become 0.

    Works inside each label's bounding box (``scipy.ndimage.find_objects``), so the cost is one pass over
    the volume plus one labelling per organ box.

    Args:
        labels: integer array (any dimensionality, e.g. (D, H, W)); not modified.
        values: label values to clean (default: every non-zero value present).
        fully_connected: 26-connectivity in 3D (diagonal neighbours join) if True, 6-connectivity if False.

    Returns:
        A cleaned copy with the same shape and dtype.
    """
    from scipy import ndimage

    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer array, not {labels.dtype}")
    out = labels.copy()
    if out.size == 0 or out.max() <= 0:
        return out
    positive = out if np.issubdtype(out.dtype, np.unsignedinteger) or out.min() >= 0 else np.where(out > 0, out, 0)
    boxes = ndimage.find_objects(positive)
    wanted = None if values is None else {int(v) for v in values}
    structure = ndimage.generate_binary_structure(out.ndim, out.ndim if fully_connected else 1)
    for index, box in enumerate(boxes):
        value = index + 1
        if box is None or (wanted is not None and value not in wanted):
            continue
        region = out[box]
        mask = region == value
        components, count = ndimage.label(mask, structure=structure)
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        region[(components != int(np.argmax(sizes))) & mask] = 0
    return out


def keep_largest_component_image(image, values: Optional[Iterable[int]] = None, fully_connected: bool = True):
    """:func:`keep_largest_component` on a ``SimpleITK.Image`` (geometry kept)."""
    import SimpleITK as sitk

    arr = keep_largest_component(sitk.GetArrayViewFromImage(image), values, fully_connected)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    return out
