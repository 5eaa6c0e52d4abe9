"""Segments of the scene's segmentations -> classes of the model being trained.

Each distinct segment name (compared after :func:`scdl.labels.names.normalize_name`, so "Liver", "liver" and
"LIVER" are one row) is matched to a class of the model's label table:

1. a correction the user typed into the mapping table (``how == "user"``), else
2. by name (the core's name normalisation: synonyms, laterality, British spelling: "kidney_right" ->
   "right kidney"), else
3. by terminology (the segment's SNOMED CT type + modifier + region codes equal exactly one class's codes).

Value 0 means "background: not trained" (a user choice); ``None`` means "unknown" (reported as a cohort
problem of every case that has the segment). No Qt here; no torch (``scdl.labels`` is pure Python + numpy).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Iterable, Optional

from SCDLSlicerLib.sceneio import terminology_codes

#: Texts that mean "background / not trained" in the class column of the mapping table.
BACKGROUND_WORDS = ("", "0", "background", "ignore", "none", "-")


@dataclass
class SegmentMatch:
    """One row of the mapping table.

    Attributes:
        key: normalised segment name (the row's identity).
        name: the segment name as first seen in the scene.
        value: model class value; 0 = background (not trained); None = unknown.
        how: ``"user"``, ``"name"``, ``"terminology"`` or ``"unknown"``.
        class_name: the model class's name ("" when unknown, "background" for 0).
        cases: names of the volumes whose segmentation holds this segment.
    """

    key: str
    name: str
    value: Optional[int]
    how: str
    class_name: str
    cases: list[str] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.value is not None

    @property
    def trained(self) -> bool:
        return self.value is not None and self.value > 0


def segment_key(name: str) -> str:
    """The identity of a segment name in the mapping (normalised; the raw lower-cased text if that is empty)."""
    from scdl.labels.names import normalize_name

    return normalize_name(name) or str(name).strip().lower()


def _code(pair) -> Optional[tuple[str, str]]:
    return None if pair is None else (str(pair[0]), str(pair[1]))


def _entry_codes(entry) -> tuple:
    def pair(code):
        return None if code is None else (code.scheme, code.value)

    return pair(entry.type), pair(entry.modifier), pair(entry.region), pair(entry.region_modifier)


def match_by_terminology(terminology: Optional[str], table) -> Optional[object]:
    """The single class of ``table`` whose type, modifier and region codes equal the segment's (scheme and
    value; meanings and the category are not compared), or None. Generic codes ("Tissue") match nothing."""
    if not terminology:
        return None
    _category, type_, modifier, region, region_modifier = terminology_codes(terminology)
    if type_ is None:
        return None
    wanted = (_code(type_), _code(modifier), _code(region), _code(region_modifier))
    hits = [entry for entry in table.entries if entry.has_terminology and _entry_codes(entry) == wanted]
    return hits[0] if len(hits) == 1 else None


def parse_class(text: str, table) -> int:
    """A class typed by the user: a name (matched like segment names), a label value, or a background word.

    Raises ``ValueError`` naming the known classes when the text is none of these.
    """
    cleaned = str(text).strip()
    if cleaned.lower() in BACKGROUND_WORDS:
        return 0
    if cleaned.isdigit():
        value = int(cleaned)
        if value in table.values:
            return value
        raise ValueError(f"{cleaned} is not a class value of the model (values {min(table.values)}..{max(table.values)}).")
    entry = table.find(cleaned)
    if entry is None:
        raise ValueError(f"{cleaned!r} is not a class of the model; use one of: {', '.join(table.names)} (or 'background').")
    return int(entry.value)


def match_segments(segments: Iterable[tuple[str, Optional[str], str]], table,
                   overrides: Optional[dict[str, int]] = None) -> list[SegmentMatch]:
    """Match segments to the classes of ``table``.

    Args:
        segments: ``(segment name, terminology entry string or None, case name)`` for every segment of every
            labeled case.
        table: the model's ``scdl.labels.table.LabelTable``.
        overrides: ``{segment key: class value}`` typed by the user (0 = background).

    Returns:
        One :class:`SegmentMatch` per distinct segment key, in order of first appearance.
    """
    overrides = dict(overrides or {})
    rows: dict[str, SegmentMatch] = {}
    for name, terminology, case in segments:
        key = segment_key(name)
        row = rows.get(key)
        if row is None:
            row = _match_one(key, name, terminology, table, overrides)
            rows[key] = row
        elif row.value is None and terminology:          # a later spelling may carry codes
            better = _match_one(key, name, terminology, table, overrides)
            if better.value is not None:
                better.cases = row.cases
                row = rows[key] = better
        if case not in row.cases:
            row.cases.append(case)
    return list(rows.values())


def _match_one(key: str, name: str, terminology: Optional[str], table, overrides: dict[str, int]) -> SegmentMatch:
    if key in overrides:
        value = int(overrides[key])
        return SegmentMatch(key, name, value, "user", _class_name(table, value))
    entry = table.find(name)
    if entry is not None:
        return SegmentMatch(key, name, int(entry.value), "name", entry.name)
    entry = match_by_terminology(terminology, table)
    if entry is not None:
        return SegmentMatch(key, name, int(entry.value), "terminology", entry.name)
    return SegmentMatch(key, name, None, "unknown", "")


def _class_name(table, value: int) -> str:
    if value == 0:
        return "background"
    try:
        return table.by_value(value).name
    except KeyError:
        return f"value {value}"


def value_map(matches: Iterable[SegmentMatch]) -> dict[str, int]:
    """``{segment key: class value}`` of the matched rows (background and unknown rows left out)."""
    return {m.key: int(m.value) for m in matches if m.trained}


def overrides_to_json(overrides: dict[str, int]) -> str:
    """Serialise the user's corrections for the parameter node."""
    return json.dumps({str(k): int(v) for k, v in sorted(overrides.items())}, separators=(",", ":"))


def overrides_from_json(text: str) -> dict[str, int]:
    """Read the corrections stored by :func:`overrides_to_json` (an unreadable text counts as none)."""
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    out = {}
    for key, value in data.items():
        try:
            out[str(key)] = int(value)
        except (TypeError, ValueError):
            continue
    return out
