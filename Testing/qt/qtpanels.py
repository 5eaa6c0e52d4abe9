"""Load the SCDL module panels (``.ui`` files) in a plain PySide6 Qt, with stand-ins for the Slicer widgets.

Used by ``test_panels_qt.py`` (size checks) and ``docs/make_panel_screenshots.py`` (docs images). Nothing of
Slicer is imported: the CTK / MRML classes the ``.ui`` files declare are replaced by plain Qt widgets of about
the same size (see ``STAND_INS``), and the combos are filled the way the module widgets fill them at setup
(the model combo with the real catalog's titles). The layout measured is the ``.ui`` layout, with the
fonts and style of this Qt, so numbers are close to, not equal to, Slicer's.

Call ``app()`` once before anything else (it selects the ``offscreen`` platform unless one is set).
"""

from __future__ import annotations

import html
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
UI_FILES = {
    "SCDLSegment": REPO / "SCDLSegment" / "Resources" / "UI" / "SCDLSegment.ui",
    "SCDLTrain": REPO / "SCDLTrain" / "Resources" / "UI" / "SCDLTrain.ui",
}

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtGui  # noqa: E402
from PySide6.QtCore import Property, QFile, QIODevice, QPoint, QSize, Qt  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QApplication, QComboBox, QGroupBox, QHBoxLayout, QLabel, QLayout, QLineEdit, QPushButton, QSizePolicy, QTableWidget, QToolButton, QWidget)

_APP: Optional[QApplication] = None


def app() -> QApplication:
    """The one QApplication (offscreen, Fusion style, a 9-pt DejaVu-like default font as on Linux)."""
    global _APP
    _APP = QApplication.instance() or QApplication([])
    _APP.setStyle("Fusion")
    return _APP


def declared_custom_widgets(ui_file: Path) -> list[str]:
    """The classes under ``<customwidgets>`` of a ``.ui`` file."""
    root = ET.parse(ui_file).getroot()
    return [c.findtext("class") for c in root.iter("customwidget")]


# --------------------------------------------------------------------------------------------------------------
# Stand-ins: same class names as in the .ui files, so that QUiLoader creates them.
class _Collapsible(QGroupBox):
    """A checkable group box whose children are hidden while ``collapsed`` (as ctk's collapsible widgets)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False
        self.setCheckable(True)
        self.setChecked(True)
        self.toggled.connect(lambda checked: self.setCollapsed(not checked))

    def isCollapsed(self) -> bool:
        return self._collapsed

    def setCollapsed(self, collapsed: bool) -> None:
        self._collapsed = bool(collapsed)
        blocked = self.blockSignals(True)
        self.setChecked(not self._collapsed)
        self.blockSignals(blocked)
        for child in self.findChildren(QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        # collapsed: the title line only, as ctk draws it (no empty frame below)
        self.setFlat(self._collapsed)
        self.setMaximumHeight(self.fontMetrics().height() + 6 if self._collapsed else 16777215)

    collapsed = Property(bool, isCollapsed, setCollapsed)


class ctkCollapsibleButton(_Collapsible):  # noqa: N801 - the .ui class name
    def _text(self) -> str:
        return self.title()

    def _setText(self, text: str) -> None:
        self.setTitle(text)

    text = Property(str, _text, _setText)


class ctkCollapsibleGroupBox(_Collapsible):  # noqa: N801
    pass


class ctkDirectoryButton(QPushButton):  # noqa: N801
    """A push button showing a folder's absolute path, elided in the middle when narrow (as CTK's, whose
    button has ``Qt::ElideMiddle`` and an Expanding / Fixed size policy)."""

    PATH = "/home/me/Documents/SCDL/runs"

    def __init__(self, parent=None):
        super().__init__(self.PATH, parent)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def minimumSizeHint(self) -> QSize:
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), self.fontMetrics().horizontalAdvance("/home/…/runs") + 24), hint.height())

    def resizeEvent(self, event) -> None:
        self.setText(self.fontMetrics().elidedText(self.PATH, Qt.TextElideMode.ElideMiddle, max(event.size().width() - 16, 10)))
        super().resizeEvent(event)


class ctkPathLineEdit(QWidget):  # noqa: N801
    """A line edit and a browse button, as ctkPathLineEdit."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLineEdit(self))
        layout.addWidget(QToolButton(self, text="..."))


