"""The two module panels loaded in a real Qt (PySide6, offscreen) with plain-Qt stand-ins for the Slicer widgets.

Checks what only a laid-out panel shows: the panel fits a Slicer module panel (minimum width <= 500 px with the
real catalog's model titles in the combos), Apply / Start are on the first screen (no empty tables above them),
and the model tooltip is readable text. Needs the optional ``qt`` extra (``pip install -e ".[qt]"``); skipped
where PySide6 cannot be imported. ``qtpanels.py`` holds the loader and the stand-ins (also used by
``docs/make_panel_screenshots.py``).
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

try:
    from PySide6 import QtUiTools  # noqa: F401
except ImportError as err:  # the optional extra is not installed (or its Qt libraries are missing)
    pytest.skip(f"PySide6 cannot be imported ({err}): pip install -e '.[qt]'", allow_module_level=True)


def _qt_starts() -> str:
    """'' when an offscreen QApplication starts in a child process, else why not. A Qt platform that fails to
    start aborts the process (no Python exception), so it is probed in a child before this module uses Qt."""
    import os
    import subprocess

    probe = "from PySide6.QtWidgets import QApplication; app = QApplication([]); print('ok')"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    try:
        done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "an offscreen QApplication did not start within 60 s"
    if done.returncode != 0 or "ok" not in done.stdout:
        return f"an offscreen QApplication does not start here: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    return ""


_WHY = _qt_starts()
if _WHY:
    pytest.skip(_WHY, allow_module_level=True)

import qtpanels as q  # noqa: E402

PANEL_WIDTH = 500  #: a wide Slicer module panel; the panels must fit it without a horizontal scroll bar
FIRST_SCREEN = 900  #: px from the panel's top: what a user sees without scrolling on a 1080-px screen
BUTTONS = {"SCDLSegment": "applyButton", "SCDLTrain": "startButton"}


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    """The real catalog (Resources/Catalog.json + the bundled model), no user models (an empty SCDL home)."""
    monkeypatch.setenv("SCDL_HOME", str(tmp_path / "scdl_home"))
    monkeypatch.delenv("SCDL_MODELS_DIR", raising=False)
    monkeypatch.delenv("SCDL_RESOURCES", raising=False)
    models = q.catalog_models()
    assert len(models) >= 3 and any(m.get("installed") for m in models), [m["id"] for m in models]
    return models


def _filled(name: str, models, source: str = "scene"):
    panel = q.load_ui(name)
    if name == "SCDLSegment":
        q.fill_segment(panel, models)
    else:
        q.fill_train(panel, models, source)
    return panel


@pytest.mark.parametrize("name", sorted(q.UI_FILES))
def test_every_custom_widget_of_the_ui_file_has_a_stand_in_and_every_name_loads(name):
    declared = q.declared_custom_widgets(q.UI_FILES[name])
    assert set(declared) <= set(q.STAND_INS), f"no stand-in for {sorted(set(declared) - set(q.STAND_INS))}"
    panel = q.load_ui(name)
    names = [w.get("name") for w in ET.parse(q.UI_FILES[name]).getroot().iter("widget")]
    missing = [n for n in names[1:] if panel.findChild(q.QWidget, n) is None]
    assert not missing, f"QUiLoader did not create {missing}"


def test_model_combos_hold_the_catalog_titles(catalog):
    titles = [q.model_label(m) for m in catalog]
    segment = q.child(_filled("SCDLSegment", catalog), "modelSelector")
    assert [segment.itemText(i) for i in range(segment.count())] == titles
    train = q.child(_filled("SCDLTrain", catalog), "initModelSelector")
    assert [train.itemText(i) for i in range(1, train.count())] == titles
    assert max(len(t) for t in titles) > 60  # long titles: what made the panel 954 px wide


@pytest.mark.parametrize("name,source", [("SCDLSegment", ""), ("SCDLTrain", "scene"), ("SCDLTrain", "folders"),
                                         ("SCDLTrain", "manifest")])
def test_panel_fits_a_500_px_module_panel(name, source, catalog):
    panel = _filled(name, catalog, source or "scene")
    width = q.min_width(panel)
    assert width <= PANEL_WIDTH, f"{name} needs {width} px; widest parts: {q.widest_children(panel)}"


@pytest.mark.parametrize("name,source", [("SCDLSegment", ""), ("SCDLTrain", "scene"), ("SCDLTrain", "folders"),
                                         ("SCDLTrain", "manifest")])
def test_run_button_is_on_the_first_screen_with_no_empty_table_shown(name, source, catalog):
    panel = _filled(name, catalog, source or "scene")
    q.layout_at_width(panel, PANEL_WIDTH)
    assert q.child(panel, BUTTONS[name]).isVisibleTo(panel)
    shown_empty = [t.objectName() for t in panel.findChildren(q.QTableWidget)
                   if t.rowCount() == 0 and t.isVisibleTo(panel)]
    assert not shown_empty, f"empty tables take room in {name}: {shown_empty}"
    y = q.y_of(panel, BUTTONS[name])
    assert y <= FIRST_SCREEN, f"{BUTTONS[name]} is {y} px down the {name} panel"


def _panel_models_module():
    """The Slicer library's ``models`` (the code the panel calls), imported as the Slicer tests do."""
    slicer_tests = HERE.parent / "slicer"
    if str(slicer_tests) not in sys.path:
        sys.path.insert(0, str(slicer_tests))
    try:
        import harness  # noqa: F401 - real slicer (slicer-core) + the stubs, as in Testing/slicer
    except ImportError as err:
        pytest.skip(f"the Slicer test harness cannot be imported ({err})")
    from SCDLSlicerLib import models

    return models


TOOLTIP_MAX = (500, 300)  #: px: a tooltip, not a wall


def _tooltip_problems(text: str) -> list[str]:
    problems = q.tooltip_problems(text)
    width, height = q.tooltip_size(text)
    if width > TOOLTIP_MAX[0] or height > TOOLTIP_MAX[1]:
        problems.append(f"shown {width} x {height} px")
    return problems


def test_core_card_renderer_tooltip_is_short_readable_text(catalog):
    """``scdl.models.cardtext.card_tooltip_html`` for the catalog's models, laid out by Qt."""
    from scdl.models import cardtext

    problems = {}
    for model in catalog:
        text = cardtext.card_tooltip_html(q.model_card(model), title=model.get("title"), model_id=model["id"],
                                          label_names=model.get("label_names"), status=model.get("status"))
        assert (model.get("title") or model["id"])[:20] in q.plain_text(text)
        found = _tooltip_problems(text)
        problems.update({model["id"]: found} if found else {})
    assert not problems, problems


def test_model_tooltip_the_panel_shows_is_short_readable_text(catalog):
    models = _panel_models_module()
    problems = {}
    for model in catalog:
        found = _tooltip_problems(models.card_tooltip(model))
        problems.update({model["id"]: found} if found else {})
    assert not problems, problems


def test_model_card_the_panel_shows_has_no_python_reprs(catalog):
    models = _panel_models_module()
    problems = {}
    for model in catalog:
        found = q.tooltip_problems(models.card_html(model), max_line=10**6)
        problems.update({model["id"]: found} if found else {})
    assert not problems, problems
