"""The window grid of a sliding-window pass over a model grid: :func:`scan_interval` (MONAI's step between
window starts). Used by :mod:`scdl.inference.sliding_window` (the windows) and :mod:`scdl.processing.budget`
(how many windows, before any work)."""

from __future__ import annotations

from typing import Sequence


def scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Step between window starts per axis: ``int(roi * (1 - overlap))`` (at least 1), as MONAI computes it."""
    steps = []
    for size, roi in zip(image_size, roi_size):
        if roi == size:
            steps.append(int(roi))
        else:
            steps.append(max(int(roi * (1.0 - overlap)), 1))
    return tuple(steps)