class qMRMLNodeComboBox(QComboBox):  # noqa: N801
    """A combo with the items Slicer's would list for an empty scene plus one node: the 'none' text, a node
    name, and the action items of ``addEnabled`` / ``removeEnabled`` / ``renameEnabled`` (which size it).
    The MRML properties of the .ui stay dynamic properties."""

    LABELS = {"vtkMRMLScalarVolumeNode": "Volume", "vtkMRMLSegmentationNode": "Segmentation"}

    def fill(self) -> None:
        def flag(name: str, default: bool) -> bool:
            value = self.property(name)
            return default if value is None else bool(value)

        types = list(self.property("nodeTypes") or [])
        label = self.LABELS.get(types[0], "Node") if types else "Node"
        items = [str(self.property("noneDisplay") or "None")] if flag("noneEnabled", False) else []
        items.append("CT chest 1" if label == "Volume" else f"{label} 1")
        if flag("renameEnabled", False):
            items.append(f"Rename current {label}")
        if flag("addEnabled", True):
            items += [f"Create new {label}"] + ([f"Create new {label} as..."] if flag("renameEnabled", False) else [])
        if flag("removeEnabled", True):
            items.append(f"Delete current {label}")
        self.addItems(items)


class qMRMLWidget(QWidget):  # noqa: N801
    pass


STAND_INS = {cls.__name__: cls for cls in (
    ctkCollapsibleButton, ctkCollapsibleGroupBox, ctkDirectoryButton, ctkPathLineEdit, qMRMLNodeComboBox,
    qMRMLWidget)}


def load_ui(name: str) -> QWidget:
    """The panel of module ``name`` ("SCDLSegment" or "SCDLTrain"), built by QUiLoader with the stand-ins."""
    app()
    ui_file = UI_FILES[name]
    missing = [c for c in declared_custom_widgets(ui_file) if c not in STAND_INS]
    if missing:
        raise RuntimeError(f"{ui_file.name} declares custom widgets without a stand-in: {missing}")
    loader = QUiLoader()
    for cls in STAND_INS.values():
        loader.registerCustomWidget(cls)
    handle = QFile(str(ui_file))
    handle.open(QIODevice.OpenModeFlag.ReadOnly)
    try:
        widget = loader.load(handle)
    finally:
        handle.close()
    if widget is None:
        raise RuntimeError(f"QUiLoader could not load {ui_file}: {loader.errorString()}")
    # ``collapsed`` was set before the children existed: apply it now (ctk does this on show)
    for box in widget.findChildren(_Collapsible):
        box.setCollapsed(box.isCollapsed())
    for combo in widget.findChildren(qMRMLNodeComboBox):
        combo.fill()
    return widget


def child(panel: QWidget, object_name: str) -> QWidget:
    found = panel.findChild(QWidget, object_name)
    if found is None:
        raise LookupError(f"no widget named {object_name!r} in the panel")
    return found


# --------------------------------------------------------------------------------------------------------------
# What the module widgets put in the combos at setup.
def catalog_models() -> list[dict]:
    """``scdl.models.listing.list_models()``: the bundled model(s), the catalog's downloadable ones, any
    trained or imported model of the current SCDL home."""
    from scdl.models.listing import list_models

    return list_models()


def model_label(model: dict) -> str:
    """Combo text of a model, as the panels' ``models.model_label`` (title + state when not usable yet)."""
    text = str(model.get("title") or model["id"])
    if not model.get("installed"):
        text += "  [" + ("download needed" if model.get("status") == "downloadable" else "not installed") + "]"
    elif str(model.get("status", "")).startswith("invalid"):
        text += "  [invalid]"
    return text


DEVICES = ("auto (GPU if available)", "CPU")


def fill_segment(panel: QWidget, models: Optional[list[dict]] = None) -> None:
    """Fill the SCDL Segment panel's combos as ``SCDLSegmentWidget.setup`` does."""
    models = catalog_models() if models is None else models
    combo = child(panel, "modelSelector")
    combo.clear()
    for model in models:
        combo.addItem(model_label(model), model["id"])
    child(panel, "deviceSelector").addItems(list(DEVICES))


