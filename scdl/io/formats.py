"""Which files SCDL reads and writes, recognised by extension (and DICOM files by their content)."""

from __future__ import annotations

import os
from pathlib import Path

#: Volume formats read by file name (lower-case extensions; ``.seg.nrrd`` is a NRRD file).
READ_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".seg.nrrd", ".nhdr", ".mha", ".mhd", ".dcm")
#: Formats :func:`scdl.io.writers.write_label_map` writes (``.dcm``: a DICOM SEG, only from a DICOM input).
LABEL_WRITE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd", ".dcm")
#: The label-map extension that writes a DICOM Segmentation (:mod:`scdl.io.dicomseg`).
DICOM_SEG_EXTENSION = ".dcm"
#: Formats :func:`scdl.io.writers.write_image` writes.
IMAGE_WRITE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Formats whose header names a separate data file (written as two files).
DETACHED_HEADER_EXTENSIONS = (".nhdr", ".mhd")

READABLE_DESCRIPTION = "NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) or a DICOM folder/file"

#: Multi-part extensions that file writers (SimpleITK, slicerio) choose their format by.
_COMPOUND_SUFFIXES = (".seg.nrrd", ".nii.gz", ".tar.gz")


def split_suffix(path: os.PathLike | str) -> tuple[str, str]:
    """Split ``name.nii.gz`` into ``("name", ".nii.gz")`` (compound suffixes kept whole)."""
    name = Path(path).name
    lower = name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, "." + ext


def extension(path: os.PathLike | str) -> str:
    """Lower-case extension, compound ones kept whole: ``a.nii.gz`` -> ``.nii.gz``, ``b.seg.nrrd`` -> ``.seg.nrrd``."""
    name = Path(path).name.lower()
    for compound in (".seg.nrrd", ".nii.gz"):
        if name.endswith(compound) and len(name) > len(compound):
            return compound
    return split_suffix(name)[1]


def is_dicom_file(path: os.PathLike | str) -> bool:
    """True if the file starts with a DICOM Part 10 preamble (``DICM`` at byte 128), whatever its name."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"
