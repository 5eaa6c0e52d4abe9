"""SCDLTrain and fine-tuning (issue 24): after the cohort check, per case the classes it annotates and those the
initial model keeps; in the result, the validation Dice per organ before (the initial model) and after. Logic and
tables without child processes; the check's JSON events as the core writes them."""

import json

import pytest

from SCDLSlicerLib import jobs
from SCDLSlicerLib.childoutput import parse_line
from SCDLTrainLib import tables, trainjob

ANNOTATION = {"event": "annotation", "partial": True, "cases": [
    {"case": "liver01", "row": "manifest.csv:2", "annotated": ["liver"], "kept": ["spleen", "left kidney"],
     "unknown": ["esophagus"], "keep": True, "text": "liver01: annotated liver; ..."}]}
PLAN = {"event": "plan", "preset": "cpu", "iterations": 300, "text": "plan: preset cpu (chosen: no CUDA on this "
        "machine; --preset paper for the paper's settings); cps-scdl, 300 iterations, ..."}


def test_the_check_reports_annotated_and_kept_classes_per_case(monkeypatch):
    lines = [parse_line(json.dumps(e)) for e in (PLAN, ANNOTATION, {"phase": "done", "ok": True, "labeled": 1,
                                                                     "unlabeled": 2, "val": 0, "test": 0})]
    job = trainjob.CheckJob(["train", "--check-only"])
    monkeypatch.setattr(jobs.ChildJob, "poll", lambda self: lines)
    job.poll()
    assert job.annotation[0]["kept"] == ["spleen", "left kidney"] and job.plan["preset"] == "cpu"
    text = tables.case_annotation_text(job.annotation[0])
    assert text == "liver; the initial model teaches: spleen, left kidney; unknown: esophagus"
    # without keep-what-you-know (weight 0) the classes are still kept, not taught
    assert "kept from the initial model: spleen" in tables.case_annotation_text({**job.annotation[0], "keep": False})

    class Exported:                       # a scene export names the manifest row by its volume
        def case_for_row(self, row):
            return "Liver study CT" if row == "manifest.csv:2" else None

    assert tables.checked_annotation(job.annotation, Exported()) == {"Liver study CT": text}
    assert tables.checked_annotation(job.annotation) == {"liver01": text}


def test_the_log_describes_plan_annotation_and_the_validation_before(slicer_app):
    from SCDLTrain import SCDLTrainLogic

    describe = SCDLTrainLogic.describeEvent
    assert describe(PLAN).startswith("plan: preset cpu (chosen: no CUDA")
    assert describe(ANNOTATION) == "liver01: liver; the initial model teaches: spleen, left kidney; unknown: esophagus"
    before = {"event": "validation", "iteration": 0, "mean_dice": 0.61, "baseline": True}
    assert describe(before) == "before fine-tuning (the initial model): validation mean Dice 0.6100"


def test_the_log_describes_the_events_by_kind(slicer_app):
    from scdl.events import EventKind

    from SCDLTrain import SCDLTrainLogic

    assert SCDLTrainLogic.describedEvents() == {EventKind.PLAN, EventKind.ANNOTATION, EventKind.VALIDATION,
                                                EventKind.CHECKPOINT, EventKind.MODEL, EventKind.START, EventKind.INIT}
    describe = SCDLTrainLogic.describeEvent
    assert describe({"event": "checkpoint", "iteration": 100, "path": "c.pt"}) == "checkpoint at iteration 100"
    assert describe({"event": "init", "init": "m", "matched": ["liver"], "new": []}) == (
        "initialised from m: 1 classes kept, new: -")
    for other in ({"event": "iteration", "iteration": 3}, {"event": "a-newer-kind"}, {"event": ["no", "name"]}):
        assert describe(other) == str(other)                            # shown as it came


def test_the_result_shows_dice_per_organ_before_and_after(slicer_app):
    from SCDLTrain import SCDLTrainLogic

    card = {"provenance": {"validation_metrics": {
        "mean_dice": 0.8, "dice": {"liver": 0.93, "spleen": 0.8, "pancreas": float("nan")},
        "before": {"mean_dice": 0.75, "dice": {"liver": 0.9, "spleen": 0.82, "pancreas": float("nan")},
                   "model": "scdl-abdominal-ct"}}}}
    rows, before, after = SCDLTrainLogic.beforeAfter(card)
    assert [r[0] for r in rows] == ["liver", "spleen"] and (before, after) == (0.75, 0.8)
    assert rows[0][3] == pytest.approx(0.03) and rows[1][3] == pytest.approx(-0.02)
    html = tables.before_after_html(rows, before, after)
    assert "before (initial model)" in html and "<td>liver</td><td>0.900</td><td>0.930</td><td>+0.030</td>" in html
    assert "<td>+0.050</td>" in html                                   # the mean
    # a model trained from scratch (no "before"): nothing shown
    assert SCDLTrainLogic.beforeAfter({"provenance": {"validation_metrics": {"dice": {"liver": 0.9}}}}) == ([], None, None)
    assert tables.before_after_html([]) == ""
