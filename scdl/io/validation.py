"""Checks of input volumes: one clear :class:`~scdl.errors.ScdlError` per problem the user can fix.

- :func:`check_volume`: a single 3D scalar volume with voxels, all finite.
- :func:`check_nifti_file`: ITK reads a truncated NIfTI without complaint (the missing voxels become 0) and
  turns NaN/inf voxels of float NIfTI files into 0, so both are checked on the file first.
- :func:`check_ct_values`: a CT must not be constant; values that do not look like Hounsfield units are
  reported through a ``warn`` callback and reading continues.
"""

from __future__ import annotations

import gzip
import math
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

#: Plausible voxel size of a CT (and of a label map on its grid), in mm. Clinical CT has 0.2-1 mm in-plane and
#: 0.5-10 mm between slices; a micro-CT is not what the models segment. Outside these bounds the header is wrong
#: (spacing in cm or m, a lost pixdim), and a resampling to the model's grid would make a grid far too small or
#: impossibly large (spacing 100 mm: 119,164 windows, 7 h; 500 mm: an allocation failure).
SPACING_MIN_MM = 0.05
SPACING_MAX_MM = 20.0


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
    check_spacing(img, path, what)
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


def check_spacing(img: sitk.Image, path: "os.PathLike[str] | str", what: str = "image") -> None:
    """Raise :class:`ScdlError` when a voxel size is not finite or outside [:data:`SPACING_MIN_MM`,
    :data:`SPACING_MAX_MM`] (a header error; refused before any resampling, with the numbers)."""
    spacing = [float(v) for v in img.GetSpacing()]
    if all(math.isfinite(v) and SPACING_MIN_MM <= v <= SPACING_MAX_MM for v in spacing):
        return
    shown = " x ".join(f"{v:.4g}" for v in spacing)
    raise ScdlError(
        f"the {what} has a voxel size of {shown} mm, outside the plausible range for CT ({SPACING_MIN_MM:g} to "
        f"{SPACING_MAX_MM:g} mm per axis): the header's spacing is wrong (units of cm or m, or a lost voxel size), "
        f"and resampling it to the model's grid would make no sense.",
        path,
        "correct the voxel size in the file's header (in 3D Slicer: Volumes > Volume Information > Image "
        "Spacing, then save), or re-export the scan.",
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
    pixdim: tuple[float, ...] = ()     # voxel size of axes 1..3 as the header says (pixdim[1:4])
    sform_code: int = 0

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
            pixdim = struct.unpack(endian + "3f", header[80:92])
            sform_code = struct.unpack(endian + "h", header[254:256])[0]
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            vox_offset = struct.unpack(endian + "q", header[168:176])[0]
            pixdim = struct.unpack(endian + "3d", header[112:136])
            sform_code = struct.unpack(endian + "i", header[348:352])[0]
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
    return NiftiLayout(int(vox_offset), count * bitpix // 8, int(datatype), endian, shape,
                       tuple(float(v) for v in pixdim), int(sform_code))


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
    if layout.sform_code <= 0 and not all(math.isfinite(v) and v != 0 for v in layout.pixdim[:min(len(layout.shape), 3)]):
        # without an sform the voxel size IS pixdim; ITK silently reads 0 or NaN as 1 mm
        raise ScdlError(
            f"has no voxel size: its header's pixdim is {' x '.join(f'{v:g}' for v in layout.pixdim)} (zero or "
            f"not a number) and it has no sform; a reader would silently assume 1 mm.",
            path,
            "write the voxel size into the header (re-export the scan, or set pixdim in a NIfTI editor).",
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


# -- detached headers (.nhdr, .mhd) -------------------------------------------------------------
#: Set to 1 to let a detached header name data files outside its own folder (absolute paths, ``..``).
ALLOW_EXTERNAL_DATA_ENV = "SCDL_ALLOW_EXTERNAL_DATA"
#: A header is at most this long (a detached header is a few hundred bytes; its LIST of files may be long).
_HEADER_LIMIT = 4 << 20


def detached_data_files(path: "os.PathLike[str] | str") -> list[str]:
    """The data file names a ``.nhdr`` (``data file:``) or ``.mhd`` (``ElementDataFile =``) header names, as
    written (``LIST`` lists each; a ``%d`` pattern gives the pattern itself). [] for a header with attached data."""
    path = os.fspath(path)
    with open(path, "rb") as handle:
        text = handle.read(_HEADER_LIMIT).decode("latin-1")
    lines = text.splitlines()
    if path.lower().endswith(".nhdr"):
        for index, line in enumerate(lines):
            if not line.strip():
                break                                  # the header ends at the first blank line
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() in ("data file", "datafile"):
                value = value.lstrip("=").strip()
                if value.upper().startswith("LIST"):
                    return [f.strip() for f in lines[index + 1:] if f.strip()]
                return [value.split()[0] if "%" in value else value]
        return []
    for index, line in enumerate(lines):
        key, sep, value = line.partition("=")
        if sep and key.strip() == "ElementDataFile":
            value = value.strip()
            if value.upper() == "LOCAL":
                return []
            if value.upper().startswith("LIST"):
                return [f.strip() for f in lines[index + 1:] if f.strip()]
            return [value.split()[0] if "%" in value else value]
    return []


def check_detached_header(path: "os.PathLike[str] | str") -> None:
    """A detached header may name data files only inside its own folder (unless ``SCDL_ALLOW_EXTERNAL_DATA=1``),
    and they must be regular files: a header that points at ``/etc/passwd`` or ``/dev/zero`` is refused."""
    path = os.fspath(path)
    allow = os.environ.get(ALLOW_EXTERNAL_DATA_ENV, "").strip() in ("1", "true", "yes")
    try:
        names = detached_data_files(path)
    except OSError as err:
        raise ScdlError(f"cannot be read ({err.strerror or err}).", path, "check the file.") from None
    folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    for name in names:
        full = os.path.realpath(os.path.join(folder, name))
        if not allow and os.path.commonpath([folder, full]) != folder:
            raise ScdlError(
                f"its header names the data file {name!r}, outside the header's own folder; SCDL reads data only "
                f"from the header's folder.", path,
                f"put the data file beside the header and name it without a folder, or allow it with "
                f"{ALLOW_EXTERNAL_DATA_ENV}=1 if you trust this header.")
        if "%" in name:
            continue                                   # a numbered pattern: the reader checks the files
        from scdl.io.paths import check_input_path

        check_input_path(full, "data file")
