"""Test-only fake of PythonQt's ``qt`` module: just the classes the SCDL modules touch, with real behaviour
where a test can observe it (timers that tests fire by hand, dialogs that return preset answers).

Anything else raises AttributeError, so code that starts to use more of Qt fails here loudly instead of
silently "working" against a mock.
"""

from __future__ import annotations

from typing import Any, Callable


class _Signal:
    def __init__(self) -> None:
        self.slots: list[Callable] = []

    def connect(self, slot: Callable) -> None:
        self.slots.append(slot)

    def emit(self, *args: Any) -> None:
        for slot in list(self.slots):
            slot(*args)


class QObject:
    def __init__(self, *args: Any) -> None:
        self._signals: dict[str, _Signal] = {}

    def connect(self, signature: str, slot: Callable) -> bool:
        self._signals.setdefault(signature, _Signal()).connect(slot)
        return True

    def emitSignal(self, signature: str, *args: Any) -> None:
        """Test helper: emit a signal connected with ``connect("signal()", slot)``."""
        sig = self._signals.get(signature)
        if sig is not None:
            sig.emit(*args)


class QTimer(QObject):
    """A timer that never fires on its own: tests call :meth:`fire` (or :func:`processEvents`)."""

    #: callbacks queued by ``QTimer.singleShot`` (run by :func:`processEvents`).
    pending: list[Callable] = []

    def __init__(self, *args: Any) -> None:
        super().__init__()
        self.interval = 0
        self.singleShot_ = False
        self.active = False
        self.timeout = _Signal()

    def setInterval(self, msec: int) -> None:
        self.interval = int(msec)

    def setSingleShot(self, flag: bool) -> None:
        self.singleShot_ = bool(flag)

    def start(self, msec: int | None = None) -> None:
        if msec is not None:
            self.interval = int(msec)
        self.active = True

    def stop(self) -> None:
        self.active = False

    def isActive(self) -> bool:
        return self.active

    def fire(self) -> None:
        if not self.active:
            raise RuntimeError("fired a QTimer that is not running")
        if self.singleShot_:
            self.active = False
        self.timeout.emit()
        self.emitSignal("timeout()")

    @staticmethod
    def singleShot(msec: int, callback: Callable) -> None:
        QTimer.pending.append(callback)


def processEvents(max_rounds: int = 100000) -> int:
    """Test helper: run the callbacks queued by ``QTimer.singleShot`` (new ones included); returns how many ran."""
    ran = 0
    while QTimer.pending and ran < max_rounds:
        callback = QTimer.pending.pop(0)
        callback()
        ran += 1
    return ran


class QUrl:
    def __init__(self, url: str = "") -> None:
        self.url = url

    @staticmethod
    def fromLocalFile(path: str) -> "QUrl":
        return QUrl("file://" + str(path))

    def toLocalFile(self) -> str:
        return self.url[len("file://"):] if self.url.startswith("file://") else ""


class QDesktopServices:
    opened: list[str] = []

    @staticmethod
    def openUrl(url: QUrl) -> bool:
        QDesktopServices.opened.append(url.url)
        return True


class QFileDialog:
    """``getOpenFileName``/``getExistingDirectory`` return the next preset answer (tests fill ``answers``)."""

    answers: list[str] = []

    @staticmethod
    def getOpenFileName(*args: Any) -> str:
        return QFileDialog.answers.pop(0) if QFileDialog.answers else ""

    @staticmethod
    def getExistingDirectory(*args: Any) -> str:
        return QFileDialog.answers.pop(0) if QFileDialog.answers else ""


class QTableWidgetItem:
    def __init__(self, text: str = "") -> None:
        self._text = str(text)
        self.toolTip = ""

    def text(self) -> str:
        return self._text


def reset() -> None:
    """Test helper: forget queued callbacks, opened URLs and preset dialog answers."""
    QTimer.pending.clear()
    QDesktopServices.opened.clear()
    QFileDialog.answers.clear()


class Qt:
    """Enum values of ``Qt::ItemDataRole`` used by the modules."""

    DisplayRole = 0
    ToolTipRole = 3
    UserRole = 256
