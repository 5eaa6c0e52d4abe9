"""Class-aware patch sampling: small organs are picked as often as big ones.

With probability ``class_prob`` a patch is centred on a voxel of a class drawn uniformly among the classes
present in the case (so the adrenal gland is as likely as the liver); otherwise the patch is a uniform random
crop (the paper's sampling). With ``small_classes`` given, a share ``small_prob`` of the class-centred draws
picks among the small classes present (adrenals, oesophagus, gallbladder, veins, pancreas: the organs that
otherwise never fire, issue 27) instead of among all. Centres near the border are shifted so the patch stays inside the volume;
volumes smaller than the patch are padded (image with ``pad_value``, labels with background).

Zoom (``zoom_prob``, ``zoom_range``): with probability ``zoom_prob`` the in-plane field of view of the patch is
``f`` times the patch (``f`` log-uniform in ``zoom_range``; the patch's centre kept, z unchanged), resampled back to
the patch size: ``f`` < 1 shows the organs larger than the case has them, ``f`` > 1 smaller. Adults' organs and
bodies differ in size by more than the training cases do: patient B's large spleen is 86 % background for model
4.4.1 and 2 % when B is read as 0.7 x its size (docs/default_model.md). Images are resampled linearly; labels and
anatomy layouts nearest neighbour, before synthesis, which then sees the zoomed voxel size.
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


def draw_zoom(rng: np.random.Generator, prob: float, zoom_range: Sequence[float]) -> float:
    """In-plane field-of-view factor of one patch: 1, or with probability ``prob`` log-uniform in ``zoom_range``.

    With ``prob`` 0 no random number is drawn (the stream of earlier runs is unchanged).
    """
    if prob <= 0 or rng.random() >= prob:
        return 1.0
    low, high = (float(v) for v in zoom_range)
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def zoom_box(start: Sequence[int], patch: Sequence[int], factor: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(start, size) of the region whose in-plane extent is ``factor`` x the patch's, centred on the patch (D kept)."""
    size = (int(patch[0]),) + tuple(max(1, int(round(p * factor))) for p in patch[1:])
    return tuple(int(s) + (int(p) - n) // 2 for s, p, n in zip(start, patch, size)), size


def resize(volume: np.ndarray, shape: Sequence[int], order: int) -> np.ndarray:
    """Resample (D, H, W) ``volume`` to ``shape`` (voxel centres aligned; ``order`` 0 nearest, 1 linear)."""
    if tuple(volume.shape) == tuple(shape):
        return volume
    from scipy.ndimage import map_coordinates

    axes = [(np.arange(m, dtype=np.float32) + 0.5) * (n / m) - 0.5 for n, m in zip(volume.shape, shape)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    return map_coordinates(volume, grid, order=order, mode="nearest").astype(volume.dtype, copy=False)


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
                     synth: Optional[Mapping[str, Any]] = None, region: Optional[Sequence[int]] = None,
                     ) -> tuple[np.ndarray, np.ndarray]:
    """A freshly synthesised patch of an anatomy case: (image float32 (D, H, W) in network scale, label).

    The layout is cropped (outside the volume = air), resampled to the patch if ``region`` (the crop's size,
    default the patch) differs, deformed (elastic, organ shrinking), synthesised in HU (scdl.synth.engine) at
    the resampled voxel size and windowed/scaled like a real CT.
    """
    from scdl.processing.intensity import window_and_scale
    from scdl.synth.engine import SYNTH_DEFAULTS, synthesize
    from scdl.synth.layout import OUTSIDE
    from scdl.synth.spatial import elastic, shrink_organs

    c = {**SYNTH_DEFAULTS, **dict(synth or {})}
    info = case.anatomy
    region = tuple(patch) if region is None else tuple(region)
    spacing = [float(s) * n / p for s, n, p in zip(info["spacing_zyx"], region, patch)]
    structures = resize(crop(case.structures, start, region, OUTSIDE), patch, 0)
    depth = resize(crop(case.depth, start, region, 0), patch, 0)
    label = resize(crop(case.label, start, region, 0), patch, 0)
    if float(c["elastic_mm"]) > 0:
        structures, depth, label = elastic([structures, depth, label], spacing, rng, float(c["elastic_mm"]),
                                           float(c["elastic_scale_mm"]))
    structures, label = shrink_organs(structures, depth, label, rng, float(c["shrink_prob"]), float(c["shrink_mm"]))
    hu, _subject = synthesize(structures, depth, info["lut"], spacing, rng, c)
    return window_and_scale(hu, info["window"], info["scale"]).astype(np.float32), label


def sample_patch(case: CachedCase, patch: Sequence[int], rng: np.random.Generator, class_prob: float,
                 pad_value: float = 0.0, synth: Optional[Mapping[str, Any]] = None,
                 small_classes: Sequence[int] = (), small_prob: float = 0.0,
                 zoom_prob: float = 0.0, zoom_range: Sequence[float] = (1.0, 1.0),
                 ) -> tuple[np.ndarray, Optional[np.ndarray], Optional[int]]:
    """One patch: image float32 (D, H, W), label (D, H, W) or None, and the class it was centred on.

    Anatomy cases (label map only) get a fresh synthetic image each call (:func:`synthesize_patch`).
    ``zoom_prob`` / ``zoom_range``: the in-plane zoom of the module docstring (:func:`draw_zoom`).
    """
    start, cls = choose_start(case, patch, rng, class_prob, small_classes, small_prob)
    start, region = zoom_box(start, patch, draw_zoom(rng, zoom_prob, zoom_range))
    if case.anatomy:
        image, label = synthesize_patch(case, start, patch, rng, synth, region)
        return image, label, cls
    image = resize(crop(case.image, start, region, pad_value), patch, 1)
    label = resize(crop(case.label, start, region, 0), patch, 0) if case.labeled else None
    return image, label, cls
