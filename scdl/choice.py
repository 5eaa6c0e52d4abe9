"""``Choice``: the base of the core's string enumerations (frameworks, presets, blending modes ...).

A member *is* its string (``Framework.CPS == "cps"``, ``json.dumps`` writes ``"cps"``, ``f"{member}"`` gives
``cps``), so the values stay the command-line and JSON contract while the code names one owner for them.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """A str-valued Enum whose ``str()`` and ``format()`` are the value (Python 3.9 to 3.13 alike)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    def __hash__(self) -> int:          # Enum hashes the member's name: a member must find its string's entry
        return str.__hash__(self)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        """Every value, in declaration order (argparse ``choices=``, combo-box items)."""
        return tuple(str(m.value) for m in cls)
