"""Writing images and label maps, atomically (a failed or cancelled write leaves no partial file).

The format follows the extension: ``.nii``/``.nii.gz`` (NIfTI), ``.nrrd``/``.nhdr`` (NRRD), ``.mha``/``.mhd``
(MetaImage) and, for label maps, ``.seg.nrrd`` (3D Slicer segmentation with names, colours and terminology) and
``.dcm`` (DICOM SEG referencing the source DICOM series, :mod:`scdl.io.dicomseg`).
Compression is on where the format has it. Geometry is written as the image carries it (NIfTI stores it as
float32, so a NIfTI round trip keeps origin/spacing/direction to about 1e-6 relative; NRRD and MetaImage
keep them to double precision).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io.atomic import atomic_path
from scdl.io.formats import (DETACHED_HEADER_EXTENSIONS, DICOM_SEG_EXTENSION, IMAGE_WRITE_EXTENSIONS,
                             LABEL_WRITE_EXTENSIONS, extension)
from scdl.io.labelimage import as_label_image
from scdl.labels.protocol import LabelTableLike


def _check_target(path: Path, allowed: tuple[str, ...], what: str) -> str:
    ext = extension(path)
    if ext not in allowed:
        raise ScdlError(
            f"cannot write {what} as {ext or 'a file without extension'}.",
            path,
            f"use one of {', '.join(allowed)}.",
        )
    if path.is_dir():
        raise ScdlError("is a folder.", path, f"give a file name ending in {ext}.")
    return ext


def _sitk_write(img: sitk.Image, path: Path, compress: bool) -> None:
    try:
        sitk.WriteImage(img, str(path), useCompression=compress)
    except RuntimeError as err:
        raise ScdlError(
            f"could not be written ({str(err).strip().splitlines()[-1][:200]}).",
            path,
            "check free disk space and write permission of the output folder.",
        ) from err


def _write_detached(img: sitk.Image, path: Path, compress: bool) -> None:
    """Header + data file (.nhdr/.mhd): write both in a temporary folder, move the data file(s), then the header."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    except OSError as err:
        raise ScdlError(f"cannot write here ({err.strerror}).", path, "choose an output folder you can write to.") from err
    try:
        try:
            _sitk_write(img, tmp / path.name, compress)
        except ScdlError as err:
            raise ScdlError(err.message, path, err.fix) from None
        written = sorted(p for p in tmp.iterdir() if p.name != path.name)
        for data_file in written:
            _verify_detached(data_file, path)
        for data_file in written:
            os.replace(data_file, path.parent / data_file.name)
        os.replace(tmp / path.name, path)
    except OSError as err:
        raise ScdlError(f"could not be written ({err.strerror}).", path, "check disk space and permissions.") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify_detached(data_file: Path, target: Path) -> None:
    from scdl.io.verify import WriteCheckFailed, verify_file

    try:
        verify_file(data_file)
    except WriteCheckFailed as err:
        raise ScdlError(f"the file could not be written completely ({err}); nothing was replaced.", target,
                        "free disk space (a full disk is the usual cause) or choose another output folder.") from None


def write_image(img: sitk.Image, path: "os.PathLike[str] | str") -> Path:
    """Write any image (e.g. a CT or an uncertainty map) by extension, atomically. Returns the path."""
    path = Path(path)
    ext = _check_target(path, IMAGE_WRITE_EXTENSIONS, "an image")
    compress = ext != ".nii"
    if ext in DETACHED_HEADER_EXTENSIONS:
        _write_detached(img, path, compress)
    else:
        with atomic_path(path) as tmp:
            _sitk_write(img, tmp, compress)
    return path


def write_label_map(label_img: sitk.Image, path: "os.PathLike[str] | str", table: Optional[LabelTableLike] = None, *,
                    source_files: Optional[Sequence[str]] = None, model: Optional[Mapping[str, Any]] = None) -> Path:
    """Write a label map on its own grid, by extension, atomically. Returns the path.

    Args:
        label_img: 3D integer label map (0 = background), e.g. on the input CT's grid.
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, ``.seg.nrrd`` or ``.dcm`` (DICOM SEG).
        table: for ``.seg.nrrd`` and ``.dcm``: segment names, colours and SNOMED CT terminology (ignored by
            other formats).
        source_files: for ``.dcm``: the DICOM series the label map lies on (slice k = file k); required (a
            DICOM SEG references its source images), without it ``.dcm`` is refused with a ScdlError.
        model: for ``.dcm``: the model card (id, version), recorded as the segmentation algorithm.
    """
    path = Path(path)
    ext = _check_target(path, LABEL_WRITE_EXTENSIONS, "a label map")
    label_img = as_label_image(label_img)
    if ext == DICOM_SEG_EXTENSION:
        from scdl.io.dicomseg import write_dicom_seg

        return write_dicom_seg(label_img, path, table, source_files=source_files, model=model)
    if ext == ".seg.nrrd":
        from scdl.io.segnrrd import write_seg_nrrd

        return write_seg_nrrd(label_img, path, table)
    return write_image(label_img, path)
