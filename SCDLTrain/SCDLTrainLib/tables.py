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


def scene_is_partial(cases, matches, n_classes: int) -> bool:
    """Some labeled training case of the scene annotates only some of the model's classes."""
    for case in cases:
        if case.labeled and case.split == "train":
            names = {m.class_name for m in matches if m.trained and case.name in m.cases}
            if n_classes and len(names) < n_classes:
                return True
    return False


def cohort_rows(cases, matches, n_classes: int, checked=None) -> list[tuple]:
    """One row per scene case: name, role, its segments, what it is used as, the classes it annotates (after a
    check, ``checked`` = :func:`checked_annotation`: also the classes the initial model keeps)."""
    rows = []
    checked = checked or {}
    for case in cases:
        segments = ", ".join(sorted({s[0] for s in case.segments()})) if case.labeled else _("(unlabeled)")
        used = {"train": _("training") if case.labeled else _("training (unlabeled)"),
                "val": _("validation"), "exclude": _("not used")}[case.split]
        annotated = checked.get(case.name) if case.labeled and case.split == "train" else None
        rows.append((case.name, case.role, segments, used, annotated or annotated_text(case, matches, n_classes)))
    return rows


def case_annotation_text(item: dict) -> str:
    """One case of the check's ``annotation`` event: the classes it annotates and those the initial model
    keeps (taught by it: keep what you know) or that stay unknown."""
    text = ", ".join(item.get("annotated") or []) or _("nothing")
    kept, unknown = item.get("kept") or [], item.get("unknown") or []
    if kept:
        how = _("the initial model teaches") if item.get("keep") else _("kept from the initial model")
        text += "; " + _("{how}: {names}").format(how=how, names=", ".join(kept))
    if unknown:
        text += "; " + _("unknown: {names}").format(names=", ".join(unknown))
    return text


def checked_annotation(annotation, exported=None) -> dict:
    """``{case name: text}`` from the check's ``annotation`` event (scene cases named by their volume)."""
    out = {}
    for item in annotation or []:
        name = exported.case_for_row(item.get("row") or "") if exported is not None else None
        out[name or str(item.get("case") or "")] = case_annotation_text(item)
    return out


def before_after_rows(card) -> list[tuple]:
    """Per organ of a fine-tuned model's card: ``(organ, before, after, change)`` Dice on the validation cases
    (``provenance.validation_metrics``: ``before`` = the initial model, ``dice`` = the selected weights); [] for
    a model trained from scratch or without validation."""
    metrics = ((card or {}).get("provenance") or {}).get("validation_metrics") or {}
    before, after = (metrics.get("before") or {}).get("dice") or {}, metrics.get("dice") or {}
    rows = []

    def number(value):
        try:
            value = float(value)
        except (TypeError, ValueError):
            return None
        return value if value == value else None      # NaN: the organ is in no validation case

    for organ in list(after) + [o for o in before if o not in after]:
        b, a = number(before.get(organ)), number(after.get(organ))
        if b is None and a is None:
            continue
        rows.append((organ, b, a, None if a is None or b is None else a - b))
    return rows if before else []


def before_after_html(rows, mean_before=None, mean_after=None) -> str:
    """The before/after table as HTML for the result panel ("" when there is nothing to show)."""
    if not rows:
        return ""
    show = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    change = lambda v: "" if v is None else f"{v:+.3f}"  # noqa: E731
    body = "".join(f"<tr><td>{o}</td><td>{show(b)}</td><td>{show(a)}</td><td>{change(d)}</td></tr>"
                   for o, b, a, d in rows)
    if mean_before is not None and mean_after is not None:
        body += (f"<tr><td><b>{_('mean')}</b></td><td>{show(mean_before)}</td><td>{show(mean_after)}</td>"
                 f"<td>{change(mean_after - mean_before)}</td></tr>")
    return ("<h3>" + _("Validation Dice per organ: before and after fine-tuning") + "</h3>"
            "<table border='1' cellspacing='0' cellpadding='3'><tr><th>" + _("organ") + "</th><th>"
            + _("before (initial model)") + "</th><th>" + _("after") + "</th><th>" + _("change") + "</th></tr>"
            + body + "</table>")


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
