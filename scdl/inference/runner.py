"""The whole ``scdl segment`` job from paths: read -> segment -> write (label map, uncertainty, preview).

``segment_file`` is what the ``segment`` command runs and what ``scdl demo`` reuses. Outputs are all
written to temporary siblings first and renamed together at the end, so a failure or a cancellation at
any point leaves none of them behind (and no half-written file).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from scdl.errors import ScdlError
from scdl.io.atomic import atomic_path
from scdl.io.formats import (DETACHED_HEADER_EXTENSIONS, DICOM_SEG_EXTENSION, IMAGE_WRITE_EXTENSIONS,
                             LABEL_WRITE_EXTENSIONS, extension)
from scdl.progress import Progress, ProgressReporter

#: Output extensions of the label map (scdl.io.writers picks the format by extension). Detached-header
#: formats (.nhdr, .mhd: two files) are left out: every output here is renamed into place in one step.
LABEL_SUFFIXES = tuple(e for e in LABEL_WRITE_EXTENSIONS if e not in DETACHED_HEADER_EXTENSIONS)
#: Output extensions of the uncertainty map (a float image).
SCALAR_SUFFIXES = tuple(e for e in IMAGE_WRITE_EXTENSIONS if e not in DETACHED_HEADER_EXTENSIONS)


@dataclass
class SegmentFileResult:
    """Paths written and numbers of one ``segment_file`` run."""

    output: Path
    uncertainty: Optional[Path] = None
    preview: Optional[Path] = None
    confidence: dict[str, Optional[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    model: str = ""


def check_output_path(path: os.PathLike | str, allowed: tuple[str, ...], what: str) -> Path:
    """Raise a clear ``ScdlError`` before any work when ``path`` has an extension we cannot write."""
    path = Path(path)
    if path.is_dir():
        raise ScdlError(f"the {what} path is a folder.", path, f"give a file name ending in {', '.join(allowed)}.")
    if extension(path) not in allowed:
        raise ScdlError(f"cannot write the {what} in this format (extension {extension(path) or 'missing'}).", path,
                        f"use one of {', '.join(allowed)}.")
    return path


#: Axis names of the orientation letters of a model card (``"LPS"``: left-right, front-back, head-foot).
_AXIS_NAMES = {"L": "left-right", "R": "left-right", "P": "front-back", "A": "front-back", "S": "head-foot",
               "I": "head-foot"}


def context_shortfall(image: Any, card: dict) -> list[tuple[str, float, float, int, float]]:
    """The axes along which the scan is shorter than the model's window (its context), from the card:
    ``(axis name, scan extent mm, window extent mm, window voxels, model spacing mm)``, in the model's axis
    order; [] when the scan covers a whole window on every axis, or the card resamples to a fixed size (its
    window is then a fraction of any scan)."""
    from scdl.processing.config import PreprocessConfig
    from scdl.processing.grid import Grid
    from scdl.processing.orientation import reorient_grid, reorientation_for

    try:
        cfg = PreprocessConfig.from_card(card.get("preprocessing") or {})
    except (ValueError, TypeError, KeyError):
        return []
    if cfg.mode != "spacing" or not cfg.spacing_mm:
        return []
    grid = Grid.from_image(image)
    oriented = reorient_grid(grid, reorientation_for(grid, cfg.orientation))
    out = []
    for k, letter in enumerate(cfg.orientation.upper()):
        extent = float(oriented.size[k]) * float(oriented.spacing[k])
        window = float(cfg.patch_size[k]) * float(cfg.spacing_mm[k])
        if extent < window:
            out.append((_AXIS_NAMES.get(letter, f"axis {k}"), extent, window, int(cfg.patch_size[k]),
                        float(cfg.spacing_mm[k])))
    return out


def _warn_if_empty(result: Any, image: Any, progress: ProgressReporter, card: Optional[dict] = None) -> None:
    """A console warning when the model found no organ, naming the likely cause: a scan thinner or shorter than
    the model's window (with both extents), else a scan of another body region."""
    import SimpleITK as sitk

    if int(sitk.GetArrayViewFromImage(result.labels).max()) > 0:
        return
    size_mm = [round(n * s) for n, s in zip(image.GetSize(), image.GetSpacing())]
    head = (f"no organ was found: the label map is empty (field of view {size_mm[0]} x {size_mm[1]} x "
            f"{size_mm[2]} mm).")
    short = context_shortfall(image, card or {})
    if short:
        parts = "; ".join(f"{name} {extent:.0f} mm, where the model's window covers {window:.0f} mm ({voxels} "
                          f"voxels of {spacing:g} mm, from the model card)"
                          for name, extent, window, voxels, spacing in short)
        need = ", ".join(f"{window:.0f} mm {name}" for name, _e, window, _v, _s in short)
        progress.warning(f"{head} The scan is thinner than the context the model needs: {parts}; the model sees "
                         f"mostly padding. Segment a scan that covers at least {need} (the whole abdomen), or "
                         "use a model with a smaller window.")
        return
    progress.warning(f"{head} The model segments abdominal organs in CT; check that the scan covers the abdomen.")


