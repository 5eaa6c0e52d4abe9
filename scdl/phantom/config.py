"""Configuration of the phantom generator: every knob with its default, JSON round trip, validation."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from scdl.errors import ScdlError
from scdl.phantom.hu_table import BOWEL_GAS_FRACTION, STOMACH_GAS_FRACTION, STRUCTURES, default_hu_table

DIRECTIONS = ("LPS", "RAS", "mixed")


@dataclass
class PhantomConfig:
    """Everything that shapes a phantom cohort (all lengths in mm, intensities in HU).

    Geometry:
        spacing: voxel size (x, y, z).
        fov_mm: field of view (x, y, z) used when ``size`` is None.
        size: grid size in voxels (x, y, z); None = ``round(fov_mm / spacing)``.
        direction: "LPS" (identity direction matrix), "RAS" (array x/y axes flipped, direction
            diag(-1, -1, 1), like many NIfTI files) or "mixed" (odd case numbers RAS).
    Intensity (defaults measured on the real CT, see :mod:`scdl.phantom.hu_table`):
        hu_table: ``{structure: {"plain": [mean, std], "contrast": [mean, std]}}``.
        contrast_range: each subject draws its contrast weight w uniformly here; HU = (1-w) plain + w contrast.
        hu_offset_sd: per-subject, per-structure random shift of the mean.
        psf_sigma_mm: scanner blur; the partial-volume blur adds the voxel's own box (spacing / sqrt(12)).
        noise_correlation_mm: sigma of the Gaussian that correlates the noise (0 = white).
        bias_sd, bias_scale_mm: smooth additive bias field (std in HU, correlation length).
        stomach_gas_fraction: range of the share of the stomach filled with gas (anterior, fluid level).
        bowel_gas_fraction: share of the bowel that is gas.
        bowel_fill: share of the free abdominal cavity occupied by bowel loops.
        bowel_scale_mm: size of the bowel loops (correlation length of the field that places them).
    Shape variability:
        global_scale_sd, global_shift_sd_mm: whole-body size and position.
        body_axes_sd: independent scale of the abdominal cavity (and the organs in it) in width and depth.
        subcutaneous_fat_mm, wall_muscle_mm: ranges of the layer thicknesses (anterior fat; lateral x0.8,
            posterior x0.4).
        organ_shift_sd_mm, organ_scale_sd, organ_rotation_sd_deg: per-organ jitter (scaled per organ).
        deform_sd_mm, deform_scale_mm: smooth elastic deformation of the organs (clipped at 3 sd).
    """

    spacing: tuple[float, float, float] = (2.5, 2.5, 2.5)
    fov_mm: tuple[float, float, float] = (320.0, 320.0, 200.0)
    size: Optional[tuple[int, int, int]] = None
    direction: str = "LPS"
    hu_table: dict = field(default_factory=default_hu_table)
    contrast_range: tuple[float, float] = (0.0, 1.0)
    hu_offset_sd: float = 5.0
    psf_sigma_mm: float = 1.0
    noise_correlation_mm: float = 1.0
    bias_sd: float = 8.0
    bias_scale_mm: float = 150.0
    stomach_gas_fraction: tuple[float, float] = STOMACH_GAS_FRACTION
    bowel_gas_fraction: float = BOWEL_GAS_FRACTION[0]
    bowel_fill: float = 0.45
    bowel_scale_mm: float = 14.0
    global_scale_sd: float = 0.05
    global_shift_sd_mm: tuple[float, float, float] = (8.0, 6.0, 12.0)
    body_axes_sd: float = 0.07
    subcutaneous_fat_mm: tuple[float, float] = (10.0, 35.0)
    wall_muscle_mm: tuple[float, float] = (6.0, 14.0)
    organ_shift_sd_mm: float = 5.0
    organ_scale_sd: float = 0.08
    organ_rotation_sd_deg: float = 6.0
    deform_sd_mm: float = 5.0
    deform_scale_mm: float = 40.0

    # ------------------------------------------------------------------------------------------------
    def grid_size(self) -> tuple[int, int, int]:
        """Grid size in voxels (x, y, z)."""
        if self.size is not None:
            return tuple(int(n) for n in self.size)  # type: ignore[return-value]
        return tuple(max(1, int(round(f / s))) for f, s in zip(self.fov_mm, self.spacing))  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: Optional[os.PathLike | str] = None) -> "PhantomConfig":
        """Build and validate a config from a dict (e.g. a JSON file); unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ScdlError(f"unknown phantom setting(s): {', '.join(unknown)}.", source,
                            f"use only: {', '.join(sorted(names))}.")
        base = cls()
        merged = base.to_dict()
        for key, value in data.items():
            if key == "hu_table":
                table = dict(merged["hu_table"])
                table.update(value)
                value = table
            merged[key] = value
        for key in ("spacing", "fov_mm", "size", "contrast_range", "stomach_gas_fraction", "global_shift_sd_mm",
                    "subcutaneous_fat_mm", "wall_muscle_mm"):
            if merged[key] is not None:
                merged[key] = tuple(merged[key])
        config = cls(**merged)
        config.validate(source)
        return config

    @classmethod
    def load(cls, path: os.PathLike | str, **overrides: Any) -> "PhantomConfig":
        """Read a JSON config file (any subset of the fields); ``overrides`` win over the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ScdlError("config file not found.", path, "check the --config path.") from None
        except (OSError, ValueError) as err:
            raise ScdlError(f"not a readable JSON file ({err}).", path, "write the settings as a JSON object.") from None
        if not isinstance(data, dict):
            raise ScdlError("the config must be a JSON object of settings.", path, 'write e.g. {"bias_sd": 0}.')
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data, path)

    def validate(self, source: Optional[os.PathLike | str] = None) -> None:
        """Raise :class:`ScdlError` for values the generator cannot use."""

        def bad(message: str, fix: str) -> ScdlError:
            return ScdlError(message, source, fix)

        if len(self.spacing) != 3 or any(float(s) <= 0 for s in self.spacing):
            raise bad(f"spacing must be three positive numbers (mm), not {self.spacing}.", "use e.g. --spacing 2.5.")
        if len(self.fov_mm) != 3 or any(float(f) <= 0 for f in self.fov_mm):
            raise bad(f"fov_mm must be three positive numbers, not {self.fov_mm}.", "use e.g. [320, 320, 200].")
        size = self.grid_size()
        if len(size) != 3 or any(n < 8 for n in size) or any(n > 1024 for n in size):
            raise bad(f"grid size {size} is out of range (8..1024 voxels per axis).", "use e.g. --size 128,128,80.")
        if self.direction not in DIRECTIONS:
            raise bad(f"direction must be one of {', '.join(DIRECTIONS)}, not {self.direction!r}.",
                      "use --direction LPS, RAS or mixed.")
        missing = [s for s in STRUCTURES if s not in self.hu_table]
        if missing:
            raise bad(f"hu_table lacks {', '.join(missing)}.", "give plain and contrast [mean, std] for every structure.")
        for name, entry in self.hu_table.items():
            try:
                ok = all(len(entry[k]) == 2 and float(entry[k][1]) >= 0 for k in ("plain", "contrast"))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise bad(f"hu_table[{name!r}] must be {{'plain': [mean, std], 'contrast': [mean, std]}} with std >= 0.",
                          "fix that entry of the config.")
        lo, hi = self.contrast_range
        if not 0.0 <= lo <= hi <= 1.0:
            raise bad(f"contrast_range must satisfy 0 <= low <= high <= 1, not {self.contrast_range}.", "use e.g. [0, 1].")
        g_lo, g_hi = self.stomach_gas_fraction
        fractions = (g_lo, g_hi, self.bowel_gas_fraction, self.bowel_fill)
        if not (0.0 <= g_lo <= g_hi < 1.0 and all(0.0 <= f < 1.0 for f in fractions)):
            raise bad("gas fractions and bowel_fill must lie in [0, 1).", "fix stomach_gas_fraction / bowel_* settings.")
        for name in ("hu_offset_sd", "psf_sigma_mm", "noise_correlation_mm", "bias_sd", "global_scale_sd",
                     "body_axes_sd", "organ_shift_sd_mm", "organ_scale_sd", "organ_rotation_sd_deg", "deform_sd_mm"):
            if float(getattr(self, name)) < 0:
                raise bad(f"{name} must be >= 0.", f"set {name} to 0 to disable it.")
        for name in ("bias_scale_mm", "bowel_scale_mm", "deform_scale_mm"):
            if float(getattr(self, name)) <= 0:
                raise bad(f"{name} must be > 0.", f"give {name} in mm.")
        if self.global_scale_sd > 0.15 or self.organ_scale_sd > 0.25 or self.body_axes_sd > 0.15:
            raise bad("scale variability too large (global <= 0.15, organ <= 0.25, body axes <= 0.15).",
                      "reduce the *_scale_sd / body_axes_sd settings.")
