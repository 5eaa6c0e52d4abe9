"""Check a cohort before training: every problem of every case at once, each with its file.

Per case: missing or unreadable image / label map, label map on another grid than its CT, label values that
are not in the label table, an empty label map (or one with no class of the model), a CT that does not look
like CT (warning). Over the cohort: a case both labeled and unlabeled (same image content), a case in
training and validation, fewer cases than a batch needs, no validation case (then the labeled training cases
are used, and the report says so), model classes that no labeled case contains.

With ``prepare=True`` every case that passes is preprocessed into the cache right after it was read (so a
CT is read once); a cached case is not read again (its check facts are kept in the cache entry).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from scdl.errors import ScdlError
from scdl.io.paths import check_input_path
from scdl.progress import ProgressReporter
from scdl.training.cache import CachedCase, PreprocessCache
from scdl.training.cohort import Cohort, Case
from scdl.training.config import DEFAULT_FRAMEWORK, Framework
from scdl.training.hashing import HashIndex
from scdl.training.problems import CohortProblem, CohortReport


def label_values(arr: np.ndarray) -> tuple[list[int], dict[int, int]]:
    """Distinct values of an integer label array and their voxel counts (bincount when the range allows)."""
    flat = arr.reshape(-1)
    if flat.size and np.issubdtype(flat.dtype, np.integer) and flat.min() >= 0 and flat.max() < 65536:
        counts = np.bincount(flat.astype(np.int64, copy=False))
        values = np.flatnonzero(counts)
        return [int(v) for v in values], {int(v): int(counts[v]) for v in values}
    values, counts = np.unique(flat, return_counts=True)
    return [int(v) for v in values], {int(v): int(c) for v, c in zip(values, counts)}


class _Tables:
    """Loads each label table once; a table that cannot be loaded becomes a problem of the case."""

    def __init__(self) -> None:
        self._tables: dict[str, Any] = {}

    def get(self, ref: str) -> Any:
        if ref not in self._tables:
            from scdl.labels.table import LabelTable

            self._tables[ref] = LabelTable.load(ref)
        return self._tables[ref]


def _map_values(values: list[int], source: Any, target: Any) -> tuple[list[int], list[int]]:
    """Target classes present and source values unknown, for the set of ``values`` of a label map."""
    if source is None:
        known = {int(e.value) for e in target.entries} | {0}
        unknown = [v for v in values if v not in known]
        return sorted({v for v in values if v in known and v != 0}), unknown
    from scdl.labels.mapping import map_label_array

    mapped, unknown = map_label_array(np.asarray(values, dtype=np.int64), source, target)
    return sorted({int(v) for v in np.asarray(mapped).reshape(-1) if int(v) != 0}), sorted(int(u) for u in unknown)


def check_cohort(cohort: Cohort, target: Any, *, framework: str = DEFAULT_FRAMEWORK.value, labeled_batch: int = 2,
                 unlabeled_batch: int = 2, cache: Optional[PreprocessCache] = None, prepare: bool = False,
                 resample_labels: bool = False, hash_index: Optional[HashIndex] = None,
                 progress: Optional[ProgressReporter] = None, init_classes: Optional[set[int]] = None,
                 ) -> tuple[CohortReport, dict[str, CachedCase]]:
    """Check every case of ``cohort`` against the model's label table ``target``.

    Args:
        framework: ``supervised`` needs no unlabeled case; ``cps`` / ``cps-scdl`` need ``unlabeled_batch``.
        cache: preprocessing cache consulted (a cached case is not read again) and, with ``prepare``, filled.
        resample_labels: a label map on another grid is resampled onto its CT (nearest) with a warning
            instead of being an error.
        progress: scdl.progress.Progress for a "check" phase.
        init_classes: model classes the initial model (``--init``) already segments: one that no case annotates
            is kept from it (a warning) instead of being an error.
    Returns:
        (report, prepared) where ``prepared`` maps ``case.row`` to its CachedCase (only with a cache).
    """
    report = CohortReport(problems=list(cohort.problems))
    prepared: dict[str, CachedCase] = {}
    tables = _Tables()
    hashes = hash_index or HashIndex(None)
    active = [c for c in cohort.cases if c.split in ("train", "val")]
    image_roles: dict[str, list[tuple[Case, str]]] = {}
    class_presence: set[int] = set()
    class_annotated: set[int] = set()
    phase = progress.phase("check", total=len(active)) if progress is not None else None
    try:
        for case in active:
            facts = _check_case(case, target, tables, hashes, cache, prepare, resample_labels, report, prepared)
            if case.labeled:
                _annotation_facts(case, target, tables, facts, report)
                if case.split == "train":
                    class_annotated.update(facts.get("annotated", []))
            if facts.get("image_hash"):
                role = "val" if case.split == "val" else ("labeled" if case.labeled else "unlabeled")
                image_roles.setdefault(facts["image_hash"], []).append((case, role))
            if case.labeled and case.split == "train":
                class_presence.update(facts.get("present", []))
            report.cases.append({"row": case.row, "name": case.name, **case.to_dict(), **facts})
            if phase is not None:
                phase.advance()
    finally:
        if phase is not None:
            phase.close()
        hashes.save()
    _check_overlaps(image_roles, report)
    _check_counts(cohort, target, framework, labeled_batch, unlabeled_batch, class_presence, report,
                  class_annotated, init_classes)
    return report, prepared


def _annotation_facts(case: Case, target: Any, tables: _Tables, facts: dict[str, Any], report: CohortReport) -> None:
    """``annotated`` (model values) and ``annotated_names`` of a labeled case; its problems (unknown names in
    the ``annotated`` column; drawn classes that the column leaves out)."""
    from scdl.training.annotation import case_annotation

    try:
        source = tables.get(case.labels) if case.labels else None
    except ScdlError:
        return                                            # reported by _check_case
    ann = case_annotation(case.annotated, source, target)
    names = {int(e.value): e.name for e in target.entries}
    facts["annotated"] = ann.values
    facts["annotated_names"] = [names[v] for v in ann.values]
    facts["annotated_from"] = ann.source
    n_fg = len([v for v in names if v != 0])
    facts["partial"] = len(ann.values) < n_fg
    where = str(case.label)
    if ann.unknown:
        report.problems.append(CohortProblem(
            "error", "unknown_annotated", f"the 'annotated' column names {', '.join(repr(u) for u in ann.unknown)}, "
            "which is no class of the model.", where, case.row,
            f"use the model's class names separated by ';' (e.g. {names.get(min(v for v in names if v), '')!r}), "
            "or leave the column empty when every class of the label table was drawn."))
    elif ann.source == "column" and not ann.values:
        report.problems.append(CohortProblem(
            "error", "nothing_annotated", "the 'annotated' column is given but names no class.", where, case.row,
            "name the drawn classes separated by ';', or leave the column empty."))
    drawn = [v for v in facts.get("present", []) if v not in ann.values]
    if drawn and ann.source == "column":
        report.problems.append(CohortProblem(
            "warning", "drawn_not_annotated", f"the label map holds {', '.join(names[v] for v in drawn)}, which its "
            "'annotated' column leaves out: those voxels are treated as unknown.", where, case.row,
            "add them to the 'annotated' column if they were drawn completely."))


def _check_case(case: Case, target: Any, tables: _Tables, hashes: HashIndex, cache: Optional[PreprocessCache],
                prepare: bool, resample_labels: bool, report: CohortReport,
                prepared: dict[str, CachedCase]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    problems: list[CohortProblem] = []

    def problem(severity: str, code: str, message: str, path: os.PathLike | str, fix: str) -> None:
        problems.append(CohortProblem(severity, code, message, str(path), case.row, fix))

    if case.split == "val" and not case.labeled:
        problem("error", "unlabeled_val", "a validation case needs a label map.", case.image,
                "fill in its 'label' column or set its split to train.")
    if case.anatomy and case.split == "val":
        problem("error", "anatomy_val", "a validation case needs a real CT (this row has a label map only).",
                case.label, "give its image, or set its split to train.")
    for path, what in ((case.image, "image"), (case.label, "label map")):
        if path is None:
            continue
        try:                        # a FIFO, device or link loop: refused before it is hashed or read (would block)
            check_input_path(path, what)
        except ScdlError as err:
            if not os.path.lexists(path):
                problem("error", "missing", f"the {what} does not exist.", path, "fix the path in the manifest (paths "
                        "are relative to the manifest's folder).")
            else:
                problem("error", "not_a_file", err.message, err.path or path, err.fix or "")
    source = None
    if case.labeled and case.labels:
        try:
            source = tables.get(case.labels)
        except ScdlError as err:
            problem("error", "bad_label_table", f"the label table cannot be used ({err.message}).",
                    err.path or case.labels, err.fix or "give a bundled table name or a colour-table CSV.")
    if problems:
        report.problems.extend(problems)
        return facts
    if case.anatomy:
        return _check_anatomy(case, source, target, hashes, cache, prepare, report, prepared, facts)
    try:
        facts["image_hash"] = hashes.hash(case.image)
        facts["label_hash"] = hashes.hash(case.label) if case.label is not None else None
    except OSError as err:
        problem("error", "unreadable", f"the file cannot be read ({err.strerror or err}).", err.filename or case.image,
                "check the file's permissions.")
        report.problems.extend(problems)
        return facts

    keys = None
    if cache is not None:
        keys = [cache.key(facts["image_hash"], facts["label_hash"], source, resampled=r) for r in (False, True)]
        for key in keys if resample_labels else keys[:1]:
            hit = cache.get(key)
            _report_damage(cache, case, prepare, report)
            if hit is not None:
                prepared[case.row] = hit
                stored = hit.meta.get("facts", {})
                facts.update(present=hit.present if case.labeled else [], cached=True, shape=hit.shape)
                for w in stored.get("warnings", []):
                    report.problems.append(CohortProblem(**{**w, "case": case.row}))
                return facts

    image, label, warnings = _read_case(case, source, target, resample_labels, problems, facts)
    report.problems.extend(problems)
    report.problems.extend(warnings)
    if image is None or any(p.severity == "error" for p in problems):
        return facts
    if cache is not None and prepare:
        key = keys[1 if facts.get("resampled") else 0]
        try:
            from scdl.processing.budget import TRAINING_BYTES_PER_VOXEL, check_model_grid, plan_size

            # a case whose model grid is beyond the machine (a tiny preprocessing.spacing_mm): refused with the
            # numbers, as a problem of this case, instead of an allocation failure
            check_model_grid(plan_size(image, cache.preprocessing, bytes_per_voxel=TRAINING_BYTES_PER_VOXEL),
                             case.image, max_windows=None)
            prepared[case.row] = cache.put(key, image, label, source,
                                           facts={"warnings": [w.to_dict() for w in warnings],
                                                  "image": str(case.image), "label": str(case.label or "")})
            facts["shape"] = prepared[case.row].shape
        except ScdlError as err:
            report.problems.append(CohortProblem("error", "preprocessing", err.message, err.path or str(case.image),
                                                 case.row, err.fix or ""))
    return facts


def _report_damage(cache: PreprocessCache, case: Case, prepare: bool, report: CohortReport) -> None:
    """One warning for a damaged cache entry that :meth:`PreprocessCache.get` found (it is made again)."""
    if cache.damaged is None:
        return
    path, why = cache.damaged
    then = ("it is preprocessed again from the case's files" if prepare
            else "the case was checked from its files; the next training run makes the entry again")
    report.problems.append(CohortProblem(
        "warning", "cache_damaged", f"the preprocessing cache entry of this case is damaged ({why}); {then}.",
        str(path), case.row, "nothing to do; if it recurs, check the disk that holds the cache (--cache-dir)."))
    cache.damaged = None


def _label_hash(hashes: HashIndex, path: Path) -> str:
    """Content hash of a label map file, or of a mask folder (its files' hashes in name order)."""
    path = Path(path)
    if path.is_dir():
        import hashlib

        from scdl.io.mask_folder import mask_files

        digest = hashlib.sha256()
        for f in mask_files(path):
            digest.update(f.name.encode() + b"\0" + hashes.hash(f).encode())
        return digest.hexdigest()
    return hashes.hash(path)


def _check_anatomy(case: Case, source: Any, target: Any, hashes: HashIndex, cache: Optional[PreprocessCache],
                   prepare: bool, report: CohortReport, prepared: dict[str, CachedCase],
                   facts: dict[str, Any]) -> dict[str, Any]:
    """An anatomy case (label map, no image): read and check the map, cache its layout for synthesis."""
    from scdl.io.image import read_label_map

    def fail(code: str, message: str, path: Any, fix: str) -> dict[str, Any]:
        report.problems.append(CohortProblem("error", code, message, str(path), case.row, fix))
        return facts

    facts["anatomy"] = True
    try:
        facts["label_hash"] = _label_hash(hashes, case.label)
    except OSError as err:
        return fail("unreadable", f"the file cannot be read ({err.strerror or err}).", err.filename or case.label,
                    "check the file's permissions.")
    facts["image_hash"] = None
    key = None
    if cache is not None:
        key = cache.key("anatomy", facts["label_hash"], source)
        hit = cache.get(key)
        _report_damage(cache, case, prepare, report)
        if hit is not None:
            prepared[case.row] = hit
            facts.update(present=hit.present, cached=True, shape=hit.shape)
            return facts
    try:
        label = read_label_map(case.label, table=source)
    except ScdlError as err:
        return fail("unreadable", err.message, err.path or case.label, err.fix or "replace the label map.")
    except Exception as err:  # noqa: BLE001 - any reader failure is a problem of this file
        return fail("unreadable", f"the label map cannot be read ({err}).", case.label, "replace the label map.")
    import SimpleITK as sitk

    values, _counts = label_values(sitk.GetArrayViewFromImage(label))
    present, unknown = _map_values(values, source, target)
    facts["present"] = present
    if unknown:
        return fail("unknown_labels", f"{len(unknown)} label values not in the label table "
                    f"{case.labels or getattr(target, 'name', '')}.", case.label,
                    "give this label map's own table in the manifest's 'labels' column (e.g. totalsegmentator_v2).")
    if not present:
        return fail("empty_label", "none of this label map's classes is a class of the model.", case.label,
                    "check the 'labels' column (the label map's own table) and --labels (the model's classes).")
    if cache is not None and prepare:
        prepared[case.row] = cache.put_anatomy(key, label, source, facts={"label": str(case.label)})
        facts["shape"] = prepared[case.row].shape
    return facts


def _read_case(case: Case, source: Any, target: Any, resample_labels: bool, problems: list[CohortProblem],
               facts: dict[str, Any]) -> tuple[Any, Any, list[CohortProblem]]:
    """Read image and label map, check grid and values. Returns (image, label, warnings)."""
    from scdl.io.image import read_ct, read_label_map

    warnings: list[CohortProblem] = []

    def warn(text: str) -> None:
        warnings.append(CohortProblem("warning", "not_ct", text, str(case.image), case.row,
                                      "check that this file is a CT in Hounsfield units."))

    def fail(code: str, message: str, path: Any, fix: str) -> None:
        problems.append(CohortProblem("error", code, message, str(path), case.row, fix))

    try:
        image = read_ct(case.image, warn=warn)
    except ScdlError as err:
        fail("unreadable", err.message, err.path or case.image, err.fix or "replace the file with a readable CT.")
        return None, None, warnings
    except Exception as err:  # noqa: BLE001 - any reader failure is a problem of this file
        fail("unreadable", f"the image cannot be read ({err}).", case.image, "replace the file with a readable CT.")
        return None, None, warnings
    facts["size"] = list(image.GetSize())
    facts["spacing"] = [float(s) for s in image.GetSpacing()]
    if case.label is None:
        return image, None, warnings
    try:
        label = read_label_map(case.label)
    except ScdlError as err:
        fail("unreadable", err.message, err.path or case.label, err.fix or "replace the label map.")
        return image, None, warnings
    except Exception as err:  # noqa: BLE001
        fail("unreadable", f"the label map cannot be read ({err}).", case.label, "replace the label map.")
        return image, None, warnings

    from scdl.io.geometry import describe_grid, same_grid

    if not same_grid(image, label):
        if resample_labels:
            original = describe_grid(label)
            try:
                label = read_label_map(case.label, reference=image, resample=True)
            except ScdlError as err:
                fail("geometry_mismatch", err.message, err.path or case.label, err.fix or "")
                return image, None, warnings
            facts["resampled"] = True
            warnings.append(CohortProblem(
                "warning", "resampled_label", f"the label map ({original}) was on another grid than the CT; "
                "it was resampled onto the CT (nearest neighbour).", str(case.label), case.row,
                "check the overlay once; store label maps on their CT's grid to silence this."))
        else:
            fail("geometry_mismatch", f"the label map's grid differs from its CT: label {describe_grid(label)}; CT "
                 f"{describe_grid(image)}.", case.label,
                 "resample the label map onto the CT (nearest neighbour), or pass --set data.resample_labels=true.")
            return image, None, warnings

    import SimpleITK as sitk

    values, counts = label_values(sitk.GetArrayViewFromImage(label))
    present, unknown = _map_values(values, source, target)
    facts["present"] = present
    if unknown:
        table_name = case.labels or getattr(target, "name", "the model's label table")
        shown = ", ".join(str(v) for v in unknown[:12]) + (f" and {len(unknown) - 12} more" if len(unknown) > 12 else "")
        fail("unknown_labels", f"{len(unknown)} label value{'s' if len(unknown) > 1 else ''} not in the label table "
             f"{table_name}: {shown}.", case.label,
             "give this label map's own table in the manifest's 'labels' column (e.g. totalsegmentator_v2), "
             "or correct the values.")
    elif not [v for v in values if v != 0]:
        fail("empty_label", "the label map is empty (every voxel is 0).", case.label,
             "label at least one organ, or leave the 'label' column empty to use the CT as unlabeled.")
    elif not present:
        fail("empty_label", "none of this label map's classes is a class of the model.", case.label,
             "check the 'labels' column (the label map's own table) and --labels (the model's classes).")
    return image, label, warnings


def _check_overlaps(image_roles: dict[str, list[tuple[Case, str]]], report: CohortReport) -> None:
    for entries in image_roles.values():
        roles = {role for _, role in entries}
        if "labeled" in roles and "unlabeled" in roles or ("val" in roles and len(roles) > 1):
            others = ", ".join(f"{c.row} ({role})" for c, role in entries)
            code = "labeled_and_unlabeled" if {"labeled", "unlabeled"} <= roles else "train_val_overlap"
            what = ("both labeled and unlabeled" if code == "labeled_and_unlabeled"
                    else "in training and in validation")
            for case, role in entries:
                report.problems.append(CohortProblem(
                    "error", code, f"the same CT is {what}: {others}.", str(case.image), case.row,
                    "keep one row per CT (labeled if you have its labels), and keep validation CTs out of training."))
        elif len(entries) > 1:
            case = entries[1][0]
            report.problems.append(CohortProblem(
                "warning", "duplicate", f"the same CT is listed {len(entries)} times "
                f"({', '.join(c.row for c, _ in entries)}); it is sampled that much more often.", str(case.image),
                case.row, "remove the repeated rows."))


def _check_counts(cohort: Cohort, target: Any, framework: str, labeled_batch: int, unlabeled_batch: int,
                  class_presence: set[int], report: CohortReport, class_annotated: Optional[set[int]] = None,
                  init_classes: Optional[set[int]] = None) -> None:
    n_lab, n_unl, n_val = len(cohort.labeled_train), len(cohort.unlabeled_train), len(cohort.val)
    src = cohort.source
    plural = lambda n: "s" if n != 1 else ""  # noqa: E731
    if n_lab == 0:
        report.problems.append(CohortProblem(
            "error", "too_few_cases", "no labeled training case.", src, "",
            "add at least one CT with its label map (a 'label' column, or --labeled DIR with images/ and labels/)."))
    elif n_lab < labeled_batch:
        report.problems.append(CohortProblem(
            "warning", "few_cases", f"{n_lab} labeled training case{plural(n_lab)} for {labeled_batch} labeled patches "
            "per step: some patches of a step come from the same case.", src, "",
            "add labeled cases for more variety per step (nothing to change otherwise)."))
    if Framework(framework).uses_unlabeled:
        if n_unl == 0:
            report.problems.append(CohortProblem(
                "error", "too_few_cases", f"no unlabeled training case, but framework {framework} takes "
                f"{unlabeled_batch} unlabeled patches per step.", src, "",
                "add unlabeled CTs (empty 'label' column or --unlabeled DIR), or use --framework supervised."))
        elif n_unl < unlabeled_batch:
            report.problems.append(CohortProblem(
                "warning", "few_cases", f"{n_unl} unlabeled training case{plural(n_unl)} for {unlabeled_batch} "
                "unlabeled patches per step: some patches of a step come from the same case.", src, "",
                "add unlabeled CTs for more variety per step (nothing to change otherwise)."))
    if n_val == 0:
        report.validation_source = "train-labeled" if n_lab else "none"
        finetune = init_classes is not None
        report.problems.append(CohortProblem(
            "warning", "no_validation", f"no validation case: validation Dice is computed on the {n_lab} labeled "
            "training cases instead (optimistic), and the best checkpoint is chosen on them."
            + (" A fine-tune judged on its own drawn cases can learn those patients rather than the organ (measured: "
               "docs/training.md, fine-tuning protocol)." if finetune else ""), src, "",
            "mark at least one labeled case " + ("of another patient than the drawn ones " if finetune else "")
            + "with split=val (or give --val DIR)."))
    if n_lab and class_annotated is not None:
        never = [e for e in target.entries if int(e.value) != 0 and int(e.value) not in class_annotated]
        kept = [e.name for e in never if init_classes and int(e.value) in init_classes]
        lost = [e.name for e in never if not (init_classes and int(e.value) in init_classes)]
        if kept:
            report.problems.append(CohortProblem(
                "warning", "class_kept_from_init", f"no labeled training case annotates {', '.join(kept)}: the model "
                "keeps what the initial model knows of them (not annotated = unknown, never taught as background); "
                "they are not learned anew.", src, "", "annotate them in some case to improve them, or drop them "
                "with --labels TABLE."))
        if lost:
            report.problems.append(CohortProblem(
                "error", "class_not_annotated", f"no labeled training case annotates {', '.join(lost)}, and no initial "
                "model brings them: the model would never learn them.", src, "",
                "drop them with --labels TABLE (the classes to train), start from a model that has them with "
                "--init MODEL, or add cases whose label table lists them."))
        class_presence = class_presence | {int(e.value) for e in never}     # reported above, not again below
    if n_lab:
        missing = [e.name for e in target.entries if int(e.value) != 0 and int(e.value) not in class_presence]
        if missing:
            report.problems.append(CohortProblem(
                "warning", "class_without_labels", f"no labeled training case contains {', '.join(missing)}: "
                "the model cannot learn these classes.", src, "",
                "add labeled cases that contain them, or train fewer classes with --labels TABLE."))
