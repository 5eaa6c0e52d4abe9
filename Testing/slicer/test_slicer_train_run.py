"""SCDLTrain tier 1, end to end with real child processes: scene cohort of patient A -> export ->
``scdl train --check-only`` -> a short CPS+SCDL training that is stopped and resumed -> model registered in
the (test) model cache -> SCDLSegment's Logic segments the validation case with it.

One run is shared by the tests of this file (module fixture): a tiny network (width 2, 16³ patches, 8 mm
grid) on 6 mm blocks so that each child takes seconds.
"""

import csv
import time

import numpy as np
import pytest
import slicer

from harness import installed_harness

#: Settings that make the run tiny (Advanced box lines); the panel's own fields are passed as options.
TINY = ["network.n_filters=2", "preprocessing.spacing_mm=[8,8,8]", "data.num_workers=0", "threads=1",
        "log_every=1", "checkpoint_every=1", "validation.every=0", "validation.sw_batch_size=4"]
ITERATIONS = 4


@pytest.fixture(scope="module")
def run(train_blocks, train_block_loader, tmp_path_factory):
    """Export, check, train (stopped after iteration 2), resume to the end, register, review."""
    import os

    home = tmp_path_factory.mktemp("train_home")
    saved_home = os.environ.get("SCDL_HOME")
    os.environ["SCDL_HOME"] = str(home)
    try:
        with installed_harness() as harness:
            from SCDLTrain import SCDLTrainLogic
            from SCDLTrainLib import handoff

            nodes = {name: train_block_loader(harness, *paths, name=name) for name, paths in train_blocks.items()}
            logic = SCDLTrainLogic(backend="popen")
            run_dir = tmp_path_factory.mktemp("runs") / "blocks"
            # patient A has no oesophagus: the run learns the 12 organs its segments annotate (a class that no
            # case annotates is an error: it would be unknown everywhere)
            from scdl.labels.table import LabelTable

            classes = home / "synapse_without_esophagus.csv"
            classes.write_text("LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n" + "".join(
                f"{e.value},{e.name},{e.color[0]},{e.color[1]},{e.color[2]},255\n"
                for e in LabelTable.load("synapse").entries if e.value and e.name != "esophagus"), encoding="utf-8")
            advanced = [*TINY, f'labels="{classes}"']
            exported, scene_problems = logic.exportSceneCohort(run_dir, valFraction=0.5, advanced=advanced)
            opts = logic.makeOptions(run_dir, {"manifest": str(exported.manifest)}, framework="cps-scdl",
                                     iterations=ITERATIONS, preset="cpu", device="cpu", patch_size=16,
                                     labeled_batch=1, unlabeled_batch=1, scdl_weight=0.1, advanced=advanced)
            check = logic.checkCohort(opts, timeout=240)

            first = logic.startTraining(opts)
            stop_sent_at = None
            deadline = time.monotonic() + 240
            while not first.finished:
                first.poll()
                if stop_sent_at is None and first.monitor.iteration >= 2:
                    first.stop()
                    stop_sent_at = first.monitor.iteration
                assert time.monotonic() < deadline, "the first training child did not end"
                time.sleep(0.05)
            resumable = handoff.can_resume(run_dir)
            curves_after_stop = [int(r["iteration"]) for r in first.monitor.loss_rows]

            second = logic.resumeTraining(run_dir, device="cpu")
            second.wait(240)
            curves = logic.curvesForRun(run_dir)
            logic.updateCurves(curves, second.monitor)

            model_id = logic.registerModel(second.model_dir, timeout=120)
            logic.selectInSegment(model_id)
            review_job = logic.startReview(model_id, device="cpu", runDir=run_dir)
            review_job.wait(240)
            yield {"harness": harness, "logic": logic, "nodes": nodes, "exported": exported,
                   "scene_problems": scene_problems, "check": check, "first": first, "second": second,
                   "stop_sent_at": stop_sent_at, "resumable": resumable, "curves_after_stop": curves_after_stop,
                   "curves": curves, "run_dir": run_dir, "model_id": model_id, "review": review_job, "home": home}
    finally:
        if saved_home is None:
            os.environ.pop("SCDL_HOME", None)
        else:
            os.environ["SCDL_HOME"] = saved_home


def test_exported_scene_cohort_is_accepted_by_the_core_check(run):
    check, exported = run["check"], run["exported"]
    assert check.ok, check.problems
    assert check.counts == {"labeled": 1, "unlabeled": 1, "val": 1, "test": 0}
    assert check.validation_source == "val"
    assert not [p for p in check.problems if p["severity"] == "error"]
    # scene side: only the TotalSegmentator classes that Synapse does not have are reported (as warnings)
    assert {p.code for p in run["scene_problems"]} == {"unknown_segments"}
    assert {p.case for p in run["scene_problems"]} == {"blockA", "blockB"}
    assert [c.name for c in exported.cases] == ["blockA", "blockB", "blockC"]


