"""Measured HU statistics: the phantom generator's default intensities.

Every number below was measured by ``python bench/measure_hu.py`` (which runs
:func:`scdl.phantom.measure.measure_patients`) on the real CT in ``shared/data/totalsegmentator_fixtures``:

- patient A: ``example_ct.nii.gz`` + ``example_seg_fast_force_split.nii.gz`` (non-contrast look, 3 mm),
- patient B: ``example_ct_dicom/`` + ``example_seg_dicom.nii.gz`` resampled onto the DICOM grid with
  nearest neighbour (portal-venous contrast, 0.98 x 0.98 x 2 mm).

Values are (mean, std) in HU of the organ interior (3 mm from the border; see ``measure.py`` for the
tissue definitions). ``Testing/core/test_phantom_measure.py`` re-measures and compares with this table.
The labels are TotalSegmentator predictions (silver labels), not manual annotation.

Structures a patient lacks fall back as listed in :data:`FALLBACKS` (documented in docs/phantom.md):
the oesophagus is labelled in neither patient and takes the muscle statistics (a muscular tube).
"""

from __future__ import annotations

#: Patient A (non-contrast), interior (mean, std) HU. ``stomach`` = wall and content (HU > -200).
MEASURED_A: dict[str, tuple[float, float]] = {
    "spleen": (34.9, 12.3),
    "right_kidney": (13.4, 27.1),
    "left_kidney": (22.6, 42.9),
    "gallbladder": (3.3, 11.2),
    "liver": (46.4, 12.9),
    "stomach": (33.5, 32.6),
    "aorta": (43.5, 14.1),
    "inferior_vena_cava": (42.3, 12.6),
    "portal_and_splenic_veins": (41.0, 11.6),
    "pancreas": (2.5, 26.8),
    "right_adrenal_gland": (2.4, 23.3),   # full mask: no voxel is 3 mm from the border
    "left_adrenal_gland": (19.3, 19.7),
    "air": (-962.1, 79.5),
    "fat": (-92.3, 26.5),
    "muscle": (23.9, 27.8),
    "bone": (126.9, 120.5),
    "bone_cortex": (257.7, 156.2),
    "spinal_cord": (2.7, 28.0),
    "lung": (-787.8, 67.6),
    "bowel": (-11.0, 51.1),
}

#: Patient B (contrast), interior (mean, std) HU. No kidneys, gallbladder, left adrenal, lung in its labels.
MEASURED_B: dict[str, tuple[float, float]] = {
    "spleen": (81.2, 17.1),
    "liver": (90.9, 18.8),
    "stomach": (57.2, 42.9),
    "aorta": (154.4, 36.6),
    "inferior_vena_cava": (98.0, 12.3),
    "portal_and_splenic_veins": (140.2, 12.9),
    "pancreas": (61.0, 29.6),             # full mask (thin in 2 mm slices)
    "right_adrenal_gland": (43.7, 35.7),  # full mask
    "air": (-982.4, 66.0),
    "fat": (-77.0, 26.7),
    "muscle": (27.6, 26.9),
    "bone": (167.5, 103.1),
    "bone_cortex": (322.7, 196.6),
    "spinal_cord": (27.9, 20.3),
    "bowel": (-20.2, 66.8),
}

#: Measured gas fractions (share of the labelled voxels below -200 HU): (patient A, patient B).
STOMACH_GAS_FRACTION: tuple[float, float] = (0.069, 0.135)
BOWEL_GAS_FRACTION: tuple[float, float] = (0.192, 0.715)

#: Where a structure is missing from a patient, it takes the statistics of another (patient, structure).
FALLBACKS: dict[tuple[str, str], tuple[str, str]] = {
    ("A", "esophagus"): ("A", "muscle"),
    ("B", "esophagus"): ("B", "muscle"),
    ("B", "right_kidney"): ("A", "right_kidney"),
    ("B", "left_kidney"): ("A", "left_kidney"),
    ("B", "gallbladder"): ("A", "gallbladder"),
    ("B", "left_adrenal_gland"): ("B", "right_adrenal_gland"),
    ("B", "lung"): ("A", "lung"),
}

STRUCTURES: tuple[str, ...] = (
    "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior_vena_cava", "portal_and_splenic_veins", "pancreas", "right_adrenal_gland", "left_adrenal_gland",
    "air", "fat", "muscle", "bone", "bone_cortex", "spinal_cord", "lung", "bowel",
)


def lookup(patient: str, name: str) -> tuple[float, float]:
    """(mean, std) HU of ``name`` for ``patient`` ("A" non-contrast, "B" contrast), following FALLBACKS."""
    table = MEASURED_A if patient == "A" else MEASURED_B
    if name in table:
        return table[name]
    if (patient, name) in FALLBACKS:
        other_patient, other_name = FALLBACKS[(patient, name)]
        return lookup(other_patient, other_name)
    raise KeyError(f"no HU statistics for {name!r} in patient {patient}")


def default_hu_table() -> dict[str, dict[str, list[float]]]:
    """The generator's default intensities: ``{name: {"plain": [mean, std], "contrast": [mean, std]}}``.

    ``plain`` comes from patient A, ``contrast`` from patient B (with :data:`FALLBACKS`). Each phantom
    subject mixes the two with its own contrast weight w in [0, 1]: ``(1 - w) * plain + w * contrast``.
    """
    return {name: {"plain": list(lookup("A", name)), "contrast": list(lookup("B", name))} for name in STRUCTURES}
