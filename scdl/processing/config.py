"""The ``preprocessing`` section of a model card as a typed, validated object.

Vectors are in image axis order (x, y, z), as in ITK and Slicer, after reorientation to ``orientation``.
The network sees arrays in (D, H, W) = (z, y, x) order: use :attr:`PreprocessConfig.patch_size_dhw`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from scdl.processing.orientation import validate_orientation
from scdl.processing.padding import POSITIONS
from scdl.processing.resample import INTERPOLATORS

MODES = ("spacing", "fixed_size")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a CT becomes network input (defaults = the paper: window [-125, 275] HU -> [0, 1], 96³ patches).

    Attributes:
        mode: "spacing" (resample to ``spacing_mm``) or "fixed_size" (resize to ``size``, the authors' AMOS recipe).
        spacing_mm: target spacing (x, y, z) in mm, mode "spacing".
        size: target size (x, y, z) in voxels, mode "fixed_size" (AMOS: (160, 160, 80)).
        orientation: ITK orientation code the image is brought to first ("LPS" = identity direction).
        interpolation: interpolation of the CT ("linear"); labels always use nearest neighbour.
        patch_size: sliding-window / training patch (x, y, z); the input is padded to at least this size.
        window: HU window (low, high); scale: the values the window maps to.
        padding_value: value of padded voxels (after scaling); padding_position: "center" or "end".
    """

    mode: str = "spacing"
    spacing_mm: Optional[tuple[float, float, float]] = (1.5, 1.5, 1.5)
    size: Optional[tuple[int, int, int]] = None
    orientation: str = "LPS"
    interpolation: str = "linear"
    patch_size: tuple[int, int, int] = (96, 96, 96)
    window: tuple[float, float] = (-125.0, 275.0)
    scale: tuple[float, float] = (0.0, 1.0)
    padding_value: float = 0.0
    padding_position: str = "center"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.mode == "spacing":
            if self.spacing_mm is None or len(self.spacing_mm) != 3 or any(float(v) <= 0 for v in self.spacing_mm):
                raise ValueError(f"spacing_mm must be 3 positive numbers (x, y, z) in mode 'spacing', not {self.spacing_mm!r}")
        else:
            if self.size is None or len(self.size) != 3 or any(int(v) != v or int(v) < 1 for v in self.size):
                raise ValueError(f"size must be 3 positive integers (x, y, z) in mode 'fixed_size', not {self.size!r}")
        object.__setattr__(self, "orientation", validate_orientation(self.orientation))
        if self.interpolation not in INTERPOLATORS:
            raise ValueError(f"interpolation must be one of {INTERPOLATORS}, not {self.interpolation!r}")
        if len(self.patch_size) != 3 or any(int(v) != v or int(v) < 1 for v in self.patch_size):
            raise ValueError(f"patch_size must be 3 positive integers (x, y, z), not {self.patch_size!r}")
        if len(self.window) != 2 or not float(self.window[1]) > float(self.window[0]):
            raise ValueError(f"window must be [low, high] with high > low, not {self.window!r}")
        if len(self.scale) != 2 or float(self.scale[1]) == float(self.scale[0]):
            raise ValueError(f"scale must be two different numbers [a, b], not {self.scale!r}")
        if self.padding_position not in POSITIONS:
            raise ValueError(f"padding position must be one of {POSITIONS}, not {self.padding_position!r}")

    @property
    def patch_size_dhw(self) -> tuple[int, int, int]:
        """The patch in network array order (D, H, W) = (z, y, x)."""
        return (int(self.patch_size[2]), int(self.patch_size[1]), int(self.patch_size[0]))

    @classmethod
    def from_card(cls, section: dict[str, Any]) -> "PreprocessConfig":
        """Parse a card's ``preprocessing`` dict (raises ``ValueError`` naming the bad field)."""
        if not isinstance(section, dict):
            raise ValueError("preprocessing must be an object")
        s = dict(section)
        known = {"mode", "spacing_mm", "size", "orientation", "interpolation", "patch_size", "window", "scale", "padding"}
        padding = s.get("padding") or {}
        if not isinstance(padding, dict):
            raise ValueError("preprocessing.padding must be an object {value, position}")
        mode = s.get("mode", "spacing")
        try:
            return cls(
                mode=mode,
                spacing_mm=_vec(s.get("spacing_mm"), float) if mode == "spacing" else None,
                size=_vec(s.get("size"), int) if mode == "fixed_size" else None,
                orientation=s.get("orientation", "LPS"),
                interpolation=s.get("interpolation", "linear"),
                patch_size=_vec(s.get("patch_size", (96, 96, 96)), int),
                window=tuple(float(v) for v in s.get("window", (-125.0, 275.0))),
                scale=tuple(float(v) for v in s.get("scale", (0.0, 1.0))),
                padding_value=float(padding.get("value", 0.0)),
                padding_position=padding.get("position", "center"),
                extra={k: v for k, v in s.items() if k not in known},
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"preprocessing: {err}") from err

    def to_card(self) -> dict[str, Any]:
        """The card's ``preprocessing`` dict (JSON-ready)."""
        out: dict[str, Any] = {"mode": self.mode}
        if self.mode == "spacing":
            out["spacing_mm"] = [float(v) for v in self.spacing_mm]
        else:
            out["size"] = [int(v) for v in self.size]
        out.update(
            orientation=self.orientation,
            interpolation=self.interpolation,
            patch_size=[int(v) for v in self.patch_size],
            window=[float(v) for v in self.window],
            scale=[float(v) for v in self.scale],
            padding={"value": float(self.padding_value), "position": self.padding_position},
        )
        out.update(self.extra)
        return out


def _vec(value: Any, kind: type) -> Optional[tuple]:
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(f"expected a list of 3 numbers, not {value!r}")
    if kind is int:
        if any(float(v) != int(float(v)) for v in value):
            raise ValueError(f"expected integers, not {value!r}")
        return tuple(int(float(v)) for v in value)
    return tuple(float(v) for v in value)
