"""Training curves as one PNG: loss terms, learning rate and validation Dice against the iteration.

Three panels: (1) every loss term (log scale when all positive), (2) the learning rate, (3) validation mean
Dice (thick) and per-class Dice (thin). Rendered with matplotlib's Agg backend (no display needed) and
written atomically.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

#: Columns of the log that are not loss terms.
_NOT_LOSSES = {"iteration", "elapsed_s", "lr", "it_per_s", "data_wait", "eta_s", "w_cps", "w_consistency"}


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and math.isfinite(float(value)):
            xs.append(float(row["iteration"]))
            ys.append(float(value))
    return xs, ys


def plot_training_curves(rows: Sequence[dict[str, Any]], val_rows: Sequence[dict[str, Any]],
                         out_png: os.PathLike | str, title: str = "SCDL training") -> Path:
    """Draw the curves of a run to ``out_png`` (atomic write) and return its path.

    Args:
        rows: training log rows with ``iteration``, ``lr`` and loss terms (``total``, ``sup``, ``cps``, ...).
        val_rows: validation rows with ``iteration``, ``mean_dice`` and ``dice_<class>``.
    """
    from matplotlib.figure import Figure  # a bare Figure renders with Agg; pyplot (and a display) is never used

    from scdl.io.atomic import atomic_path

    fig = Figure(figsize=(12, 3.6), dpi=100, layout="constrained")
    ax_loss, ax_lr, ax_val = fig.subplots(1, 3)
    loss_keys: list[str] = []
    for row in rows:
        loss_keys += [k for k in row if k not in _NOT_LOSSES and k not in loss_keys and not k.startswith("dice")]
    positive = True
    for key in loss_keys:
        xs, ys = _series(rows, key)
        if not xs:
            continue
        positive = positive and min(ys) > 0
        ax_loss.plot(xs, ys, label=key, linewidth=2.0 if key == "total" else 1.0)
    if positive and loss_keys:
        ax_loss.set_yscale("log")
    ax_loss.set_title("loss terms")
    ax_loss.set_xlabel("iteration")
    if loss_keys:
        ax_loss.legend(fontsize=7, ncol=2)
    xs, ys = _series(rows, "lr")
    ax_lr.plot(xs, ys, color="tab:gray")
    ax_lr.set_title("learning rate")
    ax_lr.set_xlabel("iteration")
    if val_rows:
        for key in [k for k in val_rows[0] if k.startswith("dice_")]:
            xs, ys = _series(val_rows, key)
            if xs:
                ax_val.plot(xs, ys, linewidth=0.8, alpha=0.6, label=key[5:])
        xs, ys = _series(val_rows, "mean_dice")
        ax_val.plot(xs, ys, color="black", linewidth=2.2, marker="o", markersize=3, label="mean")
        ax_val.set_ylim(0.0, 1.0)
        ax_val.legend(fontsize=6, ncol=2)
    else:
        ax_val.text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=ax_val.transAxes)
    ax_val.set_title("validation Dice")
    ax_val.set_xlabel("iteration")
    fig.suptitle(title)
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    return out_png
