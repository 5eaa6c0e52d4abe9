"""The model catalog (``Resources/Catalog.json``) and finding a model by id or path.

Entry kinds: ``"bundled"`` (a package shipped in ``Resources/Models/<id>/`` or ``<id>.scdlmodel``) and
``"checkpoints"`` (plain VNet state dicts downloaded on request, verified by git blob id, and imported into
the user cache with the entry's ``card`` template). Packages in the cache that the catalog does not name
(imported or trained by the user) are listed as kind ``"user"``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from scdl.errors import ScdlError
from scdl.models.cache import cache_dir, cached_ids, cached_path
from scdl.models.card import ID_PATTERN
from scdl.models.manifest import MANIFEST_FILE
from scdl.models.source import SINGLE_FILE_SUFFIX, is_package_path
from scdl.resources import bundled_models_dir, resources_dir

CATALOG_FILE = "Catalog.json"
CATALOG_SCHEMA = "scdl-catalog"
KINDS = ("bundled", "checkpoints")

#: Id of the default model (the catalog's "default"; a test keeps them equal).
DEFAULT_MODEL_ID = "scdl-abdominal-ct"


def catalog_path() -> Path:
    return resources_dir() / CATALOG_FILE


def load_catalog(path: Optional[Union[str, os.PathLike]] = None) -> dict[str, Any]:
    """Read and check the catalog (``ScdlError`` naming the file and the bad entry)."""
    path = Path(path) if path is not None else catalog_path()
    fix = "reinstall SCDL (the catalog ships with it) or correct the JSON."
    try:
        catalog = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ScdlError("the model catalog is missing.", path, fix) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ScdlError(f"the model catalog cannot be read ({err}).", path, fix) from None
    if not isinstance(catalog, dict) or catalog.get("schema") != CATALOG_SCHEMA or not isinstance(catalog.get("models"), list):
        raise ScdlError(f"not an SCDL model catalog (schema {CATALOG_SCHEMA!r} with a 'models' list).", path, fix)
    seen = set()
    for entry in catalog["models"]:
        mid = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(mid, str) or not ID_PATTERN.match(mid) or mid in seen:
            raise ScdlError(f"catalog entry {mid!r}: missing, invalid or repeated id.", path, fix)
        seen.add(mid)
        if entry.get("kind") not in KINDS:
            raise ScdlError(f"catalog entry {mid!r}: kind must be one of {KINDS}.", path, fix)
        if not isinstance(entry.get("title"), str):
            raise ScdlError(f"catalog entry {mid!r}: missing title.", path, fix)
        if entry["kind"] == "checkpoints":
            src = entry.get("source")
            files = src.get("files") if isinstance(src, dict) else None
            ok = (isinstance(files, list) and files and isinstance(src.get("commit"), str)
                  and isinstance(src.get("base_url"), str) and isinstance(entry.get("card"), dict)
                  and all(isinstance(f, dict) and isinstance(f.get("path"), str)
                          and isinstance(f.get("git_blob"), str) and len(f["git_blob"]) == 40 for f in files))
            if not ok:
                raise ScdlError(f"catalog entry {mid!r}: a 'checkpoints' entry needs source.base_url, source.commit, "
                                "source.files [{path, git_blob}] and a card template.", path, fix)
    return catalog


def catalog_entry(model_id: str) -> Optional[dict[str, Any]]:
    """The catalog entry with this id, or None."""
    for entry in load_catalog()["models"]:
        if entry["id"] == model_id:
            return entry
    return None


def default_model_id() -> str:
    """The catalog's default model id."""
    return str(load_catalog().get("default") or DEFAULT_MODEL_ID)


def bundled_path(model_id: str) -> Optional[Path]:
    """``Resources/Models/<id>/`` or ``<id>.scdlmodel`` if it exists, else None."""
    root = bundled_models_dir()
    for candidate in (root / model_id, root / f"{model_id}{SINGLE_FILE_SUFFIX}"):
        if candidate.exists() and is_package_path(candidate):
            return candidate
    return None


def installed_path(model_id: str) -> Optional[Path]:
    """Where the model with this id is installed (bundled first, then the user cache), or None."""
    found = bundled_path(model_id)
    if found is not None:
        return found
    if ID_PATTERN.match(model_id):
        cached = cached_path(model_id)
        if cached.is_dir() and is_package_path(cached):
            return cached
    return None


def damaged_cache_fix(path: Union[str, os.PathLike]) -> Optional[str]:
    """The fix for a damaged copy in the user's model cache (the command that replaces it), None elsewhere."""
    path = Path(path)
    try:
        in_cache = path.resolve().parent == cache_dir().resolve()
    except OSError:
        return None
    if not in_cache:
        return None
    entry = catalog_entry(path.name)
    if entry is not None and entry.get("kind") == "checkpoints":
        return (f"the cached copy in {path} is damaged: fetch it again with `scdl models download {path.name} "
                "--force` (internet needed).")
    return (f"the cached copy in {path} is damaged: import the package again with `scdl models import PACKAGE "
            f"--force`, or delete {path}.")


def resolve_model(id_or_path: Union[str, os.PathLike]) -> Path:
    """A package path from a path (folder / ``.scdlmodel``), a bundled id or an id in the user cache.

    Raises:
        ScdlError: the path does not exist, the id is a catalog model that is not installed (with the command
            that installs it), or the id is unknown (with the ids that exist).
    """
    text = os.fspath(id_or_path)
    path = Path(text).expanduser()
    if path.exists():
        return path
    looks_like_path = (os.sep in text or "/" in text or text.endswith(SINGLE_FILE_SUFFIX) or text.startswith(".")
                       or not ID_PATTERN.match(text))
    if looks_like_path:
        raise ScdlError("the model package does not exist.", path,
                        "give the path of a model package folder or .scdlmodel file, or a model id (`scdl models list`).")
    found = installed_path(text)
    if found is not None:
        return found
    entry = catalog_entry(text)
    cached = cached_path(text)
    if cached.is_dir() and not cached.name.startswith("."):    # a cache folder without its manifest
        raise ScdlError("the cached model has no manifest.json (an unfinished or damaged copy).",
                        cached / MANIFEST_FILE, damaged_cache_fix(cached))
    if entry is not None and entry["kind"] == "checkpoints":
        raise ScdlError(f"model {text!r} is in the catalog but not downloaded yet.",
                        fix=f"run `scdl models download {text}` (internet needed), or import files you downloaded "
                            f"elsewhere with `scdl models import FILES... --as {text}`.")
    if entry is not None:
        raise ScdlError(f"the bundled model {text!r} is not installed in this copy of SCDL "
                        f"(expected in {bundled_models_dir() / text}).",
                        fix="reinstall the SCDL extension, or choose another model with --model (`scdl models list`).")
    known = sorted({e["id"] for e in load_catalog()["models"]} | set(cached_ids()))
    raise ScdlError(f"unknown model {text!r}.", fix=f"use a package path or one of: {', '.join(known)}.")
