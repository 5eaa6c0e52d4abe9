"""The trainer on a tiny cohort cut from patient A: the loss goes down, resume is exact, a kill -9 is survived,
the model package works with ``scdl segment``, and ``--init`` fine-tunes with classes matched by name."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from scdl.cli.main import main

from inprocess import run_scdl
from scdl.labels.table import LabelTable
from scdl.training.checkpoint import load_checkpoint
from scdl.training.cohort import load_manifest
from scdl.training.config import resolve_config
from scdl.training.data import StepBatches
from scdl.training.sample_cohort import make_crop_cohort
from scdl.training.trainer import Trainer

#: Tiny settings: 6 mm grid, 32^3 patches, one CPU thread (faster than two on a shared 2-core machine).
TINY = ["patch_size=[32,32,32]", "preprocessing.spacing_mm=[6,6,6]", "data.num_workers=0", "threads=1",
        "log_every=1", "validation.sw_batch_size=4"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, patient_a_ct, patient_a_seg) -> Path:
    return make_crop_cohort(patient_a_ct, patient_a_seg, tmp_path_factory.mktemp("train_cohort"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "h5_cache"


def _config(cache_dir: Path, *overrides: str, **values):
    return resolve_config("cpu", values=values, overrides=[*TINY, f'data.cache_dir="{cache_dir}"', *overrides])


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def trained(manifest: Path, cache_dir: Path, tmp_path_factory):
    """12 supervised iterations at the paper's lr (0.01), width 4; loss measured on the 12 training batches."""
    run_dir = tmp_path_factory.mktemp("run") / "sup"
    cfg = _config(cache_dir, "network.n_filters=4", "validation.every=6", framework="supervised", iterations=12)
    trainer = Trainer(cfg, load_manifest(manifest), run_dir, device="cpu")
    trainer.prepare()
    labeled, _, _ = trainer._cases()
    batches = StepBatches(labeled, [], (32, 32, 32), cfg["labeled_batch"], 0, cfg["sampling"]["class_prob"],
                          cfg["augment"], cfg["seed"])
    seen = [batches[i] for i in range(12)]

    def loss(step) -> float:
        net = copy.deepcopy(step).train()
        with torch.no_grad():
            return float(np.mean([float(net(b["labeled_image"], b["labeled_label"], None)["sup"]) for b in seen]))

    trainer._build()                        # the initial networks (same seed as the run)
    before = loss(trainer.step)
    result = trainer.run()
    return run_dir, result, before, loss(trainer.step), trainer


def test_few_steps_lower_the_loss_and_write_the_run(trained) -> None:
    run_dir, result, before, after, _ = trained
    assert not result.stopped and result.iteration == 12
    assert after < before - 0.1, (before, after)          # measured: 7.245 -> 7.021
    rows = _rows(run_dir / "log.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 13))
    assert {"lr", "it_per_s", "data_wait", "total", "sup", "sup_0"} <= set(rows[0])
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[0] == pytest.approx(0.01) and lrs[6] == pytest.approx(0.01 * (1 - 6 / 12) ** 0.9)
    val = _rows(run_dir / "validation.csv")
    assert [int(r["iteration"]) for r in val] == [6, 12] and "dice_liver" in val[0]
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    assert config["step"]["sup_k"] == 10 and config["optimizer"]["lr"] == 0.01 and config["framework"] == "supervised"


def test_package_holds_the_best_networks(trained) -> None:
    from scdl.models.package import ModelPackage

    run_dir, result, _, _, trainer = trained
    pkg = ModelPackage.load(result.model_dir)
    card = pkg.card
    assert card["architecture"]["n_filters"] == 4 and card["architecture"]["n_classes"] == 14
    assert card["preprocessing"]["spacing_mm"] == [6.0, 6.0, 6.0] and card["preprocessing"]["patch_size"] == [32] * 3
    prov = card["provenance"]
    assert prov["framework"] == "supervised" and prov["iterations"] == 12
    best = load_checkpoint(run_dir / "best.pt")
    assert prov["validation_metrics"]["mean_dice"] == pytest.approx(best["best"]["mean_dice"])
    assert prov["selected_iteration"] == best["iteration"] == result.best["iteration"]
    for key, value in best["networks"][0].items():
        assert torch.equal(pkg.state_dicts()[0][key], value)
    assert pkg.labels.names == LabelTable.load("synapse").names


def test_scdl_segment_accepts_the_package(trained, manifest: Path, tmp_path: Path) -> None:
    _, result, _, _, _ = trained
    image = manifest.parent / "images" / "val_a.nii.gz"
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", str(image), "-o", str(out), "--model", str(result.model_dir), "--device", "cpu",
                 "--progress", "none"]) == 0
    ct, seg = sitk.ReadImage(str(image)), sitk.ReadImage(str(out))
    assert seg.GetSize() == ct.GetSize() and seg.GetOrigin() == pytest.approx(ct.GetOrigin())
    assert int(sitk.GetArrayViewFromImage(seg).max()) < 14


