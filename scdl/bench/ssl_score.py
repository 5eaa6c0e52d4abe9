"""Scoring one trained model on the benchmark's test cases: Dice per class and case on the CT's own grid."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from scdl.bench.ssl_cohort import HeldOutCase
from scdl.errors import ScdlError
from scdl.progress import ProgressReporter


@dataclass
class TestScores:
    """Dice of one model on the test cases.

    Attributes:
        classes: foreground class names in label-value order (C-1 of them).
        dice: float64 (n_cases, C-1); NaN where a class is absent from both prediction and reference.
        cases: case names, one per row of ``dice``.
        seconds: wall time of reading, segmenting and scoring all cases.
        cpu_s: CPU time of this process meanwhile (all threads).
    """

    classes: list[str]
    dice: np.ndarray
    cases: list[str]
    seconds: float
    cpu_s: float = 0.0


def score_model(model_dir: Path, cases: Sequence[HeldOutCase], *, device: str = "cpu", sw_batch_size: int = 4,
                progress: Optional[ProgressReporter] = None) -> TestScores:
    """Segment every test CT with the package in ``model_dir`` (``segment_image``: sliding window, ensemble
    mean, inverse to the CT grid, the card's overlap and blending; ``sw_batch_size`` windows per forward) and
    compare with its reference label map.

    Dice per class is ``scdl.metrics.dice.dice_per_class`` (one confusion count per case; the metric's one
    definition, as ``scdl evaluate``'s, which also computes surface distances this benchmark does not report).
    """
    import SimpleITK as sitk

    from scdl.inference.predictor import segment_image
    from scdl.models.package import ModelPackage
    from scdl.metrics.dice import dice_per_class

    start, cpu_start = time.monotonic(), time.process_time()
    package = ModelPackage.load(model_dir)
    values = sorted(int(e.value) for e in package.labels.entries if int(e.value) != 0)
    names = {int(e.value): str(e.name) for e in package.labels.entries}
    n_classes = int(package.labels.num_classes)
    networks = package.build_networks(device=device)
    rows = []
    phase = progress.phase("score", len(cases)) if progress is not None and progress.mode != "none" else None
    try:
        for case in cases:
            image = sitk.ReadImage(str(case.image))
            result = segment_image(image, package, device=device, confidence=False, networks=networks,
                                   sw_batch_size=sw_batch_size)
            pred = sitk.GetArrayFromImage(result.labels).astype(np.int64)
            ref = sitk.GetArrayFromImage(sitk.ReadImage(str(case.reference))).astype(np.int64)
            if pred.shape != ref.shape:
                raise ScdlError(f"the prediction {pred.shape} and the reference {ref.shape} differ in shape.",
                                case.reference, "regenerate the benchmark cohort (delete its folder).")
            if ref.max() >= n_classes:
                raise ScdlError(f"the reference holds label {int(ref.max())}, the model knows {n_classes - 1} classes.",
                                case.reference, "use a cohort labelled with the model's table (synapse).")
            dice = dice_per_class(pred, ref, n_classes)          # (C-1,), classes 1..C-1
            rows.append([dice[v - 1] for v in values])
            if phase is not None:
                phase.advance()
    finally:
        if phase is not None:
            phase.close()
    return TestScores(classes=[names[v] for v in values], dice=np.asarray(rows, dtype=np.float64),
                      cases=[c.name for c in cases], seconds=time.monotonic() - start,
                      cpu_s=time.process_time() - cpu_start)
