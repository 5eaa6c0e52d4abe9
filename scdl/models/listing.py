"""The model list for menus and ``scdl models list``: catalog entries and cached packages, with their cards.

Sits above :mod:`scdl.models.catalog` (ids, paths) and :mod:`scdl.models.package` (cards): the catalog does
not read packages, so the models package has no import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from scdl.errors import ScdlError
from scdl.models.cache import cached_ids, cached_path
from scdl.models.catalog import DEFAULT_MODEL_ID, installed_path, load_catalog
from scdl.models.package import ModelPackage


def list_models() -> list[dict[str, Any]]:
    """Every catalog model and every package in the user cache, for menus and ``scdl models list``.

    Each item: id, title, kind ("bundled" | "checkpoints" | "user"), installed (bool), path (str or None),
    status ("installed" | "not installed" | "downloadable" | "invalid: ..."), labels, n_classes, licence,
    warnings, description, default (bool). Cards are read (not checksummed) so this stays fast.
    """
    catalog = load_catalog()
    default = str(catalog.get("default") or DEFAULT_MODEL_ID)
    items: list[dict[str, Any]] = []
    listed = set()
    for entry in catalog["models"]:
        listed.add(entry["id"])
        item = {
            "id": entry["id"],
            "title": entry["title"],
            "kind": entry["kind"],
            "description": entry.get("description", ""),
            "labels": entry.get("labels"),
            "n_classes": (entry.get("card") or {}).get("architecture", {}).get("n_classes"),
            "licence": entry.get("licence") or (entry.get("card") or {}).get("licence"),
            "warnings": list(entry.get("warnings", [])),
            "default": entry["id"] == default,
        }
        if item["n_classes"] is None and entry.get("labels"):
            item["n_classes"] = _classes_of_table(entry["labels"])
        path = installed_path(entry["id"])
        _fill_installed(item, path, "downloadable" if entry["kind"] == "checkpoints" else "not installed")
        items.append(item)
    for model_id in cached_ids():
        if model_id in listed:
            continue
        item = {"id": model_id, "title": model_id, "kind": "user", "description": "", "labels": None,
                "n_classes": None, "licence": None, "warnings": [], "default": False}
        _fill_installed(item, cached_path(model_id), "not installed")
        items.append(item)
    return items


def _classes_of_table(name: str) -> Optional[int]:
    from scdl.labels.table import LabelTable

    try:
        return LabelTable.load(name).num_classes
    except ScdlError:
        return None


def _fill_installed(item: dict[str, Any], path: Optional[Path], missing_status: str) -> None:
    if path is None:
        item.update(installed=False, path=None, status=missing_status)
        return
    item.update(installed=True, path=str(path))
    try:
        pkg = ModelPackage.load(path, verify=False)
    except ScdlError as err:
        item["status"] = f"invalid: {err}"
        return
    card = pkg.card
    item.update(status="installed", title=card["title"], description=card.get("description", ""),
                n_classes=card["architecture"]["n_classes"], licence=card["licence"],
                warnings=list(card.get("warnings", [])), version=card["version"], networks=pkg.networks,
                label_names=pkg.labels.names)
