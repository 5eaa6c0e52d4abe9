"""Weight averaging (``averaging``, scdl.training.averaging): the mean of hand-made state dicts, which
iterations join, and a tiny run whose package holds exactly the mean of its checkpoints' weights, across resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scdl.errors import ScdlError
from scdl.training.averaging import WeightAverage, average_state_dicts
from scdl.training.checkpoint import load_checkpoint
from scdl.training.cohort import load_manifest
from scdl.training.config import resolve_config
from scdl.training.sample_cohort import make_crop_cohort
from scdl.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = ["patch_size=[32,32,32]", "preprocessing.spacing_mm=[6,6,6]", "data.num_workers=0", "threads=1",
        "log_every=1", "validation.sw_batch_size=4", "network.n_filters=2", "labeled_batch=1"]


def _state(w: float, count: int) -> dict[str, torch.Tensor]:
    return {"w": torch.full((2, 3), w, dtype=torch.float32), "h": torch.tensor([w], dtype=torch.float16),
            "n": torch.tensor(count, dtype=torch.int64)}


def test_mean_of_state_dicts() -> None:
    mean = average_state_dicts([_state(1.0, 5), _state(2.0, 6), _state(6.0, 7)])
    assert torch.equal(mean["w"], torch.full((2, 3), 3.0)) and mean["w"].dtype == torch.float32
    assert mean["h"].dtype == torch.float16 and float(mean["h"]) == 3.0
    assert int(mean["n"]) == 7                      # counters: the newest
    with pytest.raises(ValueError):
        average_state_dicts([])
    with pytest.raises(ValueError):
        average_state_dicts([_state(1.0, 1), {"w": torch.zeros(3, 2), "h": torch.zeros(1), "n": torch.tensor(1)}])


def test_which_iterations_join_and_the_running_mean() -> None:
    avg = WeightAverage(start=0.5, every=2, total=9)
    assert [i for i in range(1, 10) if avg.due(i)] == [6, 8, 9]     # ceil(4.5) = 5 on: checkpoints and the last
    states = [[_state(float(i), i)] for i in (6, 8, 9)]
    for i, s in zip((6, 8, 9), states):
        avg.add(i, s)
    assert not avg.due(9)                                             # joined once
    assert avg.summary() == {"count": 3, "first": 6, "last": 9}
    got = avg.networks(states[0])[0]
    want = average_state_dicts([s[0] for s in states])
    assert all(torch.allclose(got[k].double(), want[k].double()) and got[k].dtype == want[k].dtype for k in want)
    again = WeightAverage(start=0.5, every=2, total=9)
    again.load_state_dict(avg.state_dict())
    assert again.iterations == [6, 8, 9] and torch.equal(again.networks(states[0])[0]["w"], got["w"])
    assert WeightAverage(start=0.0, every=3, total=7).due(3)


@pytest.mark.parametrize("key, value", [("averaging.enabled", "yes"), ("averaging.start", 1.0),
                                        ("averaging.start", -0.1), ("finetune.interpolate", 0.0),
                                        ("finetune.interpolate", 1.5), ("finetune.interpolate", True)])
def test_bad_settings_name_the_key(key: str, value) -> None:
    with pytest.raises(ScdlError, match=key.replace(".", r"\.")):
        resolve_config("cpu", overrides=[f"{key}={json.dumps(value)}"])


def test_interpolation_mixes_known_rows_only() -> None:
    from scdl.training.averaging import interpolate_state_dicts

    start = {"body": torch.zeros(2, 2), "out_conv.weight": torch.zeros(3, 4), "n": torch.tensor(1)}
    tuned = {"body": torch.ones(2, 2), "out_conv.weight": torch.ones(3, 4), "n": torch.tensor(9)}
    mixed = interpolate_state_dicts(start, tuned, 0.25, head_keys=("out_conv.weight",), head_rows=[0, 2])
    assert torch.equal(mixed["body"], torch.full((2, 2), 0.25)) and int(mixed["n"]) == 9
    assert mixed["out_conv.weight"][:, 0].tolist() == [0.25, 1.0, 0.25]     # row 1: a class the start lacks
    assert torch.equal(interpolate_state_dicts(start, tuned, 1.0)["body"], tuned["body"])
    with pytest.raises(ValueError):
        interpolate_state_dicts(start, tuned, 1.5)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, patient_a_ct, patient_a_seg) -> Path:
    return make_crop_cohort(patient_a_ct, patient_a_seg, tmp_path_factory.mktemp("avg_cohort"))


def _config(cache: Path, *overrides: str):
    return resolve_config("cpu", values={"framework": "supervised", "iterations": 6},
                          overrides=[*TINY, f'data.cache_dir="{cache}"', "checkpoint_every=2",
                                     "averaging.enabled=true", "averaging.start=0.3", *overrides])


def test_package_is_the_mean_of_the_checkpoints_across_resumes(manifest: Path, tmp_path: Path) -> None:
    """No validation: iterations 2, 4, 6 join (start 0.3 x 6 = 1.8); the run is stopped at 2 and 4 and resumed
    (the mean survives in checkpoint.pt); the package holds the mean of the three checkpoints' networks."""
    cohort, run = load_manifest(manifest), tmp_path / "run"
    cache = tmp_path / "cache"
    snapshots = []
    for stop in (2, 4, None):
        trainer = Trainer(_config(cache, "validation.every=-1"), cohort, run, device="cpu", resume=stop != 2)
        result = trainer.run(stop_at=stop)
        state = load_checkpoint(run / "checkpoint.pt")
        snapshots.append(trainer.step.network_state_dicts())
        assert state["average"]["iterations"] == [2, 4, 6][:len(snapshots)]
    assert not result.stopped and result.iteration == 6
    from scdl.models.package import ModelPackage

    pkg = ModelPackage.load(result.model_dir)
    for n, packaged in enumerate(pkg.state_dicts()):
        want = average_state_dicts([s[n] for s in snapshots])
        for key, value in want.items():
            assert torch.allclose(packaged[key].double(), value.double(), atol=1e-6), key
        last = snapshots[-1][n]
        assert any(not torch.equal(packaged[k], last[k]) for k in last if last[k].is_floating_point())
    assert "the mean of the weights of 3 checkpoints (iterations 2..6" in pkg.card["description"]


