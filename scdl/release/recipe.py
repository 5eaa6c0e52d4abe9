"""The recipe folder (``Resources/Models/recipes/scdl-abdominal-ct/``) and its split rules.

``config.json`` is the ``scdl train --config`` file, ``cohort.json`` names the data and the split,
``card_text.json`` holds the card's prose (:mod:`scdl.release.card`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scdl.release.commands import fail
from scdl.training.runfolder import recipe_files

#: The checkout (or the installed extension's folder) that holds ``scdl/`` and ``Resources/``.
REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "Resources" / "Models" / "recipes" / "scdl-abdominal-ct"
#: The shared data folder beside a checkout (``--data``).
DEFAULT_DATA = REPO.parent / "shared" / "data"
#: The card's prose in a recipe folder.
CARD_TEXT = "card_text.json"


def load_recipe(folder: Path) -> tuple[dict[str, Any], Path]:
    """(cohort.json as a dict, path of config.json) of a recipe folder, with the split checked."""
    config, cohort_file = recipe_files(folder)
    cohort = json.loads(cohort_file.read_text(encoding="utf-8"))
    if not config.is_file():
        raise fail(f"{config}: missing training config.")
    check_split(cohort)
    return cohort, config


def load_card_text(folder: Path = RECIPE) -> dict[str, Any]:
    """The card prose of a recipe folder (:data:`CARD_TEXT`; the bundled recipe's when the folder has none)."""
    path = Path(folder) / CARD_TEXT
    if not path.is_file():
        path = RECIPE / CARD_TEXT
    return json.loads(path.read_text(encoding="utf-8"))


def check_split(cohort: dict[str, Any]) -> None:
    """Refuse a recipe that trains on a held-out patient or file (raises SystemExit naming it)."""
    held_patients = {c["patient"] for c in cohort.get("held_out", [])}
    held_files = {c[k] for c in cohort.get("held_out", []) for k in ("image", "label")}
    for case in cohort.get("labeled", []):
        if case["patient"] in held_patients:
            raise fail(f"recipe: patient {case['patient']} is both a training and a held-out patient.")
        for key in ("image", "label"):
            if case[key] in held_files:
                raise fail(f"recipe: {case[key]} is both training data and held-out data.")
    if not held_patients:
        raise fail("recipe: no held-out patient: the card needs held-out metrics.")
    trained_maps = {c["label"] for c in cohort.get("anatomy", [])}
    for case in cohort.get("validation_anatomy", []):
        if case["label"] in trained_maps or case["patient"] in {c["patient"] for c in cohort.get("anatomy", [])}:
            raise fail(f"recipe: {case['label']} is both a training anatomy and the held-out validation anatomy.")


def recipe_path(name: str, data: Path) -> Path:
    """A recipe file name: ``repo:<path>`` is inside this repository (the bundled sample), else under ``data``."""
    return REPO / name[len("repo:"):] if name.startswith("repo:") else data / name
