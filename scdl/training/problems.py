"""Structured cohort problems: what is wrong with which file, and what to do about it.

The Slicer training module lists them per case; ``scdl train --check-only`` prints them (one JSON line each
with ``--progress json``); training refuses to start while any ``error`` remains and raises one
:class:`~scdl.errors.ScdlError` that lists them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from scdl.errors import ScdlError, one_line


@dataclass(frozen=True)
class CohortProblem:
    """One problem of one case (or of the cohort as a whole).

    Attributes:
        severity: ``"error"`` (training cannot start) or ``"warning"`` (training starts; the user should know).
        code: stable identifier (``unreadable``, ``geometry_mismatch``, ``unknown_labels``, ``empty_label``,
            ``labeled_and_unlabeled``, ``too_few_cases``, ``no_validation``, ...).
        message: what is wrong, in words.
        path: the file concerned ("" for cohort-wide problems).
        case: where the case was declared (``manifest.csv:4``), "" for cohort-wide problems.
        fix: what to do.
    """

    severity: str
    code: str
    message: str
    path: str = ""
    case: str = ""
    fix: str = ""

    def line(self) -> str:
        """One printable line (paths with control characters escaped: :func:`scdl.errors.one_line`)."""
        where = f"{self.path}: " if self.path else ""
        origin = f" [{self.case}]" if self.case else ""
        fix = f" Fix: {self.fix}" if self.fix else ""
        return one_line(f"{self.severity}: {where}{self.message}{origin}{fix}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CohortReport:
    """Every problem found, plus per-case facts that the trainer needs (present classes, grid sizes)."""

    problems: list[CohortProblem] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)
    validation_source: str = "val"      # "val" | "train-labeled" (no validation case) | "none"

    @property
    def errors(self) -> list[CohortProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[CohortProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self, source: Optional[str] = None) -> None:
        """One :class:`ScdlError` that lists every error (one per line, each with its file and fix)."""
        errors = self.errors
        if not errors:
            return
        raise ScdlError(f"the cohort has {len(errors)} problem{'s' if len(errors) > 1 else ''}; nothing was trained:",
                        source, "fix each file listed above (scdl train --check-only lists them again).",
                        details=[p.line() for p in errors])
