"""CT intensity window and scaling (in place, float32)."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def window_and_scale(arr: np.ndarray, window: Sequence[float] = (-125.0, 275.0),
                     scale: Sequence[float] = (0.0, 1.0)) -> np.ndarray:
    """Clip ``arr`` to ``window`` (HU) and map it linearly onto ``scale``, in place.

    ``window = (lo, hi)`` maps to ``scale = (a, b)``: ``a + (clip(x, lo, hi) - lo) * (b - a) / (hi - lo)``.
    With the paper's values (-125, 275) -> (0, 1) this is ``(x + 125) / 400``.

    Args:
        arr: float32 array of any shape (modified and returned; other dtypes are converted to float32).
    """
    lo, hi = float(window[0]), float(window[1])
    a, b = float(scale[0]), float(scale[1])
    if not hi > lo:
        raise ValueError(f"window must be (low, high) with high > low, not {tuple(window)!r}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    np.clip(arr, lo, hi, out=arr)
    arr -= np.float32(lo)
    arr *= np.float32((b - a) / (hi - lo))
    if a != 0.0:
        arr += np.float32(a)
    return arr
