"""Test helpers of the widget tests of both modules (``test_slicer_widget.py``, ``test_slicer_train_widget.py``):
recorded message boxes (the ``dialogs`` fixture in conftest.py) and a stand-in for Qt's event loop."""

from __future__ import annotations

import time


class Dialogs:
    """Records ``slicer.util`` message boxes; ``confirm`` is the answer to confirmations."""

    def __init__(self):
        self.errors, self.confirmations, self.confirm = [], [], True

    def error(self, text, windowTitle=None, **kwargs):
        self.errors.append(text)

    def ask(self, text, windowTitle=None, **kwargs):
        self.confirmations.append(text)
        return self.confirm


def pump(widget, until, timeout: float = 240.0) -> None:
    """Fire the widget's poll timer (as Qt would every ``widget._timer.interval`` ms) until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        if widget._timer.isActive():
            widget._timer.fire()
        time.sleep(widget._timer.interval / 1000.0 / 4)
