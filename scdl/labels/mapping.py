"""Map label maps between label tables by structure name (e.g. a TotalSegmentator map onto the Synapse table).

    >>> ts, syn = LabelTable.load("totalsegmentator_v2"), LabelTable.load("synapse")
    >>> mapped, unknown = map_label_array(ts_array, ts, syn)   # 5 liver -> 6 liver, 15 esophagus -> 5, lungs -> 0

Names are compared after :func:`scdl.labels.names.normalize_name` (case, ``_``/``-``, word order of
left/right, British spelling, synonyms such as "portal_vein_and_splenic_vein" == "portal and splenic veins").
A target name with alternatives ("prostate/uterus") receives each alternative ("prostate", "uterus").
When names do not match, identical SNOMED CT codes (category, type, modifier, region) do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from scdl.labels.names import name_alternatives, normalize_name
from scdl.labels.table import LabelEntry, LabelTable

__all__ = ["LabelMatch", "match_tables", "map_label_array", "normalize_name"]


@dataclass
class LabelMatch:
    """How the labels of a source table map onto a target table.

    Attributes:
        value_map: source value -> target value, for every source label that has a target.
        unmatched: source labels without a target (they become background).
        how: source value -> "name" or "code" (what matched).
    """

    value_map: dict[int, int] = field(default_factory=dict)
    unmatched: list[LabelEntry] = field(default_factory=list)
    how: dict[int, str] = field(default_factory=dict)


def _code_key(entry: LabelEntry) -> Optional[tuple]:
    if not entry.has_terminology:
        return None
    parts = (entry.category, entry.type, entry.modifier, entry.region, entry.region_modifier)
    return tuple(None if c is None else (c.scheme, c.value) for c in parts)


def match_tables(source: LabelTable, target: LabelTable) -> LabelMatch:
    """Pair every source label with the target label of the same structure (by name, then by codes)."""
    by_key: dict[str, LabelEntry] = {}
    for entry in target:
        for key in name_alternatives(entry.name):
            by_key.setdefault(key, entry)
    by_code: dict[tuple, list[LabelEntry]] = {}
    for entry in target:
        code = _code_key(entry)
        if code is not None:
            by_code.setdefault(code, []).append(entry)
    match = LabelMatch()
    for entry in source:
        hit = next((by_key[k] for k in name_alternatives(entry.name) if k in by_key), None)
        how = "name"
        if hit is None:
            code = _code_key(entry)
            candidates = by_code.get(code, []) if code is not None else []
            if len(candidates) == 1:
                hit, how = candidates[0], "code"
        if hit is None:
            match.unmatched.append(entry)
        else:
            match.value_map[entry.value] = hit.value
            match.how[entry.value] = how
    return match


def _smallest_uint(max_value: int) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def map_label_array(
    arr: np.ndarray, source: LabelTable, target: LabelTable
) -> tuple[np.ndarray, list[int]]:
    """Relabel an integer label array from ``source`` values to ``target`` values.

    Args:
        arr: integer label array of any shape (e.g. (D, H, W)).
        source: the table ``arr`` is written in.
        target: the table to map onto.

    Returns:
        ``(mapped, unknown_values)``: ``mapped`` has the shape of ``arr`` and the smallest unsigned dtype that
        holds the target values; source classes without a target become 0 (background). ``unknown_values``
        lists, sorted, the non-zero values of ``arr`` that the source table does not define (also mapped to 0).
    """
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iub":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"label arrays must hold integers, not {arr.dtype}")
    match = match_tables(source, target)
    out_dtype = _smallest_uint(max(target.values))
    defined = set(source.values)
    if arr.size == 0:
        return np.zeros(arr.shape, dtype=out_dtype), []
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi < (1 << 24):
        # direct lookup table: O(N) and no sort (np.unique would sort all voxels)
        present = np.flatnonzero(np.bincount(arr.ravel().astype(np.int64, copy=False), minlength=hi + 1))
        lut = np.zeros(hi + 1, dtype=out_dtype)
        for src_value, dst_value in match.value_map.items():
            if src_value <= hi:
                lut[src_value] = dst_value
        mapped = lut[arr]
    else:
        present, inverse = np.unique(arr, return_inverse=True)
        values = np.array([match.value_map.get(int(v), 0) for v in present], dtype=out_dtype)
        mapped = values[inverse].reshape(arr.shape)
    unknown = sorted(int(v) for v in present if v != 0 and int(v) not in defined)
    return mapped, unknown
