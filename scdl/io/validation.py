"""Checks of input volumes: one clear :class:`~scdl.errors.ScdlError` per problem the user can fix.

- :func:`check_volume`: a single 3D scalar volume with voxels, all finite.
- :func:`check_nifti_file`: ITK reads a truncated NIfTI without complaint (the missing voxels become 0) and
  turns NaN/inf voxels of float NIfTI files into 0, so both are checked on the file first.
- :func:`check_ct_values`: a CT must not be constant; values that do not look like Hounsfield units are
  reported through a ``warn`` callback and reading continues.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional

import numpy as np
import SimpleITK as sitk

from scdl.errors import ScdlError

#: HU plausibility thresholds (a warning only). CT of a body always contains air (about -1000 HU) and
#: rarely more than 0.5 % of voxels above 4000 HU.
HU_AIR_BELOW = -200.0
HU_HIGH_PERCENTILE = 99.5
HU_HIGH_ABOVE = 4000.0
#: Voxels sampled for the HU check (a strided subsample; the check is a heuristic).
HU_SAMPLE_VOXELS = 2_000_000

_FLOAT_TYPES = {sitk.sitkFloat32, sitk.sitkFloat64}


def check_volume(img: sitk.Image, path: "os.PathLike[str] | str", what: str = "image") -> None:
    """Raise :class:`ScdlError` unless ``img`` is one 3D scalar volume with at least 2 voxels per axis and finite values."""
    dim = img.GetDimension()
    size = tuple(img.GetSize())
    if dim == 2 or (dim == 3 and min(size) == 1):
        raise ScdlError(
            f"is a 2D {what} ({'x'.join(map(str, size))} voxels); a 3D volume is needed.",
            path,
            "give the whole series or volume (for DICOM: the folder with all slices), not a single slice.",
        )
    if dim == 4:
        raise ScdlError(
            f"is a 4D {what} ({'x'.join(map(str, size))} voxels: several volumes or overlapping segment layers).",
            path,
            "extract one 3D volume (e.g. one time point, or export a label map from Slicer) and give that file.",
        )
    if dim != 3:
        raise ScdlError(f"has {dim} dimensions; a 3D volume is needed.", path, "give a 3D volume.")
    if min(size) == 0:
        raise ScdlError(f"is empty ({'x'.join(map(str, size))} voxels).", path, "give a volume that contains voxels.")
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ScdlError(
            f"has {img.GetNumberOfComponentsPerPixel()} values per voxel (colour or vector image); "
            f"a greyscale volume is needed.",
            path,
            "give a single-channel CT volume.",
        )
    if img.GetPixelID() in _FLOAT_TYPES:
        arr = sitk.GetArrayViewFromImage(img)
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(arr.size - np.count_nonzero(finite))
            raise ScdlError(
                f"contains {bad} voxel(s) that are NaN or infinite.",
                path,
                "re-export the volume without NaN/inf values (e.g. replace them with -1024 for CT).",
            )


def check_ct_values(
    img: sitk.Image,
    path: "os.PathLike[str] | str",
    warn: Optional[Callable[[str], None]] = None,
    *,
    air_below: float = HU_AIR_BELOW,
    high_percentile: float = HU_HIGH_PERCENTILE,
    high_above: float = HU_HIGH_ABOVE,
    sample_voxels: int = HU_SAMPLE_VOXELS,
) -> None:
    """Reject a constant volume; warn (via ``warn``) when the values do not look like CT in HU.

    The warning fires when no voxel is below ``air_below`` (no air), or when the ``high_percentile``-th
    percentile of a strided sample of about ``sample_voxels`` voxels is above ``high_above``.
    """
    arr = sitk.GetArrayViewFromImage(img)
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise ScdlError(
            f"contains no image: every voxel has the value {lo:g}.",
            path,
            "check that the right file was exported (a blank volume cannot be segmented).",
        )
    if warn is None:
        return
    step = max(1, int(round((arr.size / sample_voxels) ** (1 / 3))))
    sample = np.asarray(arr[::step, ::step, ::step], dtype=np.float32)
    high = float(np.percentile(sample, high_percentile))
    problems = []
    if lo > air_below:
        problems.append(f"no voxel is below {air_below:g} HU (air is about -1000 HU)")
    if high > high_above:
        problems.append(f"{100 - high_percentile:g} % of the voxels are above {high:.0f} (bone is below ~2000 HU)")
    if problems:
        warn(
            f"{os.fspath(path)}: values range from {lo:g} to {hi:g}: {'; '.join(problems)}. This does not look like "
            f"CT in Hounsfield units (MR, a normalised/8-bit export, or CT without its rescale slope/intercept?). "
            f"The model expects HU; results may be meaningless. Continuing."
        )


# -- NIfTI checks that ITK does not do ----------------------------------------------------------
#: NIfTI datatype codes of floating-point voxels -> numpy dtype.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


@dataclass(frozen=True)
class NiftiLayout:
    """Where the voxels of a NIfTI-1/2 file are: ``vox_offset``, byte count, datatype code, byte order."""

    vox_offset: int
    data_bytes: int
    datatype: int
    endian: str
    shape: tuple[int, ...] = ()

    @property
    def expected_bytes(self) -> int:
        return self.vox_offset + self.data_bytes


def nifti_layout(header: bytes) -> Optional[NiftiLayout]:
    """Parse the start of a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header; None if it is not one."""
    for endian in ("<", ">"):
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            vox_offset = int(struct.unpack(endian + "f", header[108:112])[0])
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    ndim = dims[0]
    if not 1 <= ndim <= 7 or bitpix <= 0:
        return None
    count = 1
    for n in dims[1 : ndim + 1]:
        count *= max(int(n), 0)
    shape = tuple(int(n) for n in dims[1 : ndim + 1])
    return NiftiLayout(int(vox_offset), count * bitpix // 8, int(datatype), endian, shape)


def _open_nifti(path: str) -> BinaryIO:
    return gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")


def _gzip_trailer_size(path: str) -> Optional[int]:
    """ISIZE of a gzip file (uncompressed size mod 2**32, its last 4 bytes). For a file cut off inside the
    compressed data these bytes are arbitrary, so a match with the header's size means "complete" (a false
    match has probability 2**-32); a mismatch triggers a full decompression to be sure."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() < 18:
            return None
        handle.seek(-4, os.SEEK_END)
        return struct.unpack("<I", handle.read(4))[0]