def fill_train(panel: QWidget, models: Optional[list[dict]] = None, source: str = "scene") -> None:
    """Fill the SCDL Train panel's combos and table headers as ``SCDLTrainWidget.setup`` does; show the
    cohort widgets of ``source`` ("scene", "folders" or "manifest")."""
    models = catalog_models() if models is None else models
    child(panel, "cohortSourceSelector").addItems(
        ["Scene: volumes and their segmentations", "Folders", "Manifest file (CSV or JSON)"])
    child(panel, "frameworkSelector").addItems(
        ["CPS + SCDL (semi-supervised, class-balanced)", "CPS (semi-supervised)", "Supervised (labeled volumes only)"])
    child(panel, "sourceLabelsSelector").addItems(["model's numbering", "totalsegmentator_v2", "synapse", "amos"])
    combo = child(panel, "initModelSelector")
    combo.addItem("(none: train from scratch, Synapse classes)", "")
    for model in models:
        combo.addItem(model_label(model), model["id"])
    child(panel, "deviceSelector").addItems(list(DEVICES))
    for name, columns in (("cohortTable", ("Case", "Role", "Segments", "Used as", "Annotated classes")),
                          ("mappingTable", ("Segment", "Model class", "Matched by", "Cases")),
                          ("problemsTable", ("Case", "Severity", "Problem", "Fix"))):
        table = child(panel, name)
        assert isinstance(table, QTableWidget)
        table.setColumnCount(len(columns))
        table.setHorizontalHeaderLabels(list(columns))
    for src in ("scene", "folders", "manifest"):
        child(panel, f"{src}CohortWidget").setVisible(src == source)


# --------------------------------------------------------------------------------------------------------------
# Measurements
def min_width(panel: QWidget) -> int:
    """The panel's minimum width (what a Slicer module panel must give it), recomputed from its contents."""
    for layout in [panel.layout()] + panel.findChildren(QLayout):
        layout.invalidate()
    panel.layout().activate()
    return panel.minimumSizeHint().width()


def layout_at_width(panel: QWidget, width: int) -> int:
    """Lay the panel out at ``width`` px (height: what it asks for at that width); returns that height."""
    layout = panel.layout()
    layout.activate()
    height = layout.totalHeightForWidth(width) if layout.hasHeightForWidth() else -1
    if height < 0:
        height = panel.sizeHint().height()
    height = max(height, panel.minimumSizeHint().height())
    panel.resize(width, height)
    panel.layout().activate()
    # a resize of an unshown widget is applied lazily: make the geometry of every child current
    panel.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen, True)
    panel.show()
    app().processEvents()
    return panel.height()


def y_of(panel: QWidget, object_name: str) -> int:
    """Top of the named widget in panel coordinates (after ``layout_at_width``)."""
    return child(panel, object_name).mapTo(panel, QPoint(0, 0)).y()


def widest_children(panel: QWidget, limit: int = 6) -> list[tuple[int, str]]:
    """The widgets with the largest minimum width (for a failure message)."""
    rows = []
    for widget in panel.findChildren(QWidget):
        if widget.objectName() and not widget.isHidden():
            rows.append((widget.minimumSizeHint().width(), f"{type(widget).__name__} {widget.objectName()}"))
    return sorted(rows, reverse=True)[:limit]


def model_card(model: dict) -> dict:
    """The card of a listed model as the panels read it: the package's card when installed (no checksums),
    else the catalog entry's card template, else ``{}``."""
    if model.get("installed") and model.get("path"):
        from scdl.models.package import ModelPackage

        return dict(ModelPackage.load(model["path"], verify=False).card)
    from scdl.models.catalog import catalog_entry

    return dict((catalog_entry(model["id"]) or {}).get("card") or {})


def plain_text(text: str) -> str:
    """A tooltip's text as the user reads it: rich text (``<br>``, tags, entities) turned into lines."""
    if not QtGui.Qt.mightBeRichText(text):
        return text
    text = re.sub(r"(?i)<br\s*/?>|</p>|</tr>", "\n", text)
    text = re.sub(r"(?i)</td>", " ", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip("\n")


def tooltip_size(text: str) -> tuple[int, int]:
    """The size in px of the tooltip Qt would show for ``text`` (QToolTip's label: word-wrapped rich text)."""
    app()
    label = QLabel(text)
    label.setWordWrap(QtGui.Qt.mightBeRichText(text))
    hint = label.sizeHint()
    return hint.width(), hint.height()


def tooltip_problems(text: str, max_line: int = 70) -> list[str]:
    """What makes a tooltip unreadable: Python reprs, ``None`` values, over-long lines."""
    text = plain_text(text)
    problems = []
    for pattern, what in ((r"\['|\[\"|\{'", "a Python list/dict repr"), (r"\bNone\b", "a None value")):
        if re.search(pattern, text):
            problems.append(f"contains {what}")
    long_lines = [line for line in text.splitlines() if len(line) > max_line]
    if long_lines:
        problems.append(f"{len(long_lines)} line(s) longer than {max_line} characters, e.g. {long_lines[0][:90]!r}")
    return problems
