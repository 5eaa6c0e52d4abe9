"""The user's model cache: one package folder per model id under :func:`scdl.resources.model_cache_dir`.

``SCDL_MODELS_DIR`` (or ``SCDL_HOME``/models, default ``~/.scdl/models``) is shared by every Slicer version.
Partial downloads live in its ``.downloads`` sub-folder; temporary folders start with ``.`` and are ignored.
"""

from __future__ import annotations

from pathlib import Path

from scdl.errors import ScdlError
from scdl.models.card import ID_PATTERN
from scdl.models.manifest import MANIFEST_FILE
from scdl.resources import model_cache_dir


def cache_dir() -> Path:
    """The cache folder (not created)."""
    return model_cache_dir()


def downloads_dir() -> Path:
    """Where downloads are assembled (``<cache>/.downloads``)."""
    return cache_dir() / ".downloads"


def cached_path(model_id: str) -> Path:
    """Folder a model with this id has (or would have) in the cache."""
    if not ID_PATTERN.match(model_id):
        raise ScdlError(f"{model_id!r} is not a valid model id (lower-case letters, digits, '.', '_', '-').",
                        fix="use the id shown by `scdl models list`.")
    return cache_dir() / model_id


def cached_ids() -> list[str]:
    """Ids of the package folders in the cache (folders holding a manifest)."""
    root = cache_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if not p.name.startswith(".") and ID_PATTERN.match(p.name) and (p / MANIFEST_FILE).is_file())
