"""Label tables: label value -> name, colour and SNOMED CT codes, stored as 3D Slicer colour-table CSV files.

File format (what ``vtkMRMLColorTableStorageNode`` reads as a colour table with terminology, Slicer >= 5.10)::

    LabelValue,Name,Color_R,Color_G,Color_B,Color_A,Category_CodingScheme,Category_CodeValue,
    Category_CodeMeaning,Type_...,TypeModifier_...,Region_...,RegionModifier_... (CodingScheme/CodeValue/CodeMeaning each)

One row per label value (positive integers; 0 is the background and is not listed), colours 0..255.
Terminology columns may be empty; when a row has any code, its category and type must be complete.
Values must not contain double quotes (a limitation of Slicer's CSV reader).

Bundled tables (``Resources/Labels/<name>.csv``): ``synapse`` (13 organs), ``amos`` (15 organs),
``totalsegmentator_v2`` (TotalSegmentator v2 "total" task, 117 classes).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import numpy as np

from scdl.errors import ScdlError
from scdl.io.atomic import atomic_write_text
from scdl.labels.codes import Code, terminology_dict, terminology_string
from scdl.labels.names import name_alternatives, normalize_name

#: Columns of a Slicer colour table CSV, in the order Slicer writes them.
CODE_FIELDS = ("Category", "Type", "TypeModifier", "Region", "RegionModifier")
BASE_COLUMNS = ("LabelValue", "Name", "Color_R", "Color_G", "Color_B", "Color_A")
COLUMNS = BASE_COLUMNS + tuple(
    f"{field_name}_{part}" for field_name in CODE_FIELDS for part in ("CodingScheme", "CodeValue", "CodeMeaning")
)
_REQUIRED = ("LabelValue", "Name", "Color_R", "Color_G", "Color_B")


@dataclass(frozen=True)
class LabelEntry:
    """One label: its value in a label map, a name, a display colour and optional SNOMED CT codes.

    Args:
        value: voxel value (>= 1; 0 is the background).
        name: structure name, e.g. "right kidney".
        color: (r, g, b), integers 0..255.
        category: e.g. Code("SCT", "123037004", "Anatomical Structure").
        type: e.g. Code("SCT", "64033007", "Kidney").
        modifier: type modifier, e.g. Code("SCT", "24028007", "Right").
        region: anatomic region, for structures that are not anatomy themselves (a cyst *in* the kidney).
        region_modifier: laterality of the region.
    """

    value: int
    name: str
    color: tuple[int, int, int] = (128, 128, 128)
    category: Optional[Code] = None
    type: Optional[Code] = None
    modifier: Optional[Code] = None
    region: Optional[Code] = None
    region_modifier: Optional[Code] = None

    @property
    def has_terminology(self) -> bool:
        return self.category is not None and self.type is not None

    def terminology_string(self) -> Optional[str]:
        """Slicer's ``TerminologyEntry`` string of this label, or None without codes."""
        if not self.has_terminology:
            return None
        return terminology_string(self.category, self.type, self.modifier, self.region, self.region_modifier)

    def terminology_dict(self) -> Optional[dict]:
        """slicerio's ``"terminology"`` dict of this label, or None without codes."""
        if not self.has_terminology:
            return None
        return terminology_dict(self.category, self.type, self.modifier, self.region, self.region_modifier)

    @property
    def color_float(self) -> tuple[float, float, float]:
        """Colour as floats 0..1 (Slicer's segment colour)."""
        return tuple(c / 255.0 for c in self.color)  # type: ignore[return-value]


