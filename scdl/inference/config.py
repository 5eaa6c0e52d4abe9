"""Inference settings: the model card's ``inference`` section, overridable per call.

Card example (every field optional; defaults in brackets)::

    "inference": {"overlap": 0.5, "blending": "gaussian", "keep_largest_component": false,
                  "sw_batch_size": null, "sigma_scale": 0.125, "amp": true}

(overlap, blending and keep_largest_component are the fields scdl.models.card validates; the others are
optional extras read here). Unknown fields are ignored: the card schema is scdl.models.card's.

:class:`InferenceSettings` is the owner of the inference defaults above the card: :class:`WindowConfig`,
validation during training and ``scdl models import --overlap`` read them here. Its overlap, blending and
keep_largest_component come from the card's ``DEFAULT_INFERENCE`` (scdl.models is below scdl.inference, so
the card, which fills them into every card, cannot import them from here). This module imports no torch.

The window size is the card's ``preprocessing.patch_size`` (the paper's 96^3), the size of the patches the
networks were trained on, unless the card's ``inference.window_size`` names a larger one: the networks are
fully convolutional, and a window wider than the training patch gives every voxel more of the body around it
(measured on the default model's validation: docs/inference.md "Window size"). Test-time batch-norm statistics
are always taken on windows of the training patch's size, the size of the patches whose statistics the
networks stored. The paper does not publish its inference overlap; 0.5 (a window advances by half its size,
every voxel is seen by up to 8 windows) is the default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from scdl.errors import ScdlError
from scdl.models.card import (  # noqa: F401 - Blending, LabelResampling: importable here too
    BLENDINGS,
    DEFAULT_INFERENCE,
    DEFAULT_LABEL_RESAMPLING,
    LABEL_RESAMPLINGS,
    Blending,
    LabelResampling,
    is_unit_weight,
    is_window_size,
)

_KNOWN = {"overlap", "sw_batch_size", "blending", "sigma_scale", "amp", "keep_largest_component",
          "largest_component_organs", "cpu_channels_last", "label_resampling", "bn_adapt", "window_size"}


#: On the CPU, windows of at most this many voxels go 4 per forward, bigger ones :data:`CPU_LARGE_WINDOW_BATCH`.
#: Measured (2 cores, torch 2.13, an ensemble of 2 VNets on a 192x192x128 volume, overlap 0.5): width 8 with 64³
#: windows 39.2 s with 1 window per forward, 16.6 s with 4 (peak RSS 0.61 / 0.78 GiB); width 16 with 96³ windows
#: 31.4 s vs 31.1 s (0.93 / 1.78 GiB): no gain, twice the memory. The default model (64x64x32 windows) segments
#: patient B in 2.6 s instead of 8.0 s; the labels are identical.
CPU_SMALL_WINDOW_VOXELS = 64 ** 3

#: Windows per forward on the CPU above :data:`CPU_SMALL_WINDOW_VOXELS`. One window per forward is a slow path
#: of the CPU convolutions: the default model (width 8, channels_last_3d) takes 323 ms for one 96x96x32 window
#: and 132 ms for two; ``scdl segment`` on patient A with the 4.5.1 window (96x96x32, overlap 0.25) took 21.2 /
#: 22.2 s with 1 window per forward, 8.6 / 9.1 s with 2, 9.9 / 9.2 s with 3, 9.9 / 9.0 s with 4 (2 cores,
#: 2026-12-07; 4.5.0's 64x64x32 windows, 4 per forward: 10.4 / 10.1 s in the same minutes).
CPU_LARGE_WINDOW_BATCH = 2


@dataclass(frozen=True)
class InferenceSettings:
    """Sliding-window and post-processing settings of one run.

    Attributes:
        overlap: window overlap in [0, 1).
        sw_batch_size: windows per forward (None: 4 on CUDA; on the CPU 4 for windows of at most 64³ voxels,
            else 2, see :data:`CPU_SMALL_WINDOW_VOXELS`).
        blending: "gaussian" or "constant".
        sigma_scale: Gaussian sigma / window size.
        amp: float16 autocast on CUDA.
        keep_largest_component: keep only the largest connected component of each organ.
        largest_component_organs: keep the largest connected component of these organs only (names of the
            model's label table, any spelling); ignored when ``keep_largest_component`` is on. For the large
            organs that are one piece (liver, spleen, kidneys, stomach, aorta): on real CT of other hospitals
            this gained 0.9 Dice points with no organ worse, while every organ lost the pancreas 13 (issue 27).
        cpu_channels_last: on the CPU, run the networks in the ``channels_last_3d`` memory format. Measured by
            ``python bench/inference.py --cpu-options`` (default model, patient A, 2 cores, torch 2.13): 0.75x the
            float32 time idle (0.64x under load) with every label identical. Not taken, measured in the same
            runs: bfloat16 autocast (0.62x, but 0.008 % of the voxels change label), ``torch.compile`` (0.85x idle,
            1.44x under load, 2.3 min to compile on first use).
        label_resampling: how the answer reaches the CT's grid (:class:`LabelResampling`): ``"nearest"``
            (argmax on the model grid, labels resampled nearest-neighbour) or ``"logits"`` (the blended logits
            resampled linearly onto the CT grid, one class at a time, argmax there: smoother borders on a CT
            finer than the model grid, memory about 9 bytes per CT voxel). Chosen on validation:
            docs/inference.md.
        bn_adapt: test-time batch-norm statistics (:mod:`scdl.inference.adapt`): the networks' stored statistics
            are replaced by ``(1 - bn_adapt) * stored + bn_adapt * the CT's own``, estimated on the CT's windows
            before the prediction. 0 (off) unless the card sets it; chosen on validation: docs/inference.md.
        window_size: the sliding window (x, y, z) in voxels of the model grid, the card's order of
            ``preprocessing.patch_size``; None: the training patch. Multiples of 16 (the VNet down-samples 16x).
            Chosen on validation: docs/inference.md "Window size".
    """

    overlap: float = DEFAULT_INFERENCE["overlap"]
    sw_batch_size: Optional[int] = None
    blending: str = DEFAULT_INFERENCE["blending"]
    sigma_scale: float = 0.125
    amp: bool = True
    keep_largest_component: bool = DEFAULT_INFERENCE["keep_largest_component"]
    largest_component_organs: tuple[str, ...] = ()
    cpu_channels_last: bool = True
    label_resampling: str = DEFAULT_LABEL_RESAMPLING.value
    bn_adapt: float = 0.0
    window_size: Optional[tuple[int, int, int]] = None

    def __post_init__(self) -> None:
        if self.window_size is not None:
            if not is_window_size(self.window_size):
                raise ValueError(f"window_size must be three multiples of 16 (x, y, z voxels), not "
                                 f"{self.window_size!r}")
            object.__setattr__(self, "window_size", tuple(int(v) for v in self.window_size))
        if not is_unit_weight(self.bn_adapt):
            raise ValueError(f"bn_adapt must be a number in [0, 1], not {self.bn_adapt!r}")
        object.__setattr__(self, "bn_adapt", float(self.bn_adapt))
        if str(self.label_resampling) not in LABEL_RESAMPLINGS:
            raise ValueError(f"label_resampling must be one of {', '.join(LABEL_RESAMPLINGS)}, "
                             f"not {self.label_resampling!r}")
        object.__setattr__(self, "label_resampling", str(self.label_resampling))
        organs = self.largest_component_organs
        if isinstance(organs, str) or not all(isinstance(o, str) for o in organs or ()):
            raise ValueError(f"largest_component_organs must be a list of organ names, not {organs!r}")
        object.__setattr__(self, "largest_component_organs", tuple(organs or ()))

    @classmethod
    def from_card(cls, card: Mapping[str, Any], **overrides: Any) -> "InferenceSettings":
        """Settings from ``card["inference"]``, then ``overrides`` that are not None."""
        section = {k: v for k, v in dict(card.get("inference") or {}).items() if k in _KNOWN}
        section.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = cls(**section)
            settings.window_config((16, 16, 16), "cpu")  # validates the values
        except (TypeError, ValueError) as err:
            raise ScdlError(f"invalid inference settings: {err}",
                            fix=f"use an overlap in [0, 1), a positive sw_batch_size, blending {'|'.join(BLENDINGS)}, "
                                f"label_resampling {'|'.join(LABEL_RESAMPLINGS)}, bn_adapt in [0, 1], "
                                f"window_size three multiples of 16.") from err
        return settings

    def prediction_window(self, patch_dhw: tuple[int, int, int]) -> tuple[int, int, int]:
        """The sliding window (D, H, W) for networks trained on patches of ``patch_dhw`` (D, H, W):
        ``window_size`` (x, y, z) reversed, or the patch when it is None."""
        if self.window_size is None:
            return tuple(int(v) for v in patch_dhw)
        x, y, z = self.window_size
        return (z, y, x)

    def window_config(self, roi_size: tuple[int, int, int], device_type: str) -> WindowConfig:
        """The :class:`WindowConfig` for a window of ``roi_size`` (D, H, W) on a device of this type."""
        batch = self.sw_batch_size
        if not batch:
            small = math.prod(int(s) for s in roi_size) <= CPU_SMALL_WINDOW_VOXELS
            batch = 4 if device_type == "cuda" or small else CPU_LARGE_WINDOW_BATCH
        return WindowConfig(roi_size=tuple(int(s) for s in roi_size), overlap=float(self.overlap),
                            sw_batch_size=int(batch), mode=self.blending, sigma_scale=float(self.sigma_scale),
                            amp=bool(self.amp))


@dataclass(frozen=True)
class WindowConfig:
    """Sliding-window settings of one pass (:func:`scdl.inference.sliding_window.predict_volume`; defaults: the
    paper's 96^3 window and :class:`InferenceSettings`' defaults).

    Attributes:
        roi_size: window size (d, h, w) in voxels of the network grid (multiples of 16 for the VNet).
        overlap: fraction of a window shared with its neighbour along each axis, in [0, 1).
        sw_batch_size: windows per forward pass.
        mode: blending of overlapping windows, ``"gaussian"`` or ``"constant"``.
        sigma_scale: Gaussian sigma as a fraction of the window size.
        pad_value: value used to pad a volume smaller than a window (0 = the bottom of the intensity window).
        amp: float16 autocast on CUDA (never on the CPU).
    """

    roi_size: tuple[int, int, int] = (96, 96, 96)
    overlap: float = InferenceSettings.overlap
    sw_batch_size: int = 1
    mode: str = InferenceSettings.blending
    sigma_scale: float = InferenceSettings.sigma_scale
    pad_value: float = 0.0
    amp: bool = InferenceSettings.amp

    def __post_init__(self) -> None:
        if len(self.roi_size) != 3 or any(int(s) < 1 for s in self.roi_size):
            raise ValueError(f"roi_size must be three positive sizes, got {self.roi_size}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if int(self.sw_batch_size) < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {self.sw_batch_size}")
        if self.mode not in BLENDINGS:
            raise ValueError(f"mode must be one of {', '.join(BLENDINGS)}, got {self.mode!r}")
