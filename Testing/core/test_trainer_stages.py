"""The trainer's structure (issue 14): every attribute exists from construction on (no ``hasattr`` guards),
the stages are separate methods, and the card of a run is built from plain facts (``scdl.training.packaging``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TRAINER = REPO / "scdl" / "training" / "trainer.py"


def _trainer_class() -> ast.ClassDef:
    tree = ast.parse(TRAINER.read_text(encoding="utf-8"))
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")


def _assigned(node: ast.AST) -> set[str]:
    """Names X of every ``self.X = ...`` / ``self.X: T = ...`` / ``self.X += ...`` below ``node``."""
    names = set()
    for sub in ast.walk(node):
        targets = []
        if isinstance(sub, ast.Assign):
            targets = sub.targets
        elif isinstance(sub, (ast.AnnAssign, ast.AugAssign)):
            targets = [sub.target]
        for target in targets:
            for t in ast.walk(target):
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    names.add(t.attr)
    return names


def test_every_attribute_is_set_in_init() -> None:
    cls = _trainer_class()
    methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef)}
    in_init = _assigned(methods["__init__"])
    elsewhere = set().union(*(_assigned(m) for name, m in methods.items() if name != "__init__"))
    assert elsewhere - in_init == set(), "set outside __init__"
    source = TRAINER.read_text(encoding="utf-8")
    assert "hasattr(self" not in source and 'getattr(self, "' not in source


def test_stages_are_methods() -> None:
    methods = {n.name for n in _trainer_class().body if isinstance(n, ast.FunctionDef)}
    assert {"setup", "prepare", "_build", "run", "_start", "_train_step", "_finish", "record"} <= methods


def test_a_new_trainer_has_its_attributes(tmp_path: Path) -> None:
    from scdl.training.cohort import Cohort
    from scdl.training.trainer import Trainer

    trainer = Trainer({"framework": "supervised"}, Cohort(cases=[], source="x"), tmp_path)
    assert trainer.dist is None and trainer.device is None and trainer.step is None and trainer.log is None
    assert trainer.best == {} and trainer.val_masks is None and not trainer.is_prepared
    assert trainer.progress.mode == "none" and not trainer.progress.cancelled


@pytest.mark.parametrize("source", ["val", "train", None])
def test_training_card(tmp_path: Path, source) -> None:
    from scdl.models.card import validate_card
    from scdl.training.packaging import model_id_for, training_card

    run = tmp_path / "My Run"
    best = {"iteration": 6, "mean_dice": 0.5, "dice": {"liver": 0.5}} if source else {}
    card = training_card(run_dir=run, config={"framework": "cps", "seed": 3, "preset": "cpu"},
                         arch={"name": "vnet", "in_channels": 1, "n_classes": 2, "n_filters": 4, "norm": "batch"},
                         preprocessing={"spacing_mm": [6.0, 6.0, 6.0], "patch_size": [32, 32, 32]}, ensemble=2,
                         iteration=12, chosen=6, elapsed=12.345, best=best, cohort_source="m.csv",
                         summary={"labeled": 2, "unlabeled": 1, "val": 0}, validation_source=source, world_size=1)
    validate_card(card)
    assert card["id"].startswith("run-my-run-") and model_id_for(run).startswith("run-my-run-")
    prov = card["provenance"]
    assert prov["iterations"] == 12 and prov["selected_iteration"] == 6 and prov["training_time_s"] == 12.3
    assert prov["data"] == "m.csv (2 labeled, 1 unlabeled, 0 validation cases)"
    assert (prov["validation_metrics"] is None) == (source is None)
    assert bool(card["warnings"]) == (source == "train")
