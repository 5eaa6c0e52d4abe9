"""DICOM Segmentation objects (``.dcm``): the label map as a DICOM SEG that references its source CT series.

The one owner of the format. :func:`write_dicom_seg` writes, with highdicom, a BINARY Segmentation Storage
object:

- one segment per organ present in the label map (segment numbers 1..K in label-value order; an organ the
  model did not find is not described, a DICOM SEG segment must have pixels to mean anything);
- each segment carries the label table's SNOMED CT codes (Segmented Property Category, Type and the type's
  laterality modifier, e.g. kidney + right), its name as Segment Label and its colour
  (Recommended Display CIELab Value);
- the model as the algorithm (Segment Algorithm Type AUTOMATIC, Algorithm Identification Sequence: the model
  id as Algorithm Name, the card's version, family "Artificial Intelligence", source "SCDL");
- frames only where a segment is present, each referencing the source CT image at its position (Source
  Image Sequence / Referenced SOP Instance UID per frame), patient and study taken from the source series.

A DICOM SEG cannot exist without its source DICOM images (it is defined on their frames and carries their
patient, study and frame of reference): from any other input the writer refuses (:func:`refuse_without_dicom`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from scdl.errors import ScdlError
from scdl.io.formats import DICOM_SEG_EXTENSION  # noqa: F401 - the extension that writes a DICOM SEG
from scdl.io.labelimage import as_label_image
from scdl.labels.protocol import LabelTableLike
from scdl.labels.table import LabelEntry

#: Segmentation Storage.
SEGMENTATION_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.1.66.4"
#: Used for a label without terminology in its table (a custom table): "Tissue" of category "Tissue".
_FALLBACK_CATEGORY = ("SCT", "85756007", "Tissue")
_FALLBACK_TYPE = ("SCT", "85756007", "Tissue")
#: Series Number of the segmentation series (the source's number is not known to be free; 0 is not allowed).
SERIES_NUMBER = 900


def refuse_without_dicom(path: "os.PathLike[str] | str") -> ScdlError:
    """The one-line error for a ``.dcm`` output whose input is not a DICOM series."""
    return ScdlError(
        "a DICOM SEG must reference the source DICOM images, and the input is not a DICOM series.",
        path,
        "write .seg.nrrd or NIfTI (.nii.gz) instead, or give the DICOM folder as the input.",
    )


def dicom_source_files(input_path: "os.PathLike[str] | str", series_uid: Optional[str] = None) -> Optional[list[str]]:
    """The files of the DICOM series that ``scdl.io.image.read_image`` reads for ``input_path`` (same choice:
    a folder's largest CT series or ``series_uid``; a DICOM file's own series), in slice order; None when the
    input is not DICOM."""
    from scdl.io import dicom
    from scdl.io.formats import READ_EXTENSIONS, extension, is_dicom_file

    path = Path(input_path)
    if path.is_dir():
        series = dicom.select_series(path, series_uid)
    elif extension(path) == ".dcm" or (extension(path) not in READ_EXTENSIONS and is_dicom_file(path)):
        series = (dicom.select_series(path.parent, series_uid) if series_uid is not None
                  else dicom.folder_series_for_file(path))
    else:
        return None
    return list(series.files) if series.is_image else None


def dicom_seg_sources(input_path: "os.PathLike[str] | str", series_uid: Optional[str],
                      target: "os.PathLike[str] | str") -> list[str]:
    """The source files of a DICOM SEG written to ``target`` from ``input_path``, checked BEFORE any work: the input
    is a DICOM image series whose files carry the identifiers a DICOM SEG must reference.

    Raises:
        ScdlError: the input is not DICOM (:func:`refuse_without_dicom`), or its files lack a Study, Series or
            SOP Instance UID (e.g. removed by anonymisation).
    """
    files = dicom_source_files(input_path, series_uid)
    if files is None:
        raise refuse_without_dicom(target)
    _read_sources(files, Path(target))
    return files


def _uid(ds: Any, keyword: str) -> str:
    return str(getattr(ds, keyword, "") or "").strip()


def _read_sources(files: Sequence[str], target: Path) -> list:
    """The source files' headers (no pixels). A SOP Class / Instance UID missing from the data set is taken
    from the file meta information (PS3.10 makes them equal); a missing Study or Series Instance UID, or
    Frame of Reference UID, is refused: the DICOM SEG could not be tied to the images."""
    import pydicom

    datasets = []
    for name in files:
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True)
        except Exception as err:  # noqa: BLE001 - pydicom raises many kinds for a damaged file
            raise ScdlError(f"the source DICOM file {name} cannot be read for the DICOM SEG ({err}).", target,
                            "copy the series again, or write .seg.nrrd or NIfTI instead.") from None
        meta = getattr(ds, "file_meta", None)
        for keyword, meta_keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                      ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
            if not _uid(ds, keyword) and meta is not None and _uid(meta, meta_keyword):
                setattr(ds, keyword, _uid(meta, meta_keyword))
        missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
                   if not _uid(ds, k)]
        if missing:
            raise ScdlError(
                f"the source DICOM files carry no {', '.join(missing)} (removed by anonymisation?), which a DICOM "
                f"SEG must reference (first: {name}).", target,
                "write .seg.nrrd or NIfTI (.nii.gz) instead, or use a series with its DICOM UIDs.")
        datasets.append(ds)
    return datasets


def _entry(table: Optional[LabelTableLike], value: int) -> Optional[LabelEntry]:
    """The label table's entry of ``value``, or None (no table, or a value the table does not name)."""
    if table is None:
        return None
    try:
        return table.by_value(value)
    except KeyError:
        return None


