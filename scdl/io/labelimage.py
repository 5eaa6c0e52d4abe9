"""A label map as the image type every writer stores: :func:`as_label_image` (3D, integer, >= 0, the smallest
unsigned type that holds its values). Used by :mod:`scdl.io.writers` and :mod:`scdl.io.dicomseg`."""

from __future__ import annotations

import SimpleITK as sitk

_UNSIGNED = ((sitk.sitkUInt8, 255), (sitk.sitkUInt16, 65535), (sitk.sitkUInt32, 2**32 - 1))
_INTEGER_TYPES = {
    sitk.sitkUInt8, sitk.sitkInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkUInt32, sitk.sitkInt32,
    sitk.sitkUInt64, sitk.sitkInt64,
}


def as_label_image(label_img: sitk.Image) -> sitk.Image:
    """The label map as the smallest unsigned integer type holding its values (3D, integer, >= 0 required)."""
    if not isinstance(label_img, sitk.Image):
        raise TypeError(f"write_label_map needs a SimpleITK.Image, not {type(label_img).__name__}")
    if label_img.GetDimension() != 3 or label_img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("a label map must be a 3D scalar image")
    if label_img.GetPixelID() not in _INTEGER_TYPES:
        raise ValueError(f"a label map must have an integer pixel type, not {label_img.GetPixelIDTypeAsString()}")
    stats = sitk.MinimumMaximumImageFilter()
    stats.Execute(label_img)
    if stats.GetMinimum() < 0:
        raise ValueError(f"a label map must not contain negative values (found {stats.GetMinimum():g})")
    for pixel_id, top in _UNSIGNED:
        if stats.GetMaximum() <= top:
            return label_img if label_img.GetPixelID() == pixel_id else sitk.Cast(label_img, pixel_id)
    raise ValueError(f"label values up to {stats.GetMaximum():g} do not fit a label map")
