"""Content hashes of images and label maps (files or DICOM folders), the keys of the preprocessing cache.

SHA-256 of the bytes (a folder: of its files' names and bytes in sorted order). A small index
(``hashes.json`` in the cache folder) remembers the hash of a file by (path, size, mtime) so that the
second run of a cohort does not read every CT again; a changed file gets a new hash.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

_CHUNK = 4 << 20


def _hash_file(path: Path, digest: "hashlib._Hash") -> None:
    with path.open("rb") as handle:
        while True:
            block = handle.read(_CHUNK)
            if not block:
                break
            digest.update(block)


def content_hash(path: os.PathLike | str) -> str:
    """SHA-256 (hex) of a file, or of a folder's files (names + bytes, sorted, recursive)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            digest.update(str(file.relative_to(path)).encode("utf-8") + b"\0")
            _hash_file(file, digest)
    else:
        _hash_file(path, digest)
    return digest.hexdigest()


def _stat_key(path: Path) -> str:
    if path.is_dir():
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*")) if p.is_file()]
        return f"{path.resolve()}|dir|{hashlib.sha1(repr(stats).encode()).hexdigest()}"
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


class HashIndex:
    """Remembers content hashes by (path, size, mtime); saved atomically to ``index_file`` by :meth:`save`."""

    def __init__(self, index_file: Optional[os.PathLike | str] = None):
        self.index_file = None if index_file is None else Path(index_file)
        self._known: dict[str, str] = {}
        self._dirty = False
        if self.index_file is not None and self.index_file.is_file():
            try:
                data = json.loads(self.index_file.read_text(encoding="utf-8"))
                if isinstance(data, dict):
                    self._known = {str(k): str(v) for k, v in data.items()}
            except (OSError, ValueError):
                self._known = {}

    def hash(self, path: os.PathLike | str) -> str:
        path = Path(path)
        key = _stat_key(path)
        if key not in self._known:
            self._known[key] = content_hash(path)
            self._dirty = True
        return self._known[key]

    def save(self) -> None:
        if self.index_file is None or not self._dirty:
            return
        from scdl.io.atomic import atomic_write_text

        atomic_write_text(self.index_file, json.dumps(self._known, indent=0, sort_keys=True))
        self._dirty = False
