"""``scdl demo``: segment the bundled sample CT with the default model, score it, show it.

Reuses the inference core (:func:`scdl.inference.predictor.segment_image`), the label-map writers, the
overlay renderer and the metrics of ``scdl evaluate``; the four outputs are committed together (temporary
siblings renamed at the end), so a failure or a cancellation leaves none of them behind.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional

from scdl.events import DiceEvent, SampleEvent
from scdl.labels.protocol import LabelTableLike
from scdl.progress import MODES as PROGRESS_MODES

DESCRIPTION = """\
Segment the bundled sample CT (Resources/Sample: an upper-abdomen contrast CT, patient B of the
TotalSegmentator test fixtures) with the default model (or --model), and write into DIR:

  sample_segmentation.seg.nrrd   3D Slicer segmentation (organ names, colours, SNOMED CT codes)
  sample_segmentation.nii.gz     the same label map as NIfTI (Synapse numbering)
  overlay.png                    axial + coronal slices with the organ colours and a legend
  dice.csv                       per-organ Dice / HD95 / ASD against the sample's labels

It prints the per-organ Dice against the sample's labels (TotalSegmentator predictions, "silver" labels),
says whether the sample was in the model's training data (read from the model card), and the time taken.
"""

EPILOG = """\
examples:
  scdl demo --out demo_out
  scdl demo --out demo_out --device cuda
  scdl demo --out demo_out --model runs/default/model --progress json

The default model is Resources/Models/scdl-abdominal-ct; rebuild it with
  python bench/train_default_model.py --out runs/default
