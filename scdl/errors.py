"""User-facing errors: one clear line naming the file and the fix.

Every line SCDL prints for a person (``error:``, ``warning:``, messages) goes through :func:`one_line`, and every
path in such a line through :func:`show_path`: control characters and line separators (a newline in a file
name, an escape sequence) are written as Python escapes (``\\n``, ``\\x1b``), so that a file name can neither
split the line nor forge a JSON progress event on the next line (the Slicer modules read the child's output
line by line).
"""

from __future__ import annotations

import os
import re
from typing import Optional, Sequence

#: Characters that would end a line for some reader (``str.splitlines`` splits on all of these), move the
#: cursor or start a terminal escape sequence: C0 controls except TAB, DEL, C1 controls, U+2028, U+2029.
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: "re.Match[str]") -> str:
    return repr(match.group(0))[1:-1]


def one_line(text: object) -> str:
    """``text`` as ONE printable line: control characters and line separators escaped (``\\n``, ``\\x1b``)."""
    return _UNPRINTABLE.sub(_escape, str(text))


def show_path(path: "os.PathLike[str] | str") -> str:
    """A path for a message: as given, with control characters and line separators escaped (see :func:`one_line`)."""
    return one_line(os.fspath(path))


class ScdlError(Exception):
    """An error the user caused and can fix (bad file, wrong modality, missing labels, ...).

    The CLI prints ``error: <message>`` on one line and exits with status 2, without a traceback.

    Args:
        message: what is wrong.
        path: the file or folder concerned (named first in the message, through :func:`show_path`).
        fix: what the user should do about it.
        details: further lines (e.g. every problem of a cohort), each printed on its own indented line
            between the message and the fix; the message, each detail and the fix are single lines
            (:func:`one_line`), so only these line breaks are ever printed.
    """

    def __init__(self, message: str, path: Optional[os.PathLike | str] = None, fix: Optional[str] = None,
                 details: Optional[Sequence[str]] = None):
        self.message = message
        self.path = None if path is None else os.fspath(path)
        self.fix = fix
        self.details = [str(d) for d in details or ()]
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = one_line(f"{show_path(self.path)}: {self.message}" if self.path else self.message)
        if self.details:
            text += "".join(f"\n  {one_line(d)}" for d in self.details) + "\n"
        if self.fix:
            text += f" Fix: {one_line(self.fix)}"
        return text


class Cancelled(Exception):
    """Raised when the user cancels long work (SIGTERM/SIGINT or a cancel callback)."""
