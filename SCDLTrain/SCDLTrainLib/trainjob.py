"""``scdl train`` child processes: the cohort check (``--check-only``) and the training run (start / resume).

Both are :class:`SCDLSlicerLib.jobs.ChildJob` s (non-blocking ``poll()``, process-tree ``cancel()``), so the
widget drives them from its timer exactly like a segmentation. Stopping a training run sends SIGTERM: the
trainer finishes the current iteration, writes its checkpoint and exits with status 130; only after
:data:`STOP_GRACE_S` seconds (a long validation pass) is it killed, and the previous checkpoint remains.
No Qt here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from SCDLSlicerLib.childoutput import ChildLine
from SCDLSlicerLib.commands import scdl_command
from SCDLSlicerLib.jobs import ChildJob
from SCDLTrainLib.monitor import TrainMonitor

#: Seconds a stopping run gets to write its checkpoint before it is killed.
STOP_GRACE_S = 300.0
#: Exit status of a run stopped by the user (``scdl train`` prints "stopped at iteration N").
STOPPED_STATUS = 130


@dataclass
class CohortCheck:
    """The result of ``scdl train --check-only``: every problem and the case counts."""

    ok: bool
    problems: list[dict] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    validation_source: str = "val"
    error: Optional[str] = None        # the child's own error line (bad settings, unreadable manifest ...)
    #: per partially annotated labeled case: ``case``, ``row``, ``annotated``, ``kept`` (taught by the initial
    #: model), ``unknown``, ``text`` (the core's ``annotation`` event)
    annotation: list[dict] = field(default_factory=list)
    plan: dict = field(default_factory=dict)   # the core's ``plan`` event: preset, iterations, estimate, ``text``

    @property
    def errors(self) -> list[dict]:
        return [p for p in self.problems if p.get("severity") == "error"]

    @property
    def warnings(self) -> list[dict]:
        return [p for p in self.problems if p.get("severity") == "warning"]


class CheckJob(ChildJob):
    """``scdl train ... --check-only --progress json``: problems arrive as ``problem`` events."""

    def __init__(self, args: list[str], backend: str = "auto"):
        super().__init__(scdl_command(*args), what="The cohort check", phase_weights={}, backend=backend)
        self.problems: list[dict] = []
        self.annotation: list[dict] = []
        self.plan: dict = {}

    def poll(self) -> list[ChildLine]:
        lines = super().poll()
        takers = self._takers()
        for line in lines:
            take = takers.get(line.event_kind) if line.kind == "event" else None
            if take is not None:
                take(line.data)
        return lines

    def _takers(self) -> dict:
        """``scdl.events.EventKind`` -> the method that keeps that kind's line object (other kinds: ignored)."""
        from scdl.events import EventKind

        return {EventKind.PROBLEM: self._take_problem, EventKind.ANNOTATION: self._take_annotation,
                EventKind.PLAN: self._take_plan}

    def _take_problem(self, data: dict) -> None:
        self.problems.append({k: v for k, v in data.items() if k != "event"})

    def _take_annotation(self, data: dict) -> None:
        self.annotation = [dict(c) for c in data.get("cases") or [] if isinstance(c, dict)]

    def _take_plan(self, data: dict) -> None:
        self.plan = {k: v for k, v in data.items() if k != "event"}

    def result(self) -> Optional[CohortCheck]:
        """The check's outcome once the child ended (None while running or when cancelled)."""
        if not self.finished or self.cancelled:
            return None
        final = self.tracker.result
        if not final or "ok" not in final:
            return CohortCheck(False, list(self.problems), error=self.error_message() or "the check did not finish")
        counts = {k: int(final.get(k) or 0) for k in ("labeled", "unlabeled", "val", "test")}
        return CohortCheck(bool(final["ok"]), list(self.problems), counts, str(final.get("validation_source") or "val"),
                           annotation=list(self.annotation), plan=dict(self.plan))


class TrainJob(ChildJob):
    """``scdl train ... --progress json`` (a new run or ``--resume``); :attr:`monitor` holds the curves' rows.

    Args:
        args: the ``scdl`` arguments (``options.TrainOptions.train_args()`` or ``options.resume_args(...)``).
        run_dir: the run folder (for resume and the hand-off).
        resume: True to seed the curves with the rows the earlier child wrote.
    """

    def __init__(self, args: list[str], run_dir: os.PathLike | str, resume: bool = False, backend: str = "auto",
                 stop_grace_s: float = STOP_GRACE_S):
        super().__init__(scdl_command(*args), what="The training", phase_weights={}, backend=backend,
                         kill_grace_s=stop_grace_s)
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.monitor = TrainMonitor()
        if resume:
            self.monitor.seed_from_run(self.run_dir)

    def poll(self) -> list[ChildLine]:
        lines = super().poll()
        for line in lines:
            self.monitor.update(line)
        return lines

    def stop(self) -> None:
        """Ask the run to stop after the current iteration (it saves a checkpoint first)."""
        self.cancel()

    @property
    def stopped(self) -> bool:
        """Ended because the user stopped it (a checkpoint was saved: resumable)."""
        return self.finished and self.cancelled and self.returncode == STOPPED_STATUS

    @property
    def model_dir(self) -> Optional[Path]:
        """The trained model package (a finished run only)."""
        if not self.succeeded:
            return None
        path = self.monitor.model_path or self.monitor.result.get("output")
        if not path:
            return None
        path = Path(path)
        return path if path.is_absolute() else (Path.cwd() / path)

    def error_message(self) -> Optional[str]:
        if self.stopped:
            return None
        return super().error_message()
