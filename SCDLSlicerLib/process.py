"""Child processes that the GUI drives without blocking: ``start()``, ``poll()`` from a timer, ``cancel()``.

Two ways to run the child:

- ``"slicer"``: ``slicer.util.launchConsoleProcess(..., blocking=False)`` (Slicer >= 5.12). Slicer reads the
  output in its own thread and hands lines to us from a ``qt.QTimer``; stdout and stderr arrive merged.
- ``"popen"``: ``subprocess.Popen`` in its own process group / session plus one reader thread per stream;
  the widget's ``qt.QTimer`` calls :meth:`ChildProcess.poll`. Used by older Slicer versions and wherever no
  Qt event loop runs (tests, scripts).

``"auto"`` picks ``"slicer"`` only inside the Slicer application with a new enough ``launchConsoleProcess``.

Cancelling stops the whole process tree: first a polite SIGTERM (``scdl`` stops at the next step, removes
its temporary files and exits with status 130), then SIGKILL after ``kill_grace_s`` seconds. A ``"popen"``
child leads its own process group, so the group is signalled; ``launchConsoleProcess`` cannot start a new
group, so for ``"slicer"`` the child's descendants are listed (``ps``) when Cancel is pressed and signalled
one by one. On Windows the tree is ended with ``taskkill /T /F``.

No Qt import here: the object is usable (and tested) without a GUI.
"""

from __future__ import annotations

import inspect
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Optional, Protocol, Sequence

BACKENDS = ("auto", "slicer", "popen")

#: Seconds between SIGTERM and SIGKILL when cancelling.
DEFAULT_KILL_GRACE_S = 5.0

_EXIT = object()


def slicer_launcher_available() -> bool:
    """True inside the Slicer application when ``launchConsoleProcess`` supports ``blocking=False`` (>= 5.12)."""
    try:
        import slicer
    except ImportError:
        return False
    if not hasattr(slicer, "app"):
        return False
    launch = getattr(getattr(slicer, "util", None), "launchConsoleProcess", None)
    if launch is None:
        return False
    try:
        return "blocking" in inspect.signature(launch).parameters
    except (TypeError, ValueError):
        return False


class ChildProcessLike(Protocol):
    """What a job (:class:`SCDLSlicerLib.jobs.ChildJob`) needs of its child process: :class:`ChildProcess`, or a
    stand-in in tests. ``poll()`` never blocks; ``finished`` is true once the child exited and every line was
    handed out; ``backend`` is ``"slicer"`` when Slicer's event loop delivers the output (a blocking wait pumps it)."""

    @property
    def backend(self) -> str: ...

    @property
    def finished(self) -> bool: ...

    @property
    def running(self) -> bool: ...

    @property
    def returncode(self) -> Optional[int]: ...

    @property
    def cancel_requested(self) -> bool: ...

    def start(self) -> "ChildProcessLike": ...

    def poll(self) -> list[str]: ...

    def cancel(self) -> None: ...


class ChildProcessFactory(Protocol):
    """Builds a job's child process from its command line (:class:`ChildProcess` itself is one); injected into
    the jobs' constructors (``spawn=``)."""

    def __call__(self, args: Sequence[str], env: Optional[dict[str, str]] = None, cwd: Optional[str] = None,
                 backend: str = "auto", kill_grace_s: float = DEFAULT_KILL_GRACE_S,
                 env_updates: Optional[dict[str, str]] = None) -> ChildProcessLike: ...