def _stream_stats(path: str, layout: NiftiLayout) -> tuple[int, bool, int]:
    """(bytes present after the header, stream intact, number of non-finite float voxels) in one pass."""
    dtype = np.dtype(layout.endian + _NIFTI_FLOATS[layout.datatype]) if layout.datatype in _NIFTI_FLOATS else None
    total, bad, intact = 0, 0, True
    pending = b""
    try:
        with _open_nifti(path) as handle:
            handle.seek(layout.vox_offset)
            while chunk := handle.read(1 << 20):
                total += len(chunk)
                if dtype is not None:
                    chunk = pending + chunk
                    usable = len(chunk) - len(chunk) % dtype.itemsize
                    values = np.frombuffer(chunk[:usable], dtype=dtype)
                    bad += int(values.size - np.count_nonzero(np.isfinite(values)))
                    pending = chunk[usable:]
    except (EOFError, OSError, zlib.error):
        intact = False
    return total, intact, bad


def check_nifti_file(path: "os.PathLike[str] | str") -> None:
    """Checks ITK skips for NIfTI: a truncated file (ITK fills the missing voxels with 0) and NaN/inf voxels
    in float files (ITK turns them into 0). Raises :class:`ScdlError`."""
    path = os.fspath(path)
    try:
        with _open_nifti(path) as handle:
            header = handle.read(540)
    except (OSError, EOFError, zlib.error) as err:
        raise ScdlError(f"cannot be read as NIfTI ({err}).", path, "re-export or copy the file again.") from err
    layout = nifti_layout(header)
    if layout is None:
        raise ScdlError(
            "is not a valid NIfTI file (no NIfTI header).",
            path,
            "check that the file is a NIfTI volume and was copied completely.",
        )
    if 0 in layout.shape:
        raise ScdlError(
            f"is empty: its header declares {'x'.join(map(str, layout.shape))} voxels.",
            path,
            "give a volume that contains voxels (the export probably failed).",
        )
    compressed = path.lower().endswith(".gz")
    if layout.datatype in _NIFTI_FLOATS or (
        compressed and _gzip_trailer_size(path) != layout.expected_bytes % (1 << 32)
    ):
        present, intact, bad = _stream_stats(path, layout)
    elif compressed:
        present, intact, bad = layout.data_bytes, True, 0  # gzip trailer agrees with the header
    else:
        present, intact, bad = max(0, os.path.getsize(path) - layout.vox_offset), True, 0
    if not intact:
        raise ScdlError(
            f"is truncated or damaged: its compressed data breaks off before the end of the "
            f"{layout.data_bytes} bytes of voxels that the header declares.",
            path,
            "copy or download the file again (it was probably cut off during transfer).",
        )
    if present < layout.data_bytes:
        raise ScdlError(
            f"is truncated: the header declares {layout.data_bytes} bytes of voxels but the file holds {present}.",
            path,
            "copy or download the file again (it was probably cut off during transfer).",
        )
    if bad:
        raise ScdlError(
            f"contains {bad} voxel(s) that are NaN or infinite.",
            path,
            "re-export the volume without NaN/inf values (e.g. replace them with -1024 for CT).",
        )
