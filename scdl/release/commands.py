"""The ``scdl`` child commands the release recipe is made of, and its console (one prefixed line per message)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any


def log(text: str) -> None:
    """One ``[default-model]`` line on stderr."""
    print(f"[default-model] {text}", file=sys.stderr, flush=True)


def fail(text: str) -> SystemExit:
    """The recipe's error: ``raise fail(...)`` ends the command with ``error: <text>``."""
    return SystemExit(f"error: {text}")


def scdl_command(*args: str) -> list[str]:
    """``python -m scdl <args>`` with this interpreter."""
    return [sys.executable, "-m", "scdl", *args]


def run_scdl(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a child ``scdl`` command; a failure ends in one line naming the command (its own error is above)."""
    try:
        return subprocess.run(cmd, check=True, **kwargs)
    except subprocess.CalledProcessError as exc:
        raise fail(f"scdl {' '.join(cmd[3:])} failed (exit {exc.returncode}).") from None
