"""Progress reporting for long work: a tqdm bar on the terminal or JSON lines for the Slicer modules.

JSON mode prints one record of :mod:`scdl.events` per line on stdout (the stream's schema, writer and parser
live there), e.g.::

    {"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}
    {"event": "iteration", "iteration": 10, "iterations": 1500, "loss": {"total": 0.53}, ...}
    {"phase": "done", "output": "/path/out.seg.nrrd"}

Human-readable messages go to stderr in every mode so that stdout stays machine-readable.
:class:`ProgressReporter` is the seam the core's long work takes (``Progress``, ``SilentProgress``).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Any, Callable, ContextManager, Iterator, Optional, Protocol, TextIO

from scdl.errors import Cancelled, one_line
from scdl.events import DoneEvent, Event, MessageEvent, PhaseEvent, WarningEvent, make_event
from scdl.events import parse_event as parse_event      # the stream's decoder, here for its earlier importers

MODES = ("tqdm", "json", "none")


class ProgressReporter(Protocol):
    """What long work needs of a progress reporter (:class:`Progress`, :class:`SilentProgress`): ``mode``
    (``"tqdm"``, ``"json"`` or ``"none"``), ``err`` (the stream for bars and text), cancellation, phases,
    records of :mod:`scdl.events`, messages, warnings and the final line."""

    mode: str
    err: TextIO

    @property
    def cancelled(self) -> bool: ...

    def check_cancelled(self) -> None: ...

    def interruptible(self) -> ContextManager[None]: ...

    def phase(self, name: str, total: int = 1) -> "Phase": ...

    def emit(self, record: Event) -> None: ...

    def message(self, text: str) -> None: ...

    def warning(self, text: str) -> None: ...

    def done(self, **fields: Any) -> None: ...


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
            self.reporter.emit(PhaseEvent(phase=self.name, done=self.done, total=self.total, eta_s=self.eta_s()))

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

    def emit(self, record: Event) -> None:
        """Write one record of :mod:`scdl.events` as its JSON line on ``out`` (JSON mode only)."""
        if self.mode != "json":
            return
        line = record.to_line()
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def event(self, event: str, **fields: Any) -> None:
        """A named event from keyword fields (:func:`scdl.events.make_event`: the kind's record, ``TypeError`` for
        a field it does not name); the core's emitters build the record and call :meth:`emit`."""
        self.emit(make_event(event, **fields))

    def message(self, text: str) -> None:
        """A human-readable message (stderr; also a JSON ``message`` event in JSON mode). One line: control
        characters (a newline in a file name) are escaped (:func:`scdl.errors.one_line`)."""
        text = one_line(text)
        if self.mode == "json":
            self.emit(MessageEvent(text=text))
        else:
            print(text, file=self.err, flush=True)

    def warning(self, text: str) -> None:
        """A warning for the user (stderr, and a JSON ``warning`` event in JSON mode), as one line (a file
        name in it cannot start a line of its own, and so cannot forge an event: :func:`scdl.errors.one_line`)."""
        text = one_line(text)
        print(f"warning: {text}", file=self.err, flush=True)
        self.emit(WarningEvent(text=text))

    def done(self, **fields: Any) -> None:
        """The final line: ``{"phase": "done", ...}`` (:class:`scdl.events.DoneEvent`, the command's result)."""
        self.emit(DoneEvent(result=fields))


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

    def event(self, event: str, **fields: Any) -> None:
        return None
