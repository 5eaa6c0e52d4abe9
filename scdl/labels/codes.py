"""Coded concepts (SNOMED CT triples) and 3D Slicer's terminology entry string.

A segment's meaning is stored as DICOM-style code triples: category (e.g. "Anatomical Structure"),
type (e.g. "Kidney"), type modifier (e.g. "Right"), and for structures that are not anatomy
themselves an anatomic region (+ region modifier). 3D Slicer keeps them in a segment tag
``TerminologyEntry`` serialised as seven ``~``-separated fields::

    <context>~<category>~<type>~<type modifier>~<anatomic context>~<region>~<region modifier>

where every code is ``scheme^value^meaning`` (``^^`` when empty). This is the format
``vtkSlicerTerminologiesModuleLogic::SerializeTerminologyEntry`` writes and reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

#: Slicer terminology context that contains every segmentation code in the bundled tables
#: (the 3D Slicer General Anatomy list is a subset of it).
SEGMENTATION_CONTEXT = "Segmentation category and type - DICOM master list"
#: Slicer context of anatomic region codes.
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


@dataclass(frozen=True)
class Code:
    """One coded concept, e.g. ``Code("SCT", "10200004", "Liver")``.

    Args:
        scheme: coding scheme designator ("SCT" for SNOMED CT).
        value: code value within the scheme.
        meaning: human-readable code meaning.
    """

    scheme: str
    value: str
    meaning: str

    def __post_init__(self) -> None:
        for field_name in ("scheme", "value", "meaning"):
            text = getattr(self, field_name)
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Code.{field_name} must be a non-empty string, not {text!r}")
            if any(ch in text for ch in "~^|\"\n"):
                raise ValueError(f"Code.{field_name} {text!r} contains a character reserved by Slicer (~ ^ | \" newline)")

    def to_slicer(self) -> str:
        """``scheme^value^meaning`` (Slicer's code triple)."""
        return f"{self.scheme}^{self.value}^{self.meaning}"

    def to_list(self) -> list[str]:
        """``[scheme, value, meaning]`` (slicerio's representation)."""
        return [self.scheme, self.value, self.meaning]

    def same_concept(self, other: Optional["Code"]) -> bool:
        """True if ``other`` names the same concept (scheme and value; the meaning text may differ)."""
        return other is not None and (self.scheme, self.value) == (other.scheme, other.value)


def _triple(code: Optional[Code]) -> str:
    return code.to_slicer() if code is not None else "^^"


def terminology_string(
    category: Code,
    type_: Code,
    modifier: Optional[Code] = None,
    region: Optional[Code] = None,
    region_modifier: Optional[Code] = None,
    context: str = SEGMENTATION_CONTEXT,
    anatomic_context: str = ANATOMIC_CONTEXT,
) -> str:
    """Slicer's ``TerminologyEntry`` string for one segment (see the module docstring)."""
    if region is None and region_modifier is not None:
        raise ValueError("a region modifier needs a region")
    return "~".join(
        [context, _triple(category), _triple(type_), _triple(modifier), anatomic_context, _triple(region),
         _triple(region_modifier)]
    )


def terminology_dict(
    category: Code,
    type_: Code,
    modifier: Optional[Code] = None,
    region: Optional[Code] = None,
    region_modifier: Optional[Code] = None,
    context: str = SEGMENTATION_CONTEXT,
    anatomic_context: str = ANATOMIC_CONTEXT,
) -> dict:
    """The same entry as slicerio's segment ``"terminology"`` dict (what ``slicerio.write_segmentation`` takes)."""
    out: dict = {"contextName": context, "category": category.to_list(), "type": type_.to_list()}
    if modifier is not None:
        out["typeModifier"] = modifier.to_list()
    out["anatomicContextName"] = anatomic_context
    if region is not None:
        out["anatomicRegion"] = region.to_list()
        if region_modifier is not None:
            out["anatomicRegionModifier"] = region_modifier.to_list()
    return out