def _code(code: Any, fallback: tuple[str, str, str]):
    from highdicom.sr import CodedConcept

    if code is None:
        return CodedConcept(value=fallback[1], scheme_designator=fallback[0], meaning=fallback[2])
    return CodedConcept(value=str(code.value), scheme_designator=str(code.scheme), meaning=str(code.meaning))


def _check_correspondence(label_img: sitk.Image, datasets: Sequence[Any], target: Path) -> None:
    """The label map's slice k must lie on source file k (what the DICOM reader produced)."""
    size = label_img.GetSize()
    if len(datasets) != size[2] or any(int(ds.Rows) != size[1] or int(ds.Columns) != size[0] for ds in datasets):
        raise ScdlError(f"the label map ({size[0]} x {size[1]} x {size[2]}) is not on the grid of its {len(datasets)} "
                        "source DICOM images.", target, "write .seg.nrrd or NIfTI instead.")
    tolerance = 1e-3 * max(min(label_img.GetSpacing()), 1e-3) + 1e-3
    for k, ds in enumerate(datasets):
        position = getattr(ds, "ImagePositionPatient", None)
        if position is None:
            continue
        expected = label_img.TransformIndexToPhysicalPoint((0, 0, k))
        if np.max(np.abs(np.asarray([float(v) for v in position]) - np.asarray(expected))) > max(tolerance, 0.01):
            raise ScdlError(f"slice {k} of the label map does not lie on its source DICOM image "
                            f"{getattr(ds, 'SOPInstanceUID', '?')}.", target, "write .seg.nrrd or NIfTI instead.")


def build_dicom_seg(label_img: sitk.Image, table: Optional[LabelTableLike], source_files: Sequence[str],
                    model: Optional[Mapping[str, Any]] = None, target: "os.PathLike[str] | str" = "seg.dcm"):
    """The ``highdicom.seg.Segmentation`` of a label map on the grid of the DICOM series ``source_files``
    (in the order the series was read: label-map slice k = file k).

    Args:
        label_img: integer label map read from / computed on that series.
        table: the ``LabelTable`` naming the label values (names, colours, SNOMED CT codes); None: "label N".
        source_files: the source series' files.
        model: the model card (``id``, ``version``, ``title``) recorded as the algorithm.
    """
    import highdicom as hd
    from highdicom.color import CIELabColor
    from pydicom.sr.codedict import codes

    import scdl

    target = Path(target)
    label_img = as_label_image(label_img)
    arr = sitk.GetArrayFromImage(label_img)
    values = [int(v) for v in np.unique(arr) if v != 0]
    if not values:
        raise ScdlError("no organ was found, and a DICOM SEG needs at least one segment.", target,
                        "write .seg.nrrd or NIfTI to keep an empty result, or check the input CT.")
    datasets = _read_sources(source_files, target)
    _check_correspondence(label_img, datasets, target)

    model = dict(model or {})
    model_id = str(model.get("id") or "unknown model")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_id, family=codes.cid7162.ArtificialIntelligence, version=str(model.get("version") or "unknown"),
        source="SCDL")
    descriptions = []
    numbered = np.zeros(arr.shape, dtype=np.uint8 if len(values) < 256 else np.uint16)
    for number, value in enumerate(values, start=1):
        entry = _entry(table, value)
        name = entry.name if entry is not None else f"label {value}"
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=_code(entry.category if entry is not None else None, _FALLBACK_CATEGORY),
            segmented_property_type=_code(entry.type if entry is not None else None, _FALLBACK_TYPE),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=f"{name} ({model_id})"[:64],
            display_color=CIELabColor.from_rgb(*entry.color) if entry is not None else None,
        )
        if entry is not None and entry.has_terminology and entry.modifier is not None:
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                _code(entry.modifier, _FALLBACK_TYPE)]
        descriptions.append(description)
        numbered[arr == value] = number
    try:
        return hd.seg.Segmentation(
            source_images=datasets,
            pixel_array=numbered,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="SCDL",
            manufacturer_model_name=model_id[:64],
            software_versions=f"scdl {scdl.__version__}",
            device_serial_number="none",
            series_description=f"SCDL segmentation ({model_id})"[:64],
            content_description=f"Organs segmented by {model_id}"[:64],
            content_label="SCDL",
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        raise ScdlError(f"the DICOM SEG could not be built from the source series ({err}).", target,
                        "write .seg.nrrd or NIfTI instead.") from None


def write_dicom_seg(label_img: sitk.Image, path: "os.PathLike[str] | str", table: Optional[LabelTableLike] = None,
                    source_files: Optional[Sequence[str]] = None,
                    model: Optional[Mapping[str, Any]] = None) -> Path:
    """Write the label map as a DICOM SEG (see the module docstring), atomically; read back before the rename.

    Raises:
        ScdlError: ``source_files`` is None (the input was not DICOM), the label map is empty, or the label map
            does not lie on the source series.
    """
    import pydicom

    from scdl.io.atomic import atomic_path

    path = Path(path)
    if not source_files:
        raise refuse_without_dicom(path)
    seg = build_dicom_seg(label_img, table, source_files, model, path)
    frames = int(seg.NumberOfFrames)
    expected = (frames * int(seg.Rows) * int(seg.Columns) + 7) // 8
    with atomic_path(path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
        try:
            back = pydicom.dcmread(tmp)
            complete = back.SOPClassUID == SEGMENTATION_SOP_CLASS_UID and len(back.PixelData) >= expected
        except Exception:  # noqa: BLE001 - any failure to read back is an incomplete file
            complete = False
        if not complete:
            raise ScdlError("the DICOM SEG could not be written completely; nothing was replaced.", path,
                            "free disk space (a full disk is the usual cause) or choose another output folder.")
    return path
