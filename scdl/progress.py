"""Progress reporting for long work: a tqdm bar on the terminal or JSON lines for the Slicer modules.

JSON mode prints one object per line on stdout, e.g.::

    {"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}
    {"phase": "done", "output": "/path/out.seg.nrrd"}

Other events (training iterations, warnings, messages) are JSON objects with an ``"event"`` key.
Human-readable messages go to stderr in every mode so that stdout stays machine-readable.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, Optional, TextIO

from scdl.errors import Cancelled, one_line

MODES = ("tqdm", "json", "none")


def _clean(value: Any) -> Any:
    """Make values JSON-safe (NaN/inf -> None, numpy/torch scalars -> Python)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


#: Longest line :func:`parse_event` decodes (the largest real event, a cohort's ``annotation`` or a
#: validation of 117 classes, is a few KiB); a longer line is not an event.
MAX_EVENT_CHARS = 1 << 20
#: Deepest nesting of arrays/objects :func:`parse_event` accepts (real events nest 3 levels).
MAX_EVENT_DEPTH = 16
#: Keys whose value, when present, must be a finite number (or null): progress and training counters.
_NUMBER_KEYS = ("done", "total", "eta_s", "iteration", "iterations", "elapsed_s")
#: Keys whose value, when present, must be a string.
_STRING_KEYS = ("phase", "event", "text", "output", "path")


def _depth_ok(line: str, limit: int) -> bool:
    """False when brackets outside strings nest deeper than ``limit`` (checked before decoding: the decoder
    recurses once per level)."""
    depth, in_string, escaped = 0, False, False
    for char in line:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                return False
        elif char in "]}":
            depth -= 1
    return True


def _finite_or_none(text: str) -> Optional[float]:
    value = float(text)
    return value if math.isfinite(value) else None


def _no_constant(_name: str) -> None:
    return None                                      # NaN, Infinity, -Infinity -> null


def parse_event(line: str) -> Optional[dict[str, Any]]:
    """One line of a JSON-mode stream -> its object; ``None`` for anything else: a human-readable line, a
    damaged or partial line, JSON that is not an object, a line longer than :data:`MAX_EVENT_CHARS` or nested
    deeper than :data:`MAX_EVENT_DEPTH`, or an event whose counters (``done``, ``total``, ``iteration``, ...)
    are not numbers or whose names (``phase``, ``event``, ``text``) are not strings. Numbers that are not
    finite (``NaN``, ``Infinity``, ``1e400``) become ``None``. Never raises: the one parser of the stream
    (Slicer modules, benchmarks) reads what a child process printed. A file name cannot put a line there: the
    child's text lines are printed through :func:`scdl.errors.one_line`."""
    if not isinstance(line, str) or len(line) > MAX_EVENT_CHARS:
        return None
    line = line.strip()
    if not line.startswith("{"):
        return None
    if line.count("[") + line.count("{") > MAX_EVENT_DEPTH and not _depth_ok(line, MAX_EVENT_DEPTH):
        return None
    try:
        obj = json.loads(line, parse_constant=_no_constant, parse_float=_finite_or_none)
    except (ValueError, RecursionError, MemoryError, OverflowError, TypeError):
        return None
    if not isinstance(obj, dict):
        return None
    for key in _NUMBER_KEYS:
        value = obj.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return None
        if isinstance(value, int) and abs(value) > 2**53:          # a counter no run reaches; 1e400 as an int
            return None
    for key in _STRING_KEYS:
        if obj.get(key) is not None and not isinstance(obj[key], str):
            return None
    return obj


