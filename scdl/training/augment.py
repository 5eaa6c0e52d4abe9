"""Patch augmentation with MONAI dictionary transforms, every part switchable (config ``augment``).

Flips along each axis, a small random affine (rotation ± ``rotate_deg`` about each axis, scaling ± ``scale``;
labels nearest neighbour), intensity scaling and shift, Gaussian noise. The paper uses none of them
(METHOD.md §2), so all are off by default; the ``cpu`` preset turns flips, intensity and noise on.

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
        self.enabled = any(bool(self.config.get(k)) for k in ("flip", "affine", "intensity", "noise"))

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
        data: dict[str, Any] = {"image": image[None].astype(np.float32, copy=False)}
        if label is not None:
            data["label"] = label[None].astype(np.float32)
        out = self._compose(data)
        img = _numpy(out["image"])[0].astype(np.float32, copy=False)
        lab = None if label is None else np.rint(_numpy(out["label"])[0]).astype(np.int64)
        return img, lab


def _numpy(x: Any) -> np.ndarray:
    """MONAI returns MetaTensors or arrays; training wants plain arrays."""
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)
