"""The typed, frozen training configuration (scdl.training.settings): one conversion of the resolved tree,
config.json unchanged, absent keys of old run folders, changes make a new configuration."""

from __future__ import annotations

import dataclasses
import json

import pytest

from scdl.errors import ScdlError
from scdl.training.config import DEFAULTS, resolve_config
from scdl.training.settings import TrainConfig


@pytest.mark.parametrize("preset", ["paper", "cpu"])
def test_config_json_is_the_resolved_tree(preset) -> None:
    tree = resolve_config(preset, overrides=["cpu_bfloat16=true", 'sampling.small_classes=["pancreas"]'])
    config = TrainConfig.from_dict(tree)
    assert json.dumps(config.to_dict(), sort_keys=True) == json.dumps(tree, sort_keys=True)
    assert config.cpu_bfloat16 is True and config.sampling.small_classes == ("pancreas",)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.iterations = 3          # type: ignore[misc]


def test_sections_have_the_keys_of_the_defaults() -> None:
    assert {f.name for f in dataclasses.fields(TrainConfig)} == set(DEFAULTS)
    config = TrainConfig.from_dict(DEFAULTS)
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            assert {g.name for g in dataclasses.fields(value)} == set(DEFAULTS[f.name]), f.name


def test_absent_keys_of_an_old_run_and_replace() -> None:
    tree = resolve_config("cpu")
    del tree["finetune"]["keep_weight"], tree["synth"], tree["cpu_bfloat16"]
    old = TrainConfig.from_dict(tree)
    assert old.finetune.keep_weight == 0.0 and old.synth is None and old.cpu_bfloat16 is False
    longer = old.replace(iterations=3000)
    assert longer.iterations == 3000 and old.iterations == 1500
    with pytest.raises(ScdlError, match="iterations"):
        old.replace(iterations=0)
