"""HU measurement behind the phantom defaults: hand-computed definitions and re-measurement of the real CT."""

from __future__ import annotations

import numpy as np
import pytest

from scdl.phantom import hu_table
from scdl.phantom.config import PhantomConfig
from scdl.phantom.measure import measure_arrays, measure_pair


def test_definitions_on_a_hand_built_volume():
    ct = np.full((20, 20, 20), -1000.0, dtype=np.float32)
    seg = np.zeros(ct.shape, dtype=np.uint8)
    ct[2:18, 2:18, 2:18] = -100.0                       # body of fat (16^3 voxels)
    seg[5:15, 5:15, 5:15] = 5                           # TotalSegmentator liver: a 10^3 cube ...
    ct[5:15, 5:15, 5:15] = 10.0                         # ... with a 10 HU rim
    ct[8:12, 8:12, 8:12] = 50.0                         # and 50 HU beyond 3 mm from its border (4^3 voxels)
    seg[3:5, 3:5, 3:5] = 8                              # right adrenal: 2^3 voxels, no interior
    ct[3:5, 3:5, 3:5] = 30.0
    seg[15:17, 3:5, 3:5] = 6                            # stomach: half gas, half 40 HU
    ct[15, 3:5, 3:5] = -900.0
    ct[16, 3:5, 3:5] = 40.0
    stats = measure_arrays(ct, seg, (1.0, 1.0, 1.0), erosion_mm=3.0, min_interior=5)

    liver = stats["liver"]
    assert (liver.mean, liver.std, liver.n, liver.n_full) == (50.0, 0.0, 64, 1000)
    assert liver.mean_full == pytest.approx((64 * 50 + 936 * 10) / 1000, abs=0.05)
    assert liver.volume_ml == 1.0 and not liver.interior_fallback
    adrenal = stats["right_adrenal_gland"]
    assert adrenal.interior_fallback and adrenal.mean == 30.0 and adrenal.n == 8
    assert stats["fat"].mean == -100.0 and stats["fat"].n == 16 ** 3 - 1000 - 8 - 8
    assert stats["air"].mean == -1000.0 and stats["air"].n == 20 ** 3 - 16 ** 3
    assert stats["stomach_gas_fraction"].mean == 0.5
    assert stats["stomach_soft"].mean == 40.0
    assert "spleen" not in stats and "bowel" not in stats


@pytest.fixture(scope="module")
def measured(patient_a_ct, patient_a_seg, patient_b_ct, patient_b_seg):
    """``measure_patients`` of the fixtures folder, with patient B's whole CT as the demo sample stores it (its
    20-slice DICOM series read losslessly: same voxels, same grid; Testing/data keeps 5 of the DICOM files)."""
    return {"A": measure_pair(patient_a_ct, patient_a_seg), "B": measure_pair(patient_b_ct, patient_b_seg)}


def test_hu_table_reproduces_from_the_real_ct(measured):
    for patient, table in (("A", hu_table.MEASURED_A), ("B", hu_table.MEASURED_B)):
        for name, (mean, std) in table.items():
            s = measured[patient]["stomach_soft" if name == "stomach" else name]
            assert (s.mean, s.std) == pytest.approx((mean, std), abs=0.051), f"{patient} {name}"
    assert (measured["A"]["stomach_gas_fraction"].mean, measured["B"]["stomach_gas_fraction"].mean) == \
        hu_table.STOMACH_GAS_FRACTION
    assert (measured["A"]["bowel_gas_fraction"].mean, measured["B"]["bowel_gas_fraction"].mean) == \
        hu_table.BOWEL_GAS_FRACTION
    # the organs each patient lacks are exactly those the fallbacks cover
    for patient, table in (("A", hu_table.MEASURED_A), ("B", hu_table.MEASURED_B)):
        missing = {n for n in hu_table.STRUCTURES if n not in table}
        assert missing == {n for (p, n) in hu_table.FALLBACKS if p == patient}
        assert not missing & set(measured[patient])


def test_patient_b_pairs_only_after_resampling(measured):
    """Patient B's label map is flipped in y: paired correctly, contrast-enhanced vessels are brightest."""
    b = measured["B"]
    assert b["aorta"].mean > b["liver"].mean > b["muscle"].mean > b["fat"].mean
    assert 80 < b["liver"].mean < 100 and b["spleen"].mean > 70


def test_generator_defaults_are_the_measured_table():
    table = PhantomConfig().hu_table
    assert table["liver"] == {"plain": list(hu_table.MEASURED_A["liver"]), "contrast": list(hu_table.MEASURED_B["liver"])}
    assert table["esophagus"]["plain"] == list(hu_table.MEASURED_A["muscle"])
    assert table["left_adrenal_gland"]["contrast"] == list(hu_table.MEASURED_B["right_adrenal_gland"])
