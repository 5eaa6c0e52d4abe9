"""After training: register the model in the user's model cache, and read what the run folder holds.

Registering runs ``scdl models import RUN_DIR/model`` in a child (it verifies every checksum before copying
the package into ``~/.scdl/models``, like any other import), after which the model is listed by
SCDLSegment and ``scdl segment --model <id>``. Reading cards and folders needs no torch. No Qt here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from SCDLSlicerLib.jobs import ModelsJob



def model_id_of(model_dir: os.PathLike | str) -> str:
    """The id in a package's ``card.json``."""
    card = read_card(model_dir)
    if not card.get("id"):
        raise ValueError(f"{model_dir} holds no model card with an id.")
    return str(card["id"])


def read_card(model_dir: os.PathLike | str) -> dict[str, Any]:
    """A package's card (``{}`` if it cannot be read)."""
    from scdl.models.card import CARD_FILE

    try:
        return json.loads((Path(model_dir) / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def installed_model_path(model_id: str) -> Optional[Path]:
    """Where the cache holds a model with this id (None if it holds none)."""
    from scdl.models.cache import cached_path
    from scdl.models.manifest import MANIFEST_FILE

    path = cached_path(model_id)
    return path if (path / MANIFEST_FILE).is_file() else None


def register_job(model_dir: os.PathLike | str, replace: bool = False, backend: str = "auto") -> ModelsJob:
    """``scdl models import MODEL_DIR [--force]`` in a child (not started)."""
    args = ["import", str(model_dir)] + (["--force"] if replace else [])
    return ModelsJob(*args, backend=backend, what="Registering the model")


def catalog_item(model_id: str) -> Optional[dict[str, Any]]:
    """The model's entry in ``scdl.models.listing.list_models()`` (None if not listed)."""
    from SCDLSlicerLib.models import list_models

    return next((m for m in list_models() if m["id"] == model_id), None)


def can_resume(run_dir: os.PathLike | str) -> bool:
    """True when the folder holds a run that can continue (a stopped run: config and checkpoint, no model yet;
    the core's ``scdl.training.runfolder`` names the files and decides)."""
    from scdl.training.runfolder import can_resume as core_can_resume

    return core_can_resume(run_dir)