class Phase:
    """One phase of work with ``total`` steps; advance it with :meth:`advance`."""

    def __init__(self, reporter: "Progress", name: str, total: int):
        self.reporter = reporter
        self.name = name
        self.total = max(int(total), 1)
        self.done = 0
        self.start = time.monotonic()
        self._bar = None
        if reporter.mode == "tqdm":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=name, file=reporter.err, leave=False, dynamic_ncols=True)
        self._emit()

    def eta_s(self) -> Optional[float]:
        if self.done <= 0:
            return None
        elapsed = time.monotonic() - self.start
        return round(elapsed / self.done * (self.total - self.done), 2)

    def advance(self, n: int = 1) -> None:
        """Mark ``n`` more steps done (raises :class:`Cancelled` if cancellation was requested)."""
        self.reporter.check_cancelled()
        self.done = min(self.done + n, self.total)
        if self._bar is not None:
            self._bar.update(n)
        self._emit()

    def _emit(self) -> None:
        if self.reporter.mode == "json":
            self.reporter.emit({"phase": self.name, "done": self.done, "total": self.total, "eta_s": self.eta_s()})

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Phase":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Progress:
    """Progress reporter.

    Args:
        mode: ``"tqdm"`` (bars on stderr), ``"json"`` (JSON lines on stdout) or ``"none"``.
        out: stream for JSON lines (default stdout). err: stream for bars and messages (default stderr).
        cancel: optional callable returning True when the work must stop.
    """

    def __init__(self, mode: str = "tqdm", out: Optional[TextIO] = None, err: Optional[TextIO] = None,
                 cancel: Optional[Callable[[], bool]] = None):
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, not {mode!r}")
        self.mode = mode
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._cancel_cb = cancel
        self._cancel_requested = threading.Event()
        self._lock = threading.Lock()
        self._interruptible = False

    # -- cancellation -------------------------------------------------------------------------
    def request_cancel(self) -> None:
        self._cancel_requested.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel_requested.is_set() or bool(self._cancel_cb and self._cancel_cb())

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` if the user asked to stop."""
        if self.cancelled:
            raise Cancelled("cancelled by the user")

    def install_signal_handlers(self) -> None:
        """Turn SIGTERM/SIGINT into a cancellation request (checked at the next step boundary)."""

        def handler(signum, frame):  # noqa: ARG001
            self.request_cancel()
            if self._interruptible:                 # nothing is being written: stop right here (see interruptible)
                self._interruptible = False
                raise Cancelled("cancelled by the user")

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A stretch of work that writes nothing (reading the input, the inference): a stop signal raises
        :class:`Cancelled` at once, wherever the work is, instead of at the next step boundary.

        Without it a signal only sets a flag, and a blocking call never looks at it: Python retries a system
        call that a signal interrupted when the handler returns normally (PEP 475), so a read that waits (a
        named pipe, a hung network share) ignored SIGINT and SIGTERM, and a long C call (a resampling) delayed
        the stop until it returned. Outputs are written outside such a stretch: a rename is never cut in two.
        """
        self.check_cancelled()
        previous, self._interruptible = self._interruptible, True
        try:
            yield
        finally:
            self._interruptible = previous
        self.check_cancelled()

    # -- output -------------------------------------------------------------------------------
    def phase(self, name: str, total: int = 1) -> Phase:
        """Start a phase (use as a context manager)."""
        self.check_cancelled()
        return Phase(self, name, total)

    def emit(self, obj: dict) -> None:
        """Write one JSON object as a line on ``out`` (JSON mode only)."""
        if self.mode != "json":
            return
        line = json.dumps(_clean(obj), separators=(", ", ": "))
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def event(self, event: str, **fields: Any) -> None:
        """A named event (e.g. ``"iteration"``, ``"validation"``) as a JSON line."""
        self.emit({"event": event, **fields})

    def message(self, text: str) -> None:
        """A human-readable message (stderr; also a JSON ``message`` event in JSON mode). One line: control
        characters (a newline in a file name) are escaped (:func:`scdl.errors.one_line`)."""
        text = one_line(text)
        if self.mode == "json":
            self.emit({"event": "message", "text": text})
        else:
            print(text, file=self.err, flush=True)

    def warning(self, text: str) -> None:
        """A warning for the user (stderr, and a JSON ``warning`` event in JSON mode), as one line (a file
        name in it cannot start a line of its own, and so cannot forge an event: :func:`scdl.errors.one_line`)."""
        text = one_line(text)
        print(f"warning: {text}", file=self.err, flush=True)
        self.emit({"event": "warning", "text": text})

    def done(self, **fields: Any) -> None:
        """The final line: ``{"phase": "done", ...}``."""
        self.emit({"phase": "done", **fields})


class SilentProgress(Progress):
    """The one silent reporter: no bars, no JSON lines, no messages, no warnings (mode ``"none"``).

    Used where nobody listens: a :class:`~scdl.training.trainer.Trainer` or benchmark without a reporter, and
    the processes other than rank 0 of a distributed run (``source`` = that process's own reporter). A stop
    request of ``source`` (its signal handlers) shows in :attr:`cancelled`, which the training loop polls at
    iteration boundaries and agrees on across processes; :meth:`check_cancelled` never raises, so no process
    leaves a phase on its own while the others wait for it.
    """

    def __init__(self, source: Optional[Progress] = None):
        super().__init__("none")
        self.source = source

    @property
    def cancelled(self) -> bool:
        return super().cancelled or bool(self.source is not None and self.source.cancelled)

    def check_cancelled(self) -> None:
        return None

    def message(self, text: str) -> None:
        return None

    def warning(self, text: str) -> None:
        return None
