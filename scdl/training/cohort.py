"""Training cohorts: a manifest (CSV or JSON) or two folders, turned into a list of :class:`Case`.

Manifest columns (CSV header or JSON object keys):

- ``image``: CT file or DICOM folder, relative to the manifest's folder (absolute paths work too); empty with a
  ``label`` = an *anatomy* case: a label map without image, for which a fresh CT is synthesised
  (scdl.synth) every time it is sampled;
- ``label``: label map on the image's grid (or a TotalSegmentator mask folder); empty = an unlabeled case;
- ``split`` (optional): ``train`` (default), ``val`` or ``test`` (``test`` rows are not used for training);
- ``labels`` (optional): the label table of this case's label map (a bundled name such as
  ``totalsegmentator_v2`` or a colour-table CSV); its classes are mapped to the model's classes by name.
  Empty: the label values already use the model's numbering.
- ``annotated`` (optional): the model classes that were drawn in this label map, names (or model values)
  separated by ``;`` (``liver`` or ``liver; spleen``). Empty: every model class that the ``labels`` table
  names (all of them when ``labels`` is empty). A model class that a case does not annotate is *unknown* in
  it, not background (scdl.losses.partial): a liver study's label maps teach the liver without teaching that
  the spleen is background.

Other columns (e.g. ``reference``, written by ``scdl phantom``) are kept in :attr:`Case.extra` and ignored.
A JSON manifest is a list of such objects or ``{"cases": [...]}``.

Folders: ``--labeled DIR`` holds ``images/`` and ``labels/`` with the same file names (an nnU-Net channel
suffix ``_0000`` on the image is allowed); ``--unlabeled DIR`` holds images (files or DICOM folders).
Problems in the rows themselves (no image given, bad split) are collected in :attr:`Cohort.problems`
rather than raised, so that :func:`scdl.training.checks.check_cohort` can report every problem at once.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from scdl.errors import ScdlError
from scdl.training.problems import CohortProblem

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: The file name of a cohort manifest that a tool writes into a cohort folder (``scdl phantom``, SCDL Train's
#: scene export, the benchmarks); any name is read.
MANIFEST_NAME = "manifest.csv"

#: File name endings of CT images and label maps that the readers take (DICOM folders are folders).
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class Case:
    """One row of a cohort.

    Attributes:
        image: CT file or DICOM folder (absolute), or None for an anatomy case (label map only).
        label: label map (absolute) or None for an unlabeled case.
        split: ``train`` | ``val`` | ``test``.
        labels: label table of the label map (bundled name or absolute CSV path), None = model numbering.
        row: where the case was declared (``manifest.csv:3`` or the folder) for messages.
        annotated: the ``annotated`` column, split at ``;`` (class names or model values), or None (empty:
            every class the label table names is annotated; see scdl.training.annotation).
    """

    image: Optional[Path]
    label: Optional[Path] = None
    split: str = "train"
    labels: Optional[str] = None
    row: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    annotated: Optional[list[str]] = None

    @property
    def labeled(self) -> bool:
        return self.label is not None

    @property
    def anatomy(self) -> bool:
        """A label map without image: its CT is synthesised from the labels (scdl.synth)."""
        return self.image is None and self.label is not None

    @property
    def name(self) -> str:
        return image_stem(self.label if self.image is None else self.image)

    def to_dict(self) -> dict[str, Any]:
        return {"image": None if self.image is None else str(self.image), "anatomy": self.anatomy, "label": None if self.label is None else str(self.label),
                "split": self.split, "labels": self.labels, "row": self.row, "annotated_column": self.annotated}


@dataclass
class Cohort:
    """The cases of a training run and where they were declared."""

    cases: list[Case]
    source: str
    problems: list[CohortProblem] = field(default_factory=list)

    def select(self, *, split: str, labeled: Optional[bool] = None) -> list[Case]:
        return [c for c in self.cases if c.split == split and (labeled is None or c.labeled == labeled)]

    @property
    def labeled_train(self) -> list[Case]:
        return self.select(split="train", labeled=True)

    @property
    def unlabeled_train(self) -> list[Case]:
        return self.select(split="train", labeled=False)

    @property
    def val(self) -> list[Case]:
        return self.select(split="val", labeled=True)

    def summary(self) -> dict[str, int]:
        return {"labeled": len(self.labeled_train), "anatomy": sum(c.anatomy for c in self.labeled_train), "unlabeled": len(self.unlabeled_train), "val": len(self.val),
                "test": len(self.select(split="test"))}


def image_stem(path: os.PathLike | str) -> str:
    """``case_001.nii.gz`` -> ``case_001``; a DICOM folder keeps its name."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _resolve(base: Path, text: str) -> Path:
    path = Path(os.path.expanduser(text.strip()))
    return path if path.is_absolute() else (base / path)


