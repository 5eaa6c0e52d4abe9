"""The record of a finished training run: the plain facts that packaging (``scdl.training.packaging``) needs.

The trainer fills one :class:`RunRecord` at the end of a run; packaging reads nothing else of the trainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence


@dataclass(frozen=True)
class RunRecord:
    """A finished run, as its model package describes it.

    ``config``: the resolved settings as ``config.json`` holds them; ``last_networks``: the state dicts of the
    networks at ``iteration`` (packaged when no validation chose better ones in ``best_file``)."""

    run_dir: Path
    model_dir: Path                             # where the package goes (RUN_DIR/model)
    best_file: Path                             # best.pt (the best validated networks)
    config: Mapping[str, Any]
    arch: Mapping[str, Any]                     # the card's architecture section
    preprocessing: Mapping[str, Any]            # the card's preprocessing section
    labels: Any                                 # scdl.labels.table.LabelTable: the classes
    iteration: int                              # iterations trained
    elapsed_s: float                            # seconds trained in all
    last_networks: Sequence[Mapping[str, Any]]
    cohort_source: Any
    summary: Mapping[str, int]                  # labeled / unlabeled / val case counts
    validation_source: Optional[str]            # "val", "train" or None (no cohort report)
    world_size: int
    best: Mapping[str, Any] = field(default_factory=dict)       # the best validation (iteration, mean_dice, dice)
    baseline: Mapping[str, Any] = field(default_factory=dict)   # --init: the init model's validation
    averaged: Optional[Mapping[str, Any]] = None    # last_networks are a weight mean (averaging, no validation)
    interpolated: Optional[float] = None    # last_networks mixed with the init model (finetune.interpolate)
