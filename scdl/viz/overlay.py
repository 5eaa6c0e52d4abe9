"""Overlay preview: axial, coronal and sagittal CT slices with the organ label map in colour, and a legend.

The slices go through the largest foreground (of the prediction and, when given, the reference): the axial,
coronal and sagittal slice with the most labelled voxels. The images are shown in radiological convention
(patient's right on the left of the image, anterior up in the axial view, superior up in the coronal and
sagittal views), whatever the orientation of the input, each drawn in millimetres (physical size and aspect).
With a ``reference`` label map its organs are drawn as contours in the organ's colour, so a missed organ or a
false positive inside another organ can be seen.

Colours: the preview uses its own palette (:data:`PREVIEW_COLOURS`) in which left and right organs and
neighbours (liver / stomach / spleen, the two kidneys and adrenals, aorta / IVC / portal veins) differ; the
Slicer terminology colours of the label table, where several organs share a hue, stay in the ``.seg.nrrd``.
Rendering uses matplotlib's Agg canvas directly (no pyplot state, no display needed); the PNG is written
atomically.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from scdl.io.atomic import atomic_path
from scdl.labels.protocol import LabelTableLike

#: Default CT display window (abdomen soft tissue), HU.
ABDOMEN_WINDOW = (-160.0, 240.0)

Legend = Mapping[int, tuple[str, Sequence[float]]]


#: Preview colours by (normalised) structure name: distinct for left/right and for neighbouring organs.
PREVIEW_COLOURS: dict[str, tuple[float, float, float]] = {
    "spleen": (0.58, 0.40, 0.85), "right kidney": (1.00, 0.85, 0.00), "left kidney": (1.00, 0.50, 0.00),
    "gallbladder": (0.20, 0.80, 0.20), "esophagus": (1.00, 0.45, 0.75), "liver": (0.85, 0.20, 0.15),
    "stomach": (0.10, 0.80, 0.90), "aorta": (0.95, 0.10, 0.55), "inferior vena cava": (0.20, 0.35, 1.00),
    "portal and splenic veins": (0.00, 0.55, 0.50), "pancreas": (0.95, 0.78, 0.55),
    "right adrenal gland": (0.60, 1.00, 0.40), "left adrenal gland": (0.55, 0.30, 0.10),
    "duodenum": (0.70, 0.70, 0.00), "urinary bladder": (0.60, 0.80, 1.00), "prostate/uterus": (0.60, 0.60, 0.60),
}


def _table_rgb(entry: Any) -> tuple[float, float, float]:
    if hasattr(entry, "color_float"):
        rgb = tuple(float(c) for c in entry.color_float)
    else:
        rgb = tuple(float(c) for c in tuple(entry.color)[:3])
        if max(rgb, default=0.0) > 1.0:
            rgb = tuple(c / 255.0 for c in rgb)
    return rgb[:3]


def legend_from_table(table: LabelTableLike, preview: bool = True) -> dict[int, tuple[str, tuple[float, float, float]]]:
    """value -> (name, (r, g, b) in [0, 1]) from a ``LabelTable``.

    ``preview``: the preview palette (:data:`PREVIEW_COLOURS`) for the structures it names; other structures
    keep their table colour unless an earlier one already has (nearly) that colour, then a distinct tab20
    colour. ``preview=False``: the table's own colours (0..255 or 0..1)."""
    from scdl.labels.names import normalize_name

    palette = {normalize_name(k): v for k, v in PREVIEW_COLOURS.items()}
    legend: dict[int, tuple[str, tuple[float, float, float]]] = {}
    used: list[tuple[float, float, float]] = []
    spare = iter(range(20))
    for entry in sorted(table.entries, key=lambda e: int(e.value)):
        value = int(entry.value)
        if value == 0:
            continue
        rgb = _table_rgb(entry)
        if preview:
            rgb = palette.get(normalize_name(entry.name), rgb)
            while any(sum((a - b) ** 2 for a, b in zip(rgb, u)) < 0.02 for u in used):
                k = next(spare, None)
                if k is None:
                    break
                rgb = _fallback_colour(k)
        used.append(rgb)
        legend[value] = (str(entry.name), rgb)
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


