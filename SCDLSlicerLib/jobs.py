"""Jobs that run ``scdl`` child processes: one segmentation, or a batch of them, driven by ``poll()``.

A job never blocks: the widget calls :meth:`SegmentJob.poll` from a ``qt.QTimer`` (or a script calls
:meth:`SegmentJob.wait`). Each poll hands out the child's new output lines, already classified, and keeps
a :class:`~SCDLSlicerLib.childoutput.ProgressTracker` up to date for the progress bar and the log box.
No Qt, no scene access here (see ``scenejob`` for the scene side).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from SCDLSlicerLib.childoutput import ChildLine, ProgressTracker, failure_message
from SCDLSlicerLib.commands import child_environment, models_command, segment_command
from SCDLSlicerLib.process import ChildProcess, ChildProcessFactory, ChildProcessLike


class ChildJob:
    """One child process with its progress tracker (base of the jobs below).

    Args:
        command: the command line.
        what: how messages name the job ("The segmentation", "The download" ...).
        phase_weights: passed to :class:`ProgressTracker`.
        backend: :class:`ChildProcess` backend.
        spawn: builds the child process (default :class:`ChildProcess`; tests inject a stand-in).
    """

    def __init__(self, command: Sequence[str], what: str = "The process", phase_weights: Optional[dict] = None,
                 backend: str = "auto", kill_grace_s: Optional[float] = None,
                 spawn: ChildProcessFactory = ChildProcess):
        env, updates = child_environment()
        kwargs = {} if kill_grace_s is None else {"kill_grace_s": kill_grace_s}
        self.command = list(command)
        self.what = what
        self.process: ChildProcessLike = spawn(self.command, env=env, env_updates=updates, backend=backend, **kwargs)
        self.tracker = ProgressTracker(phase_weights)

    def start(self) -> "ChildJob":
        self.process.start()
        return self

    def poll(self) -> list[ChildLine]:
        """New output lines since the last call, classified; updates :attr:`tracker`."""
        return [self.tracker.feed(line) for line in self.process.poll()]

    def wait(self, timeout: Optional[float] = None, on_line: Optional[Callable[[ChildLine], None]] = None) -> int:
        """Block until the child ended (scripts and tests); returns its exit status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for item in self.poll():
                if on_line is not None:
                    on_line(item)
            if self.finished:
                return int(self.returncode)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.what} is still running after {timeout} s")
            if self.process.backend == "slicer":
                import slicer

                slicer.app.processEvents()
            time.sleep(0.05)

    def cancel(self) -> None:
        self.process.cancel()

    @property
    def finished(self) -> bool:
        return self.process.finished

    @property
    def running(self) -> bool:
        return self.process.running

    @property
    def returncode(self) -> Optional[int]:
        return self.process.returncode

    @property
    def cancelled(self) -> bool:
        return self.process.cancel_requested

    @property
    def succeeded(self) -> bool:
        return self.finished and not self.cancelled and self.returncode == 0

    def error_message(self) -> Optional[str]:
        """None on success or cancel; otherwise one readable sentence (the child's ``error:`` line first)."""
        if not self.finished or self.cancelled or self.returncode == 0:
            return None
        return failure_message(self.tracker, self.returncode, self.what)


class SegmentJob(ChildJob):
    """``scdl segment INPUT -o OUTPUT --model M --device D --progress json [--uncertainty U]``."""

    def __init__(self, input_path: os.PathLike | str, output_path: os.PathLike | str, model: Optional[str] = None,
                 device: str = "auto", uncertainty_path: Optional[os.PathLike | str] = None, backend: str = "auto",
                 extra: Sequence[str] = (), kill_grace_s: Optional[float] = None,
                 spawn: ChildProcessFactory = ChildProcess):
        self.input_path = Path(input_path)
        self.output_path = Path(output_path)
        self.uncertainty_path = Path(uncertainty_path) if uncertainty_path else None
        self.model = model
        self.device = device
        super().__init__(segment_command(input_path, output_path, model, device, uncertainty_path, extra),
                         what="The segmentation", backend=backend, kill_grace_s=kill_grace_s, spawn=spawn)

    def confidence(self) -> dict[str, Optional[float]]:
        """Per-organ confidence reported by the child (``--uncertainty``), name -> value (None: organ not
        found); empty if the child reported none."""
        return extract_confidence(self.tracker)

    def warnings(self) -> list[str]:
        return list(self.tracker.warnings)


def extract_confidence(tracker: ProgressTracker) -> dict[str, Optional[float]]:
    """Find the per-organ confidence among the child's events (an event named ``confidence`` or any event /
    final line with a ``confidence`` mapping of organ name -> number)."""
    from scdl.events import EventKind  # stdlib only; not at module load

    candidates = []
    if EventKind.CONFIDENCE in tracker.events:            # keyed by event name: a member is its string
        candidates.append(tracker.events[EventKind.CONFIDENCE])
    candidates += [data for name, data in tracker.events.items() if name != EventKind.CONFIDENCE]
    candidates.append(tracker.result)
    for data in candidates:
        for key in ("confidence", "values", "organs"):
            mapping = data.get(key)
            if isinstance(mapping, dict) and mapping and all(isinstance(v, (int, float)) or v is None for v in mapping.values()):
                return {str(k): (None if v is None else float(v)) for k, v in mapping.items()}
    return {}