def test_the_mean_is_validated_and_kept_only_when_better(manifest: Path, tmp_path: Path) -> None:
    cohort, run = load_manifest(manifest), tmp_path / "run"
    trainer = Trainer(_config(tmp_path / "cache", "validation.every=0"), cohort, run, device="cpu")
    result = trainer.run()
    best = load_checkpoint(run / "best.pt")
    mean = trainer.average.networks(trainer.step.network_state_dicts())
    if result.best.get("averaged"):               # the run's own verdict, whichever it was, is consistent
        assert result.best["averaged"] == {"count": 3, "first": 2, "last": 6}
        assert all(torch.equal(best["networks"][0][k], mean[0][k]) for k in mean[0])
    else:
        assert best["iteration"] == 6 and "averaged" not in best["best"]
    # forced both ways on the same run: a better mean replaces best.pt, a worse one leaves it
    trainer.validator.best = {"iteration": 6, "mean_dice": 2.0, "dice": {}}
    trainer.validator.validate_final(mean, "mean", {"averaged": trainer.average.summary()}, always=False)
    assert trainer.validator.best["mean_dice"] == 2.0
    trainer.validator.best = {"iteration": 6, "mean_dice": -0.5, "dice": {}}
    trainer.validator.validate_final(mean, "mean", {"averaged": trainer.average.summary()}, always=False)
    written = load_checkpoint(run / "best.pt")
    assert written["best"]["averaged"]["count"] == 3 and 0.0 <= written["best"]["mean_dice"] <= 1.0
    assert all(torch.equal(written["networks"][0][k], mean[0][k]) for k in mean[0])