@dataclass
class LabelTable:
    """An ordered set of labels (sorted by value). Load with :meth:`load`, write with :meth:`save`.

    Args:
        entries: the labels; values and normalised names must be unique.
        name: a short name (the bundled table's name or the file stem).
    """

    entries: list[LabelEntry]
    name: str = ""
    _by_key: dict[str, LabelEntry] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.entries = sorted(self.entries, key=lambda e: e.value)
        self._check(source=None)
        self._build_index()

    # -- construction --------------------------------------------------------------------------
    @staticmethod
    def bundled_names() -> list[str]:
        """Names of the tables shipped in ``Resources/Labels``."""
        from scdl.resources import labels_dir

        return sorted(p.stem for p in labels_dir().glob("*.csv"))

    @classmethod
    def load(cls, name_or_path: "str | os.PathLike[str]") -> "LabelTable":
        """Load a bundled table by name ("synapse", "amos", "totalsegmentator_v2") or a CSV file by path."""
        text = os.fspath(name_or_path)
        path = Path(text)
        if not path.suffix and os.sep not in text and "/" not in text:
            from scdl.resources import labels_dir

            path = labels_dir() / f"{text}.csv"
            if not path.is_file():
                raise ScdlError(
                    f"there is no bundled label table named {text!r}.",
                    path,
                    f"use one of {', '.join(cls.bundled_names())} or the path of a label table CSV file.",
                )
        if not path.is_file():
            if os.path.lexists(path) and not path.is_dir():     # a FIFO, device or link loop: say what it is
                from scdl.io.paths import check_input_path

                check_input_path(path, "label table")
            raise ScdlError("the label table file does not exist.", path, "check the path of the label table CSV.")
        try:
            content = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise ScdlError(f"the label table cannot be read ({err}).", path, "give a UTF-8 CSV colour table.") from err
        return cls.from_csv_text(content, source=path)

    @classmethod
    def from_csv_text(cls, content: str, source: "Optional[os.PathLike[str] | str]" = None) -> "LabelTable":
        """Parse Slicer colour-table CSV text (see the module docstring)."""
        where = os.fspath(source) if source is not None else "<label table>"
        fix = "write the table as a Slicer colour table CSV (LabelValue,Name,Color_R,Color_G,Color_B,... columns)."
        reader = csv.DictReader(io.StringIO(content))
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ScdlError(f"the label table has no column(s) {', '.join(missing)}.", where, fix)
        reader.fieldnames = header
        entries = []
        for line_no, row in enumerate(reader, start=2):
            row = {k: (v or "").strip() for k, v in row.items() if k is not None}
            if not any(row.values()):
                continue
            entries.append(_parse_row(row, where, line_no))
        if not entries:
            raise ScdlError("the label table has no labels.", where, "add one row per label value.")
        table = cls.__new__(cls)
        table.entries = sorted(entries, key=lambda e: e.value)
        table.name = Path(where).stem if source is not None else ""
        table._check(source=where)
        table._build_index()
        return table

    def _build_index(self) -> None:
        """Normalised name -> entry; alternatives of names like "prostate/uterus" too (exact names win)."""
        self._by_key = {normalize_name(e.name): e for e in self.entries}
        for entry in self.entries:
            for key in name_alternatives(entry.name):
                self._by_key.setdefault(key, entry)

    def _check(self, source: Optional[str]) -> None:
        where = source or "<label table>"
        seen_values: set[int] = set()
        seen_keys: dict[str, str] = {}
        for entry in self.entries:
            if entry.value in seen_values:
                raise ScdlError(f"label value {entry.value} appears twice.", where, "give every label its own value.")
            seen_values.add(entry.value)
            key = normalize_name(entry.name)
            if key in seen_keys:
                raise ScdlError(
                    f"labels {seen_keys[key]!r} and {entry.name!r} have the same name.",
                    where,
                    "give every label a distinct name.",
                )
            seen_keys[key] = entry.name

    # -- access --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[LabelEntry]:
        return iter(self.entries)

    @property
    def names(self) -> list[str]:
        """Names in value order."""
        return [e.name for e in self.entries]

    @property
    def values(self) -> list[int]:
        """Label values in increasing order."""
        return [e.value for e in self.entries]

    @property
    def num_classes(self) -> int:
        """Number of network output channels: largest value + 1 (background 0 included)."""
        return max(self.values) + 1

    @property
    def colors(self) -> dict[int, tuple[int, int, int]]:
        """value -> (r, g, b) 0..255."""
        return {e.value: e.color for e in self.entries}

    def color_array(self, background: Sequence[int] = (0, 0, 0)) -> np.ndarray:
        """Colours indexed by value: uint8 array of shape (num_classes, 3); unused values get ``background``."""
        out = np.tile(np.asarray(background, dtype=np.uint8), (self.num_classes, 1))
        for entry in self.entries:
            out[entry.value] = entry.color
        return out

    def find(self, name: str) -> Optional[LabelEntry]:
        """The entry whose name matches ``name`` after normalisation (synonyms included), or None."""
        for key in name_alternatives(name):
            if key in self._by_key:
                return self._by_key[key]
        return None

    def by_name(self, name: str) -> LabelEntry:
        """Like :meth:`find` but raises ``KeyError`` naming the known labels."""
        entry = self.find(name)
        if entry is None:
            raise KeyError(f"no label named {name!r} in table {self.name or '(unnamed)'}; known: {', '.join(self.names)}")
        return entry

    def by_value(self, value: int) -> LabelEntry:
        """The entry with this label value (``KeyError`` if none)."""
        for entry in self.entries:
            if entry.value == int(value):
                return entry
        raise KeyError(f"no label with value {value} in table {self.name or '(unnamed)'}")

    # -- output --------------------------------------------------------------------------------
    def to_csv_text(self) -> str:
        """The table as Slicer colour-table CSV text (all terminology columns, empty where not coded)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMNS)
        for entry in self.entries:
            row: list[str] = [str(entry.value), entry.name, *(str(c) for c in entry.color), "255"]
            for code in (entry.category, entry.type, entry.modifier, entry.region, entry.region_modifier):
                row += code.to_list() if code is not None else ["", "", ""]
            writer.writerow(row)
        return buffer.getvalue()

    def save(self, path: "str | os.PathLike[str]") -> Path:
        """Write the table as a Slicer colour-table CSV (atomically). Returns the path."""
        path = Path(path)
        atomic_write_text(path, self.to_csv_text())
        return path


def _parse_row(row: dict[str, str], where: str, line_no: int) -> LabelEntry:
    fix = "correct this row of the label table."
    try:
        value = int(row["LabelValue"])
    except ValueError:
        raise ScdlError(f"line {line_no}: LabelValue {row['LabelValue']!r} is not an integer.", where, fix) from None
    if value < 1:
        raise ScdlError(f"line {line_no}: label value {value} must be >= 1 (0 is the background).", where, fix)
    name = row.get("Name", "")
    if not name:
        raise ScdlError(f"line {line_no}: label {value} has no name.", where, "give every label a Name.")
    if '"' in name:
        raise ScdlError(f"line {line_no}: the name {name!r} contains a double quote.", where, "remove the quote.")
    color = []
    for channel in ("Color_R", "Color_G", "Color_B"):
        try:
            c = int(row[channel])
        except ValueError:
            raise ScdlError(f"line {line_no}: {channel} {row[channel]!r} is not an integer 0..255.", where, fix) from None
        if not 0 <= c <= 255:
            raise ScdlError(f"line {line_no}: {channel} {c} is outside 0..255.", where, fix)
        color.append(c)
    codes: dict[str, Optional[Code]] = {}
    for field_name in CODE_FIELDS:
        parts = [row.get(f"{field_name}_{p}", "") for p in ("CodingScheme", "CodeValue", "CodeMeaning")]
        if not any(parts):
            codes[field_name] = None
            continue
        if not all(parts):
            raise ScdlError(
                f"line {line_no}: {field_name} code of label {value} is incomplete ({'^'.join(parts)}).",
                where,
                f"fill {field_name}_CodingScheme, {field_name}_CodeValue and {field_name}_CodeMeaning.",
            )
        try:
            codes[field_name] = Code(*parts)
        except ValueError as err:
            raise ScdlError(f"line {line_no}: {err}.", where, fix) from None
    if any(codes.values()) and (codes["Category"] is None or codes["Type"] is None):
        raise ScdlError(
            f"line {line_no}: label {value} has codes but no complete category and type.",
            where,
            "a coded label needs Category_* and Type_* columns.",
        )
    if codes["RegionModifier"] is not None and codes["Region"] is None:
        raise ScdlError(f"line {line_no}: label {value} has a region modifier but no region.", where, fix)
    return LabelEntry(
        value=value,
        name=name,
        color=(color[0], color[1], color[2]),
        category=codes["Category"],
        type=codes["Type"],
        modifier=codes["TypeModifier"],
        region=codes["Region"],
        region_modifier=codes["RegionModifier"],
    )


def table_from_names(names: Iterable[str], name: str = "") -> LabelTable:
    """A table without codes whose values are 1..N in the order given (colours from :func:`default_color`)."""
    return LabelTable([LabelEntry(i, n, default_color(i)) for i, n in enumerate(names, start=1)], name=name)


def default_color(value: int) -> tuple[int, int, int]:
    """A distinct, reproducible colour for label values that have no standard colour (golden-ratio hues)."""
    import colorsys

    hue = (value * 0.618033988749895) % 1.0
    sat = 0.55 + 0.25 * ((value * 7) % 3) / 2
    val = 0.75 + 0.2 * ((value * 5) % 2)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))