def _table_ref(base: Path, text: Optional[str]) -> Optional[str]:
    """A bundled table name stays a name; anything that looks like a file is resolved against ``base``."""
    if text is None or not str(text).strip():
        return None
    text = str(text).strip()
    if text.lower().endswith(".csv") or os.sep in text or "/" in text:
        return str(_resolve(base, text))
    return text


def _rows_from_csv(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "image" not in [f.strip() for f in reader.fieldnames]:
                raise ScdlError("the manifest has no 'image' column.", path,
                                "write a header line 'image,label,split,labels' (label empty for unlabeled cases).")
            return [{(k or "").strip(): (v if v is None else v.strip()) for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ScdlError(f"the manifest cannot be read ({err}).", path, "check that it is a UTF-8 CSV file.") from None


def _rows_from_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ScdlError(f"the manifest is not valid JSON ({err}).", path, "fix the JSON syntax.") from None
    if isinstance(data, dict):
        data = data.get("cases")
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ScdlError("the JSON manifest must be a list of cases or {\"cases\": [...]}.", path,
                        'write e.g. [{"image": "images/a.nii.gz", "label": "labels/a.nii.gz"}].')
    return data


def parse_annotated(text: Any) -> Optional[list[str]]:
    """The ``annotated`` column: ``"liver; spleen"`` -> ``["liver", "spleen"]``; empty -> None (JSON lists too)."""
    if text is None:
        return None
    parts = [str(t) for t in text] if isinstance(text, (list, tuple)) else str(text).split(";")
    names = [p.strip() for p in parts if p.strip()]
    return names or None


#: The columns :func:`load_manifest` reads, in the order :func:`write_manifest` writes them.
MANIFEST_COLUMNS: tuple[str, ...] = ("image", "label", "split", "labels", "annotated")
_ALWAYS = ("image", "label", "split", "labels")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):         # the annotated column: names or values joined with ";"
        return "; ".join(str(v) for v in value)
    return str(value)


def manifest_text(rows: Iterable[Mapping[str, Any]], columns: Optional[Sequence[str]] = None) -> str:
    """The CSV text of a manifest of ``rows`` (mappings column -> value; None -> empty, a list -> ``a; b``).

    Columns: ``columns`` when given, else ``image,label,split,labels``, then ``annotated`` when a row has it,
    then every other key in the order the rows first use it (``reference``, ``name`` ...: kept by
    :func:`load_manifest` in :attr:`Case.extra`)."""
    rows = [dict(r) for r in rows]
    if columns is None:
        keys: list[str] = list(_ALWAYS)
        if any("annotated" in r for r in rows):
            keys.append("annotated")
        for row in rows:
            keys += [k for k in row if k not in keys]
        columns = keys
    for number, row in enumerate(rows, start=2):
        unknown = [k for k in row if k not in columns]
        if unknown:
            raise ValueError(f"manifest row {number}: columns {unknown} are not in {list(columns)}")
        if not _cell(row.get("image")) and not _cell(row.get("label")):
            raise ValueError(f"manifest row {number}: neither an image nor a label")
        if _cell(row.get("split")) not in ("",) + SPLITS:
            raise ValueError(f"manifest row {number}: split {row.get('split')!r} is not one of {SPLITS}")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(k)) for k in columns])
    return buffer.getvalue()


def write_manifest(path: os.PathLike | str, rows: Iterable[Mapping[str, Any]],
                   columns: Optional[Sequence[str]] = None) -> Path:
    """Write a CSV manifest that :func:`load_manifest` reads (atomically; see :func:`manifest_text` for the
    columns). Paths in the rows are written as given: relative ones are relative to the manifest's folder."""
    from scdl.io.atomic import atomic_write_text

    path = Path(path)
    atomic_write_text(path, manifest_text(rows, columns))
    return path


