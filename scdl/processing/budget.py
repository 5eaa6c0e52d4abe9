"""Is the model grid of an image something this machine can hold? Checked before any resampling.

A CT is resampled to the model's voxel size before the networks see it. A wrong voxel size in a header (100 mm
instead of 1 mm), or a model card with a tiny one (0.05 mm), turns a small scan into a grid of billions of
voxels: a resampling that ends in an allocation failure (a traceback), or 119,164 sliding windows and 7 hours
(measured, issue 25). :func:`plan_size` computes the model grid, the windows and the memory from the geometry
alone; :func:`check_model_grid` refuses, with these numbers, a grid whose memory is beyond the machine's
physical memory or whose windows exceed :data:`MAX_WINDOWS`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from scdl.errors import ScdlError
from scdl.processing.windows import scan_interval

#: Bytes per model-grid voxel that inference holds at once: the float32 network input, the float32 running
#: maximum probability, the uint8 labels and the float32 resampling buffer (the windows' logits stream
#: through slabs, :mod:`scdl.inference.sliding_window`). Training preprocessing needs less (image + labels).
INFERENCE_BYTES_PER_VOXEL = 13
#: Plus a float32 uncertainty map.
UNCERTAINTY_BYTES_PER_VOXEL = 4
#: Bytes per model-grid voxel that preprocessing a training case holds: the float32 image, the float32 resampling
#: buffer and the uint8 labels.
TRAINING_BYTES_PER_VOXEL = 9
#: A whole-body CT (2 m at 1.5 mm, 96³ windows, overlap 0.5) needs about 700 windows; 20,000 is far beyond any
#: scan and hours of work even on a GPU.
MAX_WINDOWS = 20_000


@dataclass(frozen=True)
class GridPlan:
    """What the model grid of one image costs."""

    size_xyz: tuple[int, int, int]      # the resampled (padded) grid, voxels
    spacing_mm: tuple[float, float, float]
    windows: int
    bytes: int

    @property
    def voxels(self) -> int:
        return int(math.prod(self.size_xyz))

    def describe(self) -> str:
        size = " x ".join(str(n) for n in self.size_xyz)
        spacing = " x ".join(f"{v:g}" for v in self.spacing_mm)
        return (f"the model's {spacing} mm grid of this image has {size} voxels ({self.voxels:.3g}), "
                f"{self.windows:,} windows and needs about {format_bytes(self.bytes)} of memory")


def format_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} PiB"


def physical_memory_bytes() -> Optional[int]:
    """Total physical memory of this machine (None where it cannot be told)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    try:                                            # Windows
        import ctypes

        class _Status(ctypes.Structure):
            _fields_ = [("dwLength", ctypes.c_ulong), ("dwMemoryLoad", ctypes.c_ulong),
                        ("ullTotalPhys", ctypes.c_ulonglong), ("ullAvailPhys", ctypes.c_ulonglong),
                        ("ullTotalPageFile", ctypes.c_ulonglong), ("ullAvailPageFile", ctypes.c_ulonglong),
                        ("ullTotalVirtual", ctypes.c_ulonglong), ("ullAvailVirtual", ctypes.c_ulonglong),
                        ("ullAvailExtendedVirtual", ctypes.c_ulonglong)]

        status = _Status()
        status.dwLength = ctypes.sizeof(_Status)
        if ctypes.windll.kernel32.GlobalMemoryStatusEx(ctypes.byref(status)):   # type: ignore[attr-defined]
            return int(status.ullTotalPhys)
    except Exception:  # noqa: BLE001 - no way to tell: no memory check
        pass
    return None


def _windows(size_dhw: Sequence[int], roi_dhw: Sequence[int], overlap: float) -> int:
    steps = scan_interval(size_dhw, roi_dhw, overlap)
    count = 1
    for size, roi, step in zip(size_dhw, roi_dhw, steps):
        roi = min(int(roi), int(size))
        count *= 1 + max(0, math.ceil((int(size) - roi) / step))
    return count


def plan_size(image: Any, preprocessing: Any, overlap: float = 0.5,
              bytes_per_voxel: int = INFERENCE_BYTES_PER_VOXEL, window: Optional[Sequence[int]] = None) -> GridPlan:
    """The model grid of ``image`` (a ``SimpleITK.Image``) under a card's ``preprocessing`` (dict or
    :class:`~scdl.processing.pipeline.Preprocessor`): size, windows, memory. Touches no voxel. ``window``
    (D, H, W): the sliding window (default: the preprocessing's patch)."""
    from scdl.processing.grid import Grid
    from scdl.processing.pipeline import Preprocessor

    pre = preprocessing if isinstance(preprocessing, Preprocessor) else Preprocessor(preprocessing)
    ctx = pre.plan(Grid.from_image(image))
    shape_dhw = ctx.shape
    windows = _windows(shape_dhw, tuple(window) if window is not None else pre.patch_size, overlap)
    voxels = math.prod(int(n) for n in shape_dhw)
    spacing = tuple(float(v) for v in ctx.model_grid.spacing)
    return GridPlan(tuple(int(n) for n in reversed(shape_dhw)), spacing, windows, voxels * int(bytes_per_voxel))


def check_model_grid(plan: GridPlan, path: Optional["os.PathLike[str] | str"] = None,
                     memory: Optional[int] = None, max_windows: Optional[int] = MAX_WINDOWS) -> None:
    """Refuse (one ScdlError with the numbers) a model grid beyond this machine: more memory than it has
    (``memory``, default :func:`physical_memory_bytes`) or more than ``max_windows`` windows (None: no limit,
    for training, which samples patches instead of sliding windows)."""
    memory = physical_memory_bytes() if memory is None else memory
    fix = ("check the voxel size in the image's header (a wrong spacing is the usual cause) and the model card's "
           "preprocessing.spacing_mm")
    if memory is not None and plan.bytes > memory:
        raise ScdlError(f"{plan.describe()}, more than this machine's {format_bytes(memory)}; nothing was "
                        f"started.", path, fix + ".")
    if max_windows is not None and plan.windows > max_windows:
        raise ScdlError(f"{plan.describe()}: more than {max_windows:,} windows would take hours and cannot be "
                        f"meant; nothing was started.", path, fix + ".")
