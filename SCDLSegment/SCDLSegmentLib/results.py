"""The results table of SCDL Segment: one row per organ of the model, found or not (no Qt here).

Only found organs become segments (the ``.seg.nrrd`` holds what the model found, docs/io.md); the table is
where the organs it did not find are listed, so that a missed organ is seen rather than silently absent.
"""

from __future__ import annotations

from typing import Optional

try:
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover - outside Slicer and the test harness
    def _(text: str) -> str:
        return text


def organ_rows(report, confidence: Optional[dict] = None) -> list[tuple[str, str]]:
    """``(organ, result)`` for every organ of the label table, in table order: the confidence (with the
    uncertainty option), else "found"; "not found" for an organ without a segment.

    Args:
        report: ``SCDLSlicerLib.sceneio.LoadReport`` of the loaded result (``organs``, ``segment_names``).
        confidence: per-organ confidence reported by the child (name -> value or None).
    """
    confidence = confidence or {}
    found = set(report.segment_names)
    organs = report.organs or list(report.segment_names) + list(report.missing)
    rows = []
    for name in organs:
        value = confidence.get(name)
        if name not in found:
            rows.append((name, _("not found")))
        elif value is not None:
            rows.append((name, f"{value:.3f}"))
        else:
            rows.append((name, _("found")))
    return rows


def result_column_title(confidence: Optional[dict] = None) -> str:
    """Title of the table's second column."""
    return _("Confidence") if any(v is not None for v in (confidence or {}).values()) else _("Result")


def rows_of(result) -> list[tuple[str, str]]:
    """The table rows of a ``scenejob.SegmentationResult`` (without a label table: what the child reported)."""
    if result.report is not None:
        return organ_rows(result.report, result.confidence)
    return [(name, _("not found") if value is None else f"{value:.3f}") for name, value in result.confidence.items()]


def summary(result) -> tuple[str, str]:
    """(status line, warnings text) of a finished segmentation."""
    status = _("Done in {seconds:.1f} s: {count} segments in '{name}'.").format(
        seconds=result.seconds, count=result.segmentation_node.GetSegmentation().GetNumberOfSegments(),
        name=result.segmentation_node.GetName())
    not_found = result.report.missing if result.report else []
    warnings = list(result.warnings) + ([_("Not found: {organs}.").format(organs=", ".join(not_found))] if not_found else [])
    return status, "\n".join(warnings)