def test_resume_is_exact(manifest: Path, cache_dir: Path, tmp_path: Path) -> None:
    """CPS + SCDL (random proxy samples, dropout): 2 steps + resume 2 steps == 4 steps, bit for bit."""
    def cfg():
        return _config(cache_dir, "network.n_filters=2", "validation.every=2", "labeled_batch=1", "unlabeled_batch=1",
                       framework="cps-scdl", iterations=4)

    cohort = load_manifest(manifest)
    full = Trainer(cfg(), cohort, tmp_path / "full", device="cpu")
    full.run()
    half = Trainer(cfg(), cohort, tmp_path / "half", device="cpu")
    stopped = half.run(stop_at=2)
    assert stopped.stopped and stopped.iteration == 2 and stopped.model_dir is None
    resumed = Trainer(cfg(), cohort, tmp_path / "half", device="cpu", resume=True)
    done = resumed.run()
    assert done.iteration == 4 and done.model_dir is not None
    a, b = full.step.state_dict(), resumed.step.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(ma[i]["momentum_buffer"], mb[i]["momentum_buffer"]) for i in ma)
    losses = lambda d: [(r["iteration"], r["total"], r["kl"]) for r in _rows(d / "log.csv")]  # noqa: E731
    assert losses(tmp_path / "full") == losses(tmp_path / "half")
    assert _rows(tmp_path / "full" / "validation.csv")[-1]["mean_dice"] == _rows(tmp_path / "half" / "validation.csv")[-1]["mean_dice"]


def _wait_for_checkpoint(proc: subprocess.Popen, at_least: int, timeout: float = 120.0) -> list[dict]:
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        event = json.loads(line)
        events.append(event)
        if event.get("event") == "checkpoint" and event["iteration"] >= at_least:
            return events
    proc.kill()
    raise AssertionError(f"no checkpoint at >= {at_least}: {events[-3:]} {proc.stderr.read()[-2000:]}")



def test_sigterm_checkpoints_and_kill9_resumes(manifest: Path, cache_dir: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    args = ["train", "--cohort", str(manifest), "--out", str(run), "--preset", "cpu", "--framework", "supervised",
            "--iterations", "18", "--device", "cpu", "--progress", "json", "--workers", "1",
            "--cache-dir", str(cache_dir), *[a for s in TINY if not s.startswith("data.num_workers") for a in ("--set", s)],
            "--set", "network.n_filters=2", "--set", "checkpoint_every=3", "--set", "validation.every=-1",
            "--set", "augment.flip=false", "--set", "augment.intensity=false", "--set", "augment.noise=false"]
    # 1) SIGTERM (sent once the first checkpoint exists, i.e. after the handlers are installed): the run saves a
    #    checkpoint at the iteration it reached and exits 130
    import threading

    finished = threading.Event()

    def terminate() -> None:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.pt").exists() and time.monotonic() < deadline and not finished.is_set():
            time.sleep(0.05)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate, daemon=True).start()
    try:
        code = run_scdl(args)
    finally:
        finished.set()
    assert code == 130
    captured = capsys.readouterr()
    stopped_at = load_checkpoint(run / "checkpoint.pt")["iteration"]
    assert stopped_at >= 3 and f"--resume {run}" in captured.err
    assert not (run / "model").exists()
    # 2) kill -9 of a resumed run (its process group: the loader worker too) right after a checkpoint
    proc = subprocess.Popen([sys.executable, "-m", "scdl", "train", "--resume", str(run), "--progress", "json"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    events = _wait_for_checkpoint(proc, stopped_at + 3)
    assert next(e for e in events if e.get("event") == "start")["iteration"] == stopped_at
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    proc.stderr.close()
    killed_at = load_checkpoint(run / "checkpoint.pt")["iteration"]
    assert killed_at >= stopped_at + 3
    # 3) --resume continues from the last checkpoint and finishes; the last stdout line is the model
    assert run_scdl(["train", "--resume", str(run), "--progress", "json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    events = [json.loads(line) for line in lines[:-1]]
    assert next(e for e in events if e.get("event") == "start")["iteration"] == killed_at
    assert events[-1]["phase"] == "done" and events[-1]["output"] == lines[-1]
    assert Path(lines[-1]) == run / "model" and (run / "model" / "card.json").is_file()
    iterations = [int(r["iteration"]) for r in _rows(run / "log.csv")]
    assert iterations == list(range(1, 19))          # rows logged after the last checkpoint were dropped, not doubled


def test_init_matches_classes_by_name(trained, manifest: Path, cache_dir: Path, tmp_path: Path) -> None:
    """Fine-tune the 14-class model into a 3-class table: liver and spleen keep their output rows, bladder is new."""
    _, result, _, _, _ = trained
    table = tmp_path / "three.csv"
    LabelTable.load("amos")  # the bladder's terminology lives there; the table below is built by hand
    table.write_text("LabelValue,Name,Color_R,Color_G,Color_B,Color_A\n1,liver,221,130,101,255\n"
                     "2,Spleen,157,108,162,255\n3,urinary bladder,222,154,132,255\n")
    cfg = _config(cache_dir, framework="cps", iterations=2, labels=str(table))
    trainer = Trainer(cfg, load_manifest(manifest), tmp_path / "ft", device="cpu", init=str(result.model_dir))
    trainer.prepare()
    trainer._build()
    report = trainer.init_report
    assert report["matched"] == ["Spleen", "liver"] and report["new"] == ["urinary bladder"]
    assert "aorta" in report["dropped"] and report["networks_loaded"] == 1 and report["networks_fresh"] == 1
    assert trainer.arch["n_filters"] == 4 and trainer.arch["n_classes"] == 4     # from the init model's card
    assert trainer.preprocessing["spacing_mm"] == [6.0, 6.0, 6.0]
    init = trainer.init.state_dicts[0]
    net = trainer.step.networks[0].state_dict()
    for dst, src in ((0, 0), (1, 6), (2, 1)):        # background, liver (Synapse 6), spleen (Synapse 1)
        assert torch.equal(net["out_conv.weight"][dst], init["out_conv.weight"][src])
        assert torch.equal(net["out_conv.bias"][dst], init["out_conv.bias"][src])
    assert not any(torch.equal(net["out_conv.weight"][3], init["out_conv.weight"][c]) for c in range(14))
    assert torch.equal(net["block_five.conv.0.weight"], init["block_five.conv.0.weight"])
