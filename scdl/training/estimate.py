"""The estimate of a training run's time and memory, from a formula calibrated on measured steps.

The one owner of the numbers: ``scdl train --check-only`` prints it in its plan line (:func:`plan_line`) and
the SCDLTrain panel shows :meth:`Estimate.text` (SCDLTrain/SCDLTrainLib/estimate.py forwards here).

Calibration (:data:`MEASURED`): ``python bench/step.py --sizes 32 48 --width W --repeats 3`` for W = 4, 8, 16
and ``--sizes 64 --width 16 --repeats 2``, on the development machine (2-core x86-64 CPU shared with other
jobs, torch 2.13 CPU, ONE torch thread): process CPU seconds per training step (forward + backward + SGD,
2 labeled + 2 unlabeled patches, 14 classes; median of the timed rounds) and peak resident memory.

Formulas, fitted to those points by least squares when first used:

- time per iteration: ``log t = c0 + c1·log V + c2·log w + c3·(log w)²`` per framework (V = patch voxels,
  w = VNet width); it reproduces every measured point within 9 %. Scaled linearly with the number of
  patches per step relative to the benchmark's (supervised: ``labeled_batch / 2``; CPS: ``(labeled_batch +
  unlabeled_batch) / 4``) and by ``accumulate``.
- peak memory: ``RSS = m0 + m1·V + m2·V·w`` (MiB) per framework (within 14 % of every measured point), the
  activation part scaled with the patches per step like the time.

Checked against whole runs: bench/train.py (docs/training.md: CPS+SCDL, cpu preset, 48³, width 8) measured
1.60 CPU s/it and 1076 MiB, the formula gives 1.59 s and 973 MiB; the run of docs/slicer_train.md (32³, width 8,
300 iterations, 6 validation passes) took 161 CPU s in all (imports, check, validation included) and peaked at
858 MiB, the formula gives 135 s and 597 MiB for its training steps: validation passes need more memory.

What it leaves out, and the panel says so: validation passes, preprocessing of the cohort, data loading,
more than one CPU thread (faster), other CPUs, and GPUs (not calibrated: no estimate is shown; the live ETA
of the run replaces any estimate after the first iterations). Outside the measured range (patch 32-64,
width 4-16) the numbers are extrapolations and are flagged.

A fine-tune with the "keep what you know" term (scdl.training.keep) also runs the initial model's networks
forward on every patch (no backward): counted as one third of a trained network's forward + backward each
(an assumption, not measured). numpy only, no torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

#: (patch edge, width, CPU s/step supervised, cps, cps-scdl, peak RSS MiB supervised, cps, cps-scdl).
MEASURED: tuple[tuple[float, ...], ...] = (
    (32, 4, 0.11, 0.29, 0.31, 400, 478, 480),
    (48, 4, 0.38, 0.99, 1.03, 535, 805, 800),
    (32, 8, 0.20, 0.46, 0.47, 444, 538, 548),
    (48, 8, 0.61, 1.45, 1.52, 656, 981, 1002),
    (32, 16, 0.42, 0.89, 0.90, 537, 690, 754),
    (48, 16, 1.30, 2.97, 2.98, 954, 1459, 1394),
    (64, 16, 3.56, 8.68, 8.69, 1415, 2492, 2535),
)
#: Column of each framework in :data:`MEASURED` (time; memory is 3 columns further).
COLUMNS = {"supervised": 2, "cps": 3, "cps-scdl": 4}
#: Patches through the networks per step in the benchmark: supervised 1 net x 2, CPS 2 nets x (2 + 2).
BENCH_PATCHES = {"supervised": 2.0, "cps": 8.0, "cps-scdl": 8.0}
MEASURED_PATCH = (32, 64)
MEASURED_WIDTH = (4, 16)
REFERENCE = "one thread of a 2-core x86-64 CPU (development machine, torch 2.13)"


@dataclass
class Estimate:
    """Seconds per iteration, total hours and peak memory of a planned run (None where not calibrated)."""

    seconds_per_iteration: Optional[float]
    total_seconds: Optional[float]
    peak_memory_mib: Optional[float]
    extrapolated: bool
    note: str

    def text(self) -> str:
        """One paragraph for the panel."""
        if self.seconds_per_iteration is None:
            return f"Estimate: {self.note}"
        flag = " (extrapolated beyond the measured range)" if self.extrapolated else ""
        return (f"Estimate{flag}: about {self.seconds_per_iteration:.2g} s per iteration, "
                f"{format_seconds(self.total_seconds)} in all; the training steps need about "
                f"{self.peak_memory_mib / 1024:.1f} GiB of memory. "
                f"{self.note}")


@lru_cache(maxsize=None)
def _fits() -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    import numpy as np

    table = np.array(MEASURED, dtype=float)
    volume, width = table[:, 0] ** 3, table[:, 1]
    design_t = np.stack([np.ones_like(volume), np.log(volume), np.log(width), np.log(width) ** 2], axis=1)
    design_m = np.stack([np.ones_like(volume), volume, volume * width], axis=1)
    out = {}
    for framework, column in COLUMNS.items():
        time_coef = np.linalg.lstsq(design_t, np.log(table[:, column]), rcond=None)[0]
        mem_coef = np.linalg.lstsq(design_m, table[:, column + 3], rcond=None)[0]
        out[framework] = (tuple(float(c) for c in time_coef), tuple(float(c) for c in mem_coef))
    return out


def step_seconds(framework: str, patch: int, width: int) -> float:
    """Fitted CPU seconds of one benchmark step (2 + 2 patches, 1 thread)."""
    (c0, c1, c2, c3), _ = _fits()[framework]
    lw = math.log(width)
    return math.exp(c0 + c1 * math.log(float(patch) ** 3) + c2 * lw + c3 * lw * lw)


def step_memory_mib(framework: str, patch: int, width: int, scale: float = 1.0) -> float:
    """Fitted peak resident memory (MiB); ``scale`` multiplies the activation part (patches per step)."""
    _, (m0, m1, m2) = _fits()[framework]
    volume = float(patch) ** 3
    return m0 + scale * (m1 * volume + m2 * volume * width)


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``"1 min 15 s"``; ``8.4`` -> ``"8 s"``; ``7300`` -> ``"2 h 1 min"``."""
    seconds = int(round(max(float(seconds), 0.0)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def estimate(framework: str, patch: int, width: int, iterations: int, labeled_batch: int = 2,
             unlabeled_batch: int = 2, accumulate: int = 1, device: str = "cpu", teachers: int = 0) -> Estimate:
    """Estimate a run (see the module docstring for what is and is not included). ``teachers``: frozen
    networks run forward each step (the keep-what-you-know term of a fine-tune)."""
    if framework not in COLUMNS:
        return Estimate(None, None, None, False, f"no calibration for the framework {framework}.")
    if str(device).startswith("cuda"):
        return Estimate(None, None, None, False,
                        "not calibrated for GPUs; the run shows its own ETA after the first iterations.")
    if framework == "supervised":
        patches = float(labeled_batch)
    else:
        patches = 2.0 * (labeled_batch + unlabeled_batch)
    scale = patches / BENCH_PATCHES[framework]
    per_iteration = step_seconds(framework, patch, width) * scale * max(int(accumulate), 1)
    if teachers:
        trained = 1 if framework == "supervised" else 2
        per_iteration *= 1.0 + int(teachers) / (3.0 * trained)
    memory = step_memory_mib(framework, patch, width, scale)
    extrapolated = not (MEASURED_PATCH[0] <= patch <= MEASURED_PATCH[1] and MEASURED_WIDTH[0] <= width <= MEASURED_WIDTH[1])
    auto = "" if device == "cpu" else " With device 'auto' a GPU, if present, is much faster (not calibrated)."
    keep = (" The initial model's forward passes (keep what you know) are counted as a third of a trained "
            "network's step each (not measured).") if teachers else ""
    note = (f"Calibrated on {REFERENCE}; validation, preprocessing and data loading are not included.{keep}{auto}")
    return Estimate(per_iteration, per_iteration * int(iterations), memory, extrapolated, note)


def patch_edge(patch_size) -> int:
    """The edge of the cube with the patch's voxel count (the formula's ``patch``)."""
    x, y, z = (int(v) for v in patch_size)
    return int(round((x * y * z) ** (1.0 / 3.0)))


def estimate_run(config: dict, device: str = "cpu", teachers: int = 0) -> Estimate:
    """:func:`estimate` of a resolved training config (width, patch, batch, accumulation, framework);
    ``config["patch_size"]`` must be resolved (not ``"init"``)."""
    return estimate(str(config["framework"]), patch_edge(config["patch_size"]), int(config["network"]["n_filters"]),
                    int(config["iterations"]), int(config["labeled_batch"]), int(config["unlabeled_batch"]),
                    int(config.get("accumulate", 1)), str(device), teachers)


def plan_line(config: dict, device: str, preset_note: str = "", teachers: int = 0) -> str:
    """What ``scdl train`` would run, in one line: preset, framework, iterations, patch, batch, device and the
    time and memory estimate."""
    unlabeled = int(config["unlabeled_batch"]) if str(config["framework"]) != "supervised" else 0
    batch = f"{int(config['labeled_batch'])} labeled" + (f" + {unlabeled} unlabeled" if unlabeled else "")
    if int(config.get("accumulate", 1)) > 1:
        batch += f" x {int(config['accumulate'])} micro-batches"
    patch = "x".join(str(int(v)) for v in config["patch_size"])
    preset = f"preset {config.get('preset')}" + (f" ({preset_note})" if preset_note else "")
    run = estimate_run(config, device, teachers)
    if run.seconds_per_iteration is None:
        guess = f"no estimate ({run.note.rstrip('.')})"
    else:
        flag = ", extrapolated" if run.extrapolated else ""
        guess = (f"about {run.seconds_per_iteration:.2g} s per iteration, {format_seconds(run.total_seconds)} in "
                 f"all, {run.peak_memory_mib / 1024:.1f} GiB for the training steps ({REFERENCE}{flag}; "
                 "validation and preprocessing not included)")
    width = int(config["network"]["n_filters"])
    return (f"plan: {preset}; {config['framework']}, {int(config['iterations'])} iterations, patch {patch}, "
            f"batch {batch}, width {width}, device {device}; estimate: {guess}.")