def choose_slices(labels: np.ndarray, with_x: bool = False):
    """(axial z, coronal y[, sagittal x]) indices of the (z, y, x) label array with the most foreground voxels
    (the centre where there is none)."""
    fg = labels > 0
    out = []
    for axes, size in (((1, 2), labels.shape[0]), ((0, 2), labels.shape[1]), ((0, 1), labels.shape[2])):
        per = fg.sum(axis=axes)
        out.append(int(np.argmax(per)) if per.any() else size // 2)
    return tuple(out) if with_x else (out[0], out[1])


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
    reference=None,
) -> Path:
    """Write an overlay PNG of ``labels`` on ``ct``.

    Args:
        ct: 3D ``SimpleITK.Image`` in HU.
        labels: integer ``SimpleITK.Image`` on the same grid (e.g. ``scdl segment``'s output).
        path: the PNG to write (atomic: a failed render leaves nothing).
        legend: value -> (name, rgb in [0, 1]) (used as given) or a ``LabelTable`` (preview palette,
            :func:`legend_from_table`); unnamed values get "label N".
        window: CT display window in HU. alpha: opacity of the organ colours.
        title: optional figure title.
        reference: optional integer ``SimpleITK.Image`` on the same grid, in the same numbering: drawn as
            contours (e.g. the ground truth of ``scdl demo``).

    Returns:
        the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if legend is not None and hasattr(legend, "entries"):
        legend = legend_from_table(legend)
    legend = dict(legend or {})
    ct_arr, lab_arr, spacing, _keep = _oriented_arrays(ct, labels)
    lab_arr = np.asarray(lab_arr)
    if lab_arr.size and lab_arr.min() < 0:
        lab_arr = np.where(lab_arr > 0, lab_arr, 0)
    ref_arr = None
    if reference is not None:
        _c, ref_arr, _s, _k = _oriented_arrays(ct, reference)
        ref_arr = np.where(np.asarray(ref_arr) > 0, np.asarray(ref_arr), 0)
    both = lab_arr if ref_arr is None else np.maximum(lab_arr > 0, ref_arr > 0).astype(np.uint8)
    z, y, x = choose_slices(both, with_x=True)
    max_value = int(max(lab_arr.max(initial=0), 0 if ref_arr is None else ref_arr.max(initial=0)))
    lut = _colour_lookup(legend, max_value, alpha)
    lo, hi = window
    sx, sy, sz = spacing
    nz, ny, nx = lab_arr.shape

    def cut(arr, view):
        if arr is None:
            return None
        if view == "axial":
            return arr[z]
        if view == "coronal":
            return arr[:, y, :][::-1]
        return arr[:, :, x][::-1]                  # sagittal: anterior on the left, superior up

    # (name, index, width mm, height mm)
    views = [("axial", z, nx * sx, ny * sy), ("coronal", y, nx * sx, nz * sz), ("sagittal", x, ny * sy, nz * sz)]
    present = sorted({int(v) for v in np.unique(lab_arr) if v > 0}
                     | (set() if ref_arr is None else {int(v) for v in np.unique(ref_arr) if v > 0}))
    widths = [v[2] for v in views]
    height = max(v[3] for v in views)
    legend_cols = max(1, -(-len(present) // 22))
    image_in = 11.0
    legend_in = 1.9 * legend_cols if present else 1.2
    fig_h = image_in * height / sum(widths) + (0.6 if title else 0.35)
    fig = Figure(figsize=(image_in + legend_in, max(fig_h, 2.5)), dpi=dpi)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 4, width_ratios=[*widths, sum(widths) * legend_in / image_in], wspace=0.02,
                            left=0.005, right=0.995, bottom=0.01, top=1.0 - (0.5 if title else 0.3) / max(fig_h, 2.5))
    for k, (name, index, w_mm, h_mm) in enumerate(views):
        ax = fig.add_subplot(grid[0, k])
        extent = (0.0, w_mm, h_mm, 0.0)            # millimetres: every view at physical size and aspect
        ax.imshow(np.asarray(cut(ct_arr, name), dtype=np.float32), cmap="gray", vmin=lo, vmax=hi, extent=extent,
                  interpolation="nearest")
        ax.imshow(lut[np.asarray(cut(lab_arr, name))], extent=extent, interpolation="nearest")
        ref = cut(ref_arr, name)
        if ref is not None:
            rows, cols = ref.shape
            xs = (np.arange(cols) + 0.5) * w_mm / cols
            ys = (np.arange(rows) + 0.5) * h_mm / rows
            for v in sorted(int(u) for u in np.unique(ref) if u > 0):
                ax.contour(xs, ys, (ref == v).astype(np.float32), levels=[0.5], colors=[tuple(lut[v, :3])],
                           linewidths=1.0)
        ax.set_xlim(0.0, w_mm)
        ax.set_ylim(h_mm, 0.0)
        ax.set_aspect("equal")
        ax.set_title(f"{name} (slice {index})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        if name == "sagittal":
            ax.text(0.01, 0.5, "A", transform=ax.transAxes, color="yellow", fontsize=9, va="center")
            ax.text(0.96, 0.5, "P", transform=ax.transAxes, color="yellow", fontsize=9, va="center")
        else:
            ax.text(0.01, 0.5, "R", transform=ax.transAxes, color="yellow", fontsize=9, va="center")
            ax.text(0.96, 0.5, "L", transform=ax.transAxes, color="yellow", fontsize=9, va="center")
    legend_ax = fig.add_subplot(grid[0, 3])
    legend_ax.axis("off")
    handles = [Patch(facecolor=tuple(lut[v, :3]), edgecolor="none",
                     label=legend[v][0] if v in legend else f"label {v}") for v in present]
    if ref_arr is not None and handles:
        handles.append(Line2D([0], [0], color="black", linewidth=1.0, label="lines: reference"))
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
