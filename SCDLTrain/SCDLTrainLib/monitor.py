"""What a running ``scdl train --progress json`` child reports, turned into the panel's state.

The child prints records of the core's ``scdl.events`` (its schema; ``scdl/training``, ``scdl/cli/train.py``)::

    {"phase": "check", "done": 2, "total": 5, ...}                      cohort check / preprocessing
    {"event": "start", "iteration": 0, "iterations": 1500, ...}         training starts (or resumes)
    {"event": "iteration", "iteration": 10, "loss": {"total": ..}, "lr": .., "eta_s": ..}
    {"phase": "train", "done": 10, "total": 1500, "eta_s": 812.0}       run-average ETA
    {"event": "validation", "iteration": 250, "mean_dice": .., "dice": {"spleen": .., ...}}
    {"event": "checkpoint", "iteration": 100, "path": ".../checkpoint.pt"}
    {"event": "model", "path": ".../model", ...}
    {"phase": "done", "output": ".../model", "iteration": .., "best_mean_dice": .., "elapsed_s": ..}

:class:`TrainMonitor` keeps the loss rows and validation rows (for the curves), the iteration, the ETA
and the result; it dispatches each line's record by its ``EventKind`` through one table (:meth:`_handlers`).
On resume it is seeded from the run folder's ``log.csv`` / ``validation.csv`` so the curves show the whole run. No Qt here.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from SCDLSlicerLib.childoutput import ChildLine, format_seconds

#: Loss terms drawn as curves, in legend order (every term is kept in the table).
CURVE_TERMS = ("total", "sup", "cps", "consistency", "scdl", "proxy", "sac", "kl")
#: Malformed lines of the child remembered in :attr:`TrainMonitor.skipped`.
SKIPPED_KEPT = 20
#: Columns of ``log.csv`` that are neither the iteration, the learning rate nor a loss term.
RUN_STAT_COLUMNS = ("elapsed_s", "it_per_s", "data_wait")


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return float("nan")
    return number


@dataclass
class TrainMonitor:
    """State of one training child (or of a run folder read back)."""

    iteration: int = 0
    total: int = 0
    started: bool = False
    phase: Optional[str] = None
    phase_done: int = 0
    phase_total: int = 0
    eta_s: Optional[float] = None
    framework: str = ""
    device: str = ""
    loss_rows: list[dict[str, float]] = field(default_factory=list)
    val_rows: list[dict[str, float]] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    checkpoint_iteration: Optional[int] = None
    best: dict[str, Any] = field(default_factory=dict)
    model_path: Optional[str] = None
    result: dict[str, Any] = field(default_factory=dict)
    init_report: dict[str, Any] = field(default_factory=dict)
    start_info: dict[str, Any] = field(default_factory=dict)
    changed: bool = False      # new curve data since the last :meth:`take_changed`
    skipped: list[str] = field(default_factory=list)   # lines of the child that could not be taken (the last ones)

    # -- feeding ---------------------------------------------------------------------------------
    def update(self, line: ChildLine) -> None:
        """Take one classified line of the child (``SCDLSlicerLib.childoutput.ChildLine``). Never raises: a
        line whose values are not what the event promises (a list where a mapping belongs, a name where a
        number belongs) is kept in :attr:`skipped` and otherwise ignored."""
        try:
            self._update(line)
        except Exception as err:  # noqa: BLE001 - the child's output must never crash the module
            self.skipped.append(f"{type(err).__name__}: {line.text[:200]}")
            del self.skipped[:-SKIPPED_KEPT]

    def _update(self, line: ChildLine) -> None:
        handler = self._handlers().get(line.event_kind)
        if handler is not None:
            handler(line.record)

    def _handlers(self) -> dict:
        """``scdl.events.EventKind`` -> the method that takes that kind's record (kinds not listed: ignored)."""
        from scdl.events import EventKind

        return {EventKind.PROGRESS: self._on_progress, EventKind.DONE: self._on_done,
                EventKind.START: self._on_start, EventKind.ITERATION: self._on_iteration,
                EventKind.VALIDATION: self._on_validation, EventKind.CHECKPOINT: self._on_checkpoint,
                EventKind.MODEL: self._on_model, EventKind.INIT: self._on_init}

    def _on_progress(self, event) -> None:
        self.phase = str(event.phase)
        self.phase_done = int(event.done or 0)
        self.phase_total = int(event.total or 0)
        if self.phase == "train":
            self.iteration = max(self.iteration, self.phase_done)
            self.total = self.phase_total or self.total
            if isinstance(event.eta_s, (int, float)):
                self.eta_s = float(event.eta_s)

    def _on_done(self, event) -> None:
        self.result = event.to_dict()
        if event.result.get("output"):
            self.model_path = str(event.result["output"])
        if event.result.get("iteration") is not None:
            self.iteration = int(event.result["iteration"])
        self.eta_s = 0.0

    def _on_start(self, event) -> None:
        self.started = True
        self.start_info = event.to_dict()
        self.iteration = int(event.iteration or 0)
        self.total = int(event.iterations or 0)
        self.framework = str(event.framework or "")
        self.device = str(event.device or "")
        # a resumed run restarts the rows after its checkpoint: drop what the child will send again
        self._truncate(self.iteration)

    def _on_iteration(self, event) -> None:
        iteration = int(event.iteration or 0)
        self.iteration = max(self.iteration, iteration)
        self.total = int(event.iterations or self.total)
        row = {"iteration": float(iteration)}
        for key, value in (event.loss or {}).items():
            row[str(key)] = _number(value)
        if event.lr is not None:
            row["lr"] = _number(event.lr)
        self._truncate(iteration - 1)
        self.loss_rows.append(row)
        if isinstance(event.eta_s, (int, float)) and self.eta_s is None:
            self.eta_s = float(event.eta_s)
        self.changed = True

    def _on_validation(self, event) -> None:
        iteration = int(event.iteration or 0)
        dice = event.dice or {}
        for name in dice:
            if name not in self.class_names:
                self.class_names.append(str(name))
        row = {"iteration": float(iteration), "mean_dice": _number(event.mean_dice)}
        for name in self.class_names:
            row[f"dice_{name}"] = _number(dice.get(name))
        self.val_rows = [r for r in self.val_rows if r["iteration"] < iteration] + [row]
        if event.best_iteration is not None:
            self.best = {"iteration": int(event.best_iteration), "mean_dice": _number(event.best_mean_dice)}
        self.changed = True

    def _on_checkpoint(self, event) -> None:
        self.checkpoint_iteration = int(event.iteration or 0)

    def _on_model(self, event) -> None:
        self.model_path = str(event.path or "") or self.model_path

    def _on_init(self, event) -> None:
        self.init_report = event.to_dict()

    def _truncate(self, upto: int) -> None:
        before = len(self.loss_rows) + len(self.val_rows)
        self.loss_rows = [r for r in self.loss_rows if r["iteration"] <= upto]
        self.val_rows = [r for r in self.val_rows if r["iteration"] <= upto]
        if len(self.loss_rows) + len(self.val_rows) != before:
            self.changed = True

    def take_changed(self) -> bool:
        """True once after new curve data arrived (the widget redraws the curves then)."""
        changed, self.changed = self.changed, False
        return changed

    # -- reading back a run folder ------------------------------------------------------------------
    def seed_from_run(self, run_dir: os.PathLike | str) -> None:
        """Load the rows an earlier (stopped) child of this run wrote (``log.csv``, ``validation.csv``)."""
        from scdl.training.runfolder import RunFolder

        run = RunFolder(run_dir)
        for row in _read_csv(run.log):
            self.loss_rows.append({k: v for k, v in row.items() if k not in RUN_STAT_COLUMNS})
        for row in _read_csv(run.validation):
            for key in row:
                if key.startswith("dice_") and key[5:] not in self.class_names:
                    self.class_names.append(key[5:])
            self.val_rows.append(row)
        if self.loss_rows:
            self.iteration = int(self.loss_rows[-1]["iteration"])
        self.changed = True

    # -- what the panel shows -----------------------------------------------------------------------
    @property
    def percent(self) -> float:
        if self.result.get("output"):
            return 100.0
        if not self.total:
            return 0.0
        return 100.0 * min(self.iteration, self.total) / self.total

    def loss_columns(self) -> list[str]:
        """Loss terms present in the rows, curve terms first (``w_*`` ramp weights and ``lr`` left out)."""
        keys: list[str] = []
        for row in self.loss_rows:
            keys += [k for k in row if k not in keys and k not in ("iteration", "lr") and not k.startswith("w_")]
        return [k for k in CURVE_TERMS if k in keys] + [k for k in keys if k not in CURVE_TERMS]

    def last_loss(self) -> Optional[float]:
        for row in reversed(self.loss_rows):
            value = row.get("total")
            if value is not None and math.isfinite(value):
                return value
        return None

    def status_text(self) -> str:
        """One line: ``iteration 120/1500 - 8% - about 41 min left - loss 0.532``."""
        if self.result.get("output"):
            return f"done: {self.iteration} iterations"
        if not self.started:
            if self.phase and self.phase_total:
                return f"preparing: {self.phase} {self.phase_done}/{self.phase_total}"
            return "starting"
        parts = [f"iteration {self.iteration}/{self.total}", f"{self.percent:.0f}%"]
        if self.eta_s is not None and self.iteration > int(self.start_info.get("iteration") or 0):
            parts.append(f"about {format_seconds(self.eta_s)} left")
        loss = self.last_loss()
        if loss is not None:
            parts.append(f"loss {loss:.4g}")
        if self.val_rows and math.isfinite(self.val_rows[-1]["mean_dice"]):
            parts.append(f"val Dice {self.val_rows[-1]['mean_dice']:.3f}")
        return " - ".join(parts)


def _read_csv(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parsed = {str(k): _number(v) if v not in ("", None) else float("nan") for k, v in row.items() if k}
            if math.isfinite(parsed.get("iteration", float("nan"))):
                rows.append(parsed)
    return rows
