"""Settings of one SSL benchmark: cohort shape, training budget, and the keys that name its outputs.

Defaults are the CPU budget calibrated in docs/ssl_benchmark.md (6 configurations x 3 seeds in <= 40 min
on an idle 2-core machine). Everything not listed here is the ``cpu`` preset of ``scdl train`` (2 + 2
patches per step, class-aware sampling 0.5, intensity/noise augmentation, the paper's loss weights).

Output keys: the cohort folder is keyed by :meth:`SSLBenchSettings.cohort_key`, every training run by
:meth:`SSLBenchSettings.run_key`, so a re-run with the same settings reuses finished runs and a changed
setting never mixes results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from scdl.errors import ScdlError
from scdl.training.config import OPTIMIZERS


#: Cohorts of ``--cohort``; shapes of ``--shape``: (labeled, unlabeled) training cases.
COHORTS: tuple[str, ...] = ("phantom", "anatomy")
SHAPES: dict[str, tuple[int, int]] = {
    "synapse20": (4, 16),      # the paper's Synapse 20 % setting: 4 labeled / 16 unlabeled
    "amos5": (2, 38),          # AMOS 5 %: 2 labeled of 40 training cases
}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class SSLBenchSettings:
    """Every setting of a benchmark run.

    Attributes:
        labeled, unlabeled, test: cohort shape (Synapse 20 % setting: 4 + 16, and 10 test cases). No
            validation case: each run keeps its final networks (see docs/ssl_benchmark.md).
        cohort_seed: seed of the phantom cohort (the same cohort for every configuration and seed).
        spacing_mm: isotropic voxel size of the phantoms AND of the model grid.
        width: VNet n_filters (paper: 16).
        patch: cubic training patch / sliding window edge in voxels (multiple of 16; paper: 96).
        iterations: training iterations of every run (paper: 17000).
        optimizer, lr: the runs' optimiser (``optimizer.name``) and base learning rate, poly decay either way.
            Paper: SGD, 0.01. Default here: AdamW, 0.01: at this CPU budget the paper's SGD learns almost nothing
            (220 iterations, foreground Dice on the test phantoms: supervised 0.005 with SGD 0.01, 0.051 with
            AdamW 0.003, 0.088 with AdamW 0.01; CPS+SCDL 0.073 with AdamW 0.003, 0.096 with AdamW 0.01;
            docs/ssl_benchmark.md, "Optimiser").
        seeds: training seeds; every configuration runs once per seed.
        threads: torch threads of the training child processes and of the scoring (OMP_NUM_THREADS).
        workers: data-loader processes of each training run (0: in the training process).
        device: ``cpu`` (the calibrated budget), ``auto`` or ``cuda[:N]`` for a bigger budget.
        sw_batch_size: sliding windows per forward when scoring (and in the trainer's final validation). The
            predictions do not depend on it; on the CPU 4 windows per forward segmented a 4 mm test case 3.4x
            faster than 1 (1.3 s vs 4.4 s, width 8, 32³ windows, overlap 0.5, 2 threads).
        small_fraction: the "smallest classes" summary averages the round(C x fraction) foreground classes
            with the smallest mean volume in the test references (1/3: 4 of the 13 Synapse organs).
        overrides: extra ``KEY=VALUE`` training settings applied to every run (``scdl train --set``).
        cohort: ``phantom`` (default: the parametric phantoms of the published tables) or ``anatomy`` (synthetic
            CTs from real label maps, split by anatomy: :mod:`scdl.bench.ssl_anatomy`).
        train_anatomies, test_anatomies: the anatomy cohort's split (no anatomy on both sides).
        data_dir: the shared data folder of the anatomy cohort ('' = ``$SCDL_SHARED/data`` or ``../shared/data``);
            not part of any key (the same files anywhere give the same cohort).
    """

    labeled: int = 4
    unlabeled: int = 16
    test: int = 10
    cohort_seed: int = 0
    spacing_mm: float = 4.0
    width: int = 8
    patch: int = 32
    iterations: int = 350
    optimizer: str = "adamw"
    lr: float = 0.01
    seeds: tuple[int, ...] = (0, 1, 2)
    threads: int = 2
    workers: int = 0
    device: str = "cpu"
    sw_batch_size: int = 4
    small_fraction: float = 1.0 / 3.0
    overrides: tuple[str, ...] = field(default_factory=tuple)
    cohort: str = "phantom"
    train_anatomies: tuple[str, ...] = ("s0004", "s0006")
    test_anatomies: tuple[str, ...] = ("A", "s0001")
    data_dir: str = ""

    @classmethod
    def quick(cls, **changes: Any) -> "SSLBenchSettings":
        """A tiny smoke-test run (seconds per run): 2 + 2 + 2 cases at 10 mm, width 2, 16³ patches, 2 iterations."""
        base = dict(labeled=2, unlabeled=2, test=2, spacing_mm=10.0, width=2, patch=16, iterations=2, seeds=(0,))
        base.update(changes)
        return cls(**base)

    def __post_init__(self) -> None:
        def bad(name: str, why: str, fix: str) -> ScdlError:
            return ScdlError(f"benchmark setting {name}: {why}", fix=fix)

        for name, low in (("labeled", 1), ("unlabeled", 1), ("test", 1), ("width", 1), ("iterations", 1),
                          ("threads", 1), ("workers", 0), ("sw_batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise bad(name, f"{value!r} is not an integer >= {low}.", f"use --{name} {max(low, 1)} or more.")
        if not isinstance(self.patch, int) or self.patch < 16 or self.patch % 16:
            raise bad("patch", f"{self.patch!r} must be a multiple of 16 (the VNet down-samples 16x).",
                      "use e.g. --patch 32.")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"{self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}.",
                      "use --optimizer adamw (this benchmark's default) or sgd (the paper's).")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            raise bad("lr", f"{self.lr!r} is not a positive number.", "use e.g. --lr 0.01.")
        if not self.spacing_mm > 0:
            raise bad("spacing", f"{self.spacing_mm!r} mm is not positive.", "use e.g. --spacing 4.")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise bad("seeds", f"{list(self.seeds)!r} must be one or more distinct integers.", "use e.g. --seeds 0,1,2.")
        if not 0.0 < self.small_fraction <= 1.0:
            raise bad("small_fraction", f"{self.small_fraction!r} is not in (0, 1].", "use e.g. 0.333.")
        if self.cohort not in COHORTS:
            raise bad("cohort", f"{self.cohort!r} is not one of {', '.join(COHORTS)}.",
                      "use --cohort phantom (default) or anatomy.")
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "overrides", tuple(str(o) for o in self.overrides))
        object.__setattr__(self, "train_anatomies", tuple(str(a) for a in self.train_anatomies))
        object.__setattr__(self, "test_anatomies", tuple(str(a) for a in self.test_anatomies))
        object.__setattr__(self, "data_dir", str(self.data_dir or ""))
        if self.cohort == "anatomy":
            from scdl.bench.ssl_anatomy import check_split

            check_split(self.train_anatomies, self.test_anatomies)

    def with_changes(self, **changes: Any) -> "SSLBenchSettings":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["seeds"], out["overrides"] = list(self.seeds), list(self.overrides)
        out["train_anatomies"], out["test_anatomies"] = list(self.train_anatomies), list(self.test_anatomies)
        return out

    # -- what identifies an output -------------------------------------------------------------------
    def cohort_spec(self) -> dict[str, Any]:
        """Everything the cohort depends on (the phantom cohort's spec is unchanged since the published runs)."""
        from scdl import __version__

        if self.cohort == "anatomy":
            from scdl.bench.ssl_anatomy import GENERATOR

            return {"cohort": "anatomy", "generator": f"scdl {__version__} {GENERATOR}", "seed": self.cohort_seed,
                    "spacing_mm": self.spacing_mm, "labeled": self.labeled, "unlabeled": self.unlabeled,
                    "test": self.test, "train_anatomies": list(self.train_anatomies),
                    "test_anatomies": list(self.test_anatomies)}
        return {"generator": f"scdl {__version__}", "seed": self.cohort_seed, "spacing_mm": self.spacing_mm,
                "labeled": self.labeled, "unlabeled": self.unlabeled, "test": self.test}

    def cohort_key(self) -> str:
        return _digest(self.cohort_spec())

    def train_config(self, configuration: Any) -> dict[str, Any]:
        """The ``scdl train --config`` file of one configuration (on top of the ``cpu`` preset)."""
        return {
            "patch_size": [self.patch] * 3,
            "network": {"n_filters": self.width},
            "preprocessing": {"mode": "spacing", "spacing_mm": [self.spacing_mm] * 3},
            # validate once, at the end, on the labeled training cases (no validation case): the final networks are
            # kept; windows without overlap, since this number selects nothing (recorded as train_labeled_dice)
            "validation": {"every": 0, "overlap": 0.0, "sw_batch_size": self.sw_batch_size},
            "checkpoint_every": self.iterations,     # no intermediate checkpoints (one is written at the end)
            "data": {"num_workers": self.workers},
            "threads": self.threads,
            "optimizer": {"name": self.optimizer, "lr": float(self.lr)},
            "scdl": dict(configuration.scdl),
        }

    def run_key(self, configuration: Any) -> str:
        """Identifies one configuration's runs (the seed goes into the folder name beside it)."""
        return _digest({"cohort": self.cohort_spec(), "config": self.train_config(configuration),
                        "framework": configuration.framework, "iterations": self.iterations,
                        "device": self.device, "overrides": list(self.overrides)})