class ModelsJob(ChildJob):
    """``scdl models ARGS... [--progress json]`` (import, download, verify) in a child process."""

    def __init__(self, *args: str, backend: str = "auto", what: str = "The model operation",
                 spawn: ChildProcessFactory = ChildProcess):
        super().__init__(models_command(*args), what=what, phase_weights={}, backend=backend, spawn=spawn)


@dataclass
class BatchItem:
    """One input of a batch: ``source`` is a file path or a scene node ID; ``output`` the file to write (None when
    the result stays in the scene); ``result`` what :class:`BatchJob`'s ``finish`` kept (e.g. a node ID)."""

    label: str
    source: str
    output: Optional[Path] = None
    status: str = "pending"  # pending | running | done | failed | cancelled
    input_file: Optional[Path] = None  # temporary copy of a scene volume
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    result: Any = None


def finish_child_item(item: BatchItem, job: ChildJob) -> None:
    """The default end of a batch item whose job is a :class:`ChildJob`: done, failed (its message) or cancelled."""
    item.warnings = list(job.tracker.warnings)
    if job.cancelled:
        item.status, item.message = "cancelled", "cancelled"
    elif job.succeeded:
        item.status = "done"
    else:
        item.status, item.message = "failed", job.error_message() or "failed"


class BatchJob:
    """Run one job per item, one after the other, with overall progress (a segmentation batch of SCDLSegment,
    the review of SCDLTrain).

    Args:
        items: what to do.
        make_job: builds the job of an item (a :class:`ChildJob`, a ``scenejob.SceneSegmentation``: anything with
            ``start()``, ``poll()``, ``cancel()``, ``finished`` and ``tracker``); it may first write a scene volume
            to a file; raising an exception marks the item failed and the batch continues.
        cleanup: called with each item when its job ended (e.g. to delete a temporary input file).
        finish: ``finish(item, job)`` sets the item's status when its job ended (default :func:`finish_child_item`);
            an exception marks the item failed with its message.
    """

    def __init__(self, items: Sequence[BatchItem], make_job: Callable[[BatchItem], Any],
                 cleanup: Optional[Callable[[BatchItem], None]] = None,
                 finish: Optional[Callable[[BatchItem, Any], None]] = None):
        self.items = list(items)
        self._make_job = make_job
        self._cleanup = cleanup
        self._finish = finish or finish_child_item
        self.index = -1
        self.job: Any = None
        self.cancel_requested = False
        self.started = False

    def start(self) -> "BatchJob":
        self.started = True
        self._next()
        return self

    def _next(self) -> None:
        self.job = None
        while not self.cancel_requested:
            self.index += 1
            if self.index >= len(self.items):
                return
            item = self.items[self.index]
            try:
                item.status = "running"
                self.job = self._make_job(item).start()
                return
            except Exception as err:  # noqa: BLE001 - one bad input must not stop the batch
                item.status, item.message = "failed", str(err)
                self._finish_item(item)

    def _finish_item(self, item: BatchItem) -> None:
        if self._cleanup is not None:
            self._cleanup(item)

    def poll(self) -> list[tuple[BatchItem, ChildLine]]:
        """New output of the running item; moves on to the next item when it ended."""
        if self.job is None:
            return []
        item = self.items[self.index]
        lines = [(item, line) for line in self.job.poll()]
        if self.job.finished:
            try:
                self._finish(item, self.job)
            except Exception as err:  # noqa: BLE001 - e.g. the result could not be loaded: this item failed
                item.status, item.message = "failed", str(err)
            self._finish_item(item)
            self._next()
        return lines

    def wait(self, timeout: Optional[float] = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the batch is still running after {timeout} s")
            time.sleep(0.05)

    def cancel(self) -> None:
        self.cancel_requested = True
        if self.job is not None:
            self.job.cancel()
        for item in self.items:
            if item.status == "pending":
                item.status = "cancelled"

    @property
    def finished(self) -> bool:
        return self.started and self.job is None

    @property
    def percent(self) -> float:
        """Overall progress: finished items plus the running item's share."""
        if not self.items:
            return 100.0
        done = sum(1 for item in self.items if item.status in ("done", "failed", "cancelled"))
        running = self.job.tracker.percent / 100.0 if self.job is not None else 0.0
        return min(100.0 * (done + running) / len(self.items), 100.0)

    def summary(self) -> str:
        counts = {s: sum(1 for i in self.items if i.status == s) for s in ("done", "failed", "cancelled")}
        return f"{counts['done']} segmented, {counts['failed']} failed, {counts['cancelled']} cancelled (of {len(self.items)})"
