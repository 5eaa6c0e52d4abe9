"""Regenerate the terminology excerpts in this folder from 3D Slicer's terminology files.

Usage (needs network once; nothing is installed or imported from the wheel)::

    pip download --no-deps trame-slicer==2.0.0 -d /tmp/ts && unzip -q /tmp/ts/trame_slicer-*.whl -d /tmp/ts/whl
    python Testing/data/slicer_terminology/make_excerpt.py /tmp/ts/whl/trame_slicer/resources/terminologies

Keeps, in each file's own schema, only the categories/types/modifiers/regions that the bundled label tables
(Resources/Labels/*.csv) use, plus the "Vein" type whose colour the inferior vena cava uses.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
LABELS = HERE.parents[2] / "Resources" / "Labels"
SEG_FILES = ("SegmentationCategoryTypeModifier-DICOM-Master", "SegmentationCategoryTypeModifier-SlicerGeneralAnatomy")
REGION_FILE = "AnatomicRegionAndModifier-DICOM-Master"
EXTRA_TYPES = {("85756007", "29092000")}  # Tissue / Vein


def used_codes() -> tuple[dict, dict]:
    types: dict[tuple[str, str], set[str]] = {}
    regions: dict[str, set[str]] = {}
    for path in sorted(LABELS.glob("*.csv")):
        for row in csv.DictReader(path.open(encoding="utf-8")):
            if row["Type_CodeValue"]:
                key = (row["Category_CodeValue"], row["Type_CodeValue"])
                types.setdefault(key, set())
                if row["TypeModifier_CodeValue"]:
                    types[key].add(row["TypeModifier_CodeValue"])
            if row["Region_CodeValue"]:
                regions.setdefault(row["Region_CodeValue"], set())
                if row["RegionModifier_CodeValue"]:
                    regions[row["Region_CodeValue"]].add(row["RegionModifier_CodeValue"])
    for key in EXTRA_TYPES:
        types.setdefault(key, set())
    return types, regions


def main(src: Path) -> None:
    types, regions = used_codes()
    for stem in SEG_FILES:
        data = json.loads((src / f"{stem}.term.json").read_text(encoding="utf-8"))
        categories = []
        for category in data["SegmentationCodes"]["Category"]:
            kept = []
            for type_ in category.get("Type", []):
                key = (category["CodeValue"], type_["CodeValue"])
                if key not in types:
                    continue
                type_ = dict(type_)
                if "Modifier" in type_:
                    type_["Modifier"] = [m for m in type_["Modifier"] if m["CodeValue"] in types[key]]
                    if not type_["Modifier"]:
                        del type_["Modifier"]
                if type_ not in kept:
                    kept.append(type_)
            if kept:
                categories.append({**{k: v for k, v in category.items() if k != "Type"}, "Type": kept})
        data["SegmentationCodes"]["Category"] = categories
        (HERE / f"{stem}.excerpt.term.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    data = json.loads((src / f"{REGION_FILE}.term.json").read_text(encoding="utf-8"))
    kept = []
    for region in data["AnatomicCodes"]["AnatomicRegion"]:
        if region["CodeValue"] in regions:
            region = dict(region)
            if "Modifier" in region:
                region["Modifier"] = [m for m in region["Modifier"] if m["CodeValue"] in regions[region["CodeValue"]]]
                if not region["Modifier"]:
                    del region["Modifier"]
            if region not in kept:
                kept.append(region)
    data["AnatomicCodes"]["AnatomicRegion"] = kept
    (HERE / f"{REGION_FILE}.excerpt.term.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
