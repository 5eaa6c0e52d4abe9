"""Catalog models of kind ``"checkpoints"`` (the authors' CPS pairs): download, verify, import into the cache.

``download_model(id)`` fetches every file of the entry from ``<base_url>/<commit>/<path>`` (base URL
overridable with ``SCDL_DOWNLOAD_BASE_URL``), checks each file's git blob id, and imports the state dicts
into a package in the user cache with the entry's card template. ``import_catalog_files(id, files)`` does the
same with files downloaded elsewhere (offline sites): they are matched to the entry by git blob id.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

from scdl.errors import ScdlError
from scdl.models.cache import cached_path, downloads_dir
from scdl.models.catalog import catalog_entry
from scdl.models.download import base_url, download_file, git_blob_id

#: ``on_file(index, count, url)`` is called before each file; ``on_bytes(done, total)`` during it.
FileCallback = Callable[[int, int, str], None]
BytesCallback = Callable[[int, Optional[int]], None]


def _checkpoint_entry(model_id: str) -> dict[str, Any]:
    entry = catalog_entry(model_id)
    if entry is None:
        raise ScdlError(f"there is no model {model_id!r} in the catalog.", fix="see `scdl models list`.")
    if entry["kind"] != "checkpoints":
        raise ScdlError(f"model {model_id!r} is bundled with SCDL: there is nothing to download.",
                        fix="use it directly (`scdl models info ID`).")
    return entry


def file_urls(model_id: str) -> list[str]:
    """The download URLs of a ``"checkpoints"`` catalog entry (``SCDL_DOWNLOAD_BASE_URL`` applied)."""
    entry = _checkpoint_entry(model_id)
    src = entry["source"]
    base = base_url(src["base_url"])
    return [f"{base}/{src['commit']}/{f['path']}" for f in src["files"]]


def _card_fields(entry: dict[str, Any]) -> dict[str, Any]:
    template = dict(entry["card"])
    fields = {k: template[k] for k in ("version", "inference", "provenance", "intended_use") if k in template}
    fields["description"] = entry.get("description", "")
    fields["licence"] = entry.get("licence", template.get("licence", "unstated"))
    fields["warnings"] = list(dict.fromkeys(list(entry.get("warnings", [])) + list(template.get("warnings", []))))
    return fields


def _import(entry: dict[str, Any], files: Sequence[Path], force: bool) -> Path:
    from scdl.models.statedict import import_state_dicts

    target = cached_path(entry["id"])
    if target.exists() and not force:
        raise ScdlError(f"model {entry['id']!r} is already installed ({target}).", fix="use --force to replace it.")
    template = entry["card"]
    arch = template["architecture"]
    return import_state_dicts(files, target, model_id=entry["id"], title=entry["title"], labels=entry["labels"],
                              preprocessing=template["preprocessing"], n_filters=arch.get("n_filters"),
                              norm=arch.get("norm"), card_fields=_card_fields(entry))


def download_model(model_id: str, *, force: bool = False, on_file: Optional[FileCallback] = None,
                   on_bytes: Optional[BytesCallback] = None, keep_files: bool = False) -> Path:
    """Download a ``"checkpoints"`` catalog model, verify it and install it in the user cache.

    Returns the installed package folder. If it is already installed (and not ``force``) it is returned as is.
    Downloaded ``.pth`` files are removed after a successful import unless ``keep_files``.
    """
    entry = _checkpoint_entry(model_id)
    target = cached_path(model_id)
    if target.exists() and not force:
        return target
    urls = file_urls(model_id)
    files = []
    for index, (spec, url) in enumerate(zip(entry["source"]["files"], urls)):
        if on_file:
            on_file(index, len(urls), url)
        dest = downloads_dir() / f"{spec['git_blob']}{Path(spec['path']).suffix}"
        if not dest.exists() or git_blob_id(dest) != spec["git_blob"]:
            download_file(url, dest, git_blob=spec["git_blob"], progress=on_bytes)
        files.append(dest)
    path = _import(entry, files, force=True)
    if not keep_files:
        for f in files:
            f.unlink(missing_ok=True)
    return path


def import_catalog_files(model_id: str, files: Sequence[Union[str, os.PathLike]], force: bool = False) -> Path:
    """Install a ``"checkpoints"`` catalog model from files downloaded elsewhere (matched by git blob id)."""
    entry = _checkpoint_entry(model_id)
    by_blob = {}
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise ScdlError("the file does not exist.", f, "check the path.")
        by_blob[git_blob_id(f)] = f
    ordered = []
    for spec, url in zip(entry["source"]["files"], file_urls(model_id)):
        found = by_blob.pop(spec["git_blob"], None)
        if found is None:
            raise ScdlError(f"none of the given files is {spec['path']} (git blob {spec['git_blob']}).",
                            fix=f"download it from {url} and give it too (files are matched by content, not name).")
        ordered.append(found)
    if by_blob:
        extra = next(iter(by_blob.values()))
        raise ScdlError(f"this file is not part of model {model_id!r} (its git blob id matches no file of it).", extra,
                        "give only the files listed by `scdl models info ID`.")
    return _import(entry, ordered, force)