def load_manifest(path: os.PathLike | str) -> Cohort:
    """Read a CSV or JSON manifest; paths are relative to the manifest's folder."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ScdlError("the cohort manifest does not exist." if not path.exists() else "the manifest is a folder.",
                        path, "give a CSV or JSON manifest (or --labeled DIR / --unlabeled DIR).")
    rows = _rows_from_json(path) if path.suffix.lower() == ".json" else _rows_from_csv(path)
    base = path.resolve().parent
    cases: list[Case] = []
    problems: list[CohortProblem] = []
    first_line = 2 if path.suffix.lower() != ".json" else 1
    for index, row in enumerate(rows):
        where = f"{path.name}:{index + first_line}" if first_line == 2 else f"{path.name}[{index}]"
        image = str(row.get("image") or "").strip()
        label = str(row.get("label") or "").strip()
        split = str(row.get("split") or "train").strip().lower()
        if not image and not label:
            problems.append(CohortProblem("error", "no_image", "this row names no image.", str(path), where,
                                          "fill in the 'image' column or delete the row."))
            continue
        if split not in SPLITS:
            problems.append(CohortProblem("error", "bad_split", f"split {split!r} is not one of {', '.join(SPLITS)}.",
                                          str(path), where, "use train, val or test."))
            continue
        extra = {k: v for k, v in row.items() if k not in ("image", "label", "split", "labels", "annotated")}
        cases.append(Case(image=_resolve(base, image) if image else None, label=_resolve(base, label) if label else None, split=split,
                          labels=_table_ref(base, row.get("labels")), row=where, extra=extra,
                          annotated=parse_annotated(row.get("annotated"))))
    if not rows:
        problems.append(CohortProblem("error", "empty_manifest", "the manifest lists no case.", str(path), "",
                                      "add one row per CT (image,label,split)."))
    return Cohort(cases=cases, source=str(path), problems=problems)


def _list_images(folder: Path) -> list[Path]:
    """Image files (by extension) and DICOM sub-folders of ``folder``, sorted by name."""
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
            found.append(entry)
        elif entry.is_dir() and any(f.is_file() for f in entry.iterdir()):
            found.append(entry)
    return found


def _strip_channel(stem: str) -> str:
    return stem[:-5] if stem.endswith("_0000") else stem


def anatomy_entries(folder: Path) -> list[Path]:
    """Label maps of an ``--anatomy`` folder: label files and TotalSegmentator mask sub-folders. A folder whose
    files are all named after TotalSegmentator structures (``liver.nii.gz``, ...) is itself one case."""
    from scdl.io.mask_folder import is_mask_folder, mask_files, _stem
    from scdl.labels.names import normalize_name
    from scdl.labels.table import LabelTable

    if is_mask_folder(folder):
        known = {normalize_name(e.name) for e in LabelTable.load("totalsegmentator_v2").entries}
        if all(normalize_name(_stem(f)) in known for f in mask_files(folder)):
            return [folder]
    return _list_images(folder)


def load_folders(labeled: Optional[os.PathLike | str] = None, unlabeled: Optional[os.PathLike | str] = None,
                 val: Optional[os.PathLike | str] = None, labels: Optional[str] = None,
                 anatomy: Optional[os.PathLike | str] = None, anatomy_labels: Optional[str] = None) -> Cohort:
    """Build a cohort from folders: ``labeled``/``val`` hold ``images/`` + ``labels/``; ``unlabeled`` holds images.

    Args:
        labels: label table of the label maps (bundled name or CSV path), None = the model's numbering.
        anatomy: folder of label maps without images (files or TotalSegmentator mask folders): anatomy cases.
        anatomy_labels: their label table (default: ``labels``, else totalsegmentator_v2).
    """
    cases: list[Case] = []
    problems: list[CohortProblem] = []
    table = _table_ref(Path.cwd(), labels)
    for folder, split in ((labeled, "train"), (val, "val")):
        if folder is None:
            continue
        folder = Path(folder).expanduser().resolve()
        images_dir, labels_dir = folder / "images", folder / "labels"
        if not images_dir.is_dir() or not labels_dir.is_dir():
            raise ScdlError("a labeled folder must hold 'images/' and 'labels/' sub-folders.", folder,
                            "put each CT in images/ and its label map, with the same file name, in labels/.")
        label_files = {image_stem(p): p for p in _list_images(labels_dir)}
        for image in _list_images(images_dir):
            stem = _strip_channel(image_stem(image))
            label = label_files.pop(stem, None)
            if label is None:
                problems.append(CohortProblem("error", "missing_label", f"no label map named {stem}.* in labels/.",
                                              str(image), str(folder),
                                              "add the label map with the same name, or move the CT to the unlabeled folder."))
                continue
            cases.append(Case(image=image, label=label, split=split, labels=table, row=str(folder)))
        for stem, label in label_files.items():
            problems.append(CohortProblem("error", "orphan_label", f"no image named {stem}.* in images/.",
                                          str(label), str(folder), "add the CT or remove the label map."))
    if unlabeled is not None:
        folder = Path(unlabeled).expanduser().resolve()
        if not folder.is_dir():
            raise ScdlError("the unlabeled folder does not exist.", folder, "give a folder of CT images.")
        for image in _list_images(folder):
            cases.append(Case(image=image, label=None, split="train", row=str(folder)))
    if anatomy is not None:
        folder = Path(anatomy).expanduser().resolve()
        if not folder.is_dir():
            raise ScdlError("the anatomy folder does not exist.", folder, "give a folder of label maps.")
        table_a = _table_ref(Path.cwd(), anatomy_labels) or table or "totalsegmentator_v2"
        for entry in anatomy_entries(folder):
            cases.append(Case(image=None, label=entry, split="train", labels=table_a, row=str(folder)))
    if labeled is None and unlabeled is None and val is None and anatomy is None:
        raise ScdlError("no cohort given.", fix="give --cohort MANIFEST or --labeled DIR [--unlabeled DIR].")
    source = " + ".join(str(Path(f).expanduser().resolve()) for f in (labeled, unlabeled, val, anatomy)
                        if f is not None)
    return Cohort(cases=cases, source=source, problems=problems)
