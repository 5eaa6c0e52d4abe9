"""Overlay preview: an axial and a coronal CT slice with the organ label map in colour, and a legend.

The slices go through the largest foreground: the axial slice with the most labelled voxels and the coronal
slice with the most labelled voxels. Both images are shown in radiological convention (patient's right on
the left of the image, anterior up in the axial view, superior up in the coronal view), whatever the
orientation of the input, with the physical aspect ratio of the voxels. Rendering uses matplotlib's Agg
canvas directly (no pyplot state, no display needed); the PNG is written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from scdl.io.atomic import atomic_path

#: Default CT display window (abdomen soft tissue), HU.
ABDOMEN_WINDOW = (-160.0, 240.0)

Legend = Mapping[int, tuple[str, Sequence[float]]]


def legend_from_table(table: Any) -> dict[int, tuple[str, tuple[float, float, float]]]:
    """value -> (name, (r, g, b) in [0, 1]) from a ``LabelTable`` (colours given as 0..255 or 0..1)."""
    legend = {}
    for entry in table.entries:
        value = int(entry.value)
        if value == 0:
            continue
        if hasattr(entry, "color_float"):
            rgb = tuple(float(c) for c in entry.color_float)
        else:
            rgb = tuple(float(c) for c in tuple(entry.color)[:3])
            if max(rgb, default=0.0) > 1.0:
                rgb = tuple(c / 255.0 for c in rgb)
        legend[value] = (str(entry.name), rgb[:3])
    return legend


def _fallback_colour(value: int) -> tuple[float, float, float]:
    from matplotlib import colormaps

    return tuple(colormaps["tab20"](value % 20)[:3])


def _oriented_arrays(ct, labels):
    """CT and labels as (z, y, x) arrays in LPS orientation (x -> left, y -> posterior, z -> superior)."""
    import SimpleITK as sitk

    if labels.GetSize() != ct.GetSize():
        raise ValueError(f"the label map ({labels.GetSize()}) is not on the CT's grid ({ct.GetSize()})")
    ct_o = sitk.DICOMOrient(ct, "LPS")
    lab_o = sitk.DICOMOrient(labels, "LPS")
    spacing = ct_o.GetSpacing()  # (x, y, z)
    return sitk.GetArrayViewFromImage(ct_o), sitk.GetArrayViewFromImage(lab_o), spacing, (ct_o, lab_o)


def choose_slices(labels: np.ndarray) -> tuple[int, int]:
    """(axial z, coronal y) indices of the (z, y, x) label array with the most foreground voxels (centre if none)."""
    fg = labels > 0
    per_z = fg.sum(axis=(1, 2))
    per_y = fg.sum(axis=(0, 2))
    z = int(np.argmax(per_z)) if per_z.any() else labels.shape[0] // 2
    y = int(np.argmax(per_y)) if per_y.any() else labels.shape[1] // 2
    return z, y


def _colour_lookup(legend: Legend, max_value: int, alpha: float) -> np.ndarray:
    lut = np.zeros((max_value + 1, 4), dtype=np.float32)
    for value in range(1, max_value + 1):
        rgb = legend[value][1] if value in legend else _fallback_colour(value)
        lut[value, :3] = rgb[:3]
        lut[value, 3] = alpha
    return lut


def render_overlay(
    ct,
    labels,
    path: Union[str, os.PathLike],
    legend: Optional[Union[Legend, Any]] = None,
    window: tuple[float, float] = ABDOMEN_WINDOW,
    alpha: float = 0.45,
    title: Optional[str] = None,
    dpi: int = 110,
) -> Path:
    """Write an overlay PNG of ``labels`` on ``ct``.

    Args:
        ct: 3D ``SimpleITK.Image`` in HU.
        labels: integer ``SimpleITK.Image`` on the same grid (e.g. ``scdl segment``'s output).
        path: the PNG to write (atomic: a failed render leaves nothing).
        legend: value -> (name, rgb in [0, 1]) or a ``LabelTable``; unnamed values get "label N".
        window: CT display window in HU. alpha: opacity of the organ colours.
        title: optional figure title.

    Returns:
        the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if legend is not None and hasattr(legend, "entries"):
        legend = legend_from_table(legend)
    legend = dict(legend or {})
    ct_arr, lab_arr, spacing, _keep = _oriented_arrays(ct, labels)
    lab_arr = np.asarray(lab_arr)
    if lab_arr.size and lab_arr.min() < 0:
        lab_arr = np.where(lab_arr > 0, lab_arr, 0)
    z, y = choose_slices(lab_arr)
    max_value = int(lab_arr.max(initial=0))
    lut = _colour_lookup(legend, max_value, alpha)
    lo, hi = window

    views = [
        ("axial", ct_arr[z], lab_arr[z], spacing[1] / spacing[0]),
        ("coronal", ct_arr[:, y, :][::-1], lab_arr[:, y, :][::-1], spacing[2] / spacing[0]),
    ]
    present = [int(v) for v in np.unique(lab_arr) if v > 0]
    widths = [float(v[1].shape[1]) for v in views]
    height = max(v[1].shape[0] * v[3] for v in views)
    legend_cols = max(1, -(-len(present) // 22))
    image_in = 9.0
    legend_in = 1.9 * legend_cols if present else 1.2
    fig_h = image_in * height / sum(widths) + (0.6 if title else 0.35)
    fig = Figure(figsize=(image_in + legend_in, max(fig_h, 2.5)), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 3, width_ratios=[*widths, sum(widths) * legend_in / image_in], wspace=0.02,
                            left=0.005, right=0.995, bottom=0.01, top=1.0 - (0.5 if title else 0.3) / max(fig_h, 2.5))
    for k, (name, img, lab, aspect) in enumerate(views):
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(np.asarray(img, dtype=np.float32), cmap="gray", vmin=lo, vmax=hi, aspect=aspect,
                  interpolation="nearest")
        ax.imshow(lut[np.asarray(lab)], aspect=aspect, interpolation="nearest")
        index = z if name == "axial" else y
        ax.set_title(f"{name} (slice {index})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.01, 0.5, "R", transform=ax.transAxes, color="yellow", fontsize=9, va="center")
        ax.text(0.97, 0.5, "L", transform=ax.transAxes, color="yellow", fontsize=9, va="center")
    legend_ax = fig.add_subplot(grid[0, 2])
    legend_ax.axis("off")
    handles = [Patch(facecolor=tuple(lut[v, :3]), edgecolor="none",
                     label=legend[v][0] if v in legend else f"label {v}") for v in present]
    if handles:
        legend_ax.legend(handles=handles, loc="upper left", ncol=legend_cols, fontsize=7, frameon=False,
                         handlelength=1.2, borderaxespad=0.0, columnspacing=0.8)
    else:
        legend_ax.text(0.0, 0.95, "no organ found", fontsize=8, va="top")
    if title:
        fig.suptitle(title, fontsize=10)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor="white")
    return target
