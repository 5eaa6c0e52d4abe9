"""DistributedDataParallel with gloo on 2 CPU processes (torchrun) against one process with the same global batch.

Two processes with 1 labeled + 1 unlabeled patch each see the patches of one process accumulating 2
micro-batches of that size (scdl.training.data), and both average the gradients of the 2 micro-batches with
per-micro-batch batch norm: the loss trajectory must be the same up to float rounding. (One process with
batch 2+2 in a single forward differs by design: the GA losses and batch norm pool the whole batch; measured
in docs/training.md.)
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from scdl.models.package import ModelPackage
from scdl.training.cohort import load_manifest
from scdl.training.config import resolve_config
from scdl.training.sample_cohort import make_crop_cohort
from scdl.training.trainer import Trainer

SETTINGS = ["patch_size=[32,32,32]", "preprocessing.spacing_mm=[6,6,6]", "network.n_filters=2", "threads=1",
            "log_every=1", "validation.every=-1", "checkpoint_every=100", "labeled_batch=1", "unlabeled_batch=1",
            "augment.flip=false", "augment.intensity=false", "augment.noise=false"]
LOSSES = ("sup_0", "sup_1", "sup", "cps", "total")


def _rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(
        tmp_path: Path, tmp_path_factory, patient_a_ct: Path, patient_a_seg: Path) -> None:
    manifest = make_crop_cohort(patient_a_ct, patient_a_seg, tmp_path / "cohort")
    cache = tmp_path_factory.getbasetemp() / "h5_cache"
    sets = [a for s in SETTINGS for a in ("--set", s)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "scdl", "train", "--cohort", str(manifest), "--out", str(tmp_path / "ddp"), "--preset", "cpu",
           "--framework", "cps", "--iterations", "4", "--device", "cpu", "--workers", "0",
           "--cache-dir", str(cache), "--progress", "json", *sets]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    start = next(e for e in events if e.get("event") == "start")
    assert start["world_size"] == 2
    replicas = next(e for e in events if e.get("event") == "replicas")
    assert replicas["max_weight_difference"] == 0.0          # DDP kept the two copies identical
    assert lines[-1] == str(tmp_path / "ddp" / "model")      # printed once, by rank 0

    threads = torch.get_num_threads()
    try:
        cfg = resolve_config("cpu", values={"framework": "cps", "iterations": 4, "accumulate": 2},
                             overrides=[*SETTINGS, "data.num_workers=0", f'data.cache_dir="{cache}"'])
        single = Trainer(cfg, load_manifest(manifest), tmp_path / "single", device="cpu").run()
    finally:
        torch.set_num_threads(threads)

    ddp_rows, one_rows = _rows(tmp_path / "ddp" / "log.csv"), _rows(tmp_path / "single" / "log.csv")
    assert [r["iteration"] for r in ddp_rows] == [r["iteration"] for r in one_rows] == ["1", "2", "3", "4"]
    for key in LOSSES:
        a = np.array([float(r[key]) for r in ddp_rows])
        b = np.array([float(r[key]) for r in one_rows])
        np.testing.assert_allclose(a, b, rtol=1e-4, err_msg=key)
    # the loss moved (the comparison is not between two constant curves)
    assert abs(float(ddp_rows[0]["total"]) - float(ddp_rows[-1]["total"])) > 0.1

    ddp_nets = ModelPackage.load(tmp_path / "ddp" / "model").state_dicts()
    one_nets = ModelPackage.load(single.model_dir).state_dicts()
    for a, b in zip(ddp_nets, one_nets):
        for key in a:
            if "running" in key or "num_batches" in key:      # per-process batch-norm statistics differ by design
                continue
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)
