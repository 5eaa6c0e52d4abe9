"""Patch augmentation with MONAI dictionary transforms, every part switchable (config ``augment``).

Flips along each axis, a small random affine (rotation ± ``rotate_deg`` about each axis, scaling ± ``scale``;
labels nearest neighbour), intensity scaling and shift, Gaussian noise (MONAI transforms), and two of ours
for moving a model from one scan to another:

- ``organ_shift``: on labeled patches, every organ present gets its own intensity offset, uniform in
  ``organ_shift_range`` (units of the scaled window: with the [-125, 275] HU window 0.1 = 40 HU). Iodinated
  contrast raises organs and vessels by different amounts; a model trained on one non-contrast patient
  otherwise learns that "liver" means one grey value.
- ``slab``: the patch keeps only a random run of slices along D (z), at least ``slab_min`` of them (a
  fraction); the rest becomes ``slab_value`` (the padding value of inference, 0 = the bottom of the window)
  and background. Scans with a short z extent (patient B: 40 mm) are padded at inference, and a model never
  trained on such padding mislabels the whole volume.
- ``edge_cut``: on labeled patches, the scan ends inside an organ: a foreground class present in the patch is
  drawn, a slice inside its z-extent is drawn, and everything above (or below) that slice becomes
  ``slab_value`` and background. Real scans cut the spleen tip, the liver dome under the heart or a kidney's
  lower pole at their top or bottom (issue 27: 236 Dice points lost there on real CT); ``slab`` cuts at random
  places, mostly outside organs.

The paper uses none of them (METHOD.md §2), so all are off by default; the ``cpu`` preset turns intensity and
noise on.

Determinism: :meth:`Augmenter.__call__` takes the seed of the sample, so a sample is the same in any worker
process, in any run, and after a resume.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import numpy as np


class Augmenter:
    """Random augmentation of one patch.

    Args:
        config: the ``augment`` block of the training config (missing keys take the defaults).
    Call: ``augmenter(image, label, seed)`` with image float32 (D, H, W), label int (D, H, W) or None ->
    (image float32 (D, H, W), label int64 (D, H, W) or None).
    """

    def __init__(self, config: Mapping[str, Any]):
        from scdl.training.config import DEFAULTS

        self.config = {**DEFAULTS["augment"], **dict(config)}     # unset probabilities/ranges: the defaults
        self._compose = None
        self.enabled = any(bool(self.config.get(k))
                           for k in ("flip", "affine", "intensity", "noise", "organ_shift", "slab", "edge_cut"))

    def _build(self):
        from monai.transforms import (Compose, RandAffined, RandFlipd, RandGaussianNoised, RandScaleIntensityd,
                                      RandShiftIntensityd)

        c = self.config
        keys = ["image", "label"]
        parts: list[Any] = []
        if c.get("flip"):
            parts += [RandFlipd(keys, prob=float(c["flip_prob"]), spatial_axis=axis, allow_missing_keys=True)
                      for axis in range(3)]
        if c.get("affine"):
            rot = math.radians(float(c["rotate_deg"]))
            scale = float(c["scale"])
            parts.append(RandAffined(keys, prob=float(c["affine_prob"]), rotate_range=(rot, rot, rot),
                                     scale_range=(scale, scale, scale), mode=("bilinear", "nearest"),
                                     padding_mode="border", allow_missing_keys=True))
        if c.get("intensity"):
            parts.append(RandScaleIntensityd("image", factors=float(c["intensity_scale"]),
                                             prob=float(c["intensity_prob"])))
            parts.append(RandShiftIntensityd("image", offsets=float(c["intensity_shift"]),
                                             prob=float(c["intensity_prob"])))
        if c.get("noise"):
            parts.append(RandGaussianNoised("image", prob=float(c["noise_prob"]), std=float(c["noise_std"]),
                                            sample_std=False))
        return Compose(parts)

    def __call__(self, image: np.ndarray, label: Optional[np.ndarray], seed: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        if not self.enabled:
            return image, None if label is None else label.astype(np.int64, copy=False)
        if self._compose is None:
            self._compose = self._build()
        self._compose.set_random_state(seed=int(seed) % (2**32))
        ours = np.random.default_rng([int(seed) % (2**32), 0x5CD1])     # a stream apart from MONAI's
        c = self.config
        if label is not None and c.get("organ_shift") and ours.random() < float(c["organ_shift_prob"]):
            image = organ_shift(image, label, c["organ_shift_range"], ours)
        data: dict[str, Any] = {"image": image[None].astype(np.float32, copy=False)}
        if label is not None:
            data["label"] = label[None].astype(np.float32)
        out = self._compose(data)
        img = _numpy(out["image"])[0].astype(np.float32, copy=False)
        lab = None if label is None else np.rint(_numpy(out["label"])[0]).astype(np.int64)
        if c.get("slab") and ours.random() < float(c["slab_prob"]):
            img, lab = slab(img, lab, float(c["slab_min"]), float(c["slab_value"]), ours)
        if lab is not None and c.get("edge_cut") and ours.random() < float(c["edge_cut_prob"]):
            img, lab = edge_cut(img, lab, float(c["slab_value"]), ours)
        return img, lab


def organ_shift(image: np.ndarray, label: np.ndarray, offsets: Any, rng: np.random.Generator) -> np.ndarray:
    """Add one uniform offset in ``offsets`` = (low, high) to the voxels of each foreground class of ``label``.

    image float32 (D, H, W), label int (D, H, W) -> new float32 image; classes are drawn in increasing order.
    """
    low, high = float(offsets[0]), float(offsets[1])
    out = image.astype(np.float32, copy=True)
    for value in np.unique(label):
        if value > 0:
            out[label == value] += np.float32(rng.uniform(low, high))
    return out


def slab(image: np.ndarray, label: Optional[np.ndarray], min_fraction: float, value: float,
         rng: np.random.Generator) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Keep a random run of at least ``ceil(min_fraction · D)`` slices along D; elsewhere image = ``value``, label = 0.

    image (D, H, W), label (D, H, W) or None -> new arrays of the same shapes.
    """
    depth = image.shape[0]
    keep = int(rng.integers(min(depth, max(1, math.ceil(min_fraction * depth))), depth + 1))
    start = int(rng.integers(0, depth - keep + 1))
    img = np.full_like(image, np.float32(value))
    img[start:start + keep] = image[start:start + keep]
    if label is None:
        return img, None
    lab = np.zeros_like(label)
    lab[start:start + keep] = label[start:start + keep]
    return img, lab


def edge_cut(image: np.ndarray, label: np.ndarray, value: float, rng: np.random.Generator,
             ) -> tuple[np.ndarray, np.ndarray]:
    """End the scan inside an organ: blank (image ``value``, label 0) every slice above or below a slice drawn
    inside the z-extent of a foreground class drawn among those present. At least one slice of that class is
    kept. A patch without foreground is returned unchanged.

    image float32 (D, H, W), label int (D, H, W) -> new arrays of the same shapes.
    """
    classes = [int(v) for v in np.unique(label) if v > 0]
    if not classes:
        return image, label
    cls = classes[int(rng.integers(len(classes)))]
    zs = np.flatnonzero((label == cls).any(axis=(1, 2)))
    z = int(rng.integers(int(zs[0]), int(zs[-1]) + 1))
    img, lab = image.copy(), label.copy()
    if rng.random() < 0.5:          # the scan's end lies above z: keep slices <= z
        img[z + 1:], lab[z + 1:] = np.float32(value), 0
    else:                           # below z: keep slices >= z
        img[:z], lab[:z] = np.float32(value), 0
    return img, lab


def _numpy(x: Any) -> np.ndarray:
    """MONAI returns MetaTensors or arrays; training wants plain arrays."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
