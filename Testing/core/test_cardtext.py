"""The one model-card renderer (scdl.models.cardtext, issue 14): text for ``scdl models info``, HTML for the
Slicer card view, a compact tooltip, Markdown for a package's README; no Python reprs, no None."""

from __future__ import annotations

import json
import re

import pytest

from scdl.models import cardtext
from scdl.models.package import ModelPackage
from scdl.resources import resources_dir

REPR = re.compile(r"\[\'|\'\]|\{\'|\{\"|\bNone\b|\bnan\b|: None")


def _bundled():
    pkg = ModelPackage.load("scdl-abdominal-ct", verify=False)
    return pkg.card, pkg.labels.names


def _b_dice(card) -> str:
    """Patient B's mean Dice as the card states it (two decimals): the text must show the card's own number."""
    held = card["provenance"]["validation_metrics"]["held_out"]
    return f"{held['totalsegmentator-fixtures/patient-B']['mean_dice_labelled_organs']:.2f}"


def _catalog() -> list[dict]:
    data = json.loads((resources_dir() / "Catalog.json").read_text(encoding="utf-8"))
    return data["models"] if isinstance(data, dict) else data


def test_format_value() -> None:
    f = cardtext.format_value
    assert f(None) == "" and f(float("nan")) == "" and f(0.123456) == "0.1235" and f(True) == "yes"
    assert f(["a", None, 2]) == "a, 2" and f({"hd95_mm": None, "dice": 0.5}) == "dice 0.5"
    assert cardtext.shorten("one two three four", 12) == "one two…" and cardtext.shorten("short", 12) == "short"


def test_tooltip_of_the_bundled_model_is_compact() -> None:
    card, names = _bundled()
    lines = cardtext.tooltip_lines(card, label_names=names)
    assert 4 <= len(lines) <= 7 and all(len(line) <= cardtext.TOOLTIP_WIDTH for line in lines), lines
    text = "\n".join(lines)
    assert not REPR.search(text) and "hd95" not in text
    assert lines[0] == card["title"] and f"version {card['version']}" in lines[1]
    assert "13 classes + background" in lines and any(line.startswith(f"validation Dice {_b_dice(card)} (patient-B")
                                                                for line in lines)
    assert lines[-1] == f"{len(card['warnings'])} warnings: see the model card"
    html = cardtext.card_tooltip_html(card, label_names=names)
    assert html.startswith("<p style='white-space:pre'><b>") and html.count("<br>") == len(lines) - 1


@pytest.mark.parametrize("entry", _catalog(), ids=lambda e: e["id"])
def test_tooltip_and_card_of_catalog_entries(entry) -> None:
    """A catalog model that is not installed: the card template (maybe none) plus the entry's title and id."""
    card = entry.get("card") or {}
    facts = {"title": entry["title"], "model_id": entry["id"], "status": "not installed"}
    lines = cardtext.tooltip_lines(card, **facts)
    assert all(len(line) <= cardtext.TOOLTIP_WIDTH for line in lines) and len(lines) <= 8
    assert "status: not installed" in lines
    for text in ("\n".join(lines), cardtext.card_text(card, **facts), cardtext.card_html(card, **facts)):
        assert not REPR.search(text), text


def test_full_card_text_html_markdown() -> None:
    card, names = _bundled()
    text = cardtext.card_text(card, label_names=names, path="/p", networks=2)
    assert not REPR.search(text)
    first, second = text.splitlines()[:2]
    assert first == card["title"] and second.split() == ["id:", "scdl-abdominal-ct", "(version", f"{card['version']})"]
    assert "spacing 3 x 3 x 3 mm" in text and f"validation Dice {_b_dice(card)}" in text and "WARNING:" in text
    html = cardtext.card_html({**card, "title": "a <b> & c"})
    assert "a &lt;b&gt; &amp; c" in html and not REPR.search(html)
    md = cardtext.card_markdown(card, training_notes=["a note"])
    assert "| left adrenal gland | 0 | - | - |" in md and "- a note" in md and "None" not in md
    assert "- Inference (what `scdl segment` applies): sliding window 96 x 96 x 32 voxels, overlap 0.25," in md


def test_a_trained_card(tmp_path) -> None:
    """The card scdl train writes: validation Dice of the validation cases, per-class Dice."""
    from scdl.training.packaging import training_card

    card = training_card(run_dir=tmp_path / "r", config={"framework": "cps", "seed": 1, "preset": "cpu"},
                         arch={"name": "vnet", "in_channels": 1, "n_classes": 3, "n_filters": 4, "norm": "batch"},
                         preprocessing={"spacing_mm": [6.0, 6.0, 6.0], "patch_size": [32, 32, 32]}, ensemble=2,
                         iteration=10, chosen=8, elapsed=61.0, best={"iteration": 8, "mean_dice": 0.4567,
                                                                      "dice": {"liver": 0.8, "spleen": None}},
                         cohort_source="m.csv", summary={"labeled": 1, "unlabeled": 0, "val": 0},
                         validation_source="train", world_size=1)
    lines = cardtext.tooltip_lines(card)
    assert "validation Dice 0.46 (training cases, iteration 8)" in lines and "2 classes + background" in lines
    text = cardtext.card_text(card)
    assert "per class: liver 0.8, spleen -" in text and not REPR.search(text)


def test_models_info_uses_it(capsys) -> None:
    from scdl.cli.main import main

    assert main(["models", "info", "scdl-abdominal-ct"]) == 0
    out = capsys.readouterr().out
    card, names = _bundled()
    assert out.startswith(card["title"] + "\n") and not REPR.search(out) and f"validation Dice {_b_dice(card)}" in out
