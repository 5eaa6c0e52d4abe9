"""Model-card warnings shown once per model and machine (all of them again with ``--verbose``).

A card's warnings (what the model was trained on, what it misses) matter the first time a model is used; on
every later run they would push the run's own messages and errors off the screen. The first use prints them in
full and records the card's fingerprint in ``<SCDL_HOME>/state/card_warnings.json``; later runs print one line
saying where to read them (``scdl models info ID``). A changed card (new warnings) is shown in full again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping

STATE_NAME = "card_warnings.json"


def _state_file() -> Path:
    from scdl.resources import user_home

    return user_home() / "state" / STATE_NAME


def _fingerprint(card: Mapping[str, Any]) -> str:
    text = json.dumps({"id": card.get("id"), "version": card.get("version"), "warnings": card.get("warnings") or []},
                      sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def show_card_warnings(card: Mapping[str, Any], warn: Callable[[str], None], *, verbose: bool = False,
                       name: str = "") -> int:
    """Report ``card["warnings"]`` through ``warn``: in full the first time on this machine (or when
    ``verbose``), else one line. Returns the number of lines reported. Never fails on an unwritable state
    folder (the warnings are then shown in full every time)."""
    notes = [str(n) for n in card.get("warnings") or []]
    if not notes:
        return 0
    model = str(card.get("id") or name or "model")
    key = f"{model}@{card.get('version', '')}"
    path = _state_file()
    try:
        seen = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(seen, dict):
            seen = {}
    except (OSError, ValueError):
        seen = {}
    fingerprint = _fingerprint(card)
    if not verbose and seen.get(key) == fingerprint:
        warn(f"model {model}: {len(notes)} card warning{'s' if len(notes) != 1 else ''} (shown at first use; "
             f"read them with: scdl models info {model})")
        return 1
    for note in notes:
        warn(f"model {model}: {note}")
    seen[key] = fingerprint
    try:
        from scdl.io.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(seen, indent=1, sort_keys=True))
    except Exception:  # noqa: BLE001 - a read-only home must not stop a segmentation
        pass
    return len(notes)
