"""Label tables: bundled Synapse / AMOS / TotalSegmentator v2 tables, Slicer colour-table CSV format, bad tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from scdl.errors import ScdlError
from scdl.labels.codes import Code
from scdl.labels.table import COLUMNS, LabelEntry, LabelTable

SYNAPSE = ["spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
           "inferior vena cava", "portal and splenic veins", "pancreas", "right adrenal gland", "left adrenal gland"]
AMOS = ["spleen", "right kidney", "left kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
        "inferior vena cava", "pancreas", "right adrenal gland", "left adrenal gland", "duodenum", "urinary bladder",
        "prostate/uterus"]
# Columns of a Slicer colour table with terminology (vtkMRMLColorTableStorageNode, Slicer >= 5.10).
SLICER_COLUMNS = (
    "LabelValue", "Name", "Color_R", "Color_G", "Color_B", "Color_A",
    "Category_CodingScheme", "Category_CodeValue", "Category_CodeMeaning",
    "Type_CodingScheme", "Type_CodeValue", "Type_CodeMeaning",
    "TypeModifier_CodingScheme", "TypeModifier_CodeValue", "TypeModifier_CodeMeaning",
    "Region_CodingScheme", "Region_CodeValue", "Region_CodeMeaning",
    "RegionModifier_CodingScheme", "RegionModifier_CodeValue", "RegionModifier_CodeMeaning",
)


def test_bundled_tables(ts_dir: Path) -> None:
    assert LabelTable.bundled_names() == ["amos", "synapse", "totalsegmentator_v2"]
    synapse, amos, ts = (LabelTable.load(n) for n in ("synapse", "amos", "totalsegmentator_v2"))
    assert synapse.names == SYNAPSE and synapse.values == list(range(1, 14))
    assert amos.names == AMOS and amos.values == list(range(1, 16))
    # network channels of the authors' checkpoints (METHOD.md section 7): Synapse 14, AMOS 16
    assert (synapse.num_classes, amos.num_classes) == (14, 16)
    class_map = json.loads((ts_dir / "class_map_total_v2.json").read_text(encoding="utf-8"))
    assert {str(e.value): e.name for e in ts} == class_map
    assert ts.num_classes == 118
    assert all(e.has_terminology for e in synapse) and all(e.has_terminology for e in amos)
    # TotalSegmentator: codes at least for every Synapse/AMOS organ
    for name in ("spleen", "kidney_right", "kidney_left", "gallbladder", "liver", "stomach", "pancreas",
                 "adrenal_gland_right", "adrenal_gland_left", "esophagus", "aorta", "inferior_vena_cava",
                 "portal_vein_and_splenic_vein", "duodenum", "urinary_bladder", "prostate"):
        assert ts.by_name(name).has_terminology, name


def test_csv_columns_are_slicers(repo_root: Path) -> None:
    assert COLUMNS == SLICER_COLUMNS
    for path in sorted((repo_root / "Resources" / "Labels").glob("*.csv")):
        assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(SLICER_COLUMNS), path


def test_lookup_by_name_value_and_colours() -> None:
    synapse, amos = LabelTable.load("synapse"), LabelTable.load("amos")
    assert synapse.by_name("kidney_right").value == 2
    assert synapse.by_name("Oesophagus").value == 5
    assert synapse.by_name("portal_vein_and_splenic_vein").value == 10
    assert synapse.by_name("adrenal_gland_left").value == 13
    assert amos.by_name("prostate").value == amos.by_name("uterus").value == 15
    assert amos.find("portal and splenic veins") is None
    with pytest.raises(KeyError, match="no label named 'heart'"):
        synapse.by_name("heart")
    assert synapse.by_value(6).name == "liver"
    colours = synapse.color_array()
    assert colours.shape == (14, 3) and colours.dtype == np.uint8
    assert colours[0].tolist() == [0, 0, 0] and colours[6].tolist() == [221, 130, 101]
    assert synapse.colors[1] == (157, 108, 162)


def test_save_load_round_trip(tmp_path: Path) -> None:
    for name in LabelTable.bundled_names():
        table = LabelTable.load(name)
        copy = LabelTable.load(table.save(tmp_path / f"{name}.csv"))
        assert copy.entries == table.entries
    custom = LabelTable(
        [LabelEntry(3, "Tumour, left", (1, 2, 3), Code("SCT", "49755003", "Morphologically Altered Structure"),
                    Code("SCT", "4147007", "Mass"), None, Code("SCT", "64033007", "Kidney"), Code("SCT", "7771000", "Left"))],
        name="custom",
    )
    back = LabelTable.load(custom.save(tmp_path / "custom.csv"))
    assert back.entries == custom.entries and back.num_classes == 4
    assert '"Tumour, left"' in (tmp_path / "custom.csv").read_text(encoding="utf-8")  # a comma in a value is quoted


def test_slicer_reads_bundled_tables_with_terminology(repo_root: Path) -> None:
    """Slicer's own colour-table reader (slicer-core wheel) loads every bundled CSV with its codes."""
    import slicer_core as slicer  # slicer-core wheel (test dependency); the core package never imports it

    for path in sorted((repo_root / "Resources" / "Labels").glob("*.csv")):
        table = LabelTable.load(path)
        scene = slicer.vtkMRMLScene()
        node = slicer.vtkMRMLColorTableNode()
        scene.AddNode(node)
        storage = slicer.vtkMRMLColorTableStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(path))
        assert storage.ReadData(node) == 1, path
        assert node.GetNumberOfColors() == table.num_classes
        assert bool(node.GetContainsTerminology())
        for entry in table:
            rgba = [0.0] * 4
            node.GetColor(entry.value, rgba)
            assert node.GetColorName(entry.value) == entry.name
            assert [round(c * 255) for c in rgba] == [*entry.color, 255]
            if entry.has_terminology:
                assert node.GetTerminologyCategory(entry.value).GetCodeValue() == entry.category.value
                assert node.GetTerminologyType(entry.value).GetCodeValue() == entry.type.value
                assert node.GetTerminologyType(entry.value).GetCodeMeaning() == entry.type.meaning
                for getter, code in ((node.GetTerminologyTypeModifier, entry.modifier),
                                     (node.GetTerminologyRegion, entry.region),
                                     (node.GetTerminologyRegionModifier, entry.region_modifier)):
                    coded = getter(entry.value)
                    assert (coded.GetCodeValue() if coded is not None else None) == (code.value if code else None)


