"""scdl.events: the progress stream's schema (issue 26): every kind round-trips, the lines are the ones the core
printed before the schema, the parser stays defensive, and the lines of a real tiny run parse."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from scdl import events as ev
from scdl.events import EventKind, parse_event, parse_record, record_from_dict

#: One record of every kind, with the values a run writes.
SAMPLES = [
    ev.PhaseEvent(phase="infer", done=3, total=12, eta_s=4.2),
    ev.DoneEvent(result={"output": "/o.seg.nrrd", "device": "cpu", "timings_s": {"infer": 1.5}}),
    ev.MessageEvent(text="resuming run at iteration 4 of 10"),
    ev.WarningEvent(text="the scan is thin"),
    ev.PlanEvent(preset="cpu", preset_note="", framework="cps", iterations=10, patch_size=[32, 32, 32],
                 labeled_batch=2, unlabeled_batch=1, accumulate=1, device="cpu", keep_teachers=0,
                 seconds_per_iteration=0.5, total_seconds=5.0, peak_memory_mib=812.0, extrapolated=False,
                 text="preset cpu: 10 iterations"),
    ev.ProblemEvent(severity="warning", code="few_cases", message="1 labeled case", path="", case="", fix="add cases"),
    ev.AnnotationEvent(partial=True, cases=[{"case": "a", "annotated": ["liver"]}]),
    ev.InitEvent(init="tiny", matched=["liver"], new=[], dropped=["spleen"], networks_loaded=2, networks_fresh=0),
    ev.StartEvent(iteration=0, iterations=10, framework="cps", device="cpu", world_size=1, run_dir="/r",
                  labeled=2, unlabeled=1, validation=1, validation_source="val"),
    ev.IterationEvent(iteration=5, iterations=10, loss={"total": 0.5, "sup": 0.4}, lr=0.01, it_per_s=2.5,
                      eta_s=2.0, data_wait=0.01),
    ev.ValidationEvent(iteration=10, mean_dice=0.8, dice={"liver": 0.8, "spleen": None}, found={"liver": 1.0},
                       best_iteration=10, best_mean_dice=0.8, source="val", baseline=True),
    ev.CheckpointEvent(iteration=10, path="/r/checkpoint.pt"),
    ev.ReplicasEvent(iteration=10, world_size=2, max_weight_difference=0.0),
    ev.ModelEvent(path="/r/model", selected_iteration=10, mean_dice=0.8),
    ev.ConfidenceEvent(organs={"liver": 0.93, "gallbladder": None}),
    ev.SampleEvent(patient="s0011", in_training_data="held-out", text="NO: held out"),
    ev.DiceEvent(classes=[{"name": "liver", "dice": 0.9}], mean={"dice": 0.9}),
    ev.RunEvent(config="cps", seed=0, reused=False, mean_dice=0.7, small_dice=0.5, train_wall_s=12.0, score_s=3.0),
]


def test_every_kind_round_trips() -> None:
    """record -> line -> parse -> the same record, for every EventKind."""
    assert {type(r).kind for r in SAMPLES} == set(EventKind) == set(ev.RECORDS)
    for record in SAMPLES:
        line = record.to_line()
        assert "\n" not in line
        assert parse_record(line) == record, line
        assert parse_record(line).to_line() == line


def test_lines_are_the_ones_printed_before_the_schema() -> None:
    """The wire format did not change: keys, order, separators, null for NaN, baseline only when True."""
    from scdl.progress import Progress

    out = io.StringIO()
    progress = Progress("json", out=out, err=io.StringIO())
    with progress.phase("read", 2) as phase:
        phase.advance()
    progress.emit(ev.ValidationEvent(iteration=4, mean_dice=float("nan"), dice={"liver": 0.5}, found={},
                                     best_iteration=None, best_mean_dice=None, source="val"))
    progress.emit(SAMPLES[9])
    progress.warning("w")
    progress.message("m")
    progress.done(output="/x", cases=2, seconds=1.5)
    lines = out.getvalue().splitlines()
    assert lines[0] == '{"phase": "read", "done": 0, "total": 2, "eta_s": null}'
    assert lines[1].startswith('{"phase": "read", "done": 1, "total": 2, "eta_s": ')        # a measured time
    assert lines[2:] == [
        '{"event": "validation", "iteration": 4, "mean_dice": null, "dice": {"liver": 0.5}, "found": {}, '
        '"best_iteration": null, "best_mean_dice": null, "source": "val"}',
        '{"event": "iteration", "iteration": 5, "iterations": 10, "loss": {"total": 0.5, "sup": 0.4}, "lr": 0.01, '
        '"it_per_s": 2.5, "eta_s": 2.0, "data_wait": 0.01}',
        '{"event": "warning", "text": "w"}',
        '{"event": "message", "text": "m"}',
        '{"phase": "done", "output": "/x", "cases": 2, "seconds": 1.5}',
    ]
    assert json.loads(SAMPLES[10].to_line())["baseline"] is True


def test_the_parser_stays_defensive() -> None:
    """Unknown kinds have no record (the object is still decoded); extra fields are kept and written back;
    missing fields are None; a bad line is no record; a field the schema does not name is refused on emit."""
    assert parse_record('{"event": "someday", "x": 1}') is None and parse_event('{"event": "someday"}') is not None
    assert parse_record('{"a": 1}') is None and parse_record("warning: x") is None and parse_record("{bad") is None
    newer = parse_record('{"event": "checkpoint", "iteration": 3, "path": "/c", "bytes": 12}')
    assert newer == ev.CheckpointEvent(iteration=3, path="/c", extra={"bytes": 12})
    assert newer.to_line() == '{"event": "checkpoint", "iteration": 3, "path": "/c", "bytes": 12}'
    assert record_from_dict({"event": "checkpoint"}) == ev.CheckpointEvent(iteration=None, path=None)
    assert parse_record('{"event": "validation", "iteration": 2, "dice": [0.5]}').dice == [0.5]   # not coerced
    with pytest.raises(TypeError):
        ev.make_event("checkpoint", iteration=3, path="/c", typo=1)
    with pytest.raises(ValueError):
        ev.make_event("done", output="/x")


def _liver_only_manifest(folder: Path, crops_manifest: Path) -> Path:
    with crops_manifest.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = folder / "liver_only.csv"
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "label", "split", "labels", "annotated"])
        writer.writeheader()
        for r in rows:
            writer.writerow({"image": str(crops_manifest.parent / r["image"]),
                             "label": str(crops_manifest.parent / r["label"]) if r["label"] else "",
                             "split": r["split"], "labels": r["labels"], "annotated": "liver" if r["label"] else ""})
    return out


def test_the_lines_of_a_real_tiny_run_parse(patient_a_ct, patient_a_seg, tiny_model: Path, tmp_path: Path,
                                            capsys) -> None:
    """``scdl train --progress json`` (fine-tuning a tiny model on liver-only crops, 2 iterations): every JSON
    line is a record of the schema, written back byte for byte, and the run's kinds are all there."""
    from scdl.cli.main import main
    from scdl.training.sample_cohort import make_crop_cohort

    crops = make_crop_cohort(patient_a_ct, patient_a_seg, tmp_path / "crops")
    code = main(["train", "--cohort", str(_liver_only_manifest(tmp_path, crops)), "--out", str(tmp_path / "run"),
                 "--init", str(tiny_model), "--preset", "cpu", "--iterations", "2", "--device", "cpu",
                 "--progress", "json", "--cache-dir", str(tmp_path / "cache"), "--set", "data.num_workers=0",
                 "--set", "threads=1", "--set", "log_every=1", "--set", "labeled_batch=2",
                 "--set", "unlabeled_batch=1"])
    assert code == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    records = [parse_record(line) for line in lines]
    assert all(r is not None for r in records), [line for line, r in zip(lines, records) if r is None]
    assert [r.to_line() for r in records] == lines
    assert all(not r.extra for r in records)
    kinds = {r.kind for r in records}
    assert {EventKind.PLAN, EventKind.ANNOTATION, EventKind.INIT, EventKind.START, EventKind.ITERATION,
            EventKind.VALIDATION, EventKind.CHECKPOINT, EventKind.MODEL, EventKind.PROGRESS, EventKind.DONE} <= kinds
    assert records[-1].kind == EventKind.DONE and records[-1].result["iteration"] == 2
