"""DICOM folders: list the series in a folder, choose the CT series, read it as one 3D volume (SimpleITK/GDCM).

File names do not matter (with or without ``.dcm``): GDCM looks at every file in the folder (not sub-folders)
and groups slices by Series Instance UID. With several series, :func:`select_series` takes the CT series with
the most slices (non-image objects such as DICOM SEG or RT structure sets are never chosen) unless the user
names one with ``series_uid``; the choice is reported through a ``report`` callback.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import SimpleITK as sitk

from scdl.errors import ScdlError

#: Modalities that are images of a patient (never DICOM SEG, RTSTRUCT, SR, PR, ...).
IMAGE_MODALITIES = ("CT", "MR", "PT", "NM", "US", "CR", "DX", "XA", "RF", "MG", "OT", "SC")
#: Relative deviation of slice gaps above which a series is rejected as non-uniform (missing or damaged slices):
#: a regular 3D grid could not keep every slice at its true position.
SLICE_GAP_TOLERANCE = 0.01

_TAGS = {"modality": "0008|0060", "description": "0008|103e", "number": "0020|0011", "uid": "0020|000e"}


@dataclass
class SeriesInfo:
    """One DICOM series in a folder.

    Attributes:
        uid: Series Instance UID ("" when the files carry none, e.g. after anonymisation).
        files: file paths, in the order GDCM sorts the slices.
        modality: DICOM modality ("CT", "SEG", ...), "" if absent.
        description: Series Description, "" if absent.
        number: Series Number, "" if absent.
        frames: number of slices/frames (files, or frames of a multi-frame file).
    """

    uid: str
    files: list[str]
    modality: str = ""
    description: str = ""
    number: str = ""
    frames: int = 0

    @property
    def is_image(self) -> bool:
        return self.modality in IMAGE_MODALITIES or self.modality == ""

    def label(self) -> str:
        """Short description for messages: ``CT series 2 "CT Body 3.0" (20 slices, UID 1.2.3...)``."""
        parts = [f"{self.modality or 'unknown-modality'} series"]
        if self.number:
            parts.append(self.number)
        if self.description:
            parts.append(f'"{self.description}"')
        uid = self.uid if self.uid else "(no series UID)"
        return " ".join(parts) + f" ({self.frames} slice{'s' if self.frames != 1 else ''}, UID {uid})"


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK's own warnings on stderr (GDCM's "No Series were found", "Non uniform sampling ..."):
    SCDL reports these situations itself, in one clear line."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _header(path: str) -> Optional[sitk.ImageFileReader]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.SetImageIO("GDCMImageIO")
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader


def _tag(reader: Optional[sitk.ImageFileReader], key: str) -> str:
    if reader is None or not reader.HasMetaDataKey(key):
        return ""
    return reader.GetMetaData(key).strip()


def list_series(folder: os.PathLike | str) -> list[SeriesInfo]:
    """All DICOM series in ``folder`` (not recursive), biggest first; [] if there is no DICOM file."""
    folder = os.fspath(folder)
    with quiet_itk():
        series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    out = []
    for uid in series_ids:
        with quiet_itk():
            files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uid))
        if not files:
            continue
        head = _header(files[0])
        frames = len(files)
        if len(files) == 1 and head is not None and head.GetDimension() == 3:
            frames = int(head.GetSize()[2])
        out.append(
            SeriesInfo(
                uid=uid,
                files=files,
                modality=_tag(head, _TAGS["modality"]).upper(),
                description=_tag(head, _TAGS["description"]),
                number=_tag(head, _TAGS["number"]),
                frames=frames,
            )
        )
    out.sort(key=lambda s: (-s.frames, s.uid))
    return out


def select_series(
    folder: os.PathLike | str,
    series_uid: Optional[str] = None,
    report: Optional[Callable[[str], None]] = None,
) -> SeriesInfo:
    """The series to read from ``folder``.

    Args:
        folder: DICOM folder.
        series_uid: pick this Series Instance UID; default: the CT series with the most slices
            (any image series when there is no CT).
        report: called with one line naming the chosen series when the folder holds more than one.
    """
    folder = os.fspath(folder)
    all_series = list_series(folder)
    if not all_series:
        raise ScdlError(
            "contains no readable DICOM files.",
            folder,
            "choose the folder that holds the CT slices (DICOM), or give a NIfTI/NRRD/MHA file.",
        )
    if series_uid is not None:
        for series in all_series:
            if series.uid == series_uid:
                return series
        listing = "; ".join(s.label() for s in all_series)
        raise ScdlError(
            f"has no DICOM series with UID {series_uid!r}. Series found: {listing}.",
            folder,
            "pass one of the listed UIDs with --series-uid, or leave it out to take the largest CT series.",
        )
    images = [s for s in all_series if s.is_image]
    if not images:
        listing = "; ".join(s.label() for s in all_series)
        raise ScdlError(
            f"contains DICOM objects but no image series ({listing}).",
            folder,
            "choose the folder with the CT image slices (a segmentation or report object alone cannot be segmented).",
        )
    ct = [s for s in images if s.modality == "CT"]
    chosen = (ct or images)[0]
    if len(all_series) > 1 and report is not None:
        others = "; ".join(s.label() for s in all_series if s is not chosen)
        report(
            f"{folder}: {len(all_series)} DICOM series found; using {chosen.label()} "
            f"(the {'CT ' if ct else ''}series with the most slices). Others: {others}. "
            f"Choose another with --series-uid."
        )
    return chosen


def read_series(series: SeriesInfo, report: Optional[Callable[[str], None]] = None) -> sitk.Image:  # noqa: ARG001 - report
    """Read one series as a 3D image (HU for CT: GDCM applies the rescale slope/intercept).

    Slices are ordered by position; origin, spacing and (oblique) direction come from the DICOM geometry.
    A series whose slice gaps are not uniform (a missing or unreadable slice) is rejected, because a regular
    grid would misplace slices. ``report`` is accepted for symmetry with :func:`select_series`.
    """
    where = os.path.dirname(series.files[0]) or "."
    if len(series.files) == 1:
        reader = sitk.ImageFileReader()
        reader.SetFileName(series.files[0])
        reader.SetImageIO("GDCMImageIO")
        try:
            with quiet_itk():
                return reader.Execute()
        except RuntimeError as err:
            raise _unreadable(series.files[0], err) from err
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames(series.files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with quiet_itk():
            image = reader.Execute()
    except RuntimeError as err:
        raise _unreadable(where, err, series) from err
    _check_slice_gaps(reader, image, series, where)
    return image


def _unreadable(path: str, err: Exception, series: Optional[SeriesInfo] = None) -> ScdlError:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    detail = next((line for line in lines if "ERROR" in line), lines[-1] if lines else "")
    what = f"the DICOM series {series.label()}" if series is not None else "the DICOM file"
    return ScdlError(
        f"{what} cannot be read (damaged, truncated or unsupported file: {detail[:200]}).",
        path,
        "copy the series again from the scanner/PACS; remove damaged files from the folder.",
    )


def _check_slice_gaps(reader: sitk.ImageSeriesReader, image: sitk.Image, series: SeriesInfo, where: str) -> None:
    positions = []
    for index in range(len(series.files)):
        if not reader.HasMetaDataKey(index, "0020|0032"):
            return
        try:
            positions.append([float(v) for v in reader.GetMetaData(index, "0020|0032").split("\\")])
        except ValueError:
            return
    normal = np.asarray(image.GetDirection(), float).reshape(3, 3)[:, 2]
    gaps = np.diff(np.sort(np.asarray(positions) @ normal))
    if gaps.size < 2:
        return
    median = float(np.median(gaps))
    if median <= 0 or float(np.max(np.abs(gaps - median))) <= SLICE_GAP_TOLERANCE * median:
        return
    raise ScdlError(
        f"the slices of {series.label()} are not evenly spaced (gaps from {gaps.min():.3g} to {gaps.max():.3g} mm): "
        f"a slice is missing or unreadable, or the series has variable spacing.",
        where,
        "copy the complete series again (a damaged file is skipped by the DICOM reader); for a series with variable "
        "spacing, load it in 3D Slicer (which regularises the geometry) and save it as .nrrd.",
    )


def folder_series_for_file(path: os.PathLike | str) -> SeriesInfo:
    """The series, among those in the file's folder, that contains this DICOM file."""
    path = Path(path).resolve()
    if _header(str(path)) is None:
        raise ScdlError(
            "cannot be read as DICOM (damaged, truncated or not a DICOM file).",
            path,
            "copy the file again, or give the folder that holds the series.",
        )
    for series in list_series(path.parent):
        if any(Path(f).resolve() == path for f in series.files):
            return series
    raise ScdlError("cannot be read as part of a DICOM series.", path, "give the folder that holds the series.")