def test_stop_saves_a_checkpoint_and_resume_continues_the_iteration_count(run):
    first, second = run["first"], run["second"]
    assert first.stopped and first.returncode == 130 and first.error_message() is None
    stopped_at = first.monitor.checkpoint_iteration
    assert stopped_at is not None and run["stop_sent_at"] <= stopped_at < ITERATIONS
    assert run["resumable"]
    assert run["curves_after_stop"] == list(range(1, stopped_at + 1))
    assert second.succeeded, second.error_message()
    assert second.monitor.start_info["iteration"] == stopped_at          # resumed where it stopped
    assert [int(r["iteration"]) for r in second.monitor.loss_rows] == list(range(1, ITERATIONS + 1))
    assert second.monitor.result["iteration"] == ITERATIONS and second.monitor.percent == 100.0
    assert not (run["run_dir"] / "checkpoint.pt").is_file() or (run["run_dir"] / "model" / "card.json").is_file()


def test_events_became_plot_and_table_nodes_with_the_run_log_values(run):
    """The curve tables hold exactly the numbers the trainer wrote into log.csv / validation.csv."""
    curves, run_dir = run["curves"], run["run_dir"]
    with (run_dir / "log.csv").open() as handle:
        log = list(csv.DictReader(handle))
    with (run_dir / "validation.csv").open() as handle:
        validation = list(csv.DictReader(handle))
    table = curves.loss_table.GetTable()
    assert table.GetNumberOfRows() == len(log) == ITERATIONS
    for row_index, row in enumerate(log):
        assert table.GetValueByName(row_index, "iteration").ToDouble() == float(row["iteration"])
        for term in ("total", "sup", "cps", "scdl"):
            np.testing.assert_allclose(table.GetValueByName(row_index, term).ToDouble(), float(row[term]), rtol=1e-5)
    dice = curves.dice_table.GetTable()
    assert dice.GetNumberOfRows() == len(validation) == 1                  # validation at the end only
    np.testing.assert_allclose(dice.GetValueByName(0, "mean_dice").ToDouble(), float(validation[0]["mean_dice"]), rtol=1e-5)
    np.testing.assert_allclose(dice.GetValueByName(0, "dice_liver").ToDouble(), float(validation[0]["dice_liver"]), rtol=1e-5)
    # charts: loss terms (no ramp weights) and mean + 12 classes (no oesophagus); series point at their columns
    loss_series = [slicer.mrmlScene.GetNodeByID(i) for i in curves.series_ids(curves.loss_chart)]
    assert [s.GetYColumnName() for s in loss_series] == ["total", "sup", "cps", "scdl", "proxy", "sac", "kl"]
    assert all(s.GetTableNodeID() == curves.loss_table.GetID() for s in loss_series)
    assert curves.dice_chart.GetNumberOfPlotSeriesNodes() == 13
    liver = slicer.mrmlScene.GetNodeByID(curves.series_ids(curves.dice_chart)[5])   # mean, then 4 organs
    assert liver.GetYColumnName() == "dice_liver"
    np.testing.assert_allclose(liver.GetColor(), (221 / 255, 130 / 255, 101 / 255), atol=1e-6)  # Synapse liver colour


def test_model_is_registered_selected_in_scdlsegment_and_its_card_shown(run):
    logic, model_id = run["logic"], run["model_id"]
    assert model_id.startswith("run-blocks-")
    assert (run["home"] / "models" / model_id / "manifest.json").is_file()
    item, card = logic.modelCard(model_id)
    assert item["installed"] and item["kind"] == "user"
    assert card["provenance"]["iterations"] == ITERATIONS and card["provenance"]["framework"] == "cps-scdl"
    assert "1 labeled, 1 unlabeled, 1 validation" in card["provenance"]["data"]
    import SCDLSegment

    assert SCDLSegment.SCDLSegmentLogic().getParameterNode().modelId == model_id


def test_validation_case_segmented_by_scdlsegment_logic_with_the_new_model(run):
    review = run["review"]
    assert [(i.label, i.status) for i in review.items] == [(next(c.name for c in run["exported"].cases if c.split == "val"), "done")]
    node = slicer.mrmlScene.GetNodeByID(review.items[0].result)
    assert node.GetAttribute("SCDLTrain.Prediction") == run["model_id"]
    assert node.GetName() == f"{review.items[0].label} - {run['model_id']}"
    volume = slicer.mrmlScene.GetNodeByID(review.items[0].source)
    geometry = node.GetSegmentation().GetConversionParameter("Reference image geometry").split(";")
    assert geometry[16:22] == ["0", "39", "0", "31", "0", "23"]           # the 40x32x24 block's grid
    # the prediction never counts as a label: the cohort still has the same labeled cases
    cases = run["logic"].sceneCases(0.5)
    assert sorted(c.name for c in cases if c.labeled) == ["blockA", "blockB"]
    assert volume is not None
