"""``segment_image``: one CT (a ``SimpleITK.Image``) + one model package -> label map on the CT's own grid.

This is the public entry point for the Slicer modules, ``scdl segment`` and ``scdl demo``:

    result = segment_image(ct, "synapse-cps", device="auto", uncertainty=True)
    result.labels        # SimpleITK.Image, same size / spacing / origin / direction as ct
    result.uncertainty   # SimpleITK.Image (float32, [0, 1]) or None
    result.confidence    # {"liver": 0.97, ...} mean max-probability inside each predicted organ

Steps (progress phases): preprocess (reorient, resample, window) -> adapt (only with ``bn_adapt`` > 0: the
batch-norm statistics re-estimated on this CT's windows, scdl.inference.adapt) -> infer (sliding windows of the ensemble,
argmax streamed slab by slab) -> postprocess (optional largest component, inverse resampling of the
INTEGER labels onto the input grid, uncertainty resampled linearly; or, with ``label_resampling="logits"``,
the logits resampled linearly onto the input grid class by class and the argmax taken there).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from scdl.errors import ScdlError
from scdl.inference.config import InferenceSettings, LabelResampling
from scdl.inference.device import resolve_device, with_cpu_fallback
from scdl.labels.protocol import LabelTableLike
from scdl.progress import Progress, ProgressReporter


@dataclass
class SegmentationResult:
    """The outcome of :func:`segment_image`.

    Attributes:
        labels: integer ``SimpleITK.Image`` on the input grid (0 = background, values of ``table``).
        uncertainty: float32 ``SimpleITK.Image`` on the input grid in [0, 1] (ensemble disagreement, or entropy
            for a single network), or None when not asked for.
        confidence: organ name -> mean max-probability inside the predicted organ (None: organ not predicted).
            Empty when not asked for.
        timings: seconds per phase ("preprocess", "infer", "postprocess").
        table: the model's label table (names, colours, codes).
        device: the device the networks ran on (after any CPU fallback).
        n_windows: sliding windows evaluated.
    """

    labels: Any
    uncertainty: Any = None
    confidence: dict[str, Optional[float]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    table: Optional[LabelTableLike] = None
    device: str = "cpu"
    n_windows: int = 0


def load_package(package: Any):
    """A ``ModelPackage`` from a package object, a path or a catalog id (verified)."""
    from scdl.models.package import ModelPackage

    if isinstance(package, ModelPackage):
        return package
    if package is None:
        from scdl.models.catalog import default_model_id, installed_path

        model_id = default_model_id()
        path = installed_path(model_id)
        if path is None:
            raise ScdlError(
                f"no model was given and the default model {model_id!r} is not installed.",
                fix="choose a model with --model ID|PATH (`scdl models list` shows them), download one with "
                    "`scdl models download ID`, or import one with `scdl models import`.",
            )
        return ModelPackage.load(path)
    if isinstance(package, (str, os.PathLike)):
        return ModelPackage.load(package)
    raise TypeError(f"package must be a ModelPackage, a path or a model id, not {type(package).__name__}")


def _organ_values(table, names) -> list[int]:
    """Label values of ``names`` (any spelling) in ``table``; a name the table lacks -> ScdlError."""
    from scdl.labels.names import normalize_name

    if not names:
        return []
    by_name = {normalize_name(e.name): int(e.value) for e in table.entries if int(e.value) != 0}
    missing = [n for n in names if normalize_name(n) not in by_name]
    if missing:
        raise ScdlError(f"inference.largest_component_organs: {', '.join(map(repr, missing))} not in the model's labels.",
                        fix=f"use names of the model's classes: {', '.join(sorted(by_name))}.")
    return [by_name[normalize_name(n)] for n in names]


def _label_names(table) -> dict[int, str]:
    return {int(e.value): str(e.name) for e in table.entries if int(e.value) != 0}


def _run_windows(arr: np.ndarray, package, settings: InferenceSettings, patch, device, progress: ProgressReporter,
                 uncertainty: bool, max_prob: bool, networks: Optional[Sequence] = None, keep_logits: bool = False):
    """Build the networks on ``device`` and run the sliding windows; CUDA out of memory -> warning + CPU retry.

    ``patch`` (D, H, W): the training patch; the test-time statistics are taken on windows of its size, the
    prediction runs on ``settings.prediction_window(patch)``."""
    import torch

    roi = settings.prediction_window(patch)

    from scdl.inference.sliding_window import predict_volume

    def attempt(dev):
        nets = list(networks) if networks is not None else package.build_networks(device=str(dev))
        nets = [net.to(dev).eval() for net in nets]
        if dev.type == "cpu" and settings.cpu_channels_last:    # same labels, faster (InferenceSettings)
            nets = [net.to(memory_format=torch.channels_last_3d) for net in nets]
        if settings.bn_adapt > 0.0:       # copies: the caller's networks keep their statistics
            from scdl.inference.adapt import adapt_batch_norm

            adapt_box: dict[str, Any] = {}

            def on_adapt(_done: int, total: int) -> None:
                if "phase" not in adapt_box:
                    adapt_box["phase"] = progress.phase("adapt", total)
                adapt_box["phase"].advance()
                progress.check_cancelled()

            try:
                nets = adapt_batch_norm(nets, torch.from_numpy(arr), patch, settings.bn_adapt, dev, on_batch=on_adapt)
            finally:
                if "phase" in adapt_box:
                    adapt_box["phase"].close()
        config = settings.window_config(roi, dev.type)
        phase_box: dict[str, Any] = {}

        def on_batch(done: int, total: int) -> None:
            if "phase" not in phase_box:
                phase_box["phase"] = progress.phase("infer", total)
                phase_box["done"] = 0
            phase = phase_box["phase"]
            if done > phase_box["done"]:
                phase.advance(done - phase_box["done"])
                phase_box["done"] = done
            else:
                progress.check_cancelled()

        try:
            return predict_volume(arr, nets, config, dev, max_prob=max_prob, uncertainty=uncertainty,
                                  keep_logits=keep_logits, on_batch=on_batch), dev
        finally:
            if "phase" in phase_box:
                phase_box["phase"].close()

    if device.type == "cuda":  # deterministic kernels, no autotuning
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    return with_cpu_fallback(attempt, device, progress.warning)


def segment_image(
    image,
    package: Any = None,
    device: str = "auto",
    progress: Optional[ProgressReporter] = None,
    uncertainty: bool = False,
    *,
    overlap: Optional[float] = None,
    sw_batch_size: Optional[int] = None,
    keep_largest: Optional[bool] = None,
    largest_component_organs: Optional[Sequence[str]] = None,
    label_resampling: Optional[str] = None,
    bn_adapt: Optional[float] = None,
    window_size: Optional[Sequence[int]] = None,
    confidence: bool = True,
    networks: Optional[Sequence] = None,
    channels_last: Optional[bool] = None,
) -> SegmentationResult:
    """Segment one CT with a model package.

    Args:
        image: 3D ``SimpleITK.Image`` in HU (any orientation / spacing / pixel type).
        package: ``ModelPackage``, a package folder, a catalog id, or None for the catalog's default model.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (CUDA missing or out of memory -> CPU + warning).
        progress: reporter for the phases preprocess / infer / postprocess (default: silent).
        uncertainty: also compute the uncertainty map on the input grid.
        overlap, sw_batch_size, keep_largest, largest_component_organs, label_resampling, bn_adapt, window_size:
            override the card's ``inference`` section (``largest_component_organs=()``: no organ;
            ``label_resampling``: ``"nearest"`` or ``"logits"``, :class:`scdl.inference.config.LabelResampling`;
            ``bn_adapt`` in [0, 1]: test-time batch-norm statistics, :mod:`scdl.inference.adapt`;
            ``window_size``: the sliding window (x, y, z) in voxels of the model grid, multiples of 16).
        confidence: compute the per-organ mean max-probability.
        networks: use these (eval-mode) networks instead of ``package.build_networks`` (benchmarks, tests).
        channels_last: override ``InferenceSettings.cpu_channels_last`` (None: the setting, True).

    Returns:
        :class:`SegmentationResult` with the label map on exactly the grid of ``image``.

    Raises:
        ScdlError: a bad package / settings; Cancelled: the progress reporter was cancelled.
    """
    from scdl.processing.padding import crop
    from scdl.processing.pipeline import Preprocessor
    from scdl.processing.postprocess import keep_largest_component

    progress = progress or Progress("none")
    pkg = load_package(package)
    card = pkg.card
    settings = InferenceSettings.from_card(card, overlap=overlap, sw_batch_size=sw_batch_size,
                                           keep_largest_component=keep_largest, cpu_channels_last=channels_last,
                                           label_resampling=label_resampling, bn_adapt=bn_adapt,
                                           window_size=None if window_size is None else tuple(window_size),
                                           largest_component_organs=(None if largest_component_organs is None
                                                                     else tuple(largest_component_organs)))
    via_logits = settings.label_resampling == LabelResampling.LOGITS
    timings: dict[str, float] = {}
    # organ names checked before any work (a wrong name is the user's, and one clear line)
    largest_values = (None if settings.keep_largest_component
                      else _organ_values(pkg.labels, settings.largest_component_organs))
    dev = resolve_device(device, warn=progress.warning)

    t0 = time.perf_counter()
    with progress.phase("preprocess", 1) as phase:
        pre = Preprocessor(card["preprocessing"])
        arr, ctx = pre.forward(image)
        phase.advance()
    timings["preprocess"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    outputs, used = _run_windows(arr, pkg, settings, pre.patch_size, dev, progress, uncertainty, confidence,
                                 networks, keep_logits=via_logits)
    del arr
    timings["infer"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    clean = settings.keep_largest_component or bool(largest_values)
    steps = 1 + int(clean) + int(uncertainty) + int(confidence)
    with progress.phase("postprocess", steps) as phase:
        labels = outputs.labels.numpy()
        if clean and not via_logits:
            labels = keep_largest_component(labels, largest_values)
            phase.advance()
        organ_conf: dict[str, Optional[float]] = {}
        if confidence:
            from scdl.inference.uncertainty import organ_confidence

            organ_conf = organ_confidence(crop(labels, ctx.padding), crop(outputs.max_prob.numpy(), ctx.padding),
                                          _label_names(pkg.labels))
            phase.advance()
        outputs.max_prob = None
        if via_logits:      # argmax on the CT grid; the largest component is then taken there
            label_img = pre.inverse_argmax(outputs.logits.numpy(), ctx)
            outputs.logits = None
            if clean:
                import SimpleITK as sitk

                kept = keep_largest_component(sitk.GetArrayFromImage(label_img), largest_values)
                cleaned = sitk.GetImageFromArray(kept)
                cleaned.CopyInformation(label_img)
                label_img = cleaned
                phase.advance()
        else:
            label_img = pre.inverse_labels(labels, ctx)
        del labels
        phase.advance()
        unc_img = None
        if uncertainty:
            unc_img = pre.inverse_scalar(outputs.uncertainty.numpy(), ctx)
            outputs.uncertainty = None
            phase.advance()
    timings["postprocess"] = time.perf_counter() - t0
    return SegmentationResult(labels=label_img, uncertainty=unc_img, confidence=organ_conf, timings=timings,
                              table=pkg.labels, device=str(used), n_windows=outputs.n_windows)


__all__ = ["SegmentationResult", "segment_image", "load_package"]
