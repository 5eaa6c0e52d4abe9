"""Reading what a ``python -m scdl ... --progress json`` child process prints.

The child writes one JSON object per line on stdout (``scdl.progress.Progress`` in JSON mode)::

    {"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}      progress of one phase
    {"event": "warning", "text": "..."}                            warning / message / any named event
    {"phase": "done", "output": "/path/out.seg.nrrd"}              the last line of a successful run

and human-readable lines on stderr, among them ``error: <path>: <message> Fix: <fix>`` for a user error,
``warning: ...`` and ``cancelled: ...``. Slicer's ``launchConsoleProcess`` merges both streams, so every
line is classified by its content, never by the stream it came from.

JSON lines are decoded by the core's ``scdl.events`` (the stream's schema and one parser, also used by the
benchmarks: ``parse_event`` never raises and turns a damaged, over-long, too deeply nested or badly typed line
into text; ``record_from_dict`` gives the line's typed record, ``ChildLine.record``, whose ``kind`` the
panels dispatch on); this module classifies them, and :meth:`ProgressTracker.feed` never raises either: a line
is logged, never fatal. No Qt and no Slicer here: shared by SCDLSegment and SCDLTrain.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Optional

#: Relative duration of the phases of ``scdl segment`` (read, preprocess, adapt, infer, postprocess, write; adapt
#: only for a model whose card asks for test-time batch-norm statistics; without it the bar jumps over its share);
#: the progress bar's percentage weights each phase by these. Phases not listed count as 0.
SEGMENT_PHASE_WEIGHTS: dict[str, float] = {"read": 5.0, "preprocess": 10.0, "adapt": 10.0, "infer": 60.0,
                                               "postprocess": 10.0, "write": 5.0}

#: Lines kept in memory for the log box and error reports (older ones are dropped).
MAX_LOG_LINES = 2000


@dataclass
class ChildLine:
    """One classified output line.

    ``kind`` is one of ``"progress"`` (a phase update), ``"done"`` (final line), ``"warning"``, ``"message"``,
    ``"event"`` (another named JSON event, e.g. per-organ confidence), ``"error"`` (the child's ``error:``
    line), ``"cancelled"``, ``"log"`` (anything else: plain text, tracebacks, library noise).
    ``data`` is the parsed JSON object (empty for text lines); ``text`` is what a log box shows; ``record`` the
    line's ``scdl.events.Event`` (``None`` for text lines and unknown event names).
    """

    kind: str
    text: str
    data: dict = field(default_factory=dict)
    record: Any = None

    @property
    def event_kind(self) -> Any:
        """The record's ``scdl.events.EventKind`` (``None`` without a record): the key of the panels' tables."""
        return None if self.record is None else self.record.kind

    @property
    def name(self) -> str:
        """Event name for ``kind == "event"`` (``data["event"]``), else ``kind``."""
        return str(self.data.get("event", self.kind))


def parse_line(line: str) -> ChildLine:
    """Classify one output line of the child (trailing newline allowed)."""
    from scdl.events import parse_event  # the one parser of the stream (stdlib only; not at module load)

    text = line.rstrip("\r\n")
    stripped = text.strip()
    data = parse_event(stripped)
    if data is not None:
        return _classify_json(data, stripped)
    lower = stripped.lower()
    if lower.startswith("error:"):
        return ChildLine("error", stripped[len("error:"):].strip())
    if lower.startswith("warning:"):
        return ChildLine("warning", stripped[len("warning:"):].strip())
    if lower.startswith("cancelled:"):
        return ChildLine("cancelled", stripped[len("cancelled:"):].strip())
    return ChildLine("log", text)


def _classify_json(data: dict, raw: str) -> ChildLine:
    from scdl.events import EventKind, record_from_dict

    record = record_from_dict(data)
    kind = None if record is None else record.kind
    if kind == EventKind.DONE:
        return ChildLine("done", "done", data, record)
    if kind == EventKind.PROGRESS:
        done, total = data.get("done"), data.get("total")
        phase = data.get("phase")
        text = f"{phase} {done}/{total}" if done is not None and total else str(phase)
        return ChildLine("progress", text, data, record)
    if kind in (EventKind.WARNING, EventKind.MESSAGE):
        return ChildLine(str(kind), str(data.get("text", "")), data, record)
    if data.get("event") is not None:             # a named event, known (record) or not (a newer core)
        return ChildLine("event", raw, data, record)
    return ChildLine("log", raw, data)


class ProgressTracker:
    """Turns the child's lines into what the panel shows: a percentage, an ETA, warnings, the error.

    Args:
        phase_weights: relative duration of each phase, in the order the child runs them (the order of the
            dict). The percentage is the weighted share of finished phases plus the running phase's
            ``done / total`` (never decreasing). An empty dict: the percentage is the running phase's own.
        clock: time source (seconds), replaceable in tests.
    """

    def __init__(self, phase_weights: Optional[dict[str, float]] = None, clock=time.monotonic):
        self.phase_weights = dict(SEGMENT_PHASE_WEIGHTS if phase_weights is None else phase_weights)
        self._order = list(self.phase_weights)
        self._clock = clock
        self.started = clock()
        self.phase: Optional[str] = None
        self.phase_done = 0
        self.phase_total = 0
        self.phase_eta_s: Optional[float] = None
        self.percent = 0.0
        self.finished = False
        self.result: dict = {}
        self.warnings: list[str] = []
        self.messages: list[str] = []
        self.errors: list[str] = []
        self.events: dict[str, dict] = {}
        self.log: list[str] = []

    # -- feeding -----------------------------------------------------------------------------
    def feed(self, line: str) -> ChildLine:
        """Parse one line, update the state, and return the classified line. Never raises: a line the state
        cannot take (a value of the wrong kind that the parser let through) is logged and skipped."""
        item = parse_line(line)
        try:
            self.update(item)
        except Exception as err:  # noqa: BLE001 - the child's output must never crash the module
            item = ChildLine("log", f"(skipped a malformed line of the child: {type(err).__name__}) {item.text[:200]}")
            self._append_log(item)
        return item

    def update(self, item: ChildLine) -> None:
        if item.kind != "progress":
            self._append_log(item)
        if item.kind == "progress":
            self._on_progress(item.data)
        elif item.kind == "done":
            self.finished = True
            self.percent = 100.0
            self.phase_eta_s = 0.0
            self.result = dict(item.data)
        elif item.kind == "warning":
            # In JSON mode the child prints a warning twice (stderr text + JSON event): keep it once.
            if item.text and item.text not in self.warnings:
                self.warnings.append(item.text)
        elif item.kind == "message":
            self.messages.append(item.text)
        elif item.kind == "error":
            self.errors.append(item.text)
        elif item.kind == "event":
            self.events[item.name] = dict(item.data)

    def _append_log(self, item: ChildLine) -> None:
        prefix = {"warning": "warning: ", "error": "error: ", "cancelled": "cancelled: "}.get(item.kind, "")
        if item.kind == "done":
            return
        self.log.append(prefix + item.text)
        if len(self.log) > MAX_LOG_LINES:
            del self.log[: len(self.log) - MAX_LOG_LINES]

    def _on_progress(self, data: dict) -> None:
        phase = str(data.get("phase"))
        total = _as_int(data.get("total"), 1) or 1
        done = min(max(_as_int(data.get("done"), 0), 0), total)
        self.phase, self.phase_done, self.phase_total = phase, done, total
        eta = data.get("eta_s")
        self.phase_eta_s = float(eta) if isinstance(eta, (int, float)) else None
        if not self.phase_weights:  # no known phase plan (downloads, imports): the running phase's share
            self.percent = 100.0 * done / total
        else:
            self.percent = max(self.percent, self._weighted_percent(phase, done / total))

    def _weighted_percent(self, phase: str, fraction: float) -> float:
        weight_sum = sum(self.phase_weights.values())
        if phase not in self.phase_weights or weight_sum <= 0:
            return self.percent
        finished = sum(self.phase_weights[p] for p in self._order[: self._order.index(phase)])
        return 100.0 * (finished + self.phase_weights[phase] * fraction) / weight_sum

    # -- reading -----------------------------------------------------------------------------
    @property
    def error(self) -> Optional[str]:
        """The child's (last) ``error:`` line without the prefix, if any."""
        return self.errors[-1] if self.errors else None

    def eta_s(self) -> Optional[float]:
        """Seconds left for the whole run: the elapsed time scaled by the remaining share (None below 2 %)."""
        if self.finished:
            return 0.0
        fraction = self.percent / 100.0
        if fraction < 0.02:
            return None
        elapsed = self._clock() - self.started
        return max(elapsed * (1.0 - fraction) / fraction, 0.0)

    def status_text(self) -> str:
        """One line for the status label, e.g. ``infer 3/12 - 46% - about 8 s left``."""
        if self.finished:
            return "done"
        if self.phase is None:
            return "starting"
        parts = [f"{self.phase} {self.phase_done}/{self.phase_total}", f"{self.percent:.0f}%"]
        eta = self.eta_s()
        if eta is not None:
            parts.append(f"about {format_seconds(eta)} left")
        return " - ".join(parts)


def format_seconds(seconds: float) -> str:
    """``75.2`` -> ``"1 min 15 s"``; ``8.4`` -> ``"8 s"`` (the core's one formatter; it imports no torch)."""
    from scdl.training.estimate import format_seconds as core_format_seconds

    return core_format_seconds(seconds)


def _as_int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return default


def failure_message(tracker: ProgressTracker, returncode: Optional[int], what: str = "The segmentation") -> str:
    """One readable sentence for a failed child: its ``error:`` line, else the end of its log."""
    if tracker.error:
        return tracker.error
    if returncode is not None and returncode < 0:
        return f"{what} process was stopped by signal {-returncode}."
    tail = [line for line in tracker.log if line.strip()][-3:]
    detail = (" Last output: " + " | ".join(line.strip() for line in tail)) if tail else ""
    return f"{what} process failed (exit status {returncode}).{detail}"
