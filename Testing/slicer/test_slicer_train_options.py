"""SCDLTrain: panel options -> ``scdl train`` command lines (checked by the core's resolver), the time and
memory estimate against the measured numbers, and the training child's JSON events -> monitor state."""

import math

import pytest

from SCDLSlicerLib.childoutput import parse_line
from SCDLTrainLib import estimate, options
from SCDLTrainLib.monitor import TrainMonitor


def _opts(tmp_path, **kwargs):
    values = dict(run_dir=tmp_path / "run", cohort={"manifest": str(tmp_path / "m.csv")})
    values.update(kwargs)
    return options.TrainOptions(**values)


def test_panel_fields_become_train_arguments(tmp_path):
    opts = _opts(tmp_path, framework="cps-scdl", iterations=1500, init="my-model", device="cuda:1", preset="cpu",
                 scdl_weight=0.2, patch_size=64, labeled_batch=3, unlabeled_batch=1,
                 advanced=options.parse_advanced("optimizer.lr = 0.005   # half\n\n  augment.flip=true\n"))
    args = opts.train_args()
    assert args[:3] == ["train", "--cohort", str(tmp_path / "m.csv")]
    flag = lambda name: args[args.index(name) + 1]  # noqa: E731
    assert (flag("--out"), flag("--framework"), flag("--iterations"), flag("--device"), flag("--init"),
            flag("--preset")) == (str(tmp_path / "run"), "cps-scdl", "1500", "cuda:1", "my-model", "cpu")
    sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    assert sets == ["patch_size=[64,64,64]", "labeled_batch=3", "unlabeled_batch=1", "scdl.lam=0.2",
                    "optimizer.lr=0.005", "augment.flip=true"]
    assert args[-2:] == ["--progress", "json"]
    assert opts.check_args()[-3:] == ["--check-only", "--progress", "json"]
    config = opts.resolve()                                    # the core's resolver: every layer applied
    assert (config["patch_size"], config["labeled_batch"], config["scdl"]["lam"], config["optimizer"]["lr"],
            config["augment"]["flip"], config["network"]["n_filters"], config["labels"]) == (
        [64, 64, 64], 3, 0.2, 0.005, True, 8, "init")
    # the SCDL weight and the unlabeled batch only go where the framework uses them
    supervised = _opts(tmp_path, framework="supervised").train_args()
    assert not any(a.startswith(("scdl.lam", "unlabeled_batch")) for a in supervised)
    # the preset is always named: without it scdl train would choose by the device (cpu without CUDA)
    assert supervised[supervised.index("--preset") + 1] == "paper" and "--init" not in supervised
    folders = _opts(tmp_path, cohort={"labeled": "/d/lab", "unlabeled": "/d/unl", "labels": "totalsegmentator_v2"})
    assert folders.cohort_args() == ["--labeled", "/d/lab", "--unlabeled", "/d/unl", "--source-labels",
                                     "totalsegmentator_v2"]
    assert options.resume_args("/r", None, "cpu") == ["train", "--resume", "/r", "--device", "cpu", "--progress", "json"]


def test_bad_settings_are_refused_before_anything_starts(tmp_path):
    with pytest.raises(options.OptionsError, match="line 2"):
        options.parse_advanced("optimizer.lr = 0.005\njust words\n")
    with pytest.raises(options.OptionsError, match="unknown setting 'lrate'"):
        _opts(tmp_path, advanced=["optimizer.lrate=0.1"]).resolve()
    with pytest.raises(options.OptionsError, match="patch_size"):
        _opts(tmp_path, patch_size=40).resolve()               # not a multiple of 16
    with pytest.raises(options.OptionsError, match="unlabeled_batch"):
        _opts(tmp_path, unlabeled_batch=0).resolve()
    with pytest.raises(options.OptionsError, match="No cohort"):
        _opts(tmp_path, cohort={}).train_args()


def test_estimate_formula_reproduces_the_measured_steps():
    for row in estimate.MEASURED:
        patch, width = int(row[0]), int(row[1])
        for framework, column in estimate.COLUMNS.items():
            assert estimate.step_seconds(framework, patch, width) == pytest.approx(row[column], rel=0.10)
            assert estimate.step_memory_mib(framework, patch, width) == pytest.approx(row[column + 3], rel=0.15)


