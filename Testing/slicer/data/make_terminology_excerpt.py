"""Rebuild the terminology excerpts in ``terminologies/`` from the files shipped in the trame-slicer wheel.

Slicer's terminology contexts (``*.term.json``, 3D Slicer / DICOM, BSD-style licences, see README.md) are
not part of the slicer-core wheel. The harness needs the default contexts that Slicer loads at startup,
cut down to the anatomical structures named in the bundled label tables (plus a few neighbours), so that
the tests stay small. Usage (once, by a developer; the tests only read the result)::

    pip download --no-deps trame-slicer -d /tmp/ts && unzip -q /tmp/ts/trame_slicer-*.whl -d /tmp/ts/x
    python Testing/slicer/data/make_terminology_excerpt.py /tmp/ts/x/trame_slicer/resources/terminologies

The excerpt keeps the JSON schema and context names of the originals unchanged.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent
OUT = HERE / "terminologies"
CATEGORY_FILES = ("SegmentationCategoryTypeModifier-DICOM-Master.term.json",
                  "SegmentationCategoryTypeModifier-SlicerGeneralAnatomy.term.json")
REGION_FILE = "AnatomicRegionAndModifier-DICOM-Master.term.json"
#: Anatomy found in abdominal CT label tables even when no bundled table names it yet.
EXTRA_TYPES = {"78961009", "64033007", "28231008", "32849002", "10200004", "69695003", "15825003", "64131007",
               "32764006", "35819009", "15776009", "23451007", "38848004", "89837001", "41216001", "35039007"}


def wanted_codes() -> set[str]:
    codes = set(EXTRA_TYPES)
    for table in sorted((REPO / "Resources" / "Labels").glob("*.csv")):
        with table.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                for column in ("Type_CodeValue", "Region_CodeValue"):
                    if row.get(column):
                        codes.add(row[column].strip())
    return codes


def main(source_dir: str) -> None:
    source = Path(source_dir)
    codes = wanted_codes()
    outputs = {}
    for name in CATEGORY_FILES:
        terms = json.loads((source / name).read_text(encoding="utf-8"))
        for category in terms["SegmentationCodes"]["Category"]:
            category["Type"] = [t for t in category.get("Type", []) if t["CodeValue"] in codes]
        terms["SegmentationCodes"]["Category"] = [c for c in terms["SegmentationCodes"]["Category"] if c["Type"]]
        outputs[name] = terms
        kept = sum(len(c["Type"]) for c in terms["SegmentationCodes"]["Category"])
        print(f"{name}: kept {kept} types of {len(codes)} wanted codes")
    regions = json.loads((source / REGION_FILE).read_text(encoding="utf-8"))
    regions["AnatomicCodes"]["AnatomicRegion"] = [
        r for r in regions["AnatomicCodes"]["AnatomicRegion"] if r["CodeValue"] in codes
    ]
    OUT.mkdir(exist_ok=True)
    outputs[REGION_FILE] = regions
    for name, data in outputs.items():
        (OUT / name).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{REGION_FILE}: kept {len(regions['AnatomicCodes']['AnatomicRegion'])} regions")


if __name__ == "__main__":
    main(sys.argv[1])
