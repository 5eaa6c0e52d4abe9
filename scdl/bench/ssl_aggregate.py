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


#: Two-sided t quantiles t(0.975, df) and one-sided t(0.80, df) for df = 1..30 (scipy.stats.t.ppf values),
#: for the minimum detectable effect; beyond 30 the normal values 1.960 and 0.842.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T80 = (1.376, 1.061, 0.978, 0.941, 0.920, 0.906, 0.896, 0.889, 0.883, 0.879, 0.876, 0.873, 0.870, 0.868, 0.866,
        0.865, 0.863, 0.862, 0.861, 0.860, 0.859, 0.858, 0.858, 0.857, 0.856, 0.856, 0.855, 0.855, 0.854, 0.854)


def paired_difference(a: Sequence[float], b: Sequence[float], *, resamples: int = 10000,
                      seed: int = 0) -> dict[str, Any]:
    """Paired comparison of two configurations run with the same seeds (same data order and initialisation).

    Args:
        a, b: one value per seed, in the same seed order (e.g. the smallest-classes Dice of SCDL and of CPS).
        resamples: bootstrap resamples of the seeds; seed: the bootstrap's random seed (deterministic).

    Returns:
        ``{"diffs": [a_i - b_i], "mean", "ci95": [lo, hi] (percentile bootstrap of the mean difference; None
        with fewer than 2 seeds), "sd", "n", "mde": the minimum detectable effect of this design, i.e. the true
        mean difference a paired t-test at two-sided α = 0.05 would detect with 80 % power given the observed
        spread of the differences, (t(0.975, n-1) + t(0.80, n-1)) · sd / √n (None with fewer than 2 seeds)}``.
    """
    if len(a) != len(b):
        raise ValueError(f"paired values need the same seeds: {len(a)} vs {len(b)}")
    diffs = np.array([float(x) - float(y) for x, y in zip(a, b)
                      if x is not None and y is not None and math.isfinite(float(x)) and math.isfinite(float(y))])
    n = int(diffs.size)
    out: dict[str, Any] = {"diffs": [float(d) for d in diffs], "n": n,
                           "mean": float(diffs.mean()) if n else math.nan, "sd": math.nan, "ci95": None, "mde": None}
    if n < 2:
        return out
    sd = float(diffs.std(ddof=1))
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, size=(int(resamples), n))].mean(axis=1)
    df = n - 1
    t1 = _T975[df - 1] if df <= 30 else 1.960
    t2 = _T80[df - 1] if df <= 30 else 0.842
    out.update(sd=sd, ci95=[float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
               mde=float((t1 + t2) * sd / math.sqrt(n)))
    return out


def paired_comparisons(runs: Sequence[Mapping[str, Any]], classes: Sequence[str], small: Sequence[str],
                       reference: str) -> dict[str, Any]:
    """Every configuration against ``reference`` (e.g. ``cps``, SCDL's host), paired by seed, for the
    foreground and the smallest-classes means: ``{config: {"foreground": paired_difference, "small": ...}}``.
    Seeds that only one of the two configurations ran are left out."""
    per: dict[str, dict[int, dict[str, Any]]] = {}
    for run in runs:
        per.setdefault(str(run["config"]), {})[int(run["seed"])] = run_summary(run["class_dice"], classes, small)
    if reference not in per:
        return {}
    out: dict[str, Any] = {}
    for config, by_seed in per.items():
        if config == reference:
            continue
        seeds = sorted(set(by_seed) & set(per[reference]))
        out[config] = {key: {**paired_difference([by_seed[s][key] for s in seeds],
                                                 [per[reference][s][key] for s in seeds]), "seeds": seeds}
                       for key in ("foreground", "small")}
    return out


def variant_comparisons(runs: Sequence[Mapping[str, Any]], classes: Sequence[str], small: Sequence[str],
                        bases: Mapping[str, str]) -> dict[str, Any]:
    """Each knob variant against its base configuration, paired by seed (:func:`paired_comparisons`).

    Args:
        bases: ``{variant name: base name}``, e.g. ``{"cps-scdl@lam=0.2": "cps-scdl"}``; plain configurations
            are not in it.

    Returns:
        ``{variant: {"reference": base, "foreground": paired_difference, "small": ...}}``; a variant whose base
        was not run is left out.
    """
    out: dict[str, Any] = {}
    for base in dict.fromkeys(bases.values()):
        members = {base} | {v for v, b in bases.items() if b == base}
        compared = paired_comparisons([r for r in runs if str(r["config"]) in members], classes, small, base)
        for config, metrics in compared.items():
            out[config] = {"reference": base, **metrics}
    return out
