"""ChildProcess: non-blocking output, exit status, cancellation of the whole process tree, both backends."""

import os
import signal
import sys
import textwrap
import time

import pytest

from SCDLSlicerLib.process import ChildProcess, process_tree

posix_only = pytest.mark.skipif(os.name == "nt", reason="process groups and ps are POSIX")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purpose
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split()[2] != "Z"
    except OSError:
        return True


def _script(body: str) -> list:
    return [sys.executable, "-c", textwrap.dedent(body)]


#: A child that starts a sleeping grandchild, prints the grandchild's pid, then sleeps itself.
WITH_GRANDCHILD = """
    import subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(grandchild.pid, flush=True)
    time.sleep(60)
"""


def _first_lines(child: ChildProcess, pump=lambda: None, timeout: float = 30.0) -> list:
    """Poll until the child has printed something (``pump()`` runs before each poll)."""
    deadline = time.monotonic() + timeout
    lines = []
    while not lines:
        pump()
        lines = child.poll()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return lines


def _collect(child: ChildProcess, timeout: float = 30.0) -> list:
    lines, deadline = [], time.monotonic() + timeout
    while not child.finished:
        lines += child.poll()
        assert time.monotonic() < deadline, "child did not finish"
        time.sleep(0.01)
    return lines + child.poll()


def test_both_streams_arrive_and_exit_status_is_kept():
    child = ChildProcess(_script("""
        import sys
        print('{"phase": "read", "done": 1, "total": 1}', flush=True)
        print("error: /x.nii: broken. Fix: another file.", file=sys.stderr, flush=True)
        sys.exit(2)
    """), backend="popen").start()
    lines = _collect(child)
    assert sorted(lines) == sorted(['{"phase": "read", "done": 1, "total": 1}', "error: /x.nii: broken. Fix: another file."])
    assert child.returncode == 2 and not child.cancel_requested


def test_poll_never_blocks_while_the_child_is_silent():
    child = ChildProcess(_script("import time; time.sleep(3)"), backend="popen").start()
    started = time.monotonic()
    assert child.poll() == [] and time.monotonic() - started < 0.5
    assert child.running
    child.cancel()
    _collect(child)


@posix_only
def test_cancel_kills_the_child_and_its_grandchild():
    """The child starts a grandchild and both sleep; Cancel ends both (process group of the child)."""
    child = ChildProcess(_script(WITH_GRANDCHILD), backend="popen", kill_grace_s=5).start()
    grandchild = int(_first_lines(child)[0])
    assert grandchild in process_tree(child.pid)
    child.cancel()
    _collect(child)
    assert child.returncode == -signal.SIGTERM and child.cancel_requested and not child.killed
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


@posix_only
def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period():
    child = ChildProcess(_script("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(60)
    """), backend="popen", kill_grace_s=0.5).start()
    while child.poll() != ["ready"]:
        time.sleep(0.01)
    started = time.monotonic()
    child.cancel()
    _collect(child)
    assert child.killed and child.returncode == -signal.SIGKILL
    assert 0.4 < time.monotonic() - started < 10


@posix_only
def test_slicer_launcher_backend_with_tree_kill(fake_qt):
    """``slicer.util.launchConsoleProcess(blocking=False)`` (Slicer >= 5.12) delivers lines through QTimer
    callbacks (pumped here by hand); Cancel finds the child's descendants with ``ps`` and ends them."""
    child = ChildProcess(_script(WITH_GRANDCHILD), backend="slicer", env_updates={"SCDL_TEST": "1"}, kill_grace_s=5).start()
    started = time.monotonic()
    grandchild = int(_first_lines(child, lambda: fake_qt.processEvents(max_rounds=1))[0])
    child.cancel()
    while not child.finished:
        fake_qt.processEvents(max_rounds=1)
        child.poll()
        assert time.monotonic() < started + 40  # 30 s for the first line + 10 s to end
        time.sleep(0.01)
    assert child.cancel_requested and child.returncode == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_auto_backend_outside_the_application_is_popen():
    assert ChildProcess(["true"]).backend == "popen"
    with pytest.raises(ValueError):
        ChildProcess(["true"], backend="qprocess")
