"""User-facing errors: one clear line naming the file and the fix."""

from __future__ import annotations

import os
from typing import Optional


class ScdlError(Exception):
    """An error the user caused and can fix (bad file, wrong modality, missing labels, ...).

    The CLI prints ``error: <message>`` on one line and exits with status 2, without a traceback.

    Args:
        message: what is wrong.
        path: the file or folder concerned (named first in the message).
        fix: what the user should do about it.
    """

    def __init__(self, message: str, path: Optional[os.PathLike | str] = None, fix: Optional[str] = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.fix:
            text += f" Fix: {self.fix}"
        return text


class Cancelled(Exception):
    """Raised when the user cancels long work (SIGTERM/SIGINT or a cancel callback)."""