def segment_file(
    input_path: os.PathLike | str,
    output_path: os.PathLike | str,
    *,
    model: Optional[str] = None,
    device: str = "auto",
    progress: Optional[ProgressReporter] = None,
    preview: Optional[os.PathLike | str] = None,
    uncertainty: Optional[os.PathLike | str] = None,
    series_uid: Optional[str] = None,
    overlap: Optional[float] = None,
    sw_batch_size: Optional[int] = None,
    keep_largest: Optional[bool] = None,
    label_resampling: Optional[str] = None,
    largest_component_organs: Optional[Sequence[str]] = None,
    bn_adapt: Optional[float] = None,
    window_size: Optional[Sequence[int]] = None,
    verbose: bool = False,
) -> SegmentFileResult:
    """Segment the CT at ``input_path`` and write the label map to ``output_path``.

    Args:
        input_path: CT file (NIfTI, NRRD, MHA/MHD) or DICOM folder.
        output_path: label map; the extension picks the format (.nii.gz, .nii, .nrrd, .mha, .seg.nrrd, or .dcm
            for a DICOM SEG referencing the input series: only from a DICOM input).
        model: catalog id or package folder; None = the catalog's default model.
        device: "auto", "cpu", "cuda" or "cuda:N".
        progress: reporter (phases read, preprocess, infer, postprocess, write; then "done").
        preview: optional PNG with axial + coronal overlays and a legend.
        uncertainty: optional float map (ensemble disagreement / entropy) on the input grid.
        series_uid: the DICOM series to read when a folder holds several.
        overlap, sw_batch_size, keep_largest, label_resampling, largest_component_organs, bn_adapt, window_size:
            override the model card's inference settings (``largest_component_organs=()``: no organ;
            ``window_size``: x, y, z voxels of the model grid).
        verbose: show the model card's warnings in full even when they were shown before on this machine.

    Returns:
        :class:`SegmentFileResult`.
    """
    from scdl.inference.config import InferenceSettings
    from scdl.inference.device import resolve_device
    from scdl.inference.predictor import load_package, segment_image

    progress = progress or Progress("none")
    input_path = Path(input_path)
    output = check_output_path(output_path, LABEL_SUFFIXES, "label map")
    unc_path = check_output_path(uncertainty, SCALAR_SUFFIXES, "uncertainty map") if uncertainty else None
    preview_path = check_output_path(preview, (".png",), "preview") if preview else None
    targets = [p for p in (output, unc_path, preview_path) if p is not None]
    from scdl.io.paths import check_input_path, check_outputs

    # no output may be the input or another output (the one check of segment, synth and evaluate)
    check_outputs([("label map", output), ("uncertainty map", unc_path), ("preview", preview_path)],
                  [("input CT", input_path)])
    check_input_path(input_path, "CT")          # missing, a link loop, a FIFO/device: refused before opening
    source_files = None
    if extension(output) == DICOM_SEG_EXTENSION:  # a DICOM SEG references its source DICOM images: checked now
        from scdl.io.dicomseg import dicom_seg_sources

        source_files = dicom_seg_sources(input_path, series_uid, output)

    from scdl.io.atomic import probe_writable

    for target in targets:          # a read-only or missing folder fails now, not after the inference
        probe_writable(target.parent, target)

    # nothing is written until the write phase: a stop signal ends the reading or the inference at once, even
    # inside a call that blocks or takes long (Progress.interruptible)
    with progress.interruptible():
        resolve_device(device)  # a misspelt --device fails here, before any work (warnings come later)
        package = load_package(model)
        settings = InferenceSettings.from_card(package.card, overlap=overlap, sw_batch_size=sw_batch_size,
                                               bn_adapt=bn_adapt,
                                               window_size=None if window_size is None else tuple(window_size))

        t0 = time.perf_counter()
        with progress.phase("read", 1) as phase:
            from scdl.io.image import read_ct

            image = read_ct(input_path, series_uid=series_uid, warn=progress.warning)
            phase.advance()
        t_read = time.perf_counter() - t0
        from scdl.processing import budget
        from scdl.processing.pipeline import Preprocessor

        # a grid beyond the machine (a wrong spacing, a card's tiny voxel) is refused with its numbers, now
        per_voxel = budget.INFERENCE_BYTES_PER_VOXEL + budget.UNCERTAINTY_BYTES_PER_VOXEL * int(unc_path is not None)
        pre = Preprocessor(package.card["preprocessing"])
        budget.check_model_grid(budget.plan_size(image, pre, settings.overlap, bytes_per_voxel=per_voxel,
                                                 window=settings.prediction_window(pre.patch_size)), input_path)
        from scdl.models.notices import show_card_warnings

        # after the input was read: an input error is the first line, not the sixth
        show_card_warnings(package.card, progress.warning, verbose=verbose, name=Path(package.path).name)

        result = segment_image(image, package, device=device, progress=progress, uncertainty=unc_path is not None,
                               overlap=overlap, sw_batch_size=sw_batch_size, keep_largest=keep_largest,
                               label_resampling=label_resampling, bn_adapt=bn_adapt, window_size=window_size,
                               largest_component_organs=largest_component_organs)
        _warn_if_empty(result, image, progress, package.card)

    t0 = time.perf_counter()
    from scdl.io.writers import write_image, write_label_map

    with progress.phase("write", len(targets)) as phase, contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(output))
        write_label_map(result.labels, tmp, table=result.table, source_files=source_files, model=package.card)
        phase.advance()
        if unc_path is not None:
            tmp = stack.enter_context(atomic_path(unc_path))
            write_image(result.uncertainty, tmp)
            phase.advance()
        if preview_path is not None:
            from scdl.viz.overlay import render_overlay

            tmp = stack.enter_context(atomic_path(preview_path))
            model_name = str(package.card.get("id") or package.card.get("name") or Path(package.path).name)
            render_overlay(image, result.labels, tmp, result.table, title=f"{input_path.name} - {model_name}")
            phase.advance()
        progress.check_cancelled()
    # every temporary file has been renamed onto its target here
    timings = {"read": t_read, **result.timings, "write": time.perf_counter() - t0}
    return SegmentFileResult(output=output, uncertainty=unc_path, preview=preview_path,
                             confidence=result.confidence, timings=timings, device=result.device,
                             model=str(package.card.get("id") or package.path))