def test_estimate_of_the_cpu_preset_agrees_with_the_full_pipeline_benchmark():
    """docs/training.md (bench/train.py, whole data pipeline, 1 thread): CPS+SCDL at the cpu preset (width 8,
    48³, 2 + 2 patches) took 1.60 CPU s/it with a peak RSS of 1076 MiB; CPS 1.55 s/it, 1069 MiB."""
    run = estimate.estimate("cps-scdl", 48, 8, 1500)
    assert run.seconds_per_iteration == pytest.approx(1.60, rel=0.10)
    assert run.total_seconds == pytest.approx(1500 * run.seconds_per_iteration)
    assert run.peak_memory_mib == pytest.approx(1076, rel=0.10)
    assert estimate.estimate("cps", 48, 8, 1500).seconds_per_iteration == pytest.approx(1.55, rel=0.10)
    assert not run.extrapolated and "validation, preprocessing and data loading are not included" in run.text()
    # twice the patches per step: twice the time; more memory for the activations only
    double = estimate.estimate("cps-scdl", 48, 8, 1500, labeled_batch=4, unlabeled_batch=4)
    assert double.seconds_per_iteration == pytest.approx(2 * run.seconds_per_iteration)
    assert run.peak_memory_mib < double.peak_memory_mib < 2 * run.peak_memory_mib
    paper = estimate.estimate("cps-scdl", 96, 16, 17000)
    assert paper.extrapolated and "extrapolated" in paper.text()
    gpu = estimate.estimate("cps-scdl", 96, 16, 17000, device="cuda:0")
    assert gpu.seconds_per_iteration is None and "not calibrated for GPUs" in gpu.text()


def test_the_panel_estimate_is_the_cores():
    """One owner of the numbers: scdl.training.estimate (also scdl train --check-only's plan line)."""
    from scdl.training import estimate as core

    assert estimate.MEASURED is core.MEASURED and estimate.Estimate is core.Estimate
    assert estimate.estimate("cps-scdl", 48, 8, 1500).text() == core.estimate("cps-scdl", 48, 8, 1500).text()


def test_training_events_drive_the_monitor():
    monitor = TrainMonitor()
    monitor.update(parse_line('{"phase": "check", "done": 2, "total": 5, "eta_s": 1.0}'))
    assert monitor.status_text() == "preparing: check 2/5" and monitor.percent == 0.0
    for text in (
            '{"event": "start", "iteration": 0, "iterations": 10, "framework": "cps-scdl", "device": "cpu"}',
            '{"event": "iteration", "iteration": 1, "iterations": 10, "loss": {"total": 3.0, "sup": 2.0, "w_cps": 0.001}, "lr": 0.01, "eta_s": 90.0}',
            '{"phase": "train", "done": 1, "total": 10, "eta_s": 81.0}',
            '{"event": "iteration", "iteration": 2, "iterations": 10, "loss": {"total": 2.0, "sup": 1.5, "w_cps": 0.002}, "lr": 0.009, "eta_s": 40.0}',
            '{"phase": "train", "done": 2, "total": 10, "eta_s": 72.0}',
            '{"event": "validation", "iteration": 2, "mean_dice": 0.5, "dice": {"liver": 0.75, "spleen": null}, "best_iteration": 2, "best_mean_dice": 0.5}',
            '{"event": "checkpoint", "iteration": 2, "path": "/r/checkpoint.pt"}'):
        monitor.update(parse_line(text))
    assert (monitor.iteration, monitor.total, monitor.percent, monitor.eta_s) == (2, 10, 20.0, 72.0)
    assert monitor.status_text() == "iteration 2/10 - 20% - about 1 min 12 s left - loss 2 - val Dice 0.500"
    assert monitor.loss_columns() == ["total", "sup"] and monitor.checkpoint_iteration == 2
    assert monitor.val_rows[0]["dice_liver"] == 0.75 and math.isnan(monitor.val_rows[0]["dice_spleen"])
    assert monitor.take_changed() and not monitor.take_changed()
    # a resumed child restarts after its checkpoint: rows past it are dropped, then re-sent
    monitor.update(parse_line('{"event": "start", "iteration": 1, "iterations": 10}'))
    assert [r["iteration"] for r in monitor.loss_rows] == [1.0] and monitor.val_rows == []
    monitor.update(parse_line('{"phase": "done", "output": "/r/model", "iteration": 10, "best_mean_dice": 0.5}'))
    assert monitor.percent == 100.0 and monitor.model_path == "/r/model"
