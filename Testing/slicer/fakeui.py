"""Test helper: a stand-in for ``slicer.util.childWidgetVariables(loadUI(...))`` built from the real .ui file.

Every widget named in the .ui file becomes a :class:`FakeWidget` with the attribute names the module uses
(``text``, ``enabled``, ``value`` ...), recorded signal connections and just enough behaviour (combo box
items, table rows, plain-text log) for the handlers to run. A name that is not in the .ui file does not
exist here either, so a handler that uses one fails in the tests as it would in Slicer.
"""

from __future__ import annotations

import types
import xml.etree.ElementTree as ET
from pathlib import Path


def ui_widgets(ui_path: Path) -> dict[str, str]:
    """Widget name -> class name of every widget in a Qt Designer .ui file."""
    root = ET.parse(ui_path).getroot()
    return {w.get("name"): w.get("class") for w in root.iter("widget") if w.get("name")}


def ui_parameter_names(ui_path: Path) -> dict[str, str]:
    """Widget name -> its ``SlicerParameterName`` dynamic property (the parameter node wrapper binds those)."""
    root = ET.parse(ui_path).getroot()
    found = {}
    for widget in root.iter("widget"):
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                found[widget.get("name")] = prop.findtext("string")
    return found


#: How a user edit of a widget looks: class -> (attribute it changes, signal it emits). The signals are the
#: ones Slicer's parameter node wrapper (the stub's ``connectGui``) and the modules connect to.
EDITS = {
    "QSpinBox": ("value", "valueChanged(int)"),
    "QDoubleSpinBox": ("value", "valueChanged(double)"),
    "QCheckBox": ("checked", "toggled(bool)"),
    "QLineEdit": ("text", "textChanged(QString)"),
    "QComboBox": ("currentIndex", "currentIndexChanged(int)"),
    "ctkDirectoryButton": ("directory", "directoryChanged(QString)"),
    "ctkPathLineEdit": ("currentPath", "currentPathChanged(QString)"),
    "QPlainTextEdit": ("plainText", "textChanged()"),
}


def user_edit(widget, value) -> None:
    """What a user's edit does: the widget's value changes, then its change signal reaches every slot."""
    attribute, signal = EDITS[widget.className]
    setattr(widget, attribute, value)
    for connected, slot in list(widget.connections):
        if connected == signal:
            slot() if signal.endswith("()") else slot(value)


def ui_custom_widgets(ui_path: Path) -> set[str]:
    root = ET.parse(ui_path).getroot()
    return {c.findtext("class") for c in root.iter("customwidget")}


class FakeWidget:
    """A recorded widget: attributes are plain values; methods the module calls on widgets are provided."""

    def __init__(self, name: str, cls: str):
        self.name = name
        self.className = cls
        self.connections: list[tuple[str, object]] = []
        self.text = ""
        self.toolTip = ""
        self.enabled = True
        self.value = 0
        self.currentIndex = -1
        self.directory = ""
        self.html = ""
        self.lines: list[str] = []
        self.items: list[list] = []  # combo box: [text, data, tooltip]
        self.rows: dict[tuple[int, int], object] = {}
        self.rowCount_ = 0
        self._blocked = False
        self.checked = False
        self.slicerParameterName = None  # the .ui's SlicerParameterName (make_fake_ui)
        self._node = None

    # qMRMLNodeComboBox
    def currentNode(self):
        return self._node

    def setCurrentNode(self, node) -> None:
        self._node = node

    def disconnect(self, signal: str, slot) -> None:
        self.connections = [c for c in self.connections if c != (signal, slot)]

    # signals
    def connect(self, signal: str, slot) -> bool:
        self.connections.append((signal, slot))
        return True

    def blockSignals(self, block: bool) -> bool:
        previous, self._blocked = self._blocked, bool(block)
        return previous

    # QTextBrowser / QPlainTextEdit
    def setHtml(self, html: str) -> None:
        self.html = html

    def appendPlainText(self, text: str) -> None:
        self.lines.append(text)

    def clear(self) -> None:
        self.lines.clear()
        self.items.clear()
        self.currentIndex = -1

    # QComboBox
    def addItem(self, text: str, data=None) -> None:
        self.items.append([text, data, ""])
        if self.currentIndex < 0:
            self.currentIndex = 0

    def setItemData(self, index: int, value, role) -> None:
        self.items[index][2] = value

    def itemText(self, index: int) -> str:
        return self.items[index][0]

    def itemData(self, index: int):
        return self.items[index][1]

    def count(self) -> int:
        return len(self.items)

    # QTableWidget
    def setRowCount(self, rows: int) -> None:
        self.rowCount_ = rows
        self.rows = {k: v for k, v in self.rows.items() if k[0] < rows}

    def setItem(self, row: int, column: int, item) -> None:
        self.rows[(row, column)] = item

    def cell(self, row: int, column: int) -> str:
        return self.rows[(row, column)].text()

    def setHorizontalHeaderLabels(self, labels) -> None:
        self.headers = list(labels)


def make_fake_ui(ui_path: Path, widget_class=None) -> types.SimpleNamespace:
    """Every widget of the .ui file as a ``widget_class`` (default :class:`FakeWidget`), with its
    ``SlicerParameterName``."""
    widget_class = widget_class or FakeWidget
    ui = types.SimpleNamespace(**{name: widget_class(name, cls) for name, cls in ui_widgets(ui_path).items()})
    for name, parameter in ui_parameter_names(ui_path).items():
        getattr(ui, name).slicerParameterName = parameter
    return ui
