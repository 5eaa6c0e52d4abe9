"""Progress reporting for long work: a tqdm bar on the terminal or JSON lines for the Slicer modules.

JSON mode prints one object per line on stdout, e.g.::

    {"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}
    {"phase": "done", "output": "/path/out.seg.nrrd"}

Other events (training iterations, warnings, messages) are JSON objects with an ``"event"`` key.
Human-readable messages go to stderr in every mode so that stdout stays machine-readable.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional, TextIO

from scdl.errors import Cancelled

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


def parse_event(line: str) -> Optional[dict[str, Any]]:
    """One line of a JSON-mode stream -> its object; ``None`` for anything else (a human-readable line, a
    damaged or partial line, JSON that is not an object). The one parser of the stream (Slicer modules,
    benchmarks)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


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

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, handler)
            signal.signal(signal.SIGINT, handler)

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
        """A human-readable message (stderr; also a JSON ``message`` event in JSON mode)."""
        if self.mode == "json":
            self.emit({"event": "message", "text": text})
        else:
            print(text, file=self.err, flush=True)

    def warning(self, text: str) -> None:
        """A warning for the user (stderr, and a JSON ``warning`` event in JSON mode)."""
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
