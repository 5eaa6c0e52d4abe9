"""Reading any supported volume file or DICOM series as a validated 3D SimpleITK image: :func:`read_image`.

The format follows the extension (:mod:`scdl.io.formats`); DICOM files are also recognised by their content.
:mod:`scdl.io.image` builds the CT and label-map readers on it; :mod:`scdl.io.mask_folder` reads each mask with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io import dicom
from scdl.io.formats import (DETACHED_HEADER_EXTENSIONS, READ_EXTENSIONS, READABLE_DESCRIPTION, extension,
                             is_dicom_file, split_suffix)
from scdl.io.nifti_nibabel import is_orthonormal_refusal, read_nifti_nibabel
from scdl.io.paths import check_folder_entries, check_input_path
from scdl.io.validation import check_detached_header, check_nifti_file, check_volume

#: Where a reader reports notes the user should see (one line each); None: nowhere.
Warn = Optional[Callable[[str], None]]


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
        if nifti and is_orthonormal_refusal(err):
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