HEADER = "LabelValue,Name,Color_R,Color_G,Color_B,Category_CodingScheme,Category_CodeValue,Category_CodeMeaning," \
         "Type_CodingScheme,Type_CodeValue,Type_CodeMeaning\n"


@pytest.mark.parametrize(
    "content, message",
    [
        ("LabelValue,Color_R,Color_G,Color_B\n1,1,2,3\n", "no column\\(s\\) Name"),
        (HEADER + "1,liver,1,2,3,,,,,,\n1,spleen,1,2,3,,,,,,\n", "label value 1 appears twice"),
        (HEADER + "one,liver,1,2,3,,,,,,\n", "LabelValue 'one' is not an integer"),
        (HEADER + "0,background,0,0,0,,,,,,\n", "must be >= 1"),
        (HEADER + "1,liver,1,300,3,,,,,,\n", "Color_G 300 is outside 0..255"),
        (HEADER + "1,,1,2,3,,,,,,\n", "has no name"),
        (HEADER + "1,liver,1,2,3,SCT,,Anatomical Structure,SCT,10200004,Liver\n", "Category code of label 1 is incomplete"),
        (HEADER + "1,liver,1,2,3,SCT,123037004,Anatomical Structure,,,\n", "no complete category and type"),
        (HEADER + "1,right kidney,1,2,3,,,,,,\n2,kidney_right,1,2,3,,,,,,\n", "have the same name"),
        (HEADER, "has no labels"),
    ],
)
def test_bad_tables_name_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ScdlError, match=message) as err:
        LabelTable.load(path)
    assert str(path) in str(err.value) and err.value.fix


def test_missing_tables(tmp_path: Path) -> None:
    with pytest.raises(ScdlError, match="no bundled label table named 'btcv'") as err:
        LabelTable.load("btcv")
    assert "synapse" in err.value.fix
    with pytest.raises(ScdlError, match="does not exist"):
        LabelTable.load(tmp_path / "none.csv")
