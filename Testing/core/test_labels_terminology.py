"""Every SNOMED CT code and standard colour in the bundled label tables, checked against excerpts of 3D Slicer's
terminology files (Testing/data/slicer_terminology, see its README for source and licence)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import pytest

from scdl.labels.codes import ANATOMIC_CONTEXT, SEGMENTATION_CONTEXT, Code, terminology_string
from scdl.labels.table import LabelEntry, LabelTable, default_color

TABLES = ("synapse", "amos", "totalsegmentator_v2")
# Colours that are our choice, with the reason (everything else must be Slicer's recommended colour).
OWN_COLOURS = {
    ("synapse", "portal and splenic veins"): "no recommended colour for the portal vein",
    ("amos", "prostate/uterus"): "the standard colour of 'Organ' is the liver's; the prostate's is used",
}
VEIN_COLOURED = {("synapse", "inferior vena cava"), ("amos", "inferior vena cava"),
                 ("totalsegmentator_v2", "inferior_vena_cava")}


@pytest.fixture(scope="module")
def excerpts(repo_root: Path) -> dict:
    folder = repo_root / "Testing" / "data" / "slicer_terminology"
    return {
        name: json.loads((folder / f"{name}.excerpt.term.json").read_text(encoding="utf-8"))
        for name in ("SegmentationCategoryTypeModifier-DICOM-Master",
                     "SegmentationCategoryTypeModifier-SlicerGeneralAnatomy",
                     "AnatomicRegionAndModifier-DICOM-Master")
    }


def _types(context: dict, category: Code) -> list[dict]:
    for cat in context["SegmentationCodes"]["Category"]:
        if (cat["CodingSchemeDesignator"], cat["CodeValue"]) == (category.scheme, category.value):
            assert cat["CodeMeaning"] == category.meaning
            return cat["Type"]
    return []


def _find(items: list[dict], code: Code) -> Optional[dict]:
    for item in items:
        if (item["CodingSchemeDesignator"], item["CodeValue"]) == (code.scheme, code.value):
            return item
    return None


def _recommended(context: dict, entry: LabelEntry) -> Optional[tuple[int, int, int]]:
    type_ = _find(_types(context, entry.category), entry.type)
    if type_ is None:
        return None
    if entry.modifier is not None:
        modifier = _find(type_.get("Modifier", []), entry.modifier)
        if modifier and modifier.get("recommendedDisplayRGBValue"):
            return tuple(modifier["recommendedDisplayRGBValue"])
    value = type_.get("recommendedDisplayRGBValue")
    return tuple(value) if value else None


def test_contexts_match_slicer(excerpts: dict) -> None:
    master = excerpts["SegmentationCategoryTypeModifier-DICOM-Master"]
    assert master["SegmentationCategoryTypeContextName"] == SEGMENTATION_CONTEXT
    assert excerpts["AnatomicRegionAndModifier-DICOM-Master"]["AnatomicContextName"] == ANATOMIC_CONTEXT


@pytest.mark.parametrize("table_name", TABLES)
def test_every_code_is_in_slicers_terminology(excerpts: dict, table_name: str) -> None:
    master = excerpts["SegmentationCategoryTypeModifier-DICOM-Master"]
    regions = excerpts["AnatomicRegionAndModifier-DICOM-Master"]["AnatomicCodes"]["AnatomicRegion"]
    checked = 0
    for entry in LabelTable.load(table_name):
        if not entry.has_terminology:
            continue
        types = _types(master, entry.category)
        assert types, f"{entry.name}: category {entry.category} is not in the DICOM master list"
        type_ = _find(types, entry.type)
        assert type_ is not None, f"{entry.name}: type {entry.type} is not under {entry.category.meaning}"
        assert type_["CodeMeaning"] == entry.type.meaning, entry.name
        if entry.modifier is not None:
            modifier = _find(type_.get("Modifier", []), entry.modifier)
            assert modifier is not None and modifier["CodeMeaning"] == entry.modifier.meaning, entry.name
        if entry.region is not None:
            region = _find(regions, entry.region)
            assert region is not None and region["CodeMeaning"] == entry.region.meaning, entry.name
            if entry.region_modifier is not None:
                modifier = _find(region.get("Modifier", []), entry.region_modifier)
                assert modifier is not None and modifier["CodeMeaning"] == entry.region_modifier.meaning
        else:
            assert entry.region_modifier is None
        checked += 1
    assert checked == {"synapse": 13, "amos": 15, "totalsegmentator_v2": 56}[table_name]


@pytest.mark.parametrize("table_name", TABLES)
def test_colours_are_slicers_standard_anatomy_colours(excerpts: dict, table_name: str) -> None:
    general = excerpts["SegmentationCategoryTypeModifier-SlicerGeneralAnatomy"]
    master = excerpts["SegmentationCategoryTypeModifier-DICOM-Master"]
    vein = _find(_types(general, Code("SCT", "85756007", "Tissue")), Code("SCT", "29092000", "Vein"))
    portal = LabelTable.load("synapse").by_value(10).color
    for entry in LabelTable.load(table_name):
        key = (table_name, entry.name)
        if key in OWN_COLOURS:
            continue
        if key == ("totalsegmentator_v2", "portal_vein_and_splenic_vein"):
            assert entry.color == portal  # same structure, same colour as in the Synapse table
            continue
        if key in VEIN_COLOURED:
            assert entry.color == tuple(vein["recommendedDisplayRGBValue"]), entry.name
            continue
        standard = None
        if entry.has_terminology:
            standard = _recommended(general, entry) or _recommended(master, entry)
        if standard is not None:
            assert entry.color == standard, entry.name
        else:
            assert entry.color == default_color(entry.value), entry.name


def test_terminology_string_format() -> None:
    """Slicer's TerminologyEntry: context~category~type~modifier~anatomic context~region~region modifier."""
    synapse = LabelTable.load("synapse")
    assert synapse.by_value(2).terminology_string() == (
        "Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure"
        "~SCT^64033007^Kidney~SCT^24028007^Right~Anatomic codes - DICOM master list~^^~^^"
    )
    prostate = LabelTable.load("amos").by_value(15)
    assert prostate.terminology_string().endswith("~SCT^113343008^Organ~^^~Anatomic codes - DICOM master list"
                                                  "~SCT^12921003^Pelvis~^^")
    cyst = LabelTable.load("totalsegmentator_v2").by_name("kidney_cyst_left")
    assert cyst.terminology_string().endswith("~SCT^64033007^Kidney~SCT^7771000^Left")
    with pytest.raises(ValueError, match="region modifier needs a region"):
        terminology_string(Code("SCT", "1", "a"), Code("SCT", "2", "b"), region_modifier=Code("SCT", "3", "c"))
    with pytest.raises(ValueError, match="reserved"):
        Code("SCT", "1^2", "x")


def test_slicer_parses_every_terminology_string() -> None:
    import slicer_core as slicer  # slicer-core wheel (test dependency)

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    for name in TABLES:
        for entry in LabelTable.load(name):
            if not entry.has_terminology:
                continue
            parsed = slicer.vtkSlicerTerminologyEntry()
            text = entry.terminology_string()
            assert logic.DeserializeTerminologyEntry(text, parsed), text
            assert parsed.GetTypeObject().GetCodeValue() == entry.type.value
            assert logic.SerializeTerminologyEntry(parsed) == text
