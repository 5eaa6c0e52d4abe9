"""Padding an array to at least a patch size, and the exact crop that undoes it."""

from __future__ import annotations

from typing import Sequence

import numpy as np

POSITIONS = ("center", "end")


def padding_for(shape: Sequence[int], minimum: Sequence[int], position: str = "center") -> tuple[tuple[int, int], ...]:
    """(before, after) per axis so that every axis of ``shape`` reaches at least ``minimum``.

    ``position="center"`` splits the padding (the extra voxel after), ``"end"`` pads after only.
    """
    if position not in POSITIONS:
        raise ValueError(f"padding position must be one of {POSITIONS}, not {position!r}")
    pads = []
    for n, m in zip(shape, minimum):
        total = max(int(m) - int(n), 0)
        before = total // 2 if position == "center" else 0
        pads.append((before, total - before))
    return tuple(pads)


def pad(arr: np.ndarray, pads: Sequence[tuple[int, int]], value: float = 0.0) -> np.ndarray:
    """Constant padding (returns ``arr`` itself when nothing is padded)."""
    if not any(b or a for b, a in pads):
        return arr
    return np.pad(arr, tuple(pads), mode="constant", constant_values=value)


def crop(arr: np.ndarray, pads: Sequence[tuple[int, int]]) -> np.ndarray:
    """Undo :func:`pad` on the last ``len(pads)`` axes (a view)."""
    lead = (slice(None),) * (arr.ndim - len(pads))
    return arr[lead + tuple(slice(b, arr.shape[arr.ndim - len(pads) + i] - a) for i, (b, a) in enumerate(pads))]
