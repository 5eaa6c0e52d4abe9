"""Mapping foreign label maps by structure name (real data: patient A's TotalSegmentator v2 label map)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from scdl.labels.codes import Code
from scdl.labels.mapping import map_label_array, match_tables, normalize_name
from scdl.labels.table import LabelEntry, LabelTable, table_from_names

# TotalSegmentator v2 value -> Synapse value (names in the data README / METHOD.md section 5).
TS_TO_SYNAPSE = {1: 1, 2: 2, 3: 3, 4: 4, 15: 5, 5: 6, 6: 7, 52: 8, 63: 9, 64: 10, 7: 11, 8: 12, 9: 13}


@pytest.mark.parametrize(
    "name, key",
    [
        ("kidney_right", "right kidney"), ("Right Kidney", "right kidney"), ("right-kidney", "right kidney"),
        ("Kidney (R)", "right kidney"), ("RKid", "right kidney"),
        ("oesophagus", "esophagus"), ("Esophagus", "esophagus"),
        ("adrenal_gland_left", "left adrenal gland"), ("Left adrenal", "left adrenal gland"),
        ("portal_vein_and_splenic_vein", "portal and splenic veins"), ("Portal & Splenic Veins", "portal and splenic veins"),
        ("inferior_vena_cava", "inferior vena cava"), ("IVC", "inferior vena cava"), ("postcava", "inferior vena cava"),
        ("gall_bladder", "gallbladder"), ("urinary_bladder", "bladder"), ("arota", "aorta"),
        ("lung_upper_lobe_left", "left lung upper lobe"), ("left and right", "left and right"), ("", ""),
    ],
)
def test_normalize_name(name: str, key: str) -> None:
    assert normalize_name(name) == key


@pytest.fixture(scope="module")
def ts_labels(patient_a_seg: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(patient_a_seg)))


def test_totalsegmentator_to_synapse_on_patient_a(ts_labels: np.ndarray) -> None:
    ts, synapse = LabelTable.load("totalsegmentator_v2"), LabelTable.load("synapse")
    match = match_tables(ts, synapse)
    assert match.value_map == TS_TO_SYNAPSE
    assert set(match.how.values()) == {"name"}
    mapped, unknown = map_label_array(ts_labels, ts, synapse)
    assert unknown == [] and mapped.dtype == np.uint8 and mapped.shape == ts_labels.shape
    for src, dst in TS_TO_SYNAPSE.items():
        assert np.array_equal(mapped == dst, ts_labels == src), (src, dst)
    kept = np.isin(ts_labels, list(TS_TO_SYNAPSE))
    assert np.count_nonzero(mapped) == np.count_nonzero(kept)  # every other class (lungs, bones...) -> 0
    assert np.count_nonzero(ts_labels == 5) == np.count_nonzero(mapped == 6) > 0  # liver


def test_unknown_values_are_reported_and_cleared(ts_labels: np.ndarray) -> None:
    arr = ts_labels.copy()
    arr[0, 0, 0], arr[0, 0, 1], arr[0, 0, 2] = 200, 250, 250
    mapped, unknown = map_label_array(arr, LabelTable.load("totalsegmentator_v2"), LabelTable.load("synapse"))
    assert unknown == [200, 250]
    assert mapped[0, 0, 0] == mapped[0, 0, 1] == 0
    # negative and very large values take the generic path
    odd = np.array([[-5, 6, 1 << 30]], dtype=np.int64)
    mapped, unknown = map_label_array(odd, LabelTable.load("totalsegmentator_v2"), LabelTable.load("synapse"))
    assert mapped.tolist() == [[0, 7, 0]] and unknown == [-5, 1 << 30]


def test_totalsegmentator_to_amos_alternatives() -> None:
    match = match_tables(LabelTable.load("totalsegmentator_v2"), LabelTable.load("amos"))
    assert match.value_map[22] == 15  # prostate -> prostate/uterus
    assert match.value_map[21] == 14  # urinary_bladder -> urinary bladder
    assert match.value_map[19] == 13  # duodenum
    assert 64 not in match.value_map  # AMOS has no portal/splenic vein class


def test_between_the_paper_tables() -> None:
    synapse, amos = LabelTable.load("synapse"), LabelTable.load("amos")
    forward = match_tables(synapse, amos)
    assert [e.name for e in forward.unmatched] == ["portal and splenic veins"]
    assert forward.value_map[11] == 10 and forward.value_map[13] == 12
    backward = match_tables(amos, synapse)
    assert [e.name for e in backward.unmatched] == ["duodenum", "urinary bladder", "prostate/uterus"]
    arr = np.arange(16, dtype=np.uint8).reshape(4, 4)
    mapped, unknown = map_label_array(arr, amos, synapse)
    assert unknown == []
    assert mapped.ravel().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 0, 0, 0]


def test_codes_match_when_names_do_not() -> None:
    liver = LabelTable.load("synapse").by_value(6)
    foreign = LabelTable([LabelEntry(1, "hepar", (1, 1, 1), liver.category, liver.type), LabelEntry(2, "unknown thing")])
    match = match_tables(foreign, LabelTable.load("synapse"))
    assert match.value_map == {1: 6} and match.how == {1: "code"}
    assert [e.name for e in match.unmatched] == ["unknown thing"]


def test_label_arrays_must_be_integers() -> None:
    table = table_from_names(["a", "b"])
    mapped, _ = map_label_array(np.array([0.0, 1.0, 2.0]), table, table)
    assert mapped.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="integers"):
        map_label_array(np.array([0.5]), table, table)
    assert Code("SCT", "1", "x").same_concept(Code("SCT", "1", "y"))
