"""Where the extension's shared resources live (label tables, model catalog, bundled models, sample data).

The folder ``Resources/`` sits beside the ``scdl`` package in a source checkout and in the installed
Slicer extension (CMake installs both into ``qt-scripted-modules/``). ``SCDL_RESOURCES`` overrides it.
The user's model cache is ``~/.scdl/models`` unless ``SCDL_HOME`` (or ``SCDL_MODELS_DIR``) says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

from scdl.errors import ScdlError


def resources_dir() -> Path:
    """The ``Resources`` folder (env ``SCDL_RESOURCES`` first, then the one beside the package)."""
    env = os.environ.get("SCDL_RESOURCES")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "Resources")
    for candidate in candidates:
        if (candidate / "Labels").is_dir():
            return candidate
    raise ScdlError(
        "the SCDL Resources folder (label tables, model catalog) was not found.",
        candidates[0],
        "install the package in editable mode from a source checkout (pip install -e .) or set SCDL_RESOURCES.",
    )


def labels_dir() -> Path:
    """Folder of the bundled label tables (``Resources/Labels``)."""
    return resources_dir() / "Labels"


def bundled_models_dir() -> Path:
    """Folder of the model packages shipped with the extension (``Resources/Models``)."""
    return resources_dir() / "Models"


def sample_dir() -> Path:
    """Folder of the bundled sample CT (``Resources/Sample``)."""
    return resources_dir() / "Sample"


def user_home() -> Path:
    """SCDL's per-user folder (``SCDL_HOME`` or ``~/.scdl``); shared by all Slicer versions."""
    env = os.environ.get("SCDL_HOME")
    return Path(env).expanduser() if env else Path.home() / ".scdl"


def model_cache_dir() -> Path:
    """The user's model cache (``SCDL_MODELS_DIR`` or ``<SCDL_HOME>/models``)."""
    env = os.environ.get("SCDL_MODELS_DIR")
    return Path(env).expanduser() if env else user_home() / "models"
