"""Training configuration: paper defaults, presets, config files, --set overrides and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scdl.errors import ScdlError
from scdl.training.config import DEFAULTS, FRAMEWORKS, apply_overrides, resolve_config


def test_paper_defaults() -> None:
    cfg = resolve_config("paper")
    assert cfg["framework"] == "cps-scdl" and cfg["iterations"] == 17000
    assert cfg["optimizer"] == {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "poly_power": 0.9, "nesterov": False}
    assert cfg["patch_size"] == [96, 96, 96] and cfg["labeled_batch"] == 2 and cfg["unlabeled_batch"] == 2
    assert cfg["network"]["n_filters"] == 16 and cfg["preprocessing"]["window"] == [-125.0, 275.0]
    assert cfg["sampling"]["class_prob"] == 0.0 and not any(cfg["augment"][k] for k in ("flip", "affine", "noise"))


def test_frameworks_match_the_training_step() -> None:
    from scdl.training.step import FRAMEWORKS as STEP_FRAMEWORKS

    assert set(FRAMEWORKS) == set(STEP_FRAMEWORKS)


def test_layers_preset_file_flags_overrides(tmp_path: Path) -> None:
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"iterations": 300, "optimizer": {"lr": 0.02}, "scdl": {"lam": 0.2}}))
    cfg = resolve_config("cpu", file, {"iterations": 200, "seed": None},
                         ["optimizer.momentum=0.5", "patch_size=[32,48,64]", "augment.affine=true", "step.cps_weight=0.2"])
    assert cfg["preset"] == "cpu" and cfg["network"]["n_filters"] == 8           # preset
    assert cfg["optimizer"]["lr"] == 0.02 and cfg["scdl"] == {"lam": 0.2}       # file
    assert cfg["iterations"] == 200 and cfg["seed"] == DEFAULTS["seed"]          # flags (None = not given)
    assert cfg["optimizer"]["momentum"] == 0.5 and cfg["patch_size"] == [32, 48, 64]   # --set
    assert cfg["augment"]["affine"] is True and cfg["step"]["cps_weight"] == 0.2
    assert cfg["optimizer"]["weight_decay"] == 1e-4                               # untouched default


@pytest.mark.parametrize("override, message", [
    ("optimizer.lrr=0.1", "unknown setting 'lrr'"),
    ("nope=1", "unknown setting 'nope'"),
    ("patch_size=[40,40,40]", "multiples of 16"),
    ("patch_size=[0,64,64]", "multiples of 16"),
    ("patch_size=[64,64]", "multiples of 16"),
    ("patch_size=[true,64,64]", "multiples of 16"),
    ("framework=mt", "not a framework"),
    ("sampling.class_prob=1.5", "not a probability"),
    ("unlabeled_batch=0", "learns from unlabeled patches"),
    ("lr", "KEY=VALUE"),
    ("optimizer.name=adam", "not one of sgd, adamw"),
    ("augment.organ_shift_range=0.3", "not a \\[low, high\\] pair"),
    ("augment.organ_shift_range=[0.3,0.1]", "not a \\[low, high\\] pair"),
    ("augment.slab_min=0", "not a fraction"),
    ("augment.slab_prob=2", "not a probability"),
])
def test_bad_settings_are_named(override: str, message: str) -> None:
    with pytest.raises(ScdlError, match=message):
        resolve_config("paper", overrides=[override])


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"iterations": 10, "optimiser": {}}')
    with pytest.raises(ScdlError) as err:
        resolve_config("paper", bad)
    assert "optimiser" in str(err.value) and str(bad) in str(err.value)
    bad.write_text("{not json")
    with pytest.raises(ScdlError, match="not valid JSON"):
        resolve_config("paper", bad)


def test_overrides_parse_json_values() -> None:
    cfg = apply_overrides({"a": {"b": 1}, "step": {}}, ["a.b=null", "step.sup_k=20", "step.name=abc"])
    assert cfg == {"a": {"b": None}, "step": {"sup_k": 20, "name": "abc"}}


def test_poly_schedule_closed_form_and_extension(tmp_path: Path) -> None:
    import torch

    from scdl.training.schedule import poly_scheduler, set_total

    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.01)
    sched = poly_scheduler(opt, total=10, power=0.9)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.01 * (1 - i / 10) ** 0.9 for i in range(10)], rel=1e-12)
    assert opt.param_groups[0]["lr"] == 0.0
    # checkpoint round trip (weights_only), then extend the finished schedule to 20 iterations
    torch.save(sched.state_dict(), tmp_path / "s.pt")
    again = poly_scheduler(opt, total=10, power=0.9)
    again.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    set_total(again, 20)
    opt.step()
    again.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * (1 - 11 / 20) ** 0.9)


def test_optimizer_choice_builds_sgd_or_adamw() -> None:
    import torch

    from scdl.training.optim import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(params, resolve_config("paper")["optimizer"])
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["lr"] == 0.01 and sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    opt = resolve_config("paper", overrides=["optimizer.name=adamw", "optimizer.lr=0.003"])["optimizer"]
    adamw = make_optimizer(params, opt)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["lr"] == 0.003
    old_run = {k: v for k, v in DEFAULTS["optimizer"].items() if k != "name"}     # configs saved before "name"
    assert isinstance(make_optimizer(params, old_run), torch.optim.SGD)
