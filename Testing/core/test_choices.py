"""Frameworks, presets and blending modes as str-valued Enums with one owner each (issue 14): the values are the
command-line and JSON contract, the CLI takes its choices and the defaults it shows from them, and no other
core file spells the framework list or the paper defaults."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import pytest

from scdl.choice import Choice
from scdl.models.card import BLENDINGS, DEFAULT_BLENDING, DEFAULT_INFERENCE, Blending
from scdl.training import config
from scdl.training.config import DEFAULT_FRAMEWORK, DEFAULT_PRESET, DEFAULTS, Framework, Preset

REPO = Path(__file__).resolve().parents[2]
#: Benchmarks another session is editing now (left for later).
NOT_YET = {REPO / "bench" / n for n in ("step.py", "inference.py", "train.py")}


def test_values_are_the_contract() -> None:
    assert Framework.values() == ("supervised", "cps", "cps-scdl", "mean-teacher", "mean-teacher-scdl")
    assert config.FRAMEWORKS == Framework.values() and config.SCDL_FRAMEWORKS == ("cps-scdl", "mean-teacher-scdl")
    assert Preset.values() == ("paper", "cpu") == config.PRESETS == tuple(config.PRESET_VALUES)
    assert Blending.values() == ("gaussian", "constant") == BLENDINGS
    assert (DEFAULT_FRAMEWORK, DEFAULT_PRESET, DEFAULT_BLENDING) == ("cps-scdl", "paper", "gaussian")
    assert DEFAULTS["framework"] == "cps-scdl" and type(DEFAULTS["framework"]) is str
    assert DEFAULT_INFERENCE["blending"] == "gaussian" and DEFAULTS["validation"]["mode"] == "gaussian"


def test_a_member_behaves_as_its_string() -> None:
    member = Framework.CPS_SCDL
    assert member == "cps-scdl" and "cps-scdl" == member and isinstance(member, str)
    assert str(member) == f"{member}" == "cps-scdl" and f"{member:>9}" == " cps-scdl"
    assert json.dumps({"f": member}) == '{"f": "cps-scdl"}'
    assert {"cps-scdl": 1}[member] == 1 and member in {"cps-scdl"} and Framework("cps-scdl") is member
    assert config.resolve_config(Preset.CPU)["preset"] == "cpu"
    assert issubclass(Framework, Choice) and issubclass(Blending, Choice)


def test_framework_facts_and_the_step_table() -> None:
    from scdl.training.step import FRAMEWORKS

    assert FRAMEWORKS == {"supervised": ("supervised", False, 1), "cps": ("cps", False, 2),
                          "cps-scdl": ("cps", True, 2), "mean-teacher": ("mean_teacher", False, 1),
                          "mean-teacher-scdl": ("mean_teacher", True, 1)}
    assert [f.uses_unlabeled for f in Framework] == [False, True, True, True, True]


def _subparser(name: str) -> argparse.ArgumentParser:
    from scdl.cli.main import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_cli_choices_come_from_the_enums() -> None:
    from scdl.progress import MODES

    train = _subparser("train")
    assert tuple(_option(train, "--framework").choices) == Framework.values()
    assert tuple(_option(train, "--preset").choices) == Preset.values()
    assert f"default {DEFAULT_FRAMEWORK}" in _option(train, "--framework").help
    assert str(DEFAULTS["iterations"]) in _option(train, "--iterations").help
    assert str(DEFAULTS["seed"]) in _option(train, "--seed").help
    for name in ("train", "segment", "demo", "phantom"):
        assert tuple(_option(_subparser(name), "--progress").choices) == MODES


def _constants(path: Path) -> list[tuple[int, object]]:
    return [(n.lineno, n.value) for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(n, ast.Constant) and not isinstance(n.value, bool)]


@pytest.mark.parametrize("value,owner", [("mean-teacher", "scdl/training/config.py"),
                                         ("mean-teacher-scdl", "scdl/training/config.py"),
                                         ("gaussian", "scdl/models/card.py"),
                                         (17000, "scdl/training/config.py"), (1337, "scdl/training/config.py")])
def test_one_owner(value, owner) -> None:
    files = [p for p in [*(REPO / "scdl").rglob("*.py"), *(REPO / "bench").glob("*.py")] if p not in NOT_YET]
    found = {str(p.relative_to(REPO)) for p in files if any(v == value for _, v in _constants(p))}
    assert found == {owner}