--progress json prints JSON lines on stdout: phases, a "sample" event, a "dice" event, and last
{"phase": "done", "outputs": {...}, "mean_dice": ..., "seconds": ...}. mean_dice (also the console's
"mean over these organs" and the "mean" row of dice.csv) is the mean over the organs the sample's labels
contain; mean_dice_all_classes also counts organs only the model marked (false positives, Dice 0).
Exit status: 0 ok, 2 user error, 130 cancelled.
"""

#: Output file names inside DIR.
SEGMENTATION = "sample_segmentation.seg.nrrd"
NIFTI = "sample_segmentation.nii.gz"
OVERLAY = "overlay.png"
SCORES = "dice.csv"

BUILD_COMMAND = "python bench/train_default_model.py --out runs/default"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="segment the bundled sample CT with the default model and score it",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="scdl_demo", metavar="DIR",
                        help="output folder (created if needed; default ./scdl_demo)")
    parser.add_argument("--model", default=None, metavar="ID|PATH",
                        help="model id or package folder (default: the catalog's default model)")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="where the networks run (default auto: CUDA if available)")
    parser.add_argument("--progress", choices=PROGRESS_MODES, default="tqdm",
                        help="progress bars on stderr (tqdm), JSON lines on stdout (json), or nothing")
    parser.set_defaults(func=run)


# -- the sample ------------------------------------------------------------------------------------
def load_sample_info(folder: Optional[Path] = None) -> dict[str, Any]:
    """``sample.json`` of the bundled sample with absolute ``ct_path`` / ``labels_path`` added.

    Raises:
        ScdlError: the sample is missing or a file does not match its SHA-256 in ``sample.json``.
    """
    import hashlib

    from scdl.errors import ScdlError
    from scdl.resources import sample_dir

    folder = Path(folder) if folder is not None else sample_dir()
    fix = "reinstall SCDL, or regenerate the sample with `python Resources/Sample/make_sample.py` (needs the shared data)."
    meta_path = folder / "sample.json"
    try:
        info = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScdlError("the bundled sample CT is missing (no sample.json).", meta_path, fix) from None
    except (OSError, ValueError) as err:
        raise ScdlError(f"the sample description cannot be read ({err}).", meta_path, fix) from None
    for key in ("ct", "labels"):
        path = folder / str(info.get(key, ""))
        if not info.get(key) or not path.is_file():
            raise ScdlError(f"the bundled sample's {key} file is missing.", path, fix)
        expected = (info.get("files") or {}).get(info[key], {}).get("sha256")
        if expected and hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            raise ScdlError("the bundled sample file is damaged (SHA-256 differs from sample.json).", path, fix)
        info[f"{key}_path"] = path
    return info


def _reference_in_model_numbering(truth: Any, table_name: str, model_table: LabelTableLike) -> Any:
    """The sample's label map renumbered into the model's classes by name (for the overlay's contours)."""
    import SimpleITK as sitk

    from scdl.labels.mapping import map_label_array
    from scdl.labels.table import LabelTable

    mapped, _unknown = map_label_array(sitk.GetArrayFromImage(truth), LabelTable.load(table_name), model_table)
    image = sitk.GetImageFromArray(mapped.astype("uint8"))
    image.CopyInformation(truth)
    return image


def training_status(card: dict[str, Any], patient: Optional[str]) -> tuple[str, str]:
    """Whether ``patient`` was in the training data of the model with this card.

    The card's ``provenance.training_patients`` / ``provenance.validation_patients`` /
    ``provenance.held_out_patients`` (lists of patient ids) decide. Returns ``(status, sentence)`` with status
    ``"training"``, ``"validation"``, ``"held-out"`` or ``"unknown"``.
    """
    prov = card.get("provenance") or {}
    trained = [str(p) for p in prov.get("training_patients") or []]
    validation = [str(p) for p in prov.get("validation_patients") or []]
    held_out = [str(p) for p in prov.get("held_out_patients") or []]
    if patient and patient in trained:
        return "training", (f"YES: {patient} was in this model's training data, so the Dice below is "
                            "training-set Dice, not a measure of accuracy.")
    if patient and patient in validation:
        return "validation", (f"no, but {patient} is this model's VALIDATION case: never trained on, it chose "
                              "the checkpoint and the decision to ship, so the Dice below is optimistic, not a "
                              "blind test (that is real CT of other hospitals).")
    if patient and patient in held_out:
        others = ", ".join(trained) if trained else "other data"
        return "held-out", (f"no: {patient} is this model's held-out test patient (trained on {others}); "
                            "the Dice below is held-out Dice.")
    if trained:
        return "held-out", (f"no: the model card lists its training patients ({', '.join(trained)}) and the "
                            "sample is not among them.")
    return "unknown", ("unknown: the model card does not list its training patients, so the Dice below may "
                       "include training data.")


def _resolve_package(model: Optional[str]):
    """The model package to use; a clear error (exit 2) when the default model is not installed."""
    from scdl.errors import ScdlError
    from scdl.inference.predictor import load_package
    from scdl.models.catalog import default_model_id, installed_path
    from scdl.resources import bundled_models_dir

    if model:
        return load_package(model)
    model_id = default_model_id()
    path = installed_path(model_id)
    if path is None:
        raise ScdlError(
            f"the default model {model_id!r} is not installed (expected in {bundled_models_dir() / model_id}).",
            fix=f"build and install it from a source checkout with `{BUILD_COMMAND}` (about an hour on a CPU; "
                "docs/default_model.md), or run the demo with another model: `scdl demo --model ID|PATH` "
                "(`scdl models list` shows them).")
    return load_package(str(path))


def _fmt_seconds(timings: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in timings.items())


def run(args: argparse.Namespace) -> int:
    import contextlib

    import numpy as np
    import SimpleITK as sitk

    from scdl.errors import ScdlError
    from scdl.io.atomic import atomic_path
    from scdl.io.image import read_ct, read_label_map
    from scdl.io.writers import write_label_map
    from scdl.labels.table import LabelTable
    from scdl.metrics.evaluate import Evaluation, evaluate_arrays, format_labelled_table, to_csv_text, to_json_dict
    from scdl.metrics.scores import summary
    from scdl.inference.device import resolve_device
    from scdl.inference.predictor import segment_image
    from scdl.progress import Progress
    from scdl.viz.overlay import render_overlay

    start = time.perf_counter()
    progress = Progress(args.progress)
    progress.install_signal_handlers()
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ScdlError("the output path is a file, not a folder.", out, "give a folder with --out DIR.")
    resolve_device(args.device)       # a misspelt --device fails before any work
    sample = load_sample_info()
    package = _resolve_package(args.model)
    card = package.card
    status, sentence = training_status(card, sample.get("patient"))
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    with progress.phase("read", 2) as phase:
        ct = read_ct(sample["ct_path"], warn=progress.warning)
        phase.advance()
        truth = read_label_map(sample["labels_path"], reference=ct)
        phase.advance()
    timings["read"] = time.perf_counter() - t0

    result = segment_image(ct, package, device=args.device, progress=progress)
    timings.update(result.timings)

    t0 = time.perf_counter()
    with progress.phase("score", 1) as phase:
        pred = sitk.GetArrayFromImage(result.labels).astype(np.int64)
        gt = sitk.GetArrayFromImage(truth).astype(np.int64)
        spacing_zyx = tuple(float(s) for s in ct.GetSpacing())[::-1]
        scores, notes = evaluate_arrays(pred, gt, spacing_zyx, pred_table=package.labels,
                                        gt_table=LabelTable.load(sample.get("label_table", "synapse")),
                                        warn=progress.warning, gt_source="sample labels")
        evaluation = Evaluation(scores=scores, summary=summary(scores), pred_path=str(out / NIFTI),
                                gt_path=str(sample["labels_path"]), spacing_mm=tuple(ct.GetSpacing()), notes=notes)
        phase.advance()
    timings["score"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    targets = {name: out / name for name in (SEGMENTATION, NIFTI, OVERLAY, SCORES)}
    with progress.phase("write", len(targets)) as phase, contextlib.ExitStack() as stack:
        tmp = {name: stack.enter_context(atomic_path(path)) for name, path in targets.items()}
        write_label_map(result.labels, tmp[SEGMENTATION], table=result.table)
        phase.advance()
        write_label_map(result.labels, tmp[NIFTI])
        phase.advance()
        title = f"scdl demo: {sample.get('title', 'sample CT')} - model {card.get('id', package.path)}"
        reference = _reference_in_model_numbering(truth, sample.get("label_table", "synapse"), package.labels)
        render_overlay(ct, result.labels, tmp[OVERLAY], result.table, title=title + " (lines: sample labels)",
                       reference=reference)
        phase.advance()
        tmp[SCORES].write_text(to_csv_text(evaluation), encoding="utf-8")
        phase.advance()
        progress.check_cancelled()
    timings["write"] = time.perf_counter() - t0
    total = time.perf_counter() - start

    report = to_json_dict(evaluation)
    outputs = {"segmentation": str(targets[SEGMENTATION]), "nifti": str(targets[NIFTI]),
               "overlay": str(targets[OVERLAY]), "scores": str(targets[SCORES])}
    progress.emit(SampleEvent(patient=sample.get("patient"), in_training_data=status, text=sentence))
    progress.emit(DiceEvent(classes=report["classes"], mean=report["mean"]))
    if progress.mode != "json":
        lines = [
            f"SCDL demo: model {card.get('id')} ({card.get('title')}), device {result.device}",
            f"sample: {sample.get('title')} [{sample.get('patient')}]",
            f"sample in the model's training data? {sentence}",
            "",
            "Per-organ scores against the sample's labels (TotalSegmentator predictions, not manual), on the "
            "CT's own grid:",
            format_labelled_table(evaluation),
        ]
        lines += ["", "wrote " + ", ".join(outputs.values()),
                  f"time taken: {total:.1f} s ({_fmt_seconds(timings)})"]
        print("\n".join(lines), flush=True)
    mean = report["mean"]["dice"]          # the headline: over the organs the sample's labels contain
    # mean_dice_labelled_organs: the same number under its earlier name (read by older recipe scripts)
    progress.done(outputs=outputs, mean_dice=mean, mean_dice_labelled_organs=mean,
                  mean_dice_all_classes=report["mean"]["dice_all_classes"], in_training_data=status,
                  device=result.device, model=str(card.get("id")), seconds=round(total, 3),
                  timings_s={k: round(v, 3) for k, v in timings.items()})
    return 0
