"""Parsing the JSON-line progress of ``scdl`` children (numbers computed by hand)."""

import json

import pytest

from SCDLSlicerLib.childoutput import ProgressTracker, failure_message, format_seconds, parse_line
from SCDLSlicerLib.jobs import extract_confidence


def test_lines_are_classified_by_content():
    assert parse_line('{"phase": "infer", "done": 3, "total": 12, "eta_s": 4.2}\n').kind == "progress"
    assert parse_line('{"phase": "done", "output": "/x.seg.nrrd"}').kind == "done"
    assert parse_line('{"event": "warning", "text": "odd HU"}').text == "odd HU"
    assert parse_line('{"event": "confidence", "organs": {"liver": 0.9}}').name == "confidence"
    error = parse_line("error: /m/weights.safetensors: checksum mismatch. Fix: download it again.")
    assert (error.kind, error.text) == ("error", "/m/weights.safetensors: checksum mismatch. Fix: download it again.")
    assert parse_line("warning: the input has NaN").kind == "warning"
    assert parse_line("cancelled: nothing was written.").kind == "cancelled"
    # text that merely looks like JSON, tracebacks and library noise are plain log lines
    assert parse_line("{not json}").kind == "log"
    assert parse_line('Traceback (most recent call last):').kind == "log"
    assert parse_line("[1, 2]").kind == "log"


def test_weighted_percent_and_eta_from_phases():
    now = [100.0]
    tracker = ProgressTracker(clock=lambda: now[0])  # weights read 5, preprocess 10, adapt 10, infer 60,
    # postprocess 10, write 5; this run has no adapt phase (a model without test-time batch-norm statistics)
    tracker.feed('{"phase": "read", "done": 0, "total": 1, "eta_s": null}')
    assert tracker.percent == 0.0 and tracker.eta_s() is None and tracker.status_text() == "read 0/1 - 0%"
    tracker.feed('{"phase": "read", "done": 1, "total": 1, "eta_s": 0.0}')
    assert tracker.percent == pytest.approx(5.0)
    tracker.feed('{"phase": "preprocess", "done": 1, "total": 1, "eta_s": 0.0}')
    assert tracker.percent == pytest.approx(15.0)
    now[0] = 110.0  # 10 s elapsed
    tracker.feed('{"phase": "infer", "done": 6, "total": 24, "eta_s": 30.0}')
    assert tracker.percent == pytest.approx(25.0 + 60.0 * 6 / 24)  # 40 %: adapt's share passed over
    assert tracker.eta_s() == pytest.approx(10.0 * (1 - 0.4) / 0.4)  # elapsed * remaining / done
    assert tracker.status_text() == "infer 6/24 - 40% - about 15 s left"
    tracker.feed('{"phase": "write", "done": 2, "total": 2, "eta_s": 0.0}')
    assert tracker.percent == pytest.approx(100.0)
    tracker.feed(json.dumps({"phase": "done", "output": "/o.seg.nrrd", "timings_s": {"infer": 1.5}}))
    assert tracker.finished and tracker.result["output"] == "/o.seg.nrrd" and tracker.status_text() == "done"


def test_percent_never_goes_back_and_unknown_phases_do_not_move_it():
    tracker = ProgressTracker()
    tracker.feed('{"phase": "infer", "done": 12, "total": 12}')
    assert tracker.percent == pytest.approx(85.0)
    tracker.feed('{"phase": "infer", "done": 3, "total": 12}')  # a second pass (e.g. CPU fallback)
    assert tracker.percent == pytest.approx(85.0)
    tracker.feed('{"phase": "download", "done": 1, "total": 2}')
    assert tracker.percent == pytest.approx(85.0) and tracker.phase == "download"


def test_warnings_once_errors_last_and_failure_message():
    tracker = ProgressTracker()
    tracker.feed("warning: values look like MR")
    tracker.feed('{"event": "warning", "text": "values look like MR"}')
    tracker.feed("some library output")
    assert tracker.warnings == ["values look like MR"]
    assert failure_message(tracker, 1) == ("The segmentation process failed (exit status 1). Last output: "
                                           "warning: values look like MR | warning: values look like MR | some library output")
    tracker.feed("error: /data/ct.nii.gz: the image is 2D. Fix: give a 3D CT.")
    assert failure_message(tracker, 2) == "/data/ct.nii.gz: the image is 2D. Fix: give a 3D CT."
    assert failure_message(ProgressTracker(), -9) == "The segmentation process was stopped by signal 9."


def test_confidence_event_with_organs_not_found():
    tracker = ProgressTracker()
    tracker.feed('{"event": "confidence", "organs": {"liver": 0.9312, "gallbladder": null}}')
    assert extract_confidence(tracker) == {"liver": pytest.approx(0.9312), "gallbladder": None}
    assert extract_confidence(ProgressTracker()) == {}


@pytest.mark.parametrize("seconds,text", [(0.4, "0 s"), (8.4, "8 s"), (75.2, "1 min 15 s"), (3725, "1 h 2 min")])
def test_format_seconds(seconds, text):
    assert format_seconds(seconds) == text
