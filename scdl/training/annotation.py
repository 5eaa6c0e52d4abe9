"""Which model classes a labeled case annotates (partially labeled cohorts, scdl.losses.partial).

A class is annotated in a case when the case's label table (the manifest's ``labels`` column) names it: a
table is the list of what was drawn. Without a table (the model's numbering) every class is annotated. The
optional ``annotated`` column overrides this for label maps whose table names classes that were not drawn
(``liver`` for a liver study stored in the TotalSegmentator numbering). A class that a case does not
annotate is unknown there: its voxels are neither background nor that class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np


@dataclass
class Annotation:
    """The annotated classes of one case.

    Attributes:
        values: model class values annotated (foreground, sorted).
        unknown: tokens of the ``annotated`` column that name no model class (a user error).
        source: ``"column"`` (the manifest said so), ``"table"`` (the label table lists them) or ``"model"``
            (no table: the model's numbering, every class).
    """

    values: list[int] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    source: str = "model"


def _target_by_name(target: Any) -> dict[str, int]:
    from scdl.labels.names import name_alternatives

    by_name: dict[str, int] = {}
    for entry in target.entries:
        if int(entry.value) == 0:
            continue
        for key in name_alternatives(entry.name):
            by_name.setdefault(key, int(entry.value))
    return by_name


def case_annotation(column: Optional[Sequence[str]], source: Any, target: Any) -> Annotation:
    """The annotated model classes of a case.

    Args:
        column: the ``annotated`` column's tokens (class names, or model values as digits), or None.
        source: the label map's LabelTable (the ``labels`` column), or None (the model's numbering).
        target: the model's LabelTable.
    """
    foreground = sorted(int(e.value) for e in target.entries if int(e.value) != 0)
    if column:
        from scdl.labels.mapping import match_tables
        from scdl.labels.names import name_alternatives

        by_name = _target_by_name(target)
        via_source: dict[str, int] = {}
        if source is not None:
            match = match_tables(source, target)
            for entry in source.entries:
                if int(entry.value) in match.value_map and match.value_map[int(entry.value)] != 0:
                    for key in name_alternatives(entry.name):
                        via_source.setdefault(key, match.value_map[int(entry.value)])
        values, unknown = set(), []
        for token in column:
            text = str(token).strip()
            if text.isdigit() and int(text) in foreground:
                values.add(int(text))
                continue
            hit = next((by_name.get(k) or via_source.get(k) for k in name_alternatives(text)
                        if by_name.get(k) or via_source.get(k)), None)
            if hit is None:
                unknown.append(text)
            else:
                values.add(int(hit))
        return Annotation(sorted(values), unknown, "column")
    if source is None:
        return Annotation(foreground, [], "model")
    from scdl.labels.mapping import match_tables

    mapped = {int(v) for v in match_tables(source, target).value_map.values() if int(v) != 0}
    return Annotation(sorted(mapped), [], "table")


def annotation_mask(values: Sequence[int], n_classes: int) -> np.ndarray:
    """bool (C,): background and the annotated ``values``."""
    mask = np.zeros(int(n_classes), dtype=bool)
    mask[0] = True
    for v in values:
        if 0 < int(v) < n_classes:
            mask[int(v)] = True
    return mask


def is_partial_cohort(masks: Sequence[np.ndarray]) -> bool:
    """True when some case leaves some class not annotated."""
    return any(not bool(np.all(m)) for m in masks)
