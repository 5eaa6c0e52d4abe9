"""Measure per-organ and per-tissue HU statistics on real CT with TotalSegmentator v2 label maps.

These measurements are the defaults of the phantom generator (:mod:`scdl.phantom.hu_table`); the script
``bench/measure_hu.py`` runs :func:`measure_patients` on the two patients in ``shared/data`` and prints the
table that ``hu_table.py`` and ``docs/phantom.md`` quote.

Definitions (all voxels are paired on ONE grid; a label map on another grid is resampled onto the CT
with nearest neighbour first):

- organ ``interior``: voxels of the organ farther than ``erosion_mm`` (3 mm) from its border (Euclidean
  distance transform with the voxel spacing), which removes most partial volume with the neighbours.
  When fewer than ``min_interior`` voxels remain, the full mask is used and ``interior_fallback`` is set.
- ``air``: voxels outside the body mask with HU < -500 (the table is excluded by the threshold).
  Body mask: HU > -500, largest 3D connected component, holes filled slice by slice.
- ``fat``: body voxels without any TotalSegmentator label whose HU lies in the adipose window
  [-190, -30] (statistics within the window).
- ``muscle``: interior of the TotalSegmentator muscles present (gluteus maximus/medius/minimus,
  autochthon, iliopsoas).
- ``bone``: interior of the vertebrae and sacrum (trabecular bone); ``bone_cortex``: the remaining
  3 mm shell of the same masks (cortex, blurred by the scanner).
- ``bowel``: interior of small bowel, duodenum and colon with HU > -200 (the wall and content); the fraction
  of the whole bowel masks below -200 HU is reported as ``bowel_gas_fraction``.
- ``spinal_cord``: interior of TotalSegmentator's spinal cord.
- ``lung``: interior of the lung lobes present.
- ``stomach``: like every organ, and additionally ``stomach_soft`` (interior voxels with HU > -200: wall
  and content) and ``stomach_gas_fraction`` (fraction of the whole stomach mask below -200 HU).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from scdl.errors import ScdlError

#: Synapse organ value -> (name, TotalSegmentator v2 id).
SYNAPSE_FROM_TOTALSEG: dict[int, tuple[str, int]] = {
    1: ("spleen", 1),
    2: ("right_kidney", 2),
    3: ("left_kidney", 3),
    4: ("gallbladder", 4),
    5: ("esophagus", 15),
    6: ("liver", 5),
    7: ("stomach", 6),
    8: ("aorta", 52),
    9: ("inferior_vena_cava", 63),
    10: ("portal_and_splenic_veins", 64),
    11: ("pancreas", 7),
    12: ("right_adrenal_gland", 8),
    13: ("left_adrenal_gland", 9),
}

#: TotalSegmentator v2 ids of the tissue classes (see the module docstring).
MUSCLE_IDS = tuple(range(80, 90))
VERTEBRA_IDS = tuple(range(25, 51))
BOWEL_IDS = (18, 19, 20)
SPINAL_CORD_ID = 79
LUNG_IDS = (10, 11, 12, 13, 14)

FAT_WINDOW = (-190.0, -30.0)
BODY_THRESHOLD = -500.0
GAS_THRESHOLD = -200.0


@dataclass(frozen=True)
class Stat:
    """HU statistics of one structure in one patient.

    ``mean``/``std`` are those of the interior (or of the full mask when ``interior_fallback``);
    ``mean_full``/``std_full`` those of every labelled voxel. ``n`` counts the voxels used for ``mean``.
    """

    mean: float
    std: float
    n: int
    mean_full: float
    std_full: float
    n_full: int
    volume_ml: float
    interior_fallback: bool = False


def _stat(values_interior: np.ndarray, values_full: np.ndarray, voxel_ml: float, fallback: bool) -> Stat:
    v = values_interior.astype(np.float64)
    f = values_full.astype(np.float64)
    return Stat(
        mean=round(float(v.mean()), 1),
        std=round(float(v.std()), 1),
        n=int(v.size),
        mean_full=round(float(f.mean()), 1),
        std_full=round(float(f.std()), 1),
        n_full=int(f.size),
        volume_ml=round(float(f.size * voxel_ml), 2),
        interior_fallback=fallback,
    )


def body_mask(ct: np.ndarray, threshold: float = BODY_THRESHOLD) -> np.ndarray:
    """Body mask of a CT array (D, H, W): HU > threshold, largest component, holes filled per axial slice."""
    from scipy import ndimage

    mask = ct > threshold
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    mask = lab == int(np.argmax(sizes))
    for z in range(mask.shape[0]):
        mask[z] = ndimage.binary_fill_holes(mask[z])
    return mask


def interior(mask: np.ndarray, spacing_zyx: tuple[float, float, float], erosion_mm: float) -> np.ndarray:
    """Voxels of ``mask`` (D, H, W) farther than ``erosion_mm`` from the nearest voxel outside it."""
    from scipy import ndimage

    if erosion_mm <= 0 or not mask.any():
        return mask
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    dist = ndimage.distance_transform_edt(np.pad(mask[box], 1), sampling=spacing_zyx)[1:-1, 1:-1, 1:-1]
    out = np.zeros_like(mask)
    out[box] = dist > erosion_mm
    return out


def measure_arrays(ct: np.ndarray, seg: np.ndarray, spacing_zyx: tuple[float, float, float], *,
                   erosion_mm: float = 3.0, min_interior: int = 20) -> dict[str, Stat]:
    """HU statistics of the Synapse organs and the tissue classes in one patient.

    Args:
        ct: HU array (D, H, W).
        seg: TotalSegmentator v2 label array (D, H, W) on the same grid.
        spacing_zyx: voxel spacing in mm, array axis order.
        erosion_mm: border removed from each organ for the interior statistics.
        min_interior: below this many interior voxels the full mask is used.

    Returns:
        ``{name: Stat}`` for every Synapse organ present and ``air``, ``fat``, ``muscle``, ``bone``,
        ``bowel``, ``spinal_cord`` where present, plus ``bowel_gas_fraction`` (a Stat whose ``mean`` is the
        fraction) when bowel is labelled.
    """
    if ct.shape != seg.shape:
        raise ValueError(f"CT {ct.shape} and label map {seg.shape} are not on the same grid")
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    out: dict[str, Stat] = {}

    def add(name: str, mask: np.ndarray, erode: bool = True, window: Optional[tuple[float, float]] = None) -> None:
        full = mask
        if window is not None:
            full = mask & (ct >= window[0]) & (ct <= window[1])
        if not full.any():
            return
        inner = interior(mask, spacing_zyx, erosion_mm) & full if erode else full
        fallback = int(inner.sum()) < min_interior
        if fallback:
            inner = full
        out[name] = _stat(ct[inner], ct[full], voxel_ml, fallback)

    for _, (name, ts_id) in SYNAPSE_FROM_TOTALSEG.items():
        add(name, seg == ts_id)

    body = body_mask(ct)
    add("air", ~body & (ct < BODY_THRESHOLD), erode=False)
    add("fat", body & (seg == 0), erode=False, window=FAT_WINDOW)
    add("muscle", np.isin(seg, MUSCLE_IDS))
    vertebrae = np.isin(seg, VERTEBRA_IDS)
    add("bone", vertebrae)
    if vertebrae.any():
        add("bone_cortex", vertebrae & ~interior(vertebrae, spacing_zyx, erosion_mm), erode=False)
    add("spinal_cord", seg == SPINAL_CORD_ID)
    add("lung", np.isin(seg, LUNG_IDS))
    for name, mask in (("bowel", np.isin(seg, BOWEL_IDS)), ("stomach", seg == SYNAPSE_FROM_TOTALSEG[7][1])):
        soft = "bowel" if name == "bowel" else "stomach_soft"
        add(soft, mask, window=(GAS_THRESHOLD, np.inf))
        if mask.any():
            n = int(mask.sum())
            frac = round(float((ct[mask] < GAS_THRESHOLD).mean()), 3)
            out[f"{name}_gas_fraction"] = Stat(frac, 0.0, n, frac, 0.0, n, round(n * voxel_ml, 2))
    return out


def _read_ct(path: Path):
    import SimpleITK as sitk

    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        files = reader.GetGDCMSeriesFileNames(str(path))
        if not files:
            raise ScdlError("no DICOM series found in this folder.", path, "point to a folder of CT DICOM files.")
        reader.SetFileNames(files)
        return reader.Execute()
    return sitk.ReadImage(str(path))


def measure_pair(ct_path: os.PathLike | str, seg_path: os.PathLike | str, **kwargs) -> dict[str, Stat]:
    """Read a CT (file or DICOM folder) and a TotalSegmentator v2 label map, pair them, measure.

    The label map is resampled onto the CT grid with nearest neighbour (identity transform), so label maps
    stored with another direction (patient B's NIfTI is flipped in y) pair correctly.
    """
    import SimpleITK as sitk

    ct_path, seg_path = Path(ct_path), Path(seg_path)
    for p in (ct_path, seg_path):
        if not p.exists():
            raise ScdlError("file not found.", p, "check the path to the CT and its label map.")
    ct = _read_ct(ct_path)
    seg = sitk.ReadImage(str(seg_path))
    seg = sitk.Resample(seg, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, seg.GetPixelID())
    ct_arr = sitk.GetArrayFromImage(ct).astype(np.float32)
    seg_arr = sitk.GetArrayFromImage(seg)
    spacing = tuple(float(s) for s in reversed(ct.GetSpacing()))
    return measure_arrays(ct_arr, seg_arr, spacing, **kwargs)


def measure_patients(ts_dir: os.PathLike | str, **kwargs) -> dict[str, dict[str, Stat]]:
    """Measure patient A and patient B of the TotalSegmentator fixtures folder (``shared/data/...``).

    Returns:
        ``{"A": {...}, "B": {...}}`` as returned by :func:`measure_arrays`.
    """
    ts_dir = Path(ts_dir)
    return {
        "A": measure_pair(ts_dir / "example_ct.nii.gz", ts_dir / "example_seg_fast_force_split.nii.gz", **kwargs),
        "B": measure_pair(ts_dir / "example_ct_dicom", ts_dir / "example_seg_dicom.nii.gz", **kwargs),
    }


def as_dict(result: dict[str, dict[str, Stat]]) -> dict:
    """JSON-ready form of :func:`measure_patients`'s result."""
    return {patient: {name: asdict(stat) for name, stat in stats.items()} for patient, stats in result.items()}
