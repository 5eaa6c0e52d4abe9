"""Class-aware patch sampling: small organs are picked as often as big ones.

With probability ``class_prob`` a patch is centred on a voxel of a class drawn uniformly among the classes
present in the case (so the adrenal gland is as likely as the liver); otherwise the patch is a uniform random
crop (the paper's sampling). With ``small_classes`` given, a share ``small_prob`` of the class-centred draws
picks among the small classes present (adrenals, oesophagus, gallbladder, veins, pancreas: the organs that
otherwise never fire, issue 27) instead of among all. Centres near the border are shifted so the patch stays inside the volume;
volumes smaller than the patch are padded (image with ``pad_value``, labels with background).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from scdl.training.cache import CachedCase


def crop(volume: np.ndarray, start: Sequence[int], patch: Sequence[int], pad_value: float = 0.0) -> np.ndarray:
    """Copy ``volume[start : start + patch]`` (D, H, W), padding where the box leaves the volume."""
    slices, pads = [], []
    for s, p, n in zip(start, patch, volume.shape):
        lo, hi = max(s, 0), min(s + p, n)
        slices.append(slice(lo, hi))
        pads.append((lo - s, s + p - hi))
    out = np.asarray(volume[tuple(slices)])
    if any(a or b for a, b in pads):
        out = np.pad(out, pads, mode="constant", constant_values=pad_value)
    return np.array(out, copy=True)


def choose_start(case: CachedCase, patch: Sequence[int], rng: np.random.Generator, class_prob: float,
                 small_classes: Sequence[int] = (), small_prob: float = 0.0,
                 ) -> tuple[tuple[int, ...], Optional[int]]:
    """Corner of the patch in ``case`` and the class it was centred on (None: a random crop).

    Args:
        patch: (D, H, W) patch size.
        small_classes: class values (model numbering) of the small organs; ``small_prob``: the share of the
            class-centred draws that pick among those present in the case. With ``small_prob`` 0 no extra
            random number is drawn (the stream of earlier runs is unchanged).
    """
    shape = case.shape
    present = case.present if case.labeled else []
    use_class = bool(present) and class_prob > 0 and rng.random() < class_prob
    if use_class:
        pool = present
        if small_prob > 0 and small_classes:
            small = [c for c in present if c in set(int(v) for v in small_classes)]
            if small and rng.random() < small_prob:
                pool = small
        cls = int(pool[rng.integers(len(pool))])
        locations = case.locations(cls)
        centre = np.unravel_index(int(locations[rng.integers(len(locations))]), shape)
        start = []
        for c, p, n in zip(centre, patch, shape):
            s = int(c) - p // 2
            start.append(min(max(s, 0), max(n - p, 0)) if n >= p else s)
        return tuple(start), cls
    start = tuple(int(rng.integers(0, n - p + 1)) if n >= p else -((p - n) // 2) for n, p in zip(shape, patch))
    return start, None


def synthesize_patch(case: CachedCase, start: Sequence[int], patch: Sequence[int], rng: np.random.Generator,
                     synth: Optional[Mapping[str, Any]] = None) -> tuple[np.ndarray, np.ndarray]:
    """A freshly synthesised patch of an anatomy case: (image float32 (D, H, W) in network scale, label).

    The layout is cropped (outside the volume = air), deformed (elastic, organ shrinking), synthesised in
    HU (scdl.synth.engine) and windowed/scaled like a real CT.
    """
    from scdl.processing.intensity import window_and_scale
    from scdl.synth.engine import SYNTH_DEFAULTS, synthesize
    from scdl.synth.layout import OUTSIDE
    from scdl.synth.spatial import elastic, shrink_organs

    c = {**SYNTH_DEFAULTS, **dict(synth or {})}
    info = case.anatomy
    spacing = info["spacing_zyx"]
    structures = crop(case.structures, start, patch, OUTSIDE)
    depth = crop(case.depth, start, patch, 0)
    label = crop(case.label, start, patch, 0)
    if float(c["elastic_mm"]) > 0:
        structures, depth, label = elastic([structures, depth, label], spacing, rng, float(c["elastic_mm"]),
                                           float(c["elastic_scale_mm"]))
    structures, label = shrink_organs(structures, depth, label, rng, float(c["shrink_prob"]), float(c["shrink_mm"]))
    hu, _subject = synthesize(structures, depth, info["lut"], spacing, rng, c)
    return window_and_scale(hu, info["window"], info["scale"]).astype(np.float32), label


def sample_patch(case: CachedCase, patch: Sequence[int], rng: np.random.Generator, class_prob: float,
                 pad_value: float = 0.0, synth: Optional[Mapping[str, Any]] = None,
                 small_classes: Sequence[int] = (), small_prob: float = 0.0,
                 ) -> tuple[np.ndarray, Optional[np.ndarray], Optional[int]]:
    """One patch: image float32 (D, H, W), label (D, H, W) or None, and the class it was centred on.

    Anatomy cases (label map only) get a fresh synthetic image each call (:func:`synthesize_patch`).
    """
    start, cls = choose_start(case, patch, rng, class_prob, small_classes, small_prob)
    if case.anatomy:
        image, label = synthesize_patch(case, start, patch, rng, synth)
        return image, label, cls
    image = crop(case.image, start, patch, pad_value)
    label = crop(case.label, start, patch, 0) if case.labeled else None
    return image, label, cls
