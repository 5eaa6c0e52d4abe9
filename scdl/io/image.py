"""Reading CT volumes and label maps (NIfTI, NRRD, MetaImage, DICOM) as validated 3D SimpleITK images.

    >>> img = read_ct("case.nii.gz", warn=print)                 # HU, geometry as in the file
    >>> img = read_ct("dicom_folder/")                           # largest CT series of the folder
    >>> lab = read_label_map("seg.nii.gz", reference=img, resample=True)   # nearest neighbour onto img's grid

Every problem the user can fix raises one :class:`~scdl.errors.ScdlError` naming the file and the fix.
Origin, spacing and direction (oblique included) are kept exactly as SimpleITK reads them (LPS).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io import dicom
from scdl.io.atomic import split_suffix
from scdl.io.formats import (DETACHED_HEADER_EXTENSIONS, READ_EXTENSIONS, READABLE_DESCRIPTION, extension,
                              is_dicom_file)
from scdl.io.paths import check_folder_entries, check_input_path
from scdl.io.geometry import describe_grid, same_grid
from scdl.io.validation import check_ct_values, check_detached_header, check_nifti_file, check_volume

Warn = Optional[Callable[[str], None]]
#: Largest label value of a label map (TotalSegmentator's 117 classes are the most any bundled table has).
MAX_LABEL_VALUE = 65535


@contextlib.contextmanager
def _private_name(path: Path) -> Iterator[Path]:
    """``path`` seen under a name in a private, otherwise empty folder (a symbolic link; a hard link or a copy
    where links are not allowed).

    ITK's NIfTI reader does not read the file it is given when a sibling with another NIfTI extension exists:
    for ``ct.nii.gz`` it reads ``ct.nii`` when that file is there (measured, SimpleITK 2.5; an explicit
    NiftiImageIO does the same). Alone in a private folder, the file named is the file read."""
    try:
        folder = Path(tempfile.mkdtemp(prefix="scdl-read-"))
    except OSError as err:                 # no writable temporary folder: direct, unless a sibling would be read
        siblings = [path.with_name(split_suffix(path)[0] + e) for e in (".nii", ".nii.gz", ".hdr", ".img")]
        if not any(s.exists() and s.name != path.name for s in siblings):
            yield path
            return
        raise ScdlError(f"cannot be read safely: ITK would read a file beside it with the same name instead, and "
                        f"no private temporary folder can be made ({err.strerror or err}).", path,
                        "set TMPDIR to a writable folder, or move the file into a folder of its own.") from None
    alias = folder / ("image" + extension(path))
    try:
        try:
            os.symlink(os.path.abspath(path), alias)
        except (OSError, NotImplementedError):
            try:
                os.link(path, alias)
            except OSError:
                shutil.copyfile(path, alias)
        yield alias
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _read_file(path: Path) -> sitk.Image:
    ext = extension(path)
    nifti = ext in (".nii", ".nii.gz")
    if nifti:
        check_nifti_file(path)
    elif ext in DETACHED_HEADER_EXTENSIONS:
        check_detached_header(path)
    reader = sitk.ImageFileReader()
    try:
        with _private_name(path) if nifti else contextlib.nullcontext(path) as name, dicom.quiet_itk():
            reader.SetFileName(str(name))
            return reader.Execute()     # ITK's warnings would name the private alias: the checks here speak
    except RuntimeError as err:
        if ext in (".nii", ".nii.gz"):
            from scdl.io.nifti_nibabel import is_orthonormal_refusal, read_nifti_nibabel

            if is_orthonormal_refusal(err):
                return read_nifti_nibabel(path)
        raise ScdlError(
            f"cannot be read as {ext} (damaged, truncated or not a {ext} file).",
            path,
            "re-export or copy the file again; check that its extension matches its format.",
        ) from err


def read_image(path: "os.PathLike[str] | str", *, series_uid: Optional[str] = None, warn: Warn = None) -> sitk.Image:
    """Read a 3D volume from a file or a DICOM folder.

    Args:
        path: ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, a DICOM folder, or one DICOM file
            (with or without ``.dcm``; its whole series is read from the folder).
        series_uid: for DICOM, the Series Instance UID to read (default: the CT series with the most slices).
        warn: called with one line for notes the user should see (which DICOM series was chosen when a
            folder holds several).

    Returns:
        The image (pixel type as stored, e.g. int16 HU); validated: 3D, scalar, non-empty, finite.
    """
    path = check_input_path(path)      # missing, a link loop, a FIFO / device / socket: refused before opening
    if path.is_dir():
        check_folder_entries(path)     # GDCM opens every file of the folder
    elif extension(path) == ".dcm" or (extension(path) not in READ_EXTENSIONS and is_dicom_file(path)):
        check_folder_entries(path.parent)
    if path.is_dir() or extension(path) == ".dcm" or (
        extension(path) not in READ_EXTENSIONS and is_dicom_file(path)
    ):
        if path.is_dir():
            series = dicom.select_series(path, series_uid, report=warn)
        elif series_uid is not None:
            series = dicom.select_series(path.parent, series_uid, report=warn)
        else:
            series = dicom.folder_series_for_file(path)
        if not series.is_image:
            raise ScdlError(
                f"{'holds' if path.is_dir() else 'is'} a DICOM {series.modality} object ({series.label()}), "
                f"not an image.",
                path,
                "give the CT image series (its folder or one of its files).",
            )
        img = dicom.read_series(series, report=warn)
    elif extension(path) in READ_EXTENSIONS:
        img = _read_file(path)
    else:
        raise ScdlError(
            f"has an unsupported file type ({extension(path) or 'no extension'}).",
            path,
            f"give {READABLE_DESCRIPTION}.",
        )
    check_volume(img, path)
    return img


def read_ct(path: "os.PathLike[str] | str", *, series_uid: Optional[str] = None, warn: Warn = None) -> sitk.Image:
    """:func:`read_image` plus CT checks: a blank (constant) volume is an error; values that do not look like
    Hounsfield units are reported through ``warn`` and reading continues."""
    img = read_image(path, series_uid=series_uid, warn=warn)
    check_ct_values(img, path, warn)
    return img


def _as_label_type(img: sitk.Image, path: Path) -> sitk.Image:
    arr = sitk.GetArrayViewFromImage(img)
    if img.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        if not np.all(arr == np.round(arr)):
            raise ScdlError(
                "has fractional voxel values, so it is not a label map (it looks like an image or probability map).",
                path,
                "give an integer label map (one integer per structure, 0 = background).",
            )
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0:
        raise ScdlError(
            f"has negative voxel values (down to {lo:g}), so it is not a label map.",
            path,
            "give a label map with values 0 (background), 1, 2, ...",
        )
    if hi > MAX_LABEL_VALUE:        # per-class tables (scores, present values) are as long as the largest value
        raise ScdlError(f"has label values up to {hi:.0f}; label maps number their structures 1 to "
                        f"{MAX_LABEL_VALUE} (a larger value is a damaged or foreign file, and tables of that many "
                        "classes would not fit in memory).", path, "renumber the labels, or give the right file.")
    for pixel_id, top in ((sitk.sitkUInt8, 255), (sitk.sitkUInt16, 65535)):
        if hi <= top:
            return img if img.GetPixelID() == pixel_id else sitk.Cast(img, pixel_id)
    raise ScdlError(f"has label values up to {hi:g}, too large for a label map.", path, "renumber the labels.")


def read_label_map(
    path: "os.PathLike[str] | str", reference: Optional[sitk.Image] = None, resample: bool = False,
    table: Optional[object] = None,
) -> sitk.Image:
    """Read an integer label map (0 = background), optionally brought onto a reference image's grid.

    Args:
        path: label map file (any :func:`read_image` format; a single-layer ``.seg.nrrd`` reads as its label map;
            NIfTI that ITK refuses for non-orthonormal axes is read with nibabel), or a TotalSegmentator output
            folder of ``<structure>.nii.gz`` masks (:mod:`scdl.io.mask_folder`).
        table: for a mask folder, the LabelTable (or bundled name) that numbers its structures
            (default TotalSegmentator v2).
        reference: image whose grid the labels must share (e.g. the CT).
        resample: if the grids differ, resample the labels onto ``reference`` with nearest-neighbour
            interpolation (physical positions are kept; voxels outside the label map become 0).
            Without it, a different grid is an error.

    Returns:
        The label map as the smallest unsigned integer type that holds its values (uint8 / uint16; values above
        :data:`MAX_LABEL_VALUE` are refused).
    """
    path = Path(path)
    from scdl.io.mask_folder import is_mask_folder, read_mask_folder

    if is_mask_folder(path):          # a TotalSegmentator output folder: one <structure>.nii.gz per class
        img = _as_label_type(read_mask_folder(path, table), path)
    else:
        img = _as_label_type(read_image(path), path)
    if reference is None or same_grid(img, reference):
        return img
    if not resample:
        raise ScdlError(
            f"is on another grid than the image: labels {describe_grid(img)}; image {describe_grid(reference)}.",
            path,
            "resample the label map onto the image (--resample in the CLI, resample=True in Python), "
            "or give the label map that belongs to this image.",
        )
    had_labels = bool(sitk.GetArrayViewFromImage(img).any())
    out = sitk.Resample(img, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, img.GetPixelID())
    if had_labels and not sitk.GetArrayViewFromImage(out).any():
        raise ScdlError(
            f"does not overlap the image in space (labels {describe_grid(img)}; image {describe_grid(reference)}).",
            path,
            "check that the label map belongs to this image (same patient and scan).",
        )
    return out
