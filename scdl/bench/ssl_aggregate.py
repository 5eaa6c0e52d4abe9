"""The benchmark's statistics (pure NumPy).

For one run (configuration x seed):
    class Dice  = mean over the test cases of that class's Dice (cases where the class is absent from both
                  prediction and reference, NaN, are skipped);
    foreground  = mean of the class Dice over the C-1 foreground classes;
    small       = mean of the class Dice over the smallest classes (:func:`smallest_classes`).
Over seeds, for each of those numbers: mean and sample standard deviation (ddof = 1; NaN with one seed).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np


def class_means(dice: np.ndarray) -> np.ndarray:
    """(n_cases, K) Dice -> (K,) mean over cases, ignoring NaN; NaN for a class that is NaN in every case."""
    dice = np.asarray(dice, dtype=np.float64)
    if dice.ndim != 2:
        raise ValueError(f"expected (cases, classes), got shape {dice.shape}")
    finite = np.isfinite(dice)
    counts = finite.sum(axis=0)
    sums = np.where(finite, dice, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _nanmean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else math.nan


def smallest_classes(volumes: Mapping[str, float], fraction: float = 1.0 / 3.0) -> list[str]:
    """The ``max(1, round(n·fraction))`` classes with the smallest volume (round half up; ties keep the
    mapping's order). 13 Synapse organs, fraction 1/3 -> the 4 smallest."""
    names = list(volumes)
    if not names:
        return []
    k = max(1, int(math.floor(len(names) * float(fraction) + 0.5)))
    order = sorted(range(len(names)), key=lambda i: (float(volumes[names[i]]), i))
    return [names[i] for i in sorted(order[:k])]


def run_summary(class_dice: Sequence[float], classes: Sequence[str], small: Sequence[str]) -> dict[str, Any]:
    """One run's numbers: ``{"dice": {class: value}, "foreground": mean, "small": mean over ``small``}``."""
    if len(class_dice) != len(classes):
        raise ValueError(f"{len(class_dice)} Dice values for {len(classes)} classes")
    by_name = {name: float(v) for name, v in zip(classes, class_dice)}
    missing = [s for s in small if s not in by_name]
    if missing:
        raise ValueError(f"small classes {missing} are not among the scored classes")
    return {"dice": by_name, "foreground": _nanmean(list(by_name.values())),
            "small": _nanmean([by_name[s] for s in small])}


def mean_std(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "n"}`` of the finite values: sample std (ddof = 1), NaN when fewer than 2 values."""
    finite = np.array([float(v) for v in values if v is not None and math.isfinite(float(v))], dtype=np.float64)
    n = int(finite.size)
    mean = float(finite.mean()) if n else math.nan
    std = float(finite.std(ddof=1)) if n >= 2 else math.nan
    return {"mean": mean, "std": std, "n": n}


def aggregate(runs: Sequence[Mapping[str, Any]], classes: Sequence[str], small: Sequence[str]) -> dict[str, Any]:
    """Mean ± std over seeds for every configuration.

    Args:
        runs: one mapping per run with ``"config"``, ``"seed"`` and ``"class_dice"`` (list in ``classes`` order,
            already averaged over the test cases).
        classes: class names; small: the names averaged as ``small``.
    Returns:
        ``{config: {"seeds": [...], "dice": {class: mean_std}, "foreground": mean_std, "small": mean_std}}``
        in the order the configurations first appear in ``runs``.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    seeds: dict[str, list[int]] = {}
    for run in runs:
        summary = run_summary(run["class_dice"], classes, small)
        grouped.setdefault(str(run["config"]), []).append(summary)
        seeds.setdefault(str(run["config"]), []).append(int(run["seed"]))
    out: dict[str, Any] = {}
    for config, summaries in grouped.items():
        out[config] = {
            "seeds": seeds[config],
            "dice": {name: mean_std([s["dice"][name] for s in summaries]) for name in classes},
            "foreground": mean_std([s["foreground"] for s in summaries]),
            "small": mean_std([s["small"] for s in summaries]),
        }
    return out