class ChildProcess:
    """A child process with non-blocking output reading and process-tree cancellation.

    Args:
        args: the command line (executable first).
        env: the complete environment of the child (``None``: this process's environment).
        cwd: working folder of the child.
        backend: ``"auto"``, ``"slicer"`` or ``"popen"`` (see the module docstring).
        kill_grace_s: seconds between the polite SIGTERM and SIGKILL on :meth:`cancel`.
        env_updates: variables changed relative to this process's environment (``"slicer"`` backend only;
            ``env`` is used by ``"popen"``).
    """

    def __init__(
        self,
        args: Sequence[str],
        env: Optional[dict[str, str]] = None,
        cwd: Optional[str] = None,
        backend: str = "auto",
        kill_grace_s: float = DEFAULT_KILL_GRACE_S,
        env_updates: Optional[dict[str, str]] = None,
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.args = [str(a) for a in args]
        self.env = env
        self.env_updates = env_updates
        self.cwd = cwd
        self.backend = ("slicer" if slicer_launcher_available() else "popen") if backend == "auto" else backend
        self.kill_grace_s = float(kill_grace_s)
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        self.cancel_requested = False
        self.killed = False
        self._queue: "queue.Queue" = queue.Queue()
        self._open_streams = 0
        self._exit_seen = False
        self._kill_deadline: Optional[float] = None
        self._tree_snapshot: list[int] = []
        self._leftovers_killed = False

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def pid(self) -> Optional[int]:
        return None if self.proc is None else self.proc.pid

    @property
    def started(self) -> bool:
        return self.proc is not None

    @property
    def finished(self) -> bool:
        """The child exited and all its output was handed out by :meth:`poll`."""
        return self._exit_seen and self._open_streams == 0 and self._queue.empty()

    @property
    def running(self) -> bool:
        return self.started and not self.finished

    def start(self) -> "ChildProcess":
        if self.proc is not None:
            raise RuntimeError("the process was already started")
        if self.backend == "slicer":
            self._start_slicer()
        else:
            self._start_popen()
        return self

    def _start_popen(self) -> None:
        kwargs: dict = {}
        if os.name == "nt":
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._open_streams = 2
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read_stream, args=(stream,), daemon=True).start()
        threading.Thread(target=self._wait_exit, daemon=True).start()

    def _read_stream(self, stream) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._queue.put(line.rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        finally:
            self._queue.put(None)

    def _wait_exit(self) -> None:
        self._queue.put((_EXIT, self.proc.wait()))

    def _start_slicer(self) -> None:
        import slicer

        self._open_streams = 0  # Slicer reads the (merged) output and reports completion itself
        # Slicer's own environment, as slicer.util.executePythonModule uses for PythonSlicer.
        self.proc = slicer.util.launchConsoleProcess(
            self.args,
            useStartupEnvironment=False,
            updateEnvironment=self.env_updates,
            cwd=self.cwd,
            blocking=False,
            logCallback=lambda line: self._queue.put(line),
            completedCallback=lambda code: self._queue.put((_EXIT, code)),
        )

    # -- reading --------------------------------------------------------------------------------
    def poll(self) -> list[str]:
        """Lines printed since the last call (stdout and stderr in arrival order); never blocks.

        Also escalates a pending cancellation to SIGKILL once the grace period is over.
        """
        lines: list[str] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._open_streams -= 1
            elif isinstance(item, tuple) and item and item[0] is _EXIT:
                self._exit_seen = True
                self.returncode = item[1]
            else:
                lines.append(item)
        self._escalate_cancel()
        if self.finished and self.cancel_requested and not self._leftovers_killed:
            self._leftovers_killed = True
            self._signal_tree(_SIGKILL, only_leftovers=True)
        return lines

    def wait(self, timeout: Optional[float] = None, on_line: Optional[Callable[[str], None]] = None,
             interval_s: float = 0.05) -> int:
        """Block until the child finished (for scripts, batch jobs and tests); returns the exit status.

        With the ``"slicer"`` backend Slicer's event loop delivers the output, so it is pumped here.
        Raises ``TimeoutError`` after ``timeout`` seconds (the child keeps running; cancel it yourself).
        """
        if self.proc is None:
            raise RuntimeError("the process was not started")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for line in self.poll():
                if on_line is not None:
                    on_line(line)
            if self.finished:
                return int(self.returncode)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the child process {self.pid} is still running after {timeout} s")
            if self.backend == "slicer":
                import slicer

                slicer.app.processEvents()
            time.sleep(interval_s)

    # -- cancelling -----------------------------------------------------------------------------
    def cancel(self) -> None:
        """Ask the child (and its children) to stop now; SIGKILL follows after ``kill_grace_s`` seconds."""
        if self.proc is None or self.cancel_requested:
            return
        self.cancel_requested = True  # also marks a run that ended by itself meanwhile: its result is dropped
        if self._exit_seen:
            return
        self._kill_deadline = time.monotonic() + self.kill_grace_s
        if not self._owns_group():
            self._tree_snapshot = process_tree(self.proc.pid)
        self._signal_tree(_SIGTERM)

    def _escalate_cancel(self) -> None:
        if not self.cancel_requested or self.killed or self._exit_seen or self._kill_deadline is None:
            return
        if time.monotonic() >= self._kill_deadline:
            self._signal_tree(_SIGKILL)
            self.killed = True

    def _owns_group(self) -> bool:
        return self.backend == "popen"

    def _signal_tree(self, sig: int, only_leftovers: bool = False) -> None:
        pid = self.proc.pid
        if os.name == "nt":
            if sig == _SIGKILL or not only_leftovers:
                subprocess.run(["taskkill", "/PID", str(pid), "/T", "/F"], capture_output=True, check=False)
            return
        if self._owns_group():
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            return
        targets = self._tree_snapshot or ([] if only_leftovers else process_tree(pid))
        for target in reversed(targets):
            if only_leftovers and target == pid:
                continue
            try:
                os.kill(target, sig)
            except (ProcessLookupError, PermissionError):
                pass


_SIGTERM = signal.SIGTERM
_SIGKILL = getattr(signal, "SIGKILL", signal.SIGTERM)


def process_tree(pid: int) -> list[int]:
    """``pid`` followed by all its descendants (POSIX ``ps``); ``[pid]`` when ``ps`` is unavailable."""
    if os.name == "nt":
        return [pid]
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=", "-o", "ppid="], capture_output=True, text=True,
                             check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return [pid]
    children: dict[int, list[int]] = {}
    for row in out.splitlines():
        parts = row.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            children.setdefault(int(parts[1]), []).append(int(parts[0]))
    tree, frontier = [pid], [pid]
    while frontier:
        nxt = []
        for parent in frontier:
            for child in children.get(parent, []):
                if child not in tree:
                    tree.append(child)
                    nxt.append(child)
        frontier = nxt
    return tree


def python_executable() -> str:
    """The Python that runs ``-m scdl``: ``PythonSlicer`` inside Slicer, this interpreter elsewhere."""
    import shutil

    try:
        import slicer

        in_slicer = hasattr(slicer, "app")
    except ImportError:
        in_slicer = False
    if in_slicer:
        found = shutil.which("PythonSlicer")
        if found:
            return found
        candidate = os.path.join(os.path.dirname(sys.executable), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
        if os.path.exists(candidate):
            return candidate
    return sys.executable
