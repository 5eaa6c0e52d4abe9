"""The package manifest (``manifest.json``): SHA-256 and size of every file of a model package."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional

from scdl.errors import ScdlError

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = "scdl-manifest"
_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: os.PathLike | str) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def build_manifest(files: Mapping[str, bytes]) -> dict[str, Any]:
    """Manifest of ``{file name: content}``."""
    return {
        "schema": MANIFEST_SCHEMA,
        "schema_version": 1,
        "algorithm": "sha256",
        "files": {name: {"sha256": sha256_bytes(data), "size": len(data)} for name, data in sorted(files.items())},
    }


def parse_manifest(data: bytes, path: Optional[os.PathLike | str] = None) -> dict[str, dict[str, Any]]:
    """Parse and check ``manifest.json``; returns ``{file name: {"sha256": hex, "size": int}}``."""
    fix = "the package is damaged: download or import it again."
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:     # nested 100,000 deep
        raise ScdlError(f"the manifest is not valid JSON ({err}).", path, fix) from None
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA or manifest.get("algorithm") != "sha256":
        raise ScdlError(f"not an SCDL manifest (expected schema {MANIFEST_SCHEMA!r}, algorithm 'sha256').", path, fix)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise ScdlError("the manifest lists no files.", path, fix)
    for name, entry in files.items():
        ok = (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
              and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool))
        if not ok or "/" in name or "\\" in name or name in ("", ".", "..") or name == MANIFEST_FILE:
            raise ScdlError(f"the manifest entry {name!r} is invalid.", path, fix)
    return files
