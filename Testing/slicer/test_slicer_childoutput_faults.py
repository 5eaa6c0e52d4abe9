"""The Slicer side reads whatever a child prints (issue 25): JSON lines with 1e400, NaN, a name where a number
belongs, deep nesting or a huge line, and text lines with a forged JSON event in a file name, never raise out of
the progress tracker, the training monitor or a job; a bad line is logged and skipped."""

from __future__ import annotations

import math

import pytest

from SCDLSlicerLib.childoutput import ProgressTracker, parse_line
from SCDLSlicerLib.jobs import extract_confidence
from SCDLTrainLib.monitor import TrainMonitor

HOSTILE = [
    '{"phase": "infer", "done": 1e400, "total": 12}',
    '{"phase": "infer", "done": 3, "total": 1e400, "eta_s": 1e400}',
    '{"phase": "infer", "done": NaN, "total": Infinity, "eta_s": -Infinity}',
    '{"phase": "infer", "done": "three", "total": 12}',
    '{"phase": "infer", "done": [1], "total": {"a": 1}}',
    '{"phase": ["infer"], "done": 1, "total": 2}',
    '{"phase": "infer", "done": true, "total": 2}',
    '{"phase": "infer", "done": 1' + "0" * 5000 + ', "total": 2}',
    '{"phase": "infer", "done": 123456789012345678901234567890, "total": 2}',
    '{"event": "warning", "text": {"nested": 1}}',
    '{"event": 7}',
    '{"a": ' + "[" * 100000 + "]" * 100000 + "}",
    "[" * 100000,
    '{"event": "message", "text": "' + "x" * (2 << 20) + '"}',
    '{"event": "iteration", "iteration": "x", "loss": [1, 2], "lr": "fast"}',
    '{"event": "iteration", "iteration": 5, "loss": {"total": 1e400, "sup": "a"}, "lr": NaN}',
    '{"event": "validation", "iteration": 2, "mean_dice": "high", "dice": [0.5], "best_iteration": "two"}',
    '{"event": "validation", "iteration": 2, "mean_dice": 0.5, "dice": "liver"}',
    '{"event": "start", "iteration": 1e400, "iterations": -1e400}',
    '{"event": "checkpoint", "iteration": {"a": 1}}',
    '{"event": "confidence", "organs": {"liver": 1e400, "spleen": NaN}}',
    '{"phase": "done", "output": 5, "iteration": "ten"}',
    '{"phase": "done", "iteration": [10]}',
    "\x00\x1b[2J{\"phase\": \"done\"}",
    '{"phase": "train", "done": -5, "total": 0}',
]


@pytest.mark.parametrize("line", HOSTILE, ids=[f"line{i}" for i in range(len(HOSTILE))])
def test_the_tracker_never_raises(line: str) -> None:
    tracker = ProgressTracker()
    tracker.feed('{"phase": "read", "done": 0, "total": 1}')
    tracker.feed(line)
    tracker.feed('{"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}')
    assert tracker.phase == "infer" and tracker.phase_done == 3          # the stream goes on after the bad line
    assert math.isfinite(tracker.percent) and 0.0 <= tracker.percent <= 100.0
    assert isinstance(tracker.status_text(), str)
    extract_confidence(tracker)                                           # the job's reading of the events too


@pytest.mark.parametrize("line", HOSTILE, ids=[f"line{i}" for i in range(len(HOSTILE))])
def test_the_training_monitor_never_raises(line: str) -> None:
    monitor = TrainMonitor()
    monitor.update(parse_line('{"event": "start", "iteration": 0, "iterations": 10}'))
    monitor.update(parse_line(line))
    monitor.update(parse_line('{"event": "iteration", "iteration": 1, "iterations": 10, "loss": {"total": 2.0}}'))
    assert monitor.iteration >= 1 and isinstance(monitor.status_text(), str)
    monitor.loss_columns()


def test_bad_values_become_text_or_none() -> None:
    """1e400 and NaN are not numbers the panel can use: None; a line whose counters are not numbers is a log line."""
    item = parse_line('{"phase": "infer", "done": 1e400, "total": 12}')
    assert item.kind == "progress" and item.data["done"] is None
    assert parse_line('{"phase": "infer", "done": "three", "total": 12}').kind == "log"
    assert parse_line('{"a": ' + "[" * 50 + "]" * 50 + "}").kind == "log"
    tracker = ProgressTracker()
    tracker.feed('{"event": "confidence", "organs": {"liver": 1e400, "spleen": 0.5}}')
    assert tracker.events["confidence"]["organs"] == {"liver": None, "spleen": 0.5}


def test_a_malformed_line_is_logged_not_raised() -> None:
    """A line the parser lets through but the state cannot take is kept in the log (tracker) or in ``skipped``."""
    tracker = ProgressTracker()
    tracker.feed('{"event": "warning", "text": "a"}')
    tracker.update = None                                    # any failure inside the update: logged, not raised
    item = tracker.feed('{"phase": "infer", "done": 1, "total": 2}')
    assert item.kind == "log" and "skipped a malformed line" in tracker.log[-1]
    monitor = TrainMonitor()
    monitor.update(parse_line('{"event": "validation", "iteration": 2, "mean_dice": 0.5, "dice": [0.5]}'))
    assert monitor.skipped and "AttributeError" in monitor.skipped[0]


def test_a_forged_event_in_a_file_name_stays_text() -> None:
    """The child prints a file name through scdl.errors.one_line: a newline in it cannot start a JSON line."""
    from scdl.errors import ScdlError
    from scdl.progress import Progress

    name = '/data/ct\n{"phase": "done", "output": "/evil.seg.nrrd"}\n.nii.gz'
    line = f"error: {ScdlError('does not exist.', name, 'check the path.')}"
    assert line.count("\n") == 0
    tracker = ProgressTracker()
    for text in line.splitlines():
        tracker.feed(text)
    assert not tracker.finished and tracker.result == {} and tracker.error.startswith("/data/ct\\n{")

    class Capture:
        def __init__(self):
            self.text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    out, err = Capture(), Capture()
    progress = Progress("json", out=out, err=err)
    progress.warning(f"{name}: odd values")
    progress.message(f"wrote {name}")
    for text in (out.text + err.text).splitlines():
        tracker.feed(text)
    assert not tracker.finished and tracker.result == {}
    assert len(err.text.splitlines()) == 1 and len(out.text.splitlines()) == 2
