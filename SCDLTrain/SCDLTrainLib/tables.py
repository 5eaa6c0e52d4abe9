"""The texts of SCDL Train's three tables (cases, segments -> classes, problems) and the cohort counts (no Qt).

The widget puts the rows into its ``QTableWidget`` s (``SCDLSlicerLib.panel.PanelMixin._fillTable``).
"""

from __future__ import annotations

try:
    from slicer.i18n import tr as _
except ImportError:  # pragma: no cover - outside Slicer and the test harness
    def _(text: str) -> str:
        return text

#: Columns of the panel's tables.
COHORT_COLUMNS = ("Case", "Role", "Segments", "Used as", "Annotated classes")
MAPPING_COLUMNS = ("Segment", "Model class", "Matched by", "Cases")
PROBLEM_COLUMNS = ("Case", "Severity", "Problem", "Fix")


def annotated_text(case, matches, n_classes: int) -> str:
    """The model classes a labeled case annotates (its mapped segments); the others are unknown in it, not
    background (partial labels)."""
    if not case.labeled:
        return ""
    names = sorted({m.class_name for m in matches if m.trained and case.name in m.cases})
    if n_classes and len(names) >= n_classes:
        return _("all {n}").format(n=n_classes)
    if not names:
        return _("none")
    return _("{names} (the other {n} unknown)").format(names=", ".join(names), n=max(n_classes - len(names), 0))


def cohort_rows(cases, matches, n_classes: int) -> list[tuple]:
    """One row per scene case: name, role, its segments, what it is used as, the classes it annotates."""
    rows = []
    for case in cases:
        segments = ", ".join(sorted({s[0] for s in case.segments()})) if case.labeled else _("(unlabeled)")
        used = {"train": _("training") if case.labeled else _("training (unlabeled)"),
                "val": _("validation"), "exclude": _("not used")}[case.split]
        rows.append((case.name, case.role, segments, used, annotated_text(case, matches, n_classes)))
    return rows


def mapping_rows(matches) -> list[tuple]:
    """One row per segment (name): the model class it maps to, how it was matched, the cases that have it."""
    how = {"user": _("you"), "name": _("name"), "terminology": _("terminology"), "unknown": _("UNKNOWN")}
    return [(m.name, m.class_name if m.known else "", how[m.how], ", ".join(m.cases)) for m in matches]


def problem_rows(problems) -> list[tuple]:
    return [(p.case or _("(cohort)"), p.severity, p.message, p.fix) for p in problems]


def scene_counts_text(cases) -> str:
    """The line under the cohort table: labeled / unlabeled training volumes, validation, excluded."""
    counts = {split: sum(1 for c in cases if c.split == split and (c.labeled or split != "val"))
              for split in ("train", "val", "exclude")}
    labeled = sum(1 for c in cases if c.split == "train" and c.labeled)
    return _("Scene: {labeled} labeled and {unlabeled} unlabeled training volume(s), {val} for validation, "
             "{excluded} excluded. Check the cohort before training.").format(
        labeled=labeled, unlabeled=counts["train"] - labeled, val=counts["val"], excluded=counts["exclude"])


def check_text(result, problems, ready: bool) -> str:
    """The line after a finished ``--check-only``: counts, errors and warnings, the validation source."""
    errors = sum(1 for p in problems if p.severity == "error")
    warnings = sum(1 for p in problems if p.severity == "warning")
    text = _("{labeled} labeled, {unlabeled} unlabeled, {val} validation case(s); {errors} error(s), "
             "{warnings} warning(s).").format(errors=errors, warnings=warnings, **result.counts)
    if result.validation_source != "val":
        text += " " + _("No validation case: Dice is measured on the training cases (optimistic).")
    return text + (" " + _("Ready to start.") if ready else "")
